//! The fan-out writes a live event straight into an idle WebSocket (the
//! connection's task parked, nothing queued), and falls back to the queue
//! when the socket would block: either way every event arrives once, whole
//! and in order.

use std::time::Duration;

use chouquette_testkit::TestNode;
use serde_json::{Value, json};

use crate::common::event;

/// `/admin/stats` now.
async fn stats(node: &TestNode) -> Value {
    let (status, body) = node.admin_get("/admin/stats").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn an_idle_client_gets_its_events_without_waking_its_task() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    // Its task writes the ack, then parks: give it that moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..=5u64 {
        let (_, offset) = node
            .publish_event(&event("bornes", "status", &["borne:B1"], json!({ "i": i })))
            .await;
        let m = client.recv().await;
        assert_eq!(
            (&m["class"], &m["offset"]),
            (&json!("data"), &json!(offset))
        );
        assert_eq!(m["data"]["i"], i);
    }
    let stats = stats(&node).await;
    assert_eq!(stats["deliveries_direct_total"], 5, "{stats}");
    assert_eq!(stats["outbox_depth"]["count"], 0, "{stats}");
}

#[tokio::test]
async fn a_client_slower_than_the_fan_out_gets_every_event_whole_and_in_order() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 240 events of 64 KiB (15 MiB) while the client reads nothing: more
    // than loopback's socket buffers hold, so the fan-out's writes stop
    // whole (some), then go in part or not at all and the rest is queued.
    const EVENTS: u64 = 240;
    let filler = "x".repeat(64 * 1024);
    for i in 1..=EVENTS {
        let data = json!({ "i": i, "filler": filler });
        node.publish_event(&event("bornes", "status", &["borne:B1"], data))
            .await;
    }
    for i in 1..=EVENTS {
        let m = client.recv().await;
        assert_eq!((&m["class"], &m["offset"]), (&json!("data"), &json!(i)));
        assert_eq!(m["data"]["i"], i);
        assert_eq!(m["data"]["filler"].as_str().map(str::len), Some(64 * 1024));
    }
    let stats = stats(&node).await;
    let direct = stats["deliveries_direct_total"].as_u64().expect("counted");
    assert!((1..EVENTS).contains(&direct), "{stats}");
    assert_eq!(stats["drops"]["slow_consumer"], 0, "{stats}");
    assert_eq!(stats["messages_out_total"], EVENTS + 1, "{stats}");
}
