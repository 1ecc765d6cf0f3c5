//! One user's connections on this node: `GET /admin/connections?app=&user=`
//! lists them, `POST /admin/disconnect` closes them.
//!
//! A connection belongs to a user of an app when its `connect` identity is
//! that user, or any of its subscriptions' tokens has that `sub`. Finding
//! them scans the node's connections (operator actions are rare); a
//! disconnect reaches the other nodes first (`crate::operator`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use chouquette_core::telemetry::AdminAction;
use chouquette_protocol::server::timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Operator, Refused, json_body, record};
use crate::gateway::Gateway;

/// Longest close reason sent, in bytes (a close frame holds 123).
pub const MAX_REASON_BYTES: usize = 120;

const DEFAULT_REASON: &str = "disconnected by an operator";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    app: String,
    user: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    app: String,
    user: String,
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `POST /admin/disconnect`: answers `{"disconnected": N}`.
pub async fn disconnect(
    Operator(actor): Operator,
    State(shared): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refused> {
    let body: DisconnectBody = json_body(body)?;
    let reason = truncate(
        body.reason.as_deref().unwrap_or(DEFAULT_REASON),
        MAX_REASON_BYTES,
    );
    let done = shared
        .operator
        .disconnect(&body.app, &body.user, reason)
        .await?;
    let (disconnected, nodes) = (done.here, done.nodes);
    let detail = json!({"app": body.app, "user": body.user, "reason": reason,
                        "disconnected": disconnected, "nodes": nodes});
    record(&shared, &actor, AdminAction::Disconnect, &detail).await;
    Ok(Json(json!({"disconnected": disconnected, "nodes": nodes})).into_response())
}

/// `GET /admin/connections?app=...&user=...`.
pub async fn connections(
    _: Operator,
    State(shared): State<Gateway>,
    RawQuery(query): RawQuery,
) -> Result<Response, Refused> {
    let query: UserQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| Refused::bad_message(format!("expected `?app=...&user=...`: {e}")))?;
    let found = shared.operator.user_connections(&query.app, &query.user)?;
    let node = &shared.node.id();
    let list: Vec<Value> = found
        .iter()
        .map(|c| {
            let s = c.summary(&query.app);
            json!({"id": s.id, "node": node, "transport": s.transport.as_str(),
                   "since": timestamp(s.since), "subscriptions": s.channels})
        })
        .collect();
    Ok(Json(json!({"node": node, "connections": list})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("é", 1), "");
        assert_eq!(truncate(&"x".repeat(300), MAX_REASON_BYTES).len(), 120);
    }
}
