//! The MQTT source against a real Mosquitto of the test's own (its own
//! port, password file and ACL: `pattern write devices/%u/#`), with devices
//! played by real MQTT clients (rumqttc): JSON and SenML messages reach
//! WebSocket subscribers with their keywords, key and last state; invalid
//! payloads are counted, not published; a device cannot publish on another
//! device's topic; the source comes back after a broker restart; two
//! gateways sharing a Redis publish each message once.

#![allow(clippy::unwrap_used)]

#[path = "mqtt/acl.rs"]
mod acl;
#[path = "mqtt/commands.rs"]
mod commands;
#[path = "mqtt/crash.rs"]
mod crash;
#[path = "mqtt/demo.rs"]
mod demo;
#[path = "mqtt/device_time.rs"]
mod device_time;
#[path = "mqtt/flush.rs"]
mod flush;
#[path = "mqtt/liveness.rs"]
mod liveness;
#[path = "mqtt/mapping.rs"]
mod mapping;
#[path = "mqtt/restart.rs"]
mod restart;
#[path = "mqtt/shared.rs"]
mod shared;

use std::time::Duration;

use chouquette_testkit::{
    MQTT_PASSWORD, MosquittoServer, Received, TestNode, WsClient, eventually,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

/// How long anything here may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// The `devices` channel, keeping state and history.
pub const DEVICES_CHANNEL: &str = "[apps.channels.devices]\nhistory = 1000\nkeep_state = true\n";

/// A `[[sources.mqtt]]` reading `broker` as the gateway user, with client id
/// `client_id`: JSON telemetry, SenML measures, and a `status/#` filter
/// whose keyword reads level 3 (absent from `devices/D1/status`).
pub fn source_section(broker: &MosquittoServer, client_id: &str) -> String {
    r#"
[[sources.mqtt]]
url = "URL"
client_id = "CLIENT"
username = "gateway"
password = "PASSWORD"
reconnect_max = "300ms"

[[sources.mqtt.topics]]
filter = "devices/+/telemetry"
app = "bluelib"
channel = "devices"
event_kind = "telemetry"
keywords = ["device:{1}"]
key = "device:{1}"

[[sources.mqtt.topics]]
filter = "devices/+/senml"
app = "bluelib"
channel = "devices"
event_kind = "measure"
keywords = ["device:{1}"]
key = "senml:{1}"
format = "senml"

[[sources.mqtt.topics]]
filter = "devices/+/status/#"
app = "bluelib"
channel = "devices"
event_kind = "status"
keywords = ["device:{1}", "part:{3}"]
"#
    .replace("URL", &broker.url())
    .replace("CLIENT", client_id)
    .replace("PASSWORD", MQTT_PASSWORD)
}

/// A memory-broker node reading `broker`, subscribed (ready).
pub async fn node_on(broker: &MosquittoServer) -> TestNode {
    let config = chouquette_testkit::config_with("", DEVICES_CHANNEL);
    let node = TestNode::start(&format!("{config}{}", source_section(broker, "gw-1"))).await;
    assert!(ready(&node).await, "the mqtt source subscribes");
    node
}

/// Whether `/readyz` answers 200 with no source problem within [`WAIT`].
pub async fn ready(node: &TestNode) -> bool {
    eventually(WAIT, async || {
        node.get("/readyz").await == (200, "ok\n".to_string())
    })
    .await
}

/// A device: an MQTT client logged in as `name`, whose QoS 1 publishes
/// return once the broker acknowledged them.
pub struct Device {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
}

impl Device {
    pub async fn connect(broker: &MosquittoServer, name: &str) -> Device {
        let mut options = MqttOptions::new(format!("device-{name}"), "127.0.0.1", broker.port());
        options.set_credentials(name, MQTT_PASSWORD);
        let (client, mut events) = AsyncClient::new(options, 100);
        let (tx, mut acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_) | Packet::PubAck(_))) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // The broker went away: this device is done.
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("the device connects")
            .expect("the device is accepted");
        Device { client, acks }
    }

    /// Publishes `payload` on `topic` with QoS 1 and waits for its PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, self.acks.recv())
            .await
            .expect("the broker acknowledges")
            .expect("the device is connected");
    }
}

impl Device {
    /// Publishes `n` messages on `topic` with QoS 1 as fast as the client's
    /// in-flight window lets it (a device flushing its buffer), then waits
    /// for every PUBACK.
    pub async fn flush(&mut self, topic: &str, n: usize) {
        for i in 0..n {
            let payload = format!(r#"{{"n": {i}}}"#);
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload.into_bytes())
                .await
                .unwrap();
        }
        for _ in 0..n {
            tokio::time::timeout(WAIT, self.acks.recv())
                .await
                .expect("the broker acknowledges")
                .expect("the device is connected");
        }
    }
}

/// The next `n` data messages of `devices`.
pub async fn data(client: &mut WsClient, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.next_within(left).await {
            Some(Received::Json(m)) if m["class"] == "data" && m["channel"] == "devices" => {
                out.push(m);
            }
            Some(Received::Json(_)) => {}
            other => panic!("{n} events expected, {} arrived, then {other:?}", out.len()),
        }
    }
    out
}

/// Every kind the source publishes, unconstrained.
pub fn every_kind() -> Value {
    serde_json::json!({"telemetry": {}, "measure": {}, "status": {}})
}
