//! A message is acknowledged to the MQTT broker only once published: a
//! gateway that received it but could not publish it (its Redis away) and
//! then stopped leaves it to the broker, which delivers it again to the
//! next gateway with the same client id, which publishes it.

use serde_json::json;

use super::{DEVICES_CHANNEL, Device, WAIT, every_kind, ready, source_section};
use chouquette_testkit::{MosquittoServer, RedisServer, TestNode, eventually, redis_config_with};

#[tokio::test]
async fn a_message_not_yet_published_is_delivered_again_after_a_crash() {
    let mut redis = RedisServer::start().await;
    let broker = MosquittoServer::start(&["D1"]).await;
    let url = redis.url();
    let config = |node: &str| {
        let base = redis_config_with(&url, node, "", DEVICES_CHANNEL);
        format!("{base}{}", source_section(&broker, "gw-same"))
    };
    let first = TestNode::start(&config("n1")).await;
    assert!(ready(&first).await, "the first gateway subscribes");
    redis.kill().await;

    let mut d1 = Device::connect(&broker, "D1").await;
    d1.publish("devices/D1/telemetry", r#"{"n": 1}"#).await;
    let received = "chouquette_mqtt_messages_total{source=\"gw-same\"}";
    assert!(
        eventually(WAIT, async || first.metric(received).await == Some(1.0)).await,
        "the first gateway received the message"
    );
    let published = "chouquette_mqtt_published_total{source=\"gw-same\",outcome=\"published\"}";
    assert_eq!(
        first.metric(published).await,
        Some(0.0),
        "its broker is away"
    );
    first.running.stop();

    redis.restart().await;
    let second = TestNode::start(&config("n2")).await;
    assert!(
        eventually(WAIT, async || second.metric(published).await == Some(1.0)).await,
        "the broker delivered the message again and the second gateway published it"
    );
    let mut ws = second.client().await;
    let (_, snapshots) = ws.subscribe("devices", every_kind()).await;
    let state: Vec<_> = snapshots.iter().filter(|m| m["class"] == "data").collect();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0]["data"], json!({"n": 1}));
}
