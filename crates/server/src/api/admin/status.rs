//! `GET /admin/status`: what this node is and holds now. Every count is an
//! atomic read (per-app gauges are kept in telemetry as connections come
//! and go), so asking is cheap.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chouquette_core::telemetry::AppCounts;
use chouquette_core::telemetry::clock_skew::{DeviceSkew, TOP_DEVICES};
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
    devices: Devices,
    /// Each XMPP federation component: link, mailboxes, counts (docs/federation.md).
    federation: Vec<serde_json::Value>,
}

/// Device clocks (docs/devices.md, "Last known state, late messages and
/// clock skew"): how many are tracked, and the most skewed.
#[derive(Serialize)]
struct Devices {
    clock_skew_tracked: usize,
    most_skewed: Vec<DeviceSkew>,
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
        devices: Devices {
            clock_skew_tracked: node.telemetry().clock_skew.tracked(),
            most_skewed: node.telemetry().clock_skew.top(TOP_DEVICES),
        },
        federation: shared.xmpp.json(),
    })
    .into_response()
}
