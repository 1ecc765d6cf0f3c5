//! Subscriptions carried in the request, for transports without client
//! messages (SSE, long-polling): in the URL of a `GET`
//! (`?sub=<token>&sub=<token>&cursor=<cursor>`, what a plain `EventSource`
//! can send), or in the JSON body of a `POST`
//! (`{"sub": ["<token>", ...], "cursor": "<cursor>", "timeout": 20}`), which
//! keeps tokens out of URLs and so out of proxies' access logs.
//!
//! Each token names its app and channel in its claims; tokens are grouped by
//! app into ordinary subscribe messages, so verification, filters, recovery
//! and errors are exactly those of the WebSocket flow. The cursor records
//! `(app, channel, epoch, offset)` per subscription (base64url JSON) and is
//! what `since` is for a WebSocket client.
//!
//! Invariants: the cursor answered carries one position per channel the
//! request's tokens name, no more: the active subscriptions, those the
//! gateway ended, and those refused on this request (which keep the position
//! the incoming cursor gave, so a later request resumes without a gap). Its
//! length is thus bounded by the request's tokens, and a cursor is accepted
//! up to that bound (see [`cursor_limit`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chouquette_core::publication::ChannelId;
use chouquette_core::session::{ResumePoint, Session};
use chouquette_core::token;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::client::{ChannelRequest, Since, Subscribe};
use chouquette_protocol::server::{self, ErrorContext};
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::http_error::error_response;

/// Longest cursor accepted whatever the request, in bytes.
pub const MAX_CURSOR_LEN: usize = 16 * 1024;

/// Room per token in the longest cursor accepted, beyond the token's own
/// length: the entry's epoch (8 hex digits from this gateway), offset, JSON
/// punctuation and base64 growth. The token carries the entry's app and
/// channel names in its claims, which take more room in it than in the
/// cursor.
const CURSOR_BYTES_PER_TOKEN: usize = 128;

/// Longest cursor accepted for a request with `tokens`: what a cursor
/// carrying one position per token's channel can need, and never less than
/// [`MAX_CURSOR_LEN`].
pub fn cursor_limit(tokens: &[String]) -> usize {
    tokens
        .iter()
        .map(|t| t.len().saturating_add(CURSOR_BYTES_PER_TOKEN))
        .fold(MAX_CURSOR_LEN, usize::saturating_add)
}

/// The parameters of a URL subscription.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UrlRequest {
    /// Subscription tokens (`sub`, repeated).
    pub tokens: Vec<String>,
    /// Resume cursor (`cursor`, or the `Last-Event-ID` header).
    pub cursor: Option<String>,
    /// Requested long-poll wait in seconds (`timeout`).
    pub wait_secs: Option<u64>,
    /// The app whose connect auth applies (`app`), see
    /// [`crate::connect_auth`].
    pub app: Option<String>,
}

/// Why a `GET` without tokens is refused, when no connect auth applies.
pub const QUERY_NEEDS_TOKENS: &str = "at least one `sub=<token>` is required";

/// Why a `POST` without tokens is refused, when no connect auth applies.
pub const BODY_NEEDS_TOKENS: &str = "at least one token is required in `sub`";

/// Parses the query string. A request without `sub` parses: connect auth
/// may give it its subscriptions; the transport refuses it otherwise
/// ([`QUERY_NEEDS_TOKENS`]).
pub fn parse_query(query: Option<&str>) -> Result<UrlRequest, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| format!("bad query string: {e}"))?;
    let mut request = UrlRequest::default();
    for (key, value) in pairs {
        match key.as_str() {
            "sub" => request.tokens.push(value),
            "cursor" => request.cursor = Some(value),
            "app" => request.app = Some(value),
            "timeout" => {
                request.wait_secs = Some(
                    value
                        .parse()
                        .map_err(|_| "`timeout` must be whole seconds".to_string())?,
                )
            }
            _ => {}
        }
    }
    Ok(request)
}

/// How long a `POST` body may take to arrive once the request is in: a
/// client that opens a request and trickles its body holds a socket.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Largest `POST` body accepted when client messages may be
/// `max_message_bytes` long: its tokens may take what a WebSocket subscribe
/// may, and its cursor what [`cursor_limit`] allows for them (each token's
/// length again, plus its room), whose room per token is less than any
/// token's own length (a signed JWT with its claims is longer than
/// [`CURSOR_BYTES_PER_TOKEN`]).
pub fn body_limit(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(3)
        .saturating_add(MAX_CURSOR_LEN)
}

/// The JSON body of a `POST /sse` or `POST /poll`. Unknown fields are
/// ignored, as unknown query parameters are.
#[derive(Debug, Deserialize)]
struct BodyRequest {
    #[serde(default)]
    sub: Vec<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    app: Option<String>,
}

/// What a body should look like, for the error of one that does not.
const BODY_SHAPE: &str =
    r#"{"sub": ["<token>", ...], "cursor": "<cursor>", "timeout": <seconds>, "app": "<app_id>"}"#;

/// Parses a `POST` body (without tokens too, as [`parse_query`]).
pub fn parse_body(body: &[u8]) -> Result<UrlRequest, String> {
    let shape =
        |why: &dyn std::fmt::Display| format!("the body must be JSON like {BODY_SHAPE}: {why}");
    // serde would also read a struct from an array of its fields in order.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(shape(&"not a JSON object"));
    }
    let parsed: BodyRequest = serde_json::from_slice(body).map_err(|e| shape(&e))?;
    Ok(UrlRequest {
        tokens: parsed.sub,
        cursor: parsed.cursor,
        wait_secs: parsed.timeout,
        app: parsed.app,
    })
}

/// Reads and parses a `POST` body of at most `limit` bytes, or the answer
/// the client gets: `413` past the limit, `408` past [`BODY_DEADLINE`],
/// `400` for a body that is not the expected JSON; each with code
/// `bad_message`, as a bad query gets.
pub async fn read_body(body: Body, limit: usize) -> Result<UrlRequest, Response> {
    let bad = |status, message: &str| error_response(status, "bad_message", message);
    let bytes = match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            let message = format!("body larger than {limit} bytes (or cut short)");
            return Err(bad(StatusCode::PAYLOAD_TOO_LARGE, &message));
        }
        Err(_) => {
            let secs = BODY_DEADLINE.as_secs();
            let message = format!("the body did not arrive within {secs} s");
            return Err(bad(StatusCode::REQUEST_TIMEOUT, &message));
        }
    };
    parse_body(&bytes).map_err(|message| bad(StatusCode::BAD_REQUEST, &message))
}

/// How a URL transport's request carries its tokens.
pub enum Carried {
    /// In the query string of a `GET`.
    Query(Option<String>),
    /// In the JSON body of a `POST`.
    Body(Body),
}

/// The request of a URL transport, with what to answer should it name no
/// token, or the answer refusing it: the node full or stopping
/// ([`Gateway::refuse_connection`]), a query or body that does not read.
pub async fn accept(
    shared: &Gateway,
    peer: Option<IpAddr>,
    carried: Carried,
) -> Result<(UrlRequest, &'static str), Response> {
    if let Some(refusal) = shared.refuse_connection(peer) {
        return Err(refusal);
    }
    match carried {
        Carried::Query(query) => parse_query(query.as_deref())
            .map(|request| (request, QUERY_NEEDS_TOKENS))
            .map_err(|message| error_response(StatusCode::BAD_REQUEST, "bad_message", &message)),
        Carried::Body(body) => {
            let limit = body_limit(shared.node.session_limits().max_message_bytes);
            read_body(body, limit)
                .await
                .map(|request| (request, BODY_NEEDS_TOKENS))
        }
    }
}

/// Encodes every subscription's position.
pub fn encode_cursor(positions: impl Iterator<Item = ResumePoint>) -> String {
    let owned: Vec<ResumePoint> = positions.collect();
    let entries: Vec<(&str, &str, &str, u64)> = owned
        .iter()
        .map(|p| (&*p.channel.app, &*p.channel.name, &*p.epoch, p.offset))
        .collect();
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&entries).unwrap_or_default())
}

/// Decodes a cursor of at most `limit` bytes into `(app, channel) → since`;
/// a bad cursor is an error.
pub fn decode_cursor(
    cursor: &str,
    limit: usize,
) -> Result<BTreeMap<(String, String), Since>, String> {
    let bad = || "the cursor is not one this gateway issued".to_string();
    if cursor.len() > limit {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
    let entries: Vec<(String, String, String, u64)> =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(entries
        .into_iter()
        .map(|(app, channel, epoch, offset)| ((app, channel), Since { epoch, offset }))
        .collect())
}

/// Where the request's cursor puts each `(app, channel)`; empty without a
/// cursor or with a bad one ([`subscribe_all`] tells the client about it).
pub fn positions(request: &UrlRequest) -> BTreeMap<(String, String), Since> {
    let limit = cursor_limit(&request.tokens);
    request
        .cursor
        .as_deref()
        .and_then(|c| decode_cursor(c, limit).ok())
        .unwrap_or_default()
}

/// Subscribes `session` to every token, resuming from `cursor` where it
/// names the channel; replies (errors, resets, replays, acks) go to `out`.
/// A channel refused (expired token, `unavailable`, a limit) keeps the
/// position the cursor gave it in the session's positions.
pub async fn subscribe_all(session: &mut Session, request: &UrlRequest, out: &mut Vec<Bytes>) {
    let limit = cursor_limit(&request.tokens);
    let since = match request.cursor.as_deref().map(|c| decode_cursor(c, limit)) {
        None => BTreeMap::new(),
        Some(Ok(map)) => map,
        Some(Err(message)) => {
            out.push(server::error(
                ErrorCode::BadMessage,
                &message,
                ErrorContext::default(),
            ));
            BTreeMap::new()
        }
    };
    let mut by_app: BTreeMap<String, BTreeMap<String, ChannelRequest>> = BTreeMap::new();
    for token in &request.tokens {
        let Some((app, Some(channel))) = token::peek_route(token) else {
            out.push(server::error(
                ErrorCode::InvalidToken,
                "token has no readable `app_id` and `channel` claims",
                ErrorContext::default(),
            ));
            continue;
        };
        let resume = since.get(&(app.clone(), channel.clone())).cloned();
        by_app.entry(app).or_default().insert(
            channel,
            ChannelRequest {
                filters: token.clone(),
                since: resume,
            },
        );
    }
    for (app_id, channels) in by_app {
        let resumes: Vec<ResumePoint> = channels
            .iter()
            .filter_map(|(name, request)| {
                let since = request.since.as_ref()?;
                Some(ResumePoint {
                    channel: ChannelId::new(&app_id, name),
                    epoch: Arc::from(since.epoch.as_str()),
                    offset: since.offset,
                })
            })
            .collect();
        session
            .subscribe(Subscribe { app_id, channels }, None, out)
            .await;
        // Kept only where no subscription holds the channel: refused ones.
        for point in resumes {
            session.keep_position(point);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let positions = vec![ResumePoint {
            channel: ChannelId::new("bluelib", "bornes"),
            epoch: "e1".into(),
            offset: 41,
        }];
        let cursor = encode_cursor(positions.into_iter());
        let map = decode_cursor(&cursor, MAX_CURSOR_LEN).expect("valid");
        let since = &map[&("bluelib".to_string(), "bornes".to_string())];
        assert_eq!(since.offset, 41);
        assert_eq!(since.epoch, "e1");
        assert!(decode_cursor("!!", MAX_CURSOR_LEN).is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("{}"), MAX_CURSOR_LEN).is_err());
    }

    #[test]
    fn query_reads_tokens_app_and_timeout() {
        let r = parse_query(Some("cursor=x&app=bluelib")).expect("valid");
        assert!(r.tokens.is_empty());
        assert_eq!(r.app.as_deref(), Some("bluelib"));
        let r = parse_query(Some("sub=a&sub=b&timeout=3")).expect("valid");
        assert_eq!(r.tokens, vec!["a", "b"]);
        assert_eq!(r.wait_secs, Some(3));
        assert_eq!(r.app, None);
        assert!(parse_query(Some("sub=a&timeout=soon")).is_err());
    }

    #[test]
    fn body_says_what_it_expects() {
        let r = parse_body(br#"{"sub": ["a", "b"], "cursor": "c", "timeout": 3, "x": 1}"#)
            .expect("valid");
        assert_eq!(r.tokens, vec!["a", "b"]);
        assert_eq!(r.cursor.as_deref(), Some("c"));
        assert_eq!(r.wait_secs, Some(3));
        assert_eq!(r.app, None);
        let empty = parse_body(br#"{"cursor": "c", "app": "bluelib"}"#).expect("parses");
        assert!(empty.tokens.is_empty());
        assert_eq!(empty.app.as_deref(), Some("bluelib"));
        for bad in [&b"sub=a"[..], br#"{"sub": "a"}"#, br#"{"sub": [1]}"#, b"[]"] {
            let why = parse_body(bad).expect_err("refused");
            assert!(why.contains("\"sub\""), "{why}");
        }
        assert!(body_limit(64 * 1024) > 3 * 64 * 1024);
    }
}
