//! Backends addressing one user on the internal listener (docs/rpc.md,
//! "Calls to clients"; docs/protocol.md, "Messages to a user"):
//!
//! - `POST /api/v1/calls` calls the user's connections and answers with the
//!   first client's answer: `200 {"result": ...}` for a `result`,
//!   `200 {"error": {"code", "message"}}` for a client's `error` (the call
//!   went through: the HTTP status says what the gateway did, the body what
//!   the client answered); the gateway's own refusals are its usual
//!   `{"code", "message"}`: `404 not_connected` at once when the user has
//!   no connection on any node, `504 timeout` when nobody answered in time,
//!   `429 rate_limited` past the user's calls waiting, `503 unavailable`
//!   past the node's or when the broker is away.
//! - `POST /api/v1/users/send` writes a `message` to every connection of
//!   the user, on every node, best effort and not stored; `200
//!   {"connections": N, "nodes": K}`: N of the user's connections on the
//!   node that answered, K nodes that heard it.
//!
//! The caller is authenticated before anything else is checked, as the
//! other `/api/v1` routes do: no key 401, an unknown app or a wrong key the
//! same 403 `not_allowed`; then 400 `bad_message` for a bad field.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chouquette_core::broker::UNAVAILABLE_MESSAGE;
use chouquette_core::publication::valid_name;
use chouquette_core::user_calls::{
    self, CallFailure, ClientAnswer, DEFAULT_TIMEOUT, MAX_TIMEOUT, UserCall,
};
use chouquette_core::user_mail::MAX_USER_BYTES;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::api::app_request::{Refused, authenticated, bad};
use crate::api::error_response;
use crate::gateway::Gateway;

/// The user a request addresses, read once its caller is authenticated.
#[derive(Deserialize)]
struct Addressed {
    user: Value,
}

/// Reads `body` as JSON of shape `T` after checking the key for its app
/// and its user; returns the app, the user and the body.
fn read<T: serde::de::DeserializeOwned>(
    shared: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, String, T), Refused> {
    let (app, body) = authenticated(shared, headers, body)?;
    let addressed: Addressed =
        serde_json::from_slice(&body).map_err(|e| bad(format!("body: {e}")))?;
    let user = match addressed.user {
        Value::String(user) if !user.is_empty() && user.len() <= MAX_USER_BYTES => user,
        _ => {
            return Err(bad(format!(
                "`user` must be a string of 1 to {MAX_USER_BYTES} bytes"
            )));
        }
    };
    let rest: T = serde_json::from_slice(&body).map_err(|e| bad(format!("body: {e}")))?;
    Ok((app, user, rest))
}

/// The rest of a call request.
#[derive(Deserialize)]
struct CallBody {
    method: String,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    #[serde(default)]
    timeout: Option<String>,
}

/// `timeout`: a duration such as `"5s"` or `"1500ms"`, up to
/// [`MAX_TIMEOUT`]; [`DEFAULT_TIMEOUT`] when absent.
pub(crate) fn timeout(given: Option<&str>) -> Result<Duration, Refused> {
    let Some(given) = given else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let max = MAX_TIMEOUT.as_secs();
    let wrong = || {
        bad(format!(
            "`timeout` must be a duration such as \"5s\", at most {max}s"
        ))
    };
    let timeout = humantime::parse_duration(given).map_err(|_| wrong())?;
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(wrong());
    }
    Ok(timeout)
}

/// `POST /api/v1/calls`.
pub async fn call(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let checked = read::<CallBody>(&shared, &headers, body).and_then(|(app, user, body)| {
        if !valid_name(&body.method) {
            return Err(bad("invalid `method`"));
        }
        let timeout = timeout(body.timeout.as_deref())?;
        Ok((app, user, body, timeout))
    });
    let (app, user, body, timeout) = match checked {
        Ok(checked) => checked,
        Err(refused) => return refused.response(),
    };
    let call = UserCall {
        app: &app,
        user: &user,
        method: &body.method,
        args: &body.args,
        kwargs: &body.kwargs,
        timeout,
    };
    match user_calls::call_user(&shared.node, call).await {
        Ok(ClientAnswer::Result(result)) => passed_through(&result),
        Ok(ClientAnswer::Error { code, message }) => {
            answer(&json!({ "error": { "code": code, "message": message } }))
        }
        Err(CallFailure::NotConnected) => error_response(
            StatusCode::NOT_FOUND,
            "not_connected",
            "the user has no connection",
        ),
        Err(CallFailure::Timeout) => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "no connection of the user answered in time",
        ),
        Err(e @ CallFailure::UserBusy(_)) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &e.to_string(),
        ),
        Err(e @ CallFailure::NodeBusy(_)) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
        // Logged by `call_user`.
        Err(CallFailure::Broker(_)) => unavailable(),
    }
}

/// The rest of a message to a user.
#[derive(Deserialize)]
struct SendBody {
    event_kind: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// `POST /api/v1/users/send`.
pub async fn send(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let checked = read::<SendBody>(&shared, &headers, body).and_then(|(app, user, body)| {
        if !valid_name(&body.event_kind) {
            return Err(bad("invalid `event_kind`"));
        }
        let max = shared.node.max_data_bytes();
        if body.data.as_ref().is_some_and(|d| d.get().len() > max) {
            return Err(bad(format!("`data` is larger than {max} bytes")));
        }
        Ok((app, user, body))
    });
    let (app, user, body) = match checked {
        Ok(checked) => checked,
        Err(refused) => return refused.response(),
    };
    let null = RawValue::NULL;
    let data = body.data.as_deref().unwrap_or(null);
    let sent = user_calls::send_to_user(&shared.node, &app, &user, &body.event_kind, data).await;
    match sent {
        Ok((connections, nodes)) => answer(&json!({ "connections": connections, "nodes": nodes })),
        Err(e) => {
            tracing::warn!(error = %e, "message to a user refused: the broker failed");
            unavailable()
        }
    }
}

/// `{"result": ...}` with the client's JSON as it wrote it, byte for byte
/// (turning it into a `Value` could refuse a number such as `1e400`).
fn passed_through(result: &RawValue) -> Response {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        result: &'a RawValue,
    }
    Json(Answer { result }).into_response()
}

fn answer(body: &Value) -> Response {
    Json(body).into_response()
}

fn unavailable() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        UNAVAILABLE_MESSAGE,
    )
}
