//! Several gateways on one Redis (`[broker] kind = "redis"`), each test on
//! a `redis-server` of its own that it may kill and restart: cross-node
//! delivery in offset order, resume on another node, outages told to
//! clients, the Redis inbox published exactly once across gateways, and the
//! key layout on a Redis Cluster and failover through Sentinel.

#![allow(clippy::unwrap_used)]

#[path = "redis/admin.rs"]
mod admin;
#[path = "redis/client_calls.rs"]
mod client_calls;
#[path = "redis/client_publish.rs"]
mod client_publish;
#[path = "redis/connect_auth.rs"]
mod connect_auth;
#[path = "redis/device_state.rs"]
mod device_state;
#[path = "redis/devices.rs"]
mod devices;
#[path = "redis/epochs.rs"]
mod epochs;
#[path = "redis/fallback.rs"]
mod fallback;
#[path = "redis/inbox.rs"]
mod inbox;
#[path = "redis/inbox_notifications.rs"]
mod inbox_notifications;
#[path = "redis/lattices.rs"]
mod lattices;
#[path = "redis/messages.rs"]
mod messages;
#[path = "redis/nodes.rs"]
mod nodes;
#[path = "redis/notifications.rs"]
mod notifications;
#[path = "redis/outage.rs"]
mod outage;
#[path = "redis/presence.rs"]
mod presence;
#[path = "redis/process.rs"]
mod process;
#[path = "redis/rolling.rs"]
mod rolling;
#[path = "redis/topology.rs"]
mod topology;
#[path = "redis/users.rs"]
mod users;

pub use chouquette_testkit::eventually;
use std::time::Duration;

use chouquette_testkit::{APP, RedisServer, TestNode, WsClient, redis_config};
use serde_json::{Value, json};

/// Starts `n` nodes on `redis`, named `node-0`…
pub async fn nodes(redis: &RedisServer, n: usize) -> Vec<TestNode> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        nodes.push(TestNode::start(&redis_config(&redis.url(), &format!("node-{i}"))).await);
    }
    nodes
}

/// An event of [`APP`] on `channel` carrying `data`.
pub fn event(channel: &str, data: Value) -> Value {
    json!({"app_id": APP, "channel": channel, "event_kind": "alarm",
           "keywords": ["borne:B1"], "data": data})
}

/// Reads `n` data messages of `channel`, skipping other classes; returns them.
pub async fn data(client: &mut WsClient, channel: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = client.recv().await;
        if m["class"] == "data" && m["channel"] == channel {
            out.push(m);
        }
    }
    out
}

/// Offsets of data messages.
pub fn offsets_of(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect()
}

/// Whether `node` answers `/readyz` 200 within 10 s (its Redis link is up).
pub async fn becomes_ready(node: &TestNode) -> bool {
    eventually(Duration::from_secs(10), async || {
        node.get("/readyz").await.0 == 200
    })
    .await
}
