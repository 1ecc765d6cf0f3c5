//! Configured limits: connections per node, subscriptions per connection.

use chouquette::testkit::{APP, TestNode, config_with, token};
use serde_json::json;
use tokio_tungstenite::tungstenite;

use crate::common::{event, offsets, subscribe_msg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_the_upgrade_is_refused_with_503() {
    let node = TestNode::start(&config_with("max_connections = 2", "")).await;
    let mut first = node.client().await;
    let mut second = node.client().await;
    // Each ack proves its connection is open on the gateway's side.
    first.subscribe("bornes", json!({"*": {}})).await;
    second.subscribe("bornes", json!({"*": {}})).await;

    for _ in 0..3 {
        match tokio_tungstenite::connect_async(node.ws_url()).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 503, "{response:?}");
            }
            Err(other) => panic!("expected an HTTP 503 refusal, got {other}"),
            Ok(_) => panic!("a third connection was accepted"),
        }
    }

    // The first two keep working.
    node.publish_event(&event("bornes", "k", &[], json!("both")))
        .await;
    assert_eq!(first.recv().await["data"], "both");
    assert_eq!(second.recv().await["data"], "both");
    assert_eq!(node.metric("chouquette_connections").await, Some(2.0));
    assert!(
        node.metric("chouquette_closes_total{reason=\"full\"}")
            .await
            .is_some_and(|n| n >= 3.0)
    );
    node.running.shutdown().await;
}

#[tokio::test]
async fn past_max_subscriptions_per_connection_a_channel_is_refused() {
    let node = TestNode::start(&config_with("max_subscriptions_per_connection = 2", "")).await;
    let mut client = node.client().await;
    let all = json!({"*": {}});
    let (ta, tb, tc) = (
        token("a", all.clone(), 60),
        token("b", all.clone(), 60),
        token("c", all.clone(), 60),
    );
    client
        .send_json(&subscribe_msg(
            "s1",
            APP,
            &[("a", &ta), ("b", &tb), ("c", &tc)],
        ))
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["class"], "error");
    assert_eq!(before[0]["code"], "too_many_subscriptions");
    assert_eq!(before[0]["channel"], "c");
    assert_eq!(before[0]["ref"], "s1");
    let channels = ack["channels"].as_object().expect("channels");
    assert_eq!(
        channels.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["a", "b"]
    );

    // Subscribing again to a channel it holds replaces it: still allowed.
    client
        .send_json(&subscribe_msg("s2", APP, &[("a", &ta)]))
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["class"], "ack", "{ack}");
    // A third one alone is refused too.
    client
        .send_json(&subscribe_msg("s3", APP, &[("c", &tc)]))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["code"], "too_many_subscriptions", "{reply}");
    assert_eq!(reply["channel"], "c", "{reply}");
    // After leaving one, there is room again.
    client
        .send_json(&json!({"class": "unsubscribe", "uuid": "u", "channels": ["b"]}))
        .await;
    assert_eq!(client.recv().await["ref"], "u");
    client
        .send_json(&subscribe_msg("s4", APP, &[("c", &tc)]))
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["class"], "ack", "{ack}");

    // Delivery matches what is held: a and c, not b.
    let mut got = Vec::new();
    for chan in ["b", "a", "c"] {
        node.publish_event(&event(chan, "k", &[], json!(chan)))
            .await;
    }
    for _ in 0..2 {
        got.push(client.recv().await);
    }
    assert_eq!(offsets(&got, "a"), vec![1]);
    assert_eq!(offsets(&got, "c"), vec![1]);
    assert_eq!(node.metric("chouquette_subscriptions").await, Some(2.0));
    node.running.shutdown().await;
}

const HEARTBEAT: &str = "ping_interval = \"200ms\"\nidle_timeout = \"500ms\"";

/// A client that stops answering (no frame, not even a pong) is closed as
/// dead with 1001 `idle_timeout`, and counted.
#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let node = TestNode::start(&config_with(HEARTBEAT, "")).await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    // Not reading: the client's WebSocket layer cannot answer pings.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // The gateway sent close 1001 `idle_timeout` and dropped the socket; the
    // client may see that frame, or (when its own late pongs draw a reset
    // that discards unread data) just the end of the stream.
    let close = client.expect_close().await;
    assert!(
        close.is_none() || close == Some((1001, "idle_timeout".to_string())),
        "{close:?}"
    );
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"idle\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(node.metric("chouquette_connections").await, Some(0.0));
}

/// A client that keeps reading answers the pings and stays connected well
/// past the idle timeout.
#[tokio::test]
async fn a_client_answering_pings_stays_connected() {
    let node = TestNode::start(&config_with(HEARTBEAT, "")).await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    // Reading processes the pings and sends the pongs.
    client
        .expect_silence(std::time::Duration::from_millis(1500))
        .await;
    let offset = node
        .publish("bornes", "status", &["borne:B1"], json!({}))
        .await;
    assert_eq!(client.recv().await["offset"], offset);
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"idle\"}")
            .await,
        Some(0.0)
    );
}
