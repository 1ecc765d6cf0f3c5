//! The Postgres source against a real PostgreSQL with `wal_level = logical`:
//! each test starts a cluster of its own (`initdb` into a temporary folder,
//! a free port), which it may stop and start again. Row changes reach the
//! subscribers they concern, in commit order, once, across Postgres and
//! gateway restarts; bad setups are reported.

#![allow(clippy::unwrap_used)]

#[path = "postgres/changes.rs"]
mod changes;
#[path = "postgres/config.rs"]
mod config;
#[path = "postgres/crashes.rs"]
mod crashes;
#[path = "postgres/lease.rs"]
mod lease;
#[path = "postgres/streaming.rs"]
mod streaming;

pub use chouquette_testkit::eventually;
use std::time::Duration;

use chouquette_testkit::{BASE_CONFIG, PostgresServer, Received, TestNode, WsClient};
use serde_json::Value;

/// The `borne` table, with REPLICA IDENTITY FULL so updates and deletes
/// carry the whole old row.
pub const BORNE_TABLE: &str = "CREATE TABLE borne (uid text PRIMARY KEY, status text, \
    power int, ok boolean, meta jsonb, tags text[], seen timestamptz); \
    ALTER TABLE borne REPLICA IDENTITY FULL;";

/// A `[[sources.postgres]]` section reading `public.borne` into `bornes`.
pub fn source_section(url: &str, slot: &str) -> String {
    format!(
        r#"
[[sources.postgres]]
url = "{url}"
publication = "chouquette"
slot = "{slot}"
poll_interval = "20ms"
reconnect_max = "300ms"
lease_ttl = "1s"

[[sources.postgres.tables]]
table = "public.borne"
app = "bluelib"
channel = "bornes"
event_kinds = {{ insert = "borne_added", update = "borne_changed", delete = "borne_removed" }}
keywords = ["borne:{{uid}}", "status:{{status}}"]
key = "borne:{{uid}}"
"#
    )
}

/// A memory-broker node reading `pg`'s `borne` table, ready (streaming).
pub async fn node_on(pg: &PostgresServer, slot: &str) -> TestNode {
    let node = TestNode::start(&format!("{BASE_CONFIG}{}", source_section(&pg.url(), slot))).await;
    assert!(
        ready(&node, Duration::from_secs(20)).await,
        "the source streams"
    );
    node
}

/// Whether `/readyz` answers 200 with no source problem within `limit`.
pub async fn ready(node: &TestNode, limit: Duration) -> bool {
    eventually(limit, async || {
        node.get("/readyz").await == (200, "ok\n".to_string())
    })
    .await
}

/// The next `n` data messages of `bornes`.
pub async fn data(client: &mut WsClient, n: usize, limit: Duration) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.next_within(left).await {
            Some(Received::Json(m)) if m["class"] == "data" && m["channel"] == "bornes" => {
                out.push(m);
            }
            Some(Received::Json(_)) => {}
            other => panic!("{n} events expected, {} arrived, then {other:?}", out.len()),
        }
    }
    out
}
