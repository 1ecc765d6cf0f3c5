//! `POST /api/v1/devices/commands`: a backend calls one device and gets its
//! answer (docs/devices.md "Commands"). The device is tried over WebSocket
//! first, then over MQTT where its app has a command route
//! ([`crate::device_commands`]).
//!
//! Answers, like `POST /api/v1/calls` (the HTTP status says what the
//! gateway did, the body what the device answered), each with the
//! `transport` that carried the command:
//! - `200 {"result": ..., "transport"}` or `200 {"error": {"code",
//!   "message"}, "transport"}`: the device answered;
//! - `404 {"code": "offline", "message", "last_seen": "..." | null,
//!   "transport"}`: not connected, at once;
//! - `504 {"code": "timeout", ...}`: sent, no answer in time;
//! - `429 rate_limited` past the device's commands waiting, `503
//!   unavailable` past the node's, or a broker (ours, MQTT) away;
//! - first 401/403 for the key, then 400 `bad_message` for a field.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chouquette_core::publication::valid_name;
use chouquette_core::user_calls::ClientAnswer;
use chouquette_core::user_mail::MAX_USER_BYTES;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::api::app_request::{Refused, authenticated, bad};
use crate::api::users::timeout;
use crate::device_commands::{Command, Failure, Transport};
use crate::gateway::Gateway;
use crate::source::mqtt::commands::valid_device_level;

/// A command request (after `app_id`).
#[derive(Deserialize)]
struct CommandBody {
    device: Value,
    method: String,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    #[serde(default)]
    timeout: Option<String>,
}

/// `POST /api/v1/devices/commands`.
pub async fn command(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let checked = authenticated(&shared, &headers, body).and_then(|(app, body)| {
        let body: CommandBody =
            serde_json::from_slice(&body).map_err(|e| bad(format!("body: {e}")))?;
        let device = checked_device(&shared, &app, &body.device)?;
        if !valid_name(&body.method) {
            return Err(bad("invalid `method`"));
        }
        let timeout = timeout(body.timeout.as_deref())?;
        Ok((app, device, body, timeout))
    });
    let (app, device, body, timeout) = match checked {
        Ok(checked) => checked,
        Err(refused) => return refused.response(),
    };
    let command = Command {
        app: &app,
        device: &device,
        method: &body.method,
        args: &body.args,
        kwargs: &body.kwargs,
        timeout,
    };
    let (transport, answered) = shared.device_commands.send(&shared.node, command).await;
    match answered {
        Ok(ClientAnswer::Result(result)) => passed_through(&result, transport),
        Ok(ClientAnswer::Error { code, message }) => Json(json!({
            "error": { "code": code, "message": message },
            "transport": transport.as_str(),
        }))
        .into_response(),
        Err(failure) => refused(&failure, transport),
    }
}

/// The device id: 1 to [`MAX_USER_BYTES`] bytes, and usable as one topic
/// level when its app's commands may go over MQTT.
fn checked_device(shared: &Gateway, app: &str, device: &Value) -> Result<String, Refused> {
    let device = match device {
        Value::String(d) if !d.is_empty() && d.len() <= MAX_USER_BYTES => d.clone(),
        _ => {
            return Err(bad(format!(
                "`device` must be a string of 1 to {MAX_USER_BYTES} bytes"
            )));
        }
    };
    if shared.device_commands.has_mqtt(app) && !valid_device_level(&device) {
        return Err(bad(
            "`device` is an MQTT topic level for this app: no `/`, `+`, `#`, no leading `$`",
        ));
    }
    Ok(device)
}

/// The gateway's own answer for `failure`: `{"code", "message", ...}`.
fn refused(failure: &Failure, transport: Transport) -> Response {
    let message = failure.to_string();
    let mut body = json!({ "message": message, "transport": transport.as_str() });
    let status = match failure {
        Failure::Offline { last_seen } => {
            body["code"] = json!("offline");
            body["last_seen"] = last_seen.map_or(Value::Null, |at| {
                Value::String(chouquette_protocol::server::timestamp(at))
            });
            StatusCode::NOT_FOUND
        }
        Failure::Timeout => {
            body["code"] = json!("timeout");
            StatusCode::GATEWAY_TIMEOUT
        }
        Failure::Busy(_) => {
            body["code"] = json!("rate_limited");
            StatusCode::TOO_MANY_REQUESTS
        }
        Failure::Unavailable(_) => {
            body["code"] = json!("unavailable");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    (status, Json(body)).into_response()
}

/// `{"result": ..., "transport"}` with the device's JSON as it wrote it.
fn passed_through(result: &RawValue, transport: Transport) -> Response {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        result: &'a RawValue,
        transport: &'a str,
    }
    Json(Answer {
        result,
        transport: transport.as_str(),
    })
    .into_response()
}
