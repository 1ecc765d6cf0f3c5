//! The admin API (`/admin/...` on the internal listener): status, stats, kill
//! switches, disconnects, connection listings and test publishes, and the
//! operator console page that drives them (`console`).
//!
//! Every route but the console's static files requires `Authorization:
//! Bearer <[admin] key>`, compared in constant time: no header is 401, a
//! wrong key 403 (`not_allowed`). Without `[admin] key` configured, every
//! `/admin` data route answers 404 with a JSON error saying so. Each action
//! is audited (`crate::audit`) and counted.
//!
//! The handlers only parse, call the operator actions (`crate::operator`,
//! which own the checks, the order and the propagation to other nodes), map
//! an `OperatorError` to an answer, audit and answer.

mod console;
mod status;
mod switches;
mod users;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chouquette_core::node::Node;
use chouquette_core::telemetry::AdminAction;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error_response;
use crate::audit::{Actor, operator_name};
use crate::gateway::Gateway;
use crate::operator::{Access, OperatorError};

/// The admin routes; `body_limit` bounds `/admin/publish` like `/api/v1/publish`.
pub fn router(body_limit: DefaultBodyLimit) -> Router<Gateway> {
    Router::new()
        .route("/admin", get(console::redirect))
        .route("/admin/", get(console::index))
        .route("/admin/console.js", get(console::script))
        .route("/admin/console.css", get(console::style))
        .route("/admin/status", get(status::status))
        .route("/admin/stats", get(console::stats))
        .route(
            "/admin/switches",
            get(switches::list).post(switches::change),
        )
        .route("/admin/disconnect", post(users::disconnect))
        .route("/admin/connections", get(users::connections))
        .route("/admin/publish", post(publish).layer(body_limit))
}

/// A refused admin request: status, error code and message, answered as
/// the internal API's JSON error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_message(message: impl Into<String>) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, "bad_message", message)
    }
}

impl From<OperatorError> for Refused {
    fn from(error: OperatorError) -> Refused {
        let (status, code) = match &error {
            OperatorError::UnknownApp => (StatusCode::NOT_FOUND, "unknown_app"),
            OperatorError::EmptyUser => (StatusCode::BAD_REQUEST, "bad_message"),
            OperatorError::SwitchNotShared(_) | OperatorError::DisconnectNotShared(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            OperatorError::StateFile(_) => (StatusCode::INTERNAL_SERVER_ERROR, "unavailable"),
        };
        Refused::new(status, code, error.to_string())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error_response(self.status, self.code, &self.message)
    }
}

/// The optional header naming the operator, self-declared (see
/// [`operator_name`]).
const OPERATOR_HEADER: &str = "x-operator";

/// An authorized operator: the extractor that guards every admin route.
pub struct Operator(pub Actor);

impl FromRequestParts<Gateway> for Operator {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, shared: &Gateway) -> Result<Operator, Refused> {
        let refuse = |status, message| {
            shared.node.telemetry().admin_denied();
            Err(Refused::new(status, "not_allowed", message))
        };
        match shared.admin.check(super::bearer(&parts.headers)) {
            Access::Off => Err(Refused::new(
                StatusCode::NOT_FOUND,
                "not_allowed",
                "the admin API is off: no `[admin] key` is configured",
            )),
            Access::Missing => refuse(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <admin key>`",
            ),
            Access::Wrong => refuse(StatusCode::FORBIDDEN, "wrong admin key"),
            Access::Granted(who) => {
                let remote = parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
                let operator = match parts.headers.get(OPERATOR_HEADER) {
                    None => None,
                    Some(value) => Some(
                        operator_name(value.as_bytes())
                            .map_err(|e| Refused::bad_message(e.to_string()))?,
                    ),
                };
                Ok(Operator(Actor {
                    who,
                    operator,
                    remote,
                }))
            }
        }
    }
}

/// Parses a JSON body strictly; a bad one is 400 `bad_message`.
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Refused> {
    let body = body.map_err(|r| Refused::new(r.status(), "bad_message", r.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| Refused::bad_message(e.to_string()))
}

/// The broker as the status and stats answers show it.
#[derive(Serialize)]
struct BrokerAnswer {
    kind: &'static str,
    connected: bool,
}

impl BrokerAnswer {
    fn of(node: &Node) -> BrokerAnswer {
        BrokerAnswer {
            kind: node.broker().kind(),
            connected: node.broker().connected(),
        }
    }
}

/// Counts and audits one action.
async fn record(shared: &Gateway, actor: &Actor, action: AdminAction, detail: &Value) {
    shared.node.telemetry().admin_action(action);
    shared.admin.audit().record(actor, action, detail).await;
}

/// `POST /admin/publish`: a test publish, same body and answer as
/// `/api/v1/publish`, authorized by the admin key instead of the app's.
async fn publish(
    Operator(actor): Operator,
    State(shared): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let summary = body
        .as_ref()
        .ok()
        .map_or(Value::Null, |b| publish_summary(b));
    let response =
        crate::source::http::publish_as(&shared, crate::source::http::Caller::Trusted, body).await;
    let detail = json!({"status": response.status().as_u16(), "events": summary});
    record(&shared, &actor, AdminAction::Publish, &detail).await;
    response
}

/// For the audit line: app, channel and kind of (at most 16 of) the events.
fn publish_summary(body: &[u8]) -> Value {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Value::Null;
    };
    let events = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    events
        .iter()
        .take(16)
        .map(|e| json!({"app_id": e["app_id"], "channel": e["channel"], "event_kind": e["event_kind"]}))
        .collect()
}
