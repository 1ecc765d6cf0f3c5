//! Stopping (docs/operations.md "Stopping", docs/protocol.md "Errors and
//! closes"): what is queued is delivered, then `reset` with reason `shutdown`
//! and no channel, then close 1001.

use std::time::Duration;

use chouquette_testkit::{TestNode, token};
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

/// SIGTERM could hang past the grace time: the grace timer started only
/// after axum's graceful shutdown, which waits for every HTTP connection,
/// and an SSE client that stops reading keeps its response pending forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_stops_within_its_grace_time_despite_a_client_that_stopped_reading() {
    use tokio::io::AsyncWriteExt;
    // The test kit gives every node a grace time of 5 s.
    let node = TestNode::base().await;
    let sub = token("bornes", json!({"*": {}}), 3600);
    let mut stalled = tokio::net::TcpStream::connect(node.running.public)
        .await
        .expect("connect");
    let head = format!("GET /sse?sub={sub} HTTP/1.1\r\nHost: test\r\n\r\n");
    stalled.write_all(head.as_bytes()).await.expect("request");
    // Far more than the socket buffers hold: the gateway's writes block.
    let big = "x".repeat(60_000);
    for _ in 0..300 {
        node.publish_event(&event("bornes", "big", &[], json!(big)))
            .await;
    }
    node.running.stop();
    tokio::time::timeout(Duration::from_secs(8), node.running.wait())
        .await
        .expect("the node stops within its grace time (5 s), and a margin");
    drop(stalled);
}
