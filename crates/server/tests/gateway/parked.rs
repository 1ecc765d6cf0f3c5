//! An idle WebSocket on plain TCP waits without a task (parked): it still
//! gets its events, is woken by its client, its timers and the stop, and
//! leaves the lot when it goes. The heartbeat and idle timeout of parked
//! connections are checked by `limits.rs`, the stop by `shutdown.rs`: every
//! idle WebSocket of those tests parks.

use std::time::Duration;

use chouquette_testkit::TestNode;
use serde_json::json;

use crate::common::event;

/// The gauge of parked connections, once it reads `want` (within 5 s).
async fn parked(node: &TestNode, want: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = node.metric("chouquette_connections_parked").await;
        let now = now.expect("the gauge is exported");
        if now == want || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_websockets_park_and_wake_for_events_messages_and_departures() {
    let node = TestNode::base().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = node.client().await;
        client.subscribe("bornes", json!({"*": {}})).await;
        clients.push(client);
    }
    assert_eq!(parked(&node, 3.0).await, 3.0);

    // Events reach parked connections, each once and in order.
    for i in 1..=3u64 {
        node.publish_event(&event("bornes", "status", &["borne:B1"], json!({ "i": i })))
            .await;
    }
    for client in &mut clients {
        for i in 1..=3u64 {
            let m = client.recv().await;
            assert_eq!((&m["class"], &m["offset"]), (&json!("data"), &json!(i)));
        }
    }

    // A client's message wakes its connection, which answers, then parks
    // again.
    let (ack, _) = clients[0].subscribe("alarms", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack", "{ack}");
    assert_eq!(parked(&node, 3.0).await, 3.0);
    node.publish_event(&event("alarms", "fire", &[], json!({"level": 2})))
        .await;
    assert_eq!(clients[0].recv().await["data"]["level"], 2);

    // A client that leaves takes its connection out of the lot.
    let gone = clients.pop().expect("three clients");
    gone.close().await;
    assert_eq!(parked(&node, 2.0).await, 2.0);
    assert_eq!(node.metric("chouquette_connections").await, Some(2.0));

    // The stop wakes the parked ones: each is told and closed.
    let running = node.running;
    running.shutdown().await;
    for client in &mut clients {
        let (reset, _) = client.recv_until("reset").await;
        assert_eq!(reset["reason"], "shutdown", "{reset}");
    }
}
