//! `GET /admin/status`: what this node is and holds now. Every count is an
//! atomic read (per-app gauges are kept in telemetry as connections come
//! and go), so asking is cheap.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chouquette_core::telemetry::AppCounts;
use serde::Serialize;

use super::{BrokerAnswer, Operator};
use crate::gateway::Gateway;

#[derive(Serialize)]
struct Status {
    version: &'static str,
    node: Arc<str>,
    uptime_s: u64,
    broker: BrokerAnswer,
    connections: i64,
    subscriptions: i64,
    switches: usize,
    apps: BTreeMap<Arc<str>, AppCounts>,
}

/// The handler.
pub async fn status(_: Operator, State(shared): State<Gateway>) -> Response {
    let node = &shared.node;
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        node: node.id().clone(),
        uptime_s: shared.admin.uptime().as_secs(),
        broker: BrokerAnswer::of(node),
        connections: node.telemetry().connections(),
        subscriptions: node.telemetry().subscriptions(),
        switches: node.switches().len(),
        apps: node.telemetry().app_counts(),
    })
    .into_response()
}
