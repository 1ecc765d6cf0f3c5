//! The device id comes from the topic, so the broker's ACL is what keeps a
//! device to its own topics: with `pattern write devices/%u/#`, D1's
//! publish on `devices/D2/...` is dropped by Mosquitto and never reaches
//! the gateway.

use serde_json::json;

use super::{Device, data, every_kind, node_on};
use chouquette_testkit::MosquittoServer;

#[tokio::test]
async fn a_device_cannot_publish_on_another_devices_topic() {
    let broker = MosquittoServer::start(&["D1", "D2"]).await;
    let node = node_on(&broker).await;
    let mut ws = node.client().await;
    ws.subscribe("devices", every_kind()).await;
    let mut d1 = Device::connect(&broker, "D1").await;

    // Mosquitto acknowledges a refused QoS 1 publish (MQTT 3.1.1 has no
    // way to say no) and drops it.
    d1.publish("devices/D2/telemetry", r#"{"spoofed": true}"#)
        .await;
    d1.publish("devices/D1/telemetry", r#"{"own": true}"#).await;

    let got = data(&mut ws, 1).await;
    assert_eq!(got[0]["keywords"], json!(["device:D1"]));
    assert_eq!(got[0]["data"], json!({"own": true}));
    assert_eq!(got[0]["offset"], 1, "the spoofed message was not published");
    // The gateway saw one message only: the broker dropped the other.
    assert_eq!(
        node.metric("chouquette_mqtt_messages_total{source=\"gw-1\"}")
            .await,
        Some(1.0)
    );
}
