//! Connect auth at a transport's upgrade (see [`crate::connect_auth`]):
//! when it applies to the request, the session is built and given the
//! backend's identity and subscriptions before the upgrade is answered, so
//! a refusal is the HTTP answer itself (401, 403, 429, 503) and an accepted
//! connection starts with `connected`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use chouquette_core::connections::Transport;
use chouquette_core::session::Session;
use chouquette_core::session::connect_auth::Resume;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::client::Since;

use crate::connect_auth::Outcome;
use crate::gateway::Gateway;
use crate::http_error::error_response;

/// A session accepted by connect auth, and what it says first.
pub(crate) type Prepared = (Session, Vec<Bytes>);

/// Runs connect auth for a request over `transport` naming `app` (`?app=`)
/// when it applies: `Ok(None)` when it does not (the transport proceeds as
/// without it), the accepted session with its opening messages, or the
/// refusal to answer. `since` is where a URL transport's cursor puts each
/// `(app, channel)`.
pub(crate) async fn prepare(
    shared: &Gateway,
    transport: Transport,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    app: Option<&str>,
    since: &BTreeMap<(String, String), Since>,
) -> Result<Option<Prepared>, Response> {
    let auth = &shared.connect_auth;
    let node = &shared.node;
    let target = match auth.select(app, node.apps()) {
        Ok(Some(target)) => target,
        Ok(None) => return Ok(None),
        Err(refusal) => return Err(*refusal),
    };
    let Some(app) = node.apps().get(&target.app).cloned() else {
        // The config built both from the same apps: never taken.
        return Err(unavailable());
    };
    let secret = app.secrets.first().map_or(&[][..], Vec::as_slice);
    let accepted = auth
        .authenticate(
            target,
            secret,
            app.limits.max_subscriptions,
            (transport, peer, headers),
        )
        .await
        .map_err(|refusal| *refusal)?;
    let resume: Resume = since
        .iter()
        .filter(|((a, _), _)| *a == *app.id)
        .map(|((_, channel), since)| (channel.clone(), since.clone()))
        .collect();
    let mut session = Session::new(node.clone(), transport);
    let mut opening = Vec::new();
    let identity = accepted.identity;
    match session
        .accept_identity(identity, accepted.subscriptions, &resume, &mut opening)
        .await
    {
        Ok(()) => Ok(Some((session, opening))),
        Err(refusal) if refusal.code == ErrorCode::RateLimited => {
            target.count(Outcome::UserLimit);
            tracing::info!(app = %app.id, "connect auth: refused, the user holds the app's limit of connections");
            Err(error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &refusal.message,
            ))
        }
        Err(refusal) => {
            tracing::warn!(app = %app.id, error = %refusal, "connect auth: refused");
            Err(unavailable())
        }
    }
}

fn unavailable() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the app's authentication backend is unavailable",
    )
}
