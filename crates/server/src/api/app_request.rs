//! What every app route of the internal API (`/api/v1/subscriptions`,
//! `/api/v1/calls`, `/api/v1/users/send`, `/api/v1/lattices`,
//! `/api/v1/notify`) does before
//! its own work, in one order: the key must be given (else 401), the body
//! readable (its size, its framing) and JSON with a string `app_id`, and the
//! key that app's (else the same 403 `not_allowed` for an unknown app and a
//! wrong key, so app ids cannot be listed without a key). Only then are the
//! route's own fields checked (400 `bad_message`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{bearer, error_response};
use crate::gateway::Gateway;

/// Why a request is refused before the route does anything.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// No `Authorization: Bearer` header (401).
    #[error("missing `Authorization: Bearer <api key>`")]
    NoKey,
    /// An unknown app or a wrong key, told apart by nobody (403).
    #[error("unknown app or wrong API key")]
    WrongKey,
    /// The body could not be read (its size, its framing).
    #[error("{1}")]
    Body(StatusCode, String),
    /// A bad field (400 `bad_message`).
    #[error("{0}")]
    Bad(String),
    /// Over a bound the gateway keeps (507 `too_large`); nothing was done.
    #[error("{0}")]
    TooLarge(String),
    /// `data` over `limits.max_publish_bytes` (413 `bad_message`), as a
    /// publish of it would be.
    #[error("`data` larger than {0} bytes")]
    DataTooLarge(usize),
}

impl Refused {
    /// The JSON error answer.
    pub(crate) fn response(&self) -> Response {
        let message = self.to_string();
        let (status, code) = match self {
            Refused::NoKey => (StatusCode::UNAUTHORIZED, "not_allowed"),
            Refused::WrongKey => (StatusCode::FORBIDDEN, "not_allowed"),
            Refused::Body(status, _) => (*status, "bad_message"),
            Refused::Bad(_) => (StatusCode::BAD_REQUEST, "bad_message"),
            Refused::TooLarge(_) => (StatusCode::INSUFFICIENT_STORAGE, "too_large"),
            Refused::DataTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "bad_message"),
        };
        error_response(status, code, &message)
    }
}

/// A 400 `bad_message` with this message.
pub(crate) fn bad(message: impl Into<String>) -> Refused {
    Refused::Bad(message.into())
}

/// The one field read before the key is checked.
#[derive(Deserialize)]
struct Named {
    app_id: Value,
}

/// The body of an app route, once its caller is known to hold the key of
/// the app it names: that app's id and the body's bytes, which the route
/// reads into its own shape.
pub(crate) fn authenticated(
    shared: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Bytes), Refused> {
    let Some(key) = bearer(headers) else {
        return Err(Refused::NoKey);
    };
    let body = body.map_err(|r| Refused::Body(r.status(), r.body_text()))?;
    let named: Named = serde_json::from_slice(&body).map_err(|e| bad(format!("body: {e}")))?;
    let Value::String(app) = named.app_id else {
        return Err(bad("`app_id` must be a string"));
    };
    let known = shared.node.apps().get(&app);
    if !known.is_some_and(|a| a.accepts_api_key(key)) {
        return Err(Refused::WrongKey);
    }
    Ok((app, body))
}
