//! Notifications to users (PROTOCOL.md section 8, docs/notifications.md):
//! `POST /api/v1/notify` on the internal listener, and `POST
//! /notifications/ack` on the public one (SSE and long-poll clients
//! acknowledging with their connect token).
//!
//! `/api/v1/notify` authenticates first, as the other `/api/v1` routes (no
//! key 401, an unknown app or a wrong key the same 403 `not_allowed`),
//! then: 400 `bad_message` for a malformed body or a field past its bound
//! (the message names it); 413 `bad_message` for a `data` larger than
//! `max_publish_bytes`; 507 `too_large` when the memory broker keeps its
//! maximum of users; 503 `unavailable` when the broker fails (retry with
//! the same `id`). `200 {"id": "n-..."}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chouquette_core::broker::{BrokerError, UNAVAILABLE_MESSAGE};
use chouquette_core::clock::unix_now;
use chouquette_core::notifications::{
    self, MAX_BODY_BYTES, MAX_LINK_BYTES, MAX_TITLE_BYTES, MAX_USERS_PER_NOTIFY, Notify,
    NotifyRefusal, NotifyRequest,
};
use chouquette_core::session::authorize::{TokenClock, identify};
use chouquette_core::session::notifications::check_ack_ids;
use chouquette_core::token::peek_route;
use chouquette_core::user_mail::MAX_USER_BYTES;
use chouquette_protocol::client::NotificationAck;

use crate::api::app_request::{Refused, authenticated};
use crate::api::{bearer, error_response};
use crate::gateway::Gateway;

/// The body limit of `/api/v1/notify`: `max_publish_bytes` for `data`,
/// plus room for the most users of the longest ids and the longest texts.
pub fn body_limit(max_publish_bytes: usize) -> usize {
    max_publish_bytes
        + MAX_USERS_PER_NOTIFY * (MAX_USER_BYTES + 8)
        + MAX_TITLE_BYTES
        + MAX_BODY_BYTES
        + MAX_LINK_BYTES
        + 4_096
}

/// The body limit of `POST /notifications/ack`: the most ids, each of the
/// longest.
pub const ACK_BODY_LIMIT: usize = 80 * notifications::MAX_ACK_IDS + 1_024;

fn bad(message: String) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_message", &message)
}

/// Reads and checks the body, the caller authenticated for its app (the
/// checks are the inbox's too: `NotifyRequest`).
fn read(
    shared: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Notify), Refused> {
    let (_, body) = authenticated(shared, headers, body)?;
    let body: NotifyRequest = serde_json::from_slice(&body).map_err(|e| {
        Refused::Bad(format!(
            "body: expected {{\"app_id\", \"users\", \"kind\", \"title\", \"body\", \"link\", \"data\", \"id\"}} ({e})"
        ))
    })?;
    body.check(shared.max_publish_bytes)
        .map_err(|refusal| match refusal {
            NotifyRefusal::DataTooLarge(max) => Refused::DataTooLarge(max),
            other => Refused::Bad(other.to_string()),
        })
}

/// `POST /api/v1/notify`.
pub async fn notify(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (app, request) = match read(&shared, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused.response(),
    };
    // The offline fallback hears of it in `notify` (Notifier's scheduler).
    match notifications::notify(&shared.node, &app, request).await {
        Ok(id) => Json(serde_json::json!({ "id": id })).into_response(),
        Err(e @ BrokerError::TooManyNotifiedUsers(_)) => error_response(
            StatusCode::INSUFFICIENT_STORAGE,
            "too_large",
            &e.to_string(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "notification refused: the broker failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                UNAVAILABLE_MESSAGE,
            )
        }
    }
}

/// `POST /notifications/ack` (public listener): `Authorization: Bearer
/// <connect token>`, body `{"ids": [...]}`. 401 `invalid_token` without a
/// valid connect token (one with `app_id` and `sub`, signed by the app);
/// 400 `bad_message` for a bad body; 503 `unavailable`; 200 `{"acked": N}`
/// (notifications removed; 0 when already gone).
pub async fn public_ack(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let unauthorized = |why: &str| error_response(StatusCode::UNAUTHORIZED, "invalid_token", why);
    let Some(token) = bearer(&headers) else {
        return unauthorized("missing `Authorization: Bearer <connect token>`");
    };
    let Some(app) = peek_route(token).and_then(|(app, _)| shared.node.apps().get(&app).cloned())
    else {
        return unauthorized("not a connect token of a known app");
    };
    let clock = TokenClock {
        now: unix_now(),
        leeway: shared.node.session_limits().token_leeway,
    };
    let identity = match identify(&app, token, clock) {
        Ok(identity) => identity,
        Err(r) => return unauthorized(&r.message),
    };
    let body = match body {
        Ok(body) => body,
        Err(r) => return error_response(r.status(), "bad_message", &r.body_text()),
    };
    let ack: NotificationAck = match serde_json::from_slice(&body) {
        Ok(ack) => ack,
        Err(e) => return bad(format!("body: expected {{\"ids\": [...]}} ({e})")),
    };
    if let Err(why) = check_ack_ids(&ack.ids) {
        return bad(why);
    }
    match notifications::acknowledge(&shared.node, &app.id, &identity.user, ack.ids).await {
        Ok(acked) => Json(serde_json::json!({ "acked": acked })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "notification acknowledgement failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                UNAVAILABLE_MESSAGE,
            )
        }
    }
}
