//! Connect auth by the backend (PROTOCOL.md section 10, docs/connect-auth.md):
//! at the upgrade of `/ws`, `/sse` or `/poll`, the gateway POSTs
//! `{"app_id","transport","address","headers"}` to the app's
//! `[apps.connect_auth] url`, signed as RPC calls are (`X-Chouquette-Signature`
//! with the app's first secret, docs/rpc.md), and the answer decides:
//!
//! - `200 {"user_id", "groups", "subscriptions"}`: accepted with that
//!   identity and those subscriptions (filters in clear);
//! - `401` / `403`: refused with that status;
//! - anything else (down, slower than the timeout, another status, not the
//!   expected JSON, over [`MAX_ANSWER_BYTES`], more subscriptions than the
//!   app allows a connection, a bad channel name or filter): refused with
//!   503 `unavailable`, the reason logged (the backend is misconfigured or
//!   away). Never is a connection of such an app accepted without identity.
//!
//! Which app's connect auth applies ([`ConnectAuth::select`]): the one
//! `?app=<app_id>` names; without `?app`, the only app with connect auth,
//! and when several have it, none is guessed (400). An app named that has
//! no connect auth is served as without the feature: its clients subscribe
//! with tokens.
//!
//! Only `Cookie` and `Authorization` are forwarded, and only when present:
//! other headers could carry what the backend should not rely on, and the
//! backend needs no more to find its session.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use chouquette_core::app::Apps;
use chouquette_core::clock::unix_now;
use chouquette_core::connections::{Identity, Transport};
use chouquette_core::filter::Filter;
use chouquette_core::publication::valid_name;
use chouquette_core::rpc::signature::{SIGNATURE_HEADER, sign};
use chouquette_core::telemetry::prometheus::Family;
use chouquette_core::user_mail::MAX_USER_BYTES;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::http_error::error_response;

/// Largest answer read from the backend, in bytes; a larger one is a
/// backend fault (503). An identity, its groups and a page's subscriptions
/// with their filters fit well within it.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Most groups an answer may give a user (kill switches match them; a
/// token's `groups` are bounded by the token's size, these by this).
pub const MAX_GROUPS: usize = 64;

/// What the transport gets from an accepted answer.
#[derive(Debug)]
pub struct Accepted {
    /// The identity, as a `connect` would set it, without expiry.
    pub identity: Identity,
    /// `(channel, filter)` of each subscription listed, names checked.
    pub subscriptions: Vec<(String, Filter)>,
}

/// How one connect auth ended, as counted in
/// `chouquette_connect_auth_total{app,outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with a usable answer.
    Accepted,
    /// 401 from the backend.
    Unauthorized,
    /// 403 from the backend.
    Forbidden,
    /// Nothing answered (refused, reset, cut short).
    Unreachable,
    /// No full answer within the timeout.
    Timeout,
    /// Another status.
    BadStatus,
    /// 200 with an answer that is not usable (not JSON, too large, bad
    /// names or filters, too many subscriptions).
    BadAnswer,
    /// Accepted by the backend, refused by the gateway: the user already
    /// holds the app's limit of connections.
    UserLimit,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Accepted,
        Outcome::Unauthorized,
        Outcome::Forbidden,
        Outcome::Unreachable,
        Outcome::Timeout,
        Outcome::BadStatus,
        Outcome::BadAnswer,
        Outcome::UserLimit,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::Unreachable => "unreachable",
            Outcome::Timeout => "timeout",
            Outcome::BadStatus => "bad_status",
            Outcome::BadAnswer => "bad_answer",
            Outcome::UserLimit => "user_limit",
        }
    }
}

const CONNECT_AUTH_TOTAL: Family = Family::counter(
    "chouquette_connect_auth_total",
    "Connect auth requests to the backend, by app and outcome",
);

/// One app's connect auth: where, how long, and its counters.
#[derive(Debug)]
pub struct Target {
    /// The app.
    pub app: Arc<str>,
    url: Arc<str>,
    timeout: Duration,
    /// One counter per [`Outcome`], in [`Outcome::ALL`] order.
    counts: [AtomicU64; Outcome::ALL.len()],
}

impl Target {
    /// Counts one outcome.
    pub fn count(&self, outcome: Outcome) {
        let i = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every app's connect auth, and the client that calls the backends.
#[derive(Debug)]
pub struct ConnectAuth {
    /// At most one per app (bounded by the config).
    targets: Vec<Target>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Why a request cannot be authenticated as asked: the answer to give.
pub type Refused = Box<Response>;

/// The request body (PROTOCOL.md section 10), with these keys exactly.
#[derive(Serialize)]
struct AuthRequest<'a> {
    app_id: &'a str,
    transport: &'static str,
    address: Option<String>,
    headers: Forwarded,
}

/// The forwarded headers; absent ones are left out.
#[derive(Serialize, Default)]
struct Forwarded {
    #[serde(skip_serializing_if = "Option::is_none")]
    cookie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization: Option<String>,
}

/// The backend's 200 answer.
#[derive(Deserialize)]
struct AuthAnswer {
    user_id: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    subscriptions: BTreeMap<String, SubscriptionAnswer>,
}

#[derive(Deserialize)]
struct SubscriptionAnswer {
    filters: Value,
}

/// A failure with its counted outcome and the detail for the logs.
struct Trouble {
    outcome: Outcome,
    detail: String,
}

impl Trouble {
    fn new(outcome: Outcome, detail: impl Into<String>) -> Trouble {
        Trouble {
            outcome,
            detail: detail.into(),
        }
    }
}

impl ConnectAuth {
    /// Every `[apps.connect_auth]` of `config`.
    pub fn new(config: &Config) -> ConnectAuth {
        let targets = config
            .apps
            .iter()
            .filter_map(|a| {
                let auth = a.connect_auth.as_ref()?;
                Some(Target {
                    app: a.id.as_str().into(),
                    url: auth.url.as_str().into(),
                    timeout: auth.timeout,
                    counts: Default::default(),
                })
            })
            .collect();
        // Without TCP_NODELAY a request written in two segments can wait
        // for the backend's delayed ACK (40 ms) on every upgrade.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        ConnectAuth {
            targets,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The app whose connect auth applies to a request naming `asked`
    /// (`?app=`), if any (see the module's rule), or the 400 answer.
    pub fn select(&self, asked: Option<&str>, apps: &Apps) -> Result<Option<&Target>, Refused> {
        if self.targets.is_empty() {
            return Ok(None);
        }
        match asked {
            Some(id) => {
                if let Some(target) = self.targets.iter().find(|t| &*t.app == id) {
                    Ok(Some(target))
                } else if apps.get(id).is_some() {
                    Ok(None)
                } else {
                    Err(Box::new(error_response(
                        StatusCode::BAD_REQUEST,
                        "unknown_app",
                        "unknown app",
                    )))
                }
            }
            None => match self.targets.as_slice() {
                [only] => Ok(Some(only)),
                _ => Err(Box::new(error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_message",
                    "several apps authenticate connections: name one with ?app=<app_id>",
                ))),
            },
        }
    }

    /// Asks `target`'s backend about a connection over `transport` from
    /// `address` with `headers`; `secret` signs the request and
    /// `max_subscriptions` bounds the answer's subscriptions. Counts and
    /// logs the outcome, except [`Outcome::UserLimit`], the caller's.
    pub async fn authenticate(
        &self,
        target: &Target,
        secret: &[u8],
        max_subscriptions: usize,
        request: (Transport, Option<IpAddr>, &HeaderMap),
    ) -> Result<Accepted, Refused> {
        let (transport, address, headers) = request;
        let body = AuthRequest {
            app_id: &target.app,
            transport: transport.as_str(),
            address: address.map(|a| a.to_string()),
            headers: forwarded(headers),
        };
        let result = match tokio::time::timeout(
            target.timeout,
            self.exchange(target, secret, &body, max_subscriptions),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Trouble::new(Outcome::Timeout, "no full answer in time")),
        };
        let app = &target.app;
        let transport = transport.as_str();
        match result {
            Ok(accepted) => {
                target.count(Outcome::Accepted);
                Ok(accepted)
            }
            Err(trouble) => {
                target.count(trouble.outcome);
                let (status, code, message) = match trouble.outcome {
                    Outcome::Unauthorized => {
                        tracing::info!(%app, transport, address = ?address, "connect auth: the backend refused the connection (401)");
                        (
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "the app's backend did not authenticate this connection",
                        )
                    }
                    Outcome::Forbidden => {
                        tracing::info!(%app, transport, address = ?address, "connect auth: the backend refused the connection (403)");
                        (
                            StatusCode::FORBIDDEN,
                            "not_allowed",
                            "the app's backend does not allow this connection",
                        )
                    }
                    outcome => {
                        tracing::warn!(%app, url = %target.url, outcome = outcome.as_str(), detail = %trouble.detail, "connect auth: refused, the backend did not answer usably");
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "the app's authentication backend is unavailable",
                        )
                    }
                };
                Err(Box::new(error_response(status, code, message)))
            }
        }
    }

    /// One exchange: the signed POST, the bounded answer, its meaning.
    async fn exchange(
        &self,
        target: &Target,
        secret: &[u8],
        body: &AuthRequest<'_>,
        max_subscriptions: usize,
    ) -> Result<Accepted, Trouble> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Trouble::new(Outcome::BadStatus, e.to_string()))?;
        let request = Request::post(&*target.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(secret, unix_now(), &body))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Trouble::new(Outcome::Unreachable, e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| Trouble::new(Outcome::Unreachable, e.to_string()))?;
        let status = response.status();
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => return Err(Trouble::new(Outcome::Unauthorized, "401")),
            StatusCode::FORBIDDEN => return Err(Trouble::new(Outcome::Forbidden, "403")),
            other => return Err(Trouble::new(Outcome::BadStatus, format!("status {other}"))),
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    Trouble::new(
                        Outcome::BadAnswer,
                        format!("answer over {MAX_ANSWER_BYTES} bytes"),
                    )
                } else {
                    Trouble::new(Outcome::Unreachable, format!("answer cut short: {e}"))
                }
            })?
            .to_bytes();
        accepted(&target.app, &body, max_subscriptions)
            .map_err(|why| Trouble::new(Outcome::BadAnswer, why))
    }

    /// Appends `chouquette_connect_auth_total{app,outcome}` (nothing when
    /// no app has connect auth).
    pub fn render(&self, out: &mut String) {
        if self.targets.is_empty() {
            return;
        }
        let mut samples = CONNECT_AUTH_TOTAL.render(out);
        for target in &self.targets {
            for (outcome, count) in Outcome::ALL.iter().zip(&target.counts) {
                let labels = [("app", &*target.app), ("outcome", outcome.as_str())];
                samples.sample(&labels, count.load(Ordering::Relaxed));
            }
        }
    }
}

/// The `Cookie` (every one, joined as HTTP/2 splits them) and
/// `Authorization` headers, when present and text.
fn forwarded(headers: &HeaderMap) -> Forwarded {
    let cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Forwarded {
        cookie: (!cookies.is_empty()).then(|| cookies.join("; ")),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// A 200 answer's identity and subscriptions for `app`, or why it is not
/// usable.
fn accepted(app: &Arc<str>, body: &[u8], max_subscriptions: usize) -> Result<Accepted, String> {
    let answer: AuthAnswer = serde_json::from_slice(body).map_err(|e| {
        format!(r#"the answer is not {{"user_id": "...", "groups": [...], "subscriptions": {{...}}}}: {e}"#)
    })?;
    if answer.user_id.is_empty() || answer.user_id.len() > MAX_USER_BYTES {
        return Err(format!("user_id must be 1 to {MAX_USER_BYTES} bytes"));
    }
    if answer.groups.len() > MAX_GROUPS {
        return Err(format!("more than {MAX_GROUPS} groups"));
    }
    if answer.subscriptions.len() > max_subscriptions {
        return Err(format!(
            "{} subscriptions, over the app's {max_subscriptions} per connection",
            answer.subscriptions.len()
        ));
    }
    let mut subscriptions = Vec::with_capacity(answer.subscriptions.len());
    for (channel, sub) in answer.subscriptions {
        if !valid_name(&channel) {
            return Err(format!("invalid channel name {channel:?}"));
        }
        let filter = Filter::parse(&sub.filters)
            .map_err(|e| format!("channel {channel:?}: bad filters: {e}"))?;
        subscriptions.push((channel, filter));
    }
    Ok(Accepted {
        identity: Identity {
            app: app.clone(),
            user: answer.user_id,
            groups: answer.groups,
            exp: None,
            publish: None,
            messages: None,
        },
        subscriptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Arc<str> {
        "bluelib".into()
    }

    #[test]
    fn a_usable_answer_gives_identity_and_subscriptions() {
        let body = br#"{"user_id": "roger", "groups": ["vb"],
            "subscriptions": {"bornes": {"filters": {"*": {}}}}}"#;
        let a = accepted(&app(), body, 10).expect("usable");
        assert_eq!(a.identity.user, "roger");
        assert_eq!(a.identity.groups, ["vb"]);
        assert_eq!(a.identity.exp, None);
        assert_eq!(a.subscriptions.len(), 1);
        assert_eq!(a.subscriptions[0].0, "bornes");
        let bare = accepted(&app(), br#"{"user_id": "roger"}"#, 10).expect("usable");
        assert!(bare.subscriptions.is_empty() && bare.identity.groups.is_empty());
    }

    #[test]
    fn unusable_answers_say_why() {
        let cases: [(&[u8], &str); 7] = [
            (b"<html>", "not"),
            (br#"{"groups": []}"#, "user_id"),
            (br#"{"user_id": ""}"#, "user_id"),
            (br#"{"user_id": 7}"#, "not"),
            (br#"{"user_id": "r", "subscriptions": {"a b": {"filters": {}}}}"#, "channel name"),
            (br#"{"user_id": "r", "subscriptions": {"ab": {"filters": 3}}}"#, "bad filters"),
            (
                br#"{"user_id": "r", "subscriptions": {"a": {"filters": {}}, "b": {"filters": {}}}}"#,
                "over the app's 1",
            ),
        ];
        for (body, why) in cases {
            let e = accepted(&app(), body, 1).expect_err("unusable");
            assert!(e.contains(why), "{e} (expected {why})");
        }
        let long = format!(r#"{{"user_id": "{}"}}"#, "u".repeat(MAX_USER_BYTES + 1));
        assert!(accepted(&app(), long.as_bytes(), 1).is_err());
    }

    #[test]
    fn only_cookie_and_authorization_are_forwarded() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1".parse().expect("value"));
        headers.append(header::COOKIE, "b=2".parse().expect("value"));
        headers.insert(header::USER_AGENT, "x".parse().expect("value"));
        let json = serde_json::to_value(forwarded(&headers)).expect("json");
        assert_eq!(json, serde_json::json!({"cookie": "a=1; b=2"}));
        let json = serde_json::to_value(forwarded(&HeaderMap::new())).expect("json");
        assert_eq!(json, serde_json::json!({}));
    }
}
