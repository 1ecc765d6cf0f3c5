//! Backend-driven subscriptions on the internal listener (PROTOCOL.md
//! section 10): `POST /api/v1/subscriptions` subscribes every connection of
//! a user, on every node, now and at its later `connect`s, until `DELETE`
//! revokes it.
//!
//! The caller is authenticated before anything else is checked: no
//! `Authorization` is 401, an unknown app or a wrong key the same 403
//! `not_allowed` (app ids are not listed without a key), as the publish API
//! answers. Then 400 `bad_message` for a bad user, channel or filters, 503
//! `unavailable` when the broker cannot store the grant, 507
//! `too_many_subscriptions` past the per-user bound. `200 {"connections": N}`
//! counts the user's connections on the node that answered.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chouquette_core::broker::{BrokerError, UNAVAILABLE_MESSAGE};
use chouquette_core::filter::Filter;
use chouquette_core::publication::valid_name;
use chouquette_core::user_mail::MAX_USER_BYTES;
use serde_json::Value;

use crate::api::app_request::{Refused, authenticated, bad};
use crate::api::error_response;
use crate::gateway::Gateway;

/// A request, checked.
struct Request {
    app: String,
    user: String,
    channel: String,
    filters: Option<Value>,
}

/// A required string field of `body`.
fn text<'a>(body: &'a Value, field: &str) -> Result<&'a str, Refused> {
    body.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("`{field}` must be a string")))
}

/// Reads the body and authenticates the caller for its app; with
/// `subscribe`, the filters are required and checked.
fn read(
    shared: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    subscribe: bool,
) -> Result<Request, Refused> {
    let (app, body) = authenticated(shared, headers, body)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let user = text(&body, "user")?;
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Err(bad(format!("`user` must have 1 to {MAX_USER_BYTES} bytes")));
    }
    let channel = text(&body, "channel")?;
    if !valid_name(channel) {
        return Err(bad("invalid channel name"));
    }
    let filters = if subscribe {
        let filters = body
            .get("filters")
            .ok_or_else(|| bad("`filters` is missing"))?;
        Filter::parse(filters).map_err(|e| bad(format!("filters: {e}")))?;
        Some(filters.clone())
    } else {
        None
    };
    Ok(Request {
        app: app.to_string(),
        user: user.to_string(),
        channel: channel.to_string(),
        filters,
    })
}

/// `POST /api/v1/subscriptions`.
pub async fn subscribe(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    apply(&shared, &headers, body, true).await
}

/// `DELETE /api/v1/subscriptions`.
pub async fn unsubscribe(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    apply(&shared, &headers, body, false).await
}

async fn apply(
    shared: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    subscribe: bool,
) -> Response {
    let request = match read(shared, headers, body, subscribe) {
        Ok(request) => request,
        Err(refused) => return refused.response(),
    };
    let reached = shared
        .node
        .backend_subscription(
            &request.app,
            &request.user,
            &request.channel,
            request.filters,
        )
        .await;
    match reached {
        Ok(n) => Json(serde_json::json!({ "connections": n })).into_response(),
        Err(BrokerError::TooManyGrants(max)) => error_response(
            StatusCode::INSUFFICIENT_STORAGE,
            "too_many_subscriptions",
            &format!("this user already holds {max} backend subscriptions"),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "backend subscription refused: the broker failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                UNAVAILABLE_MESSAGE,
            )
        }
    }
}
