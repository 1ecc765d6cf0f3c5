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
