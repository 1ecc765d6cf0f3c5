//! `GET /admin/switches` (those in force) and `POST /admin/switches` (switch
//! one off, `enabled: false`, or lift it, `enabled: true`).
//!
//! The change itself is `crate::operator::OperatorActions::set_switch`:
//! recorded in Redis and announced to the other nodes (with the Redis
//! broker), written to the state file (when configured) and only then
//! applied, one change at a time; Redis away (503) or a file that cannot be
//! written (500) leaves the switches as they were. Switching off then scans
//! every connection of the node (switches are rare) and signals those
//! holding a covered subscription; each ends them in its own task with
//! `reset` reason `disabled`. `affected_connections` counts this node's.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use chouquette_core::switches::{Switch, SwitchSpec};
use chouquette_core::telemetry::AdminAction;
use serde::Deserialize;
use serde_json::json;

use super::{Operator, Refused, json_body, record};
use crate::gateway::Gateway;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    scope: String,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    user: Option<String>,
    enabled: bool,
}

/// `GET /admin/switches`.
pub async fn list(_: Operator, State(shared): State<Gateway>) -> Response {
    Json(json!({"switches": shared.operator.switches()})).into_response()
}

/// `POST /admin/switches`.
pub async fn change(
    Operator(actor): Operator,
    State(shared): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refused> {
    let (switch, enabled) = parse(body)?;
    let change = shared.operator.set_switch(&switch, enabled).await?;
    let action = if enabled {
        AdminAction::SwitchOn
    } else {
        AdminAction::SwitchOff
    };
    let answer = json!({
        "switch": switch,
        "enabled": enabled,
        "changed": change.changed,
        "affected_connections": change.affected_connections,
    });
    record(&shared, &actor, action, &answer).await;
    Ok(Json(answer).into_response())
}

fn parse(body: Result<Bytes, BytesRejection>) -> Result<(Switch, bool), Refused> {
    let body: Body = json_body(body)?;
    let switch = Switch::parse(&SwitchSpec {
        scope: &body.scope,
        app: body.app.as_deref(),
        channel: body.channel.as_deref(),
        group: body.group.as_deref(),
        user: body.user.as_deref(),
    })
    .map_err(|e| Refused::bad_message(e.to_string()))?;
    Ok((switch, body.enabled))
}
