//! `GET /admin/switches` (those in force) and `POST /admin/switches` (switch
//! one off, `enabled: false`, or lift it, `enabled: true`).
//!
//! A change is computed, recorded in Redis and announced to the other nodes
//! (with the Redis broker: see the cluster module), written to the state
//! file (when configured) and only then applied, one change at a time;
//! Redis away (503) or a file that cannot be written (500) leaves the
//! switches as they were. Switching off then scans every connection of the
//! node (switches are rare) and signals those holding a covered
//! subscription; each ends them in its own task with `reset` reason
//! `disabled`. `affected_connections` counts this node's.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chouquette_core::switches::{Switch, SwitchSpec};
use chouquette_core::telemetry::AdminAction;
use serde::Deserialize;
use serde_json::json;

use super::{Operator, Refused, json_body, known_app, record};
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
    Json(json!({"switches": shared.node.switches.list()})).into_response()
}

/// `POST /admin/switches`.
pub async fn change(
    Operator(actor): Operator,
    State(shared): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refused> {
    let (switch, enabled) = parse(&shared, body)?;
    let (changed, affected) = apply(&shared, &switch, enabled).await?;
    let action = if enabled {
        AdminAction::SwitchOn
    } else {
        AdminAction::SwitchOff
    };
    let answer = json!({
        "switch": switch,
        "enabled": enabled,
        "changed": changed,
        "affected_connections": affected,
    });
    record(&shared, &actor, action, &answer).await;
    Ok(Json(answer).into_response())
}

fn parse(shared: &Gateway, body: Result<Bytes, BytesRejection>) -> Result<(Switch, bool), Refused> {
    let body: Body = json_body(body)?;
    let switch = Switch::parse(&SwitchSpec {
        scope: &body.scope,
        app: body.app.as_deref(),
        channel: body.channel.as_deref(),
        group: body.group.as_deref(),
        user: body.user.as_deref(),
    })
    .map_err(|e| Refused::bad_message(e.to_string()))?;
    if let Some(app) = &switch.app {
        known_app(shared, app)?;
    }
    Ok((switch, body.enabled))
}

/// Persists then applies the change (Redis and the other nodes first, when
/// shared; then the state file); false when it changes nothing here.
async fn apply(shared: &Gateway, switch: &Switch, enabled: bool) -> Result<(bool, usize), Refused> {
    let _one_at_a_time = shared.admin.changes.lock().await;
    let switches = &shared.node.switches;
    let next = switches.with_change(switch, enabled);
    if let Some(cluster) = &shared.admin.cluster
        && let Err(e) = cluster.switch(switch, enabled).await
    {
        return Err(Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("cannot reach the other nodes through Redis, nothing changed: {e}"),
        ));
    }
    let Some(next) = next else {
        return Ok((false, 0));
    };
    if let Some(store) = &shared.admin.store
        && let Err(e) = store.save(next).await
    {
        tracing::error!(error = %e, "cannot write the kill switch state file");
        return Err(Refused::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unavailable",
            format!("cannot write the state file, nothing changed: {e}"),
        ));
    }
    Ok(shared.node.apply_switch(switch, enabled))
}
