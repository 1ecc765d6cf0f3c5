//! Stopping (docs/operations.md "Stopping", docs/protocol.md "Errors and
//! closes"): what is queued is delivered, then `reset` with reason `shutdown`
//! and no channel, then close 1001.

use std::time::Duration;

use chouquette_testkit::TestNode;
use serde_json::json;

use crate::common::{assert_envelope, event, offsets};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_resets_every_client_after_delivering_what_was_published() {
    let node = TestNode::base().await;
    let mut clients = Vec::new();
    for filters in [json!({"*": {}}), json!({"alarm": {}}), json!({})] {
        let mut c = node.client().await;
        c.subscribe("bornes", filters).await;
        c.subscribe("other", json!({"*": {}})).await;
        clients.push(c);
    }
    let idle = node.client().await; // connected, subscribed to nothing
    clients.push(idle);
    for i in 0..20 {
        let kind = if i % 2 == 0 { "alarm" } else { "status" };
        node.publish_event(&event("bornes", kind, &[], json!(i)))
            .await;
    }
    node.publish_event(&event("other", "k", &[], json!("last")))
        .await;

    node.running.stop();
    let expected: [Vec<u64>; 4] = [
        (1..=20).collect(),
        (1..=20).step_by(2).collect(),
        Vec::new(),
        Vec::new(),
    ];
    for (i, (client, want)) in clients.iter_mut().zip(expected).enumerate() {
        let (reset, before) = client.recv_until("reset").await;
        assert_eq!(offsets(&before, "bornes"), want, "client {i}");
        let others = if i == 3 { 0 } else { 1 };
        assert_eq!(offsets(&before, "other").len(), others, "client {i}");
        assert_envelope(&reset);
        assert_eq!(reset["reason"], "shutdown", "client {i}: {reset}");
        assert!(reset.get("channel").is_none(), "client {i}: {reset}");
        let (code, reason) = client.expect_close().await.expect("a close frame");
        assert_eq!(code, 1001, "client {i}: {reason}");
    }
    // The node stops within its grace time once clients are gone.
    tokio::time::timeout(Duration::from_secs(10), node.running.wait())
        .await
        .expect("the node stops");
}

/// Events still queued for a connection when the stop comes are written
/// before the reset. On this single-threaded runtime nothing runs between
/// the publish (the in-memory broker completes it without yielding) and the
/// stop, so every connection sees both at once, with its events still queued.
#[tokio::test]
async fn events_queued_when_the_stop_comes_are_delivered_before_the_reset() {
    let node = TestNode::base().await;
    let mut a = node.client().await;
    let mut b = node.client().await;
    a.subscribe("bornes", json!({"*": {}})).await;
    b.subscribe("bornes", json!({"alarm": {}})).await;
    let events: Vec<chouquette_core::publication::NewEvent> = (0..10)
        .map(|i| {
            let kind = if i % 2 == 0 { "alarm" } else { "status" };
            serde_json::from_value(event("bornes", kind, &[], json!(i))).expect("event")
        })
        .collect();
    let positions = node.running.node.publish(events).await.expect("published");
    node.running.stop();
    assert_eq!(positions.len(), 10);
    for (client, want) in [
        (&mut a, (1..=10).collect::<Vec<u64>>()),
        (&mut b, (1..=10).step_by(2).collect()),
    ] {
        let (reset, before) = client.recv_until("reset").await;
        assert_eq!(offsets(&before, "bornes"), want);
        assert_eq!(reset["reason"], "shutdown");
        let (code, _) = client.expect_close().await.expect("a close frame");
        assert_eq!(code, 1001);
    }
    node.running.wait().await;
}
