//! MQTT devices' liveness (docs/devices.md, "Liveness"): a topic mapping
//! with `device = "{1}"` makes each message a sign of life of that device;
//! a mapping with `format = "status"` reads the device's `online` /
//! `offline` status, which the broker publishes from the device's Last
//! Will when the device vanishes.

use std::time::Duration;

use chouquette_testkit::{
    MQTT_PASSWORD, MosquittoServer, RedisServer, TestNode, WsClient, eventually, redis_config_with,
};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{DEVICES_CHANNEL, WAIT, ready};

/// The app's channels and devices section, silent after `silent_after`.
fn app(silent_after: &str) -> String {
    format!(
        "{DEVICES_CHANNEL}[apps.channels.liveness]\nhistory = 100\nkeep_state = true\n\
         [apps.devices]\nchannel = \"liveness\"\nsilent_after = \"{silent_after}\"\n"
    )
}

fn config(broker: &MosquittoServer) -> String {
    let app = app("1s");
    format!(
        "{}{}",
        chouquette_testkit::config_with("", &app),
        source(broker, "gw-live")
    )
}

/// The source of gateway `client_id`: telemetry marks its device alive,
/// `state` is its status (in the default share group `chouquette`).
fn source(broker: &MosquittoServer, client_id: &str) -> String {
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
device = "{1}"

[[sources.mqtt.topics]]
filter = "devices/+/state"
app = "bluelib"
channel = "devices"
event_kind = "state"
device = "{1}"
format = "status"
"#
    .replace("URL", &broker.url())
    .replace("CLIENT", client_id)
    .replace("PASSWORD", MQTT_PASSWORD)
}

/// A device with the Last Will `offline` on its state topic; its network
/// task can be aborted to vanish without a DISCONNECT.
struct Device {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    network: tokio::task::JoinHandle<()>,
}

impl Device {
    async fn connect(broker: &MosquittoServer, name: &str) -> Device {
        let mut options = MqttOptions::new(format!("device-{name}"), "127.0.0.1", broker.port());
        options.set_credentials(name, MQTT_PASSWORD);
        options.set_last_will(LastWill::new(
            format!("devices/{name}/state"),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut events) = AsyncClient::new(options, 100);
        let (tx, mut acks) = mpsc::unbounded_channel();
        let network = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_) | Packet::PubAck(_))) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("the device connects")
            .expect("the device is accepted");
        Device {
            client,
            acks,
            network,
        }
    }

    async fn publish(&mut self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, self.acks.recv())
            .await
            .expect("the broker acknowledges")
            .expect("the device is connected");
    }
}

/// The next liveness event `watcher` gets.
async fn next_event(watcher: &mut WsClient) -> Value {
    loop {
        let m = watcher.recv().await;
        if m["class"] == "data" && m["channel"] == "liveness" {
            return m;
        }
    }
}

fn summary(event: &Value) -> (Value, Value, Value, Value) {
    (
        event["event_kind"].clone(),
        event["data"]["device"].clone(),
        event["data"]["reason"].clone(),
        event["data"]["transport"].clone(),
    )
}

#[tokio::test]
async fn messages_silence_and_a_last_will_drive_an_mqtt_device_s_liveness() {
    let broker = MosquittoServer::start(&["D1"]).await;
    let node = TestNode::start(&config(&broker)).await;
    assert!(ready(&node).await, "the mqtt source subscribes");
    let mut watcher = node.client().await;
    watcher.subscribe("liveness", json!({"*": {}})).await;
    let mut telemetry = node.client().await;
    telemetry
        .subscribe("devices", json!({"telemetry": {}, "state": {}}))
        .await;

    let mut d1 = Device::connect(&broker, "D1").await;
    d1.publish("devices/D1/state", "online", true).await;
    let online = next_event(&mut watcher).await;
    assert_eq!(
        summary(&online),
        (
            json!("device_online"),
            json!("D1"),
            json!("status"),
            json!("mqtt")
        )
    );
    assert!(node.running.node.devices().is_online("bluelib", "D1"));

    let silent = next_event(&mut watcher).await;
    assert_eq!(silent["event_kind"], "device_silent");

    // A message: published as usual, and the device is back online.
    d1.publish("devices/D1/telemetry", r#"{"temp": 20}"#, false)
        .await;
    let (m, _) = telemetry.recv_until("data").await;
    assert_eq!(
        m["event_kind"], "telemetry",
        "status messages are no events: {m}"
    );
    let back = next_event(&mut watcher).await;
    assert_eq!(
        summary(&back),
        (
            json!("device_online"),
            json!("D1"),
            json!("message"),
            json!("mqtt")
        )
    );

    // The device vanishes: the broker publishes its Last Will.
    d1.network.abort();
    let offline = tokio::time::timeout(Duration::from_secs(30), next_event(&mut watcher))
        .await
        .expect("the Last Will within the keep-alive");
    assert_eq!(
        summary(&offline),
        (
            json!("device_offline"),
            json!("D1"),
            json!("status"),
            json!("mqtt")
        )
    );
    assert!(!node.running.node.devices().is_online("bluelib", "D1"));
}

/// Two gateways on one Redis, in one share group: the group spreads the
/// device's messages over both, so both hold it; its Last Will must still
/// end it at once, announced offline once (each gateway hears every status,
/// the last to let it go announces it), not left online on one of them
/// until found silent.
#[tokio::test]
async fn a_last_will_ends_a_device_held_by_two_gateways_at_once() {
    let redis = RedisServer::start().await;
    let broker = MosquittoServer::start(&["D1"]).await;
    let start = async |id: &str| {
        let header = redis_config_with(&redis.url(), id, "", &app("120s"));
        let node = TestNode::start(&format!("{header}{}", source(&broker, id))).await;
        assert!(ready(&node).await, "{id} subscribes");
        node
    };
    let one = start("gw-1").await;
    let two = start("gw-2").await;
    let mut watcher = one.client().await;
    watcher.subscribe("liveness", json!({"*": {}})).await;

    let mut d1 = Device::connect(&broker, "D1").await;
    d1.publish("devices/D1/state", "online", true).await;
    assert_eq!(
        next_event(&mut watcher).await["event_kind"],
        "device_online"
    );
    let holds = async |node: &TestNode| node.running.node.devices().is_online("bluelib", "D1");
    for n in 0..40 {
        d1.publish("devices/D1/telemetry", &format!(r#"{{"n": {n}}}"#), false)
            .await;
    }
    assert!(
        eventually(WAIT, async || holds(&one).await && holds(&two).await).await,
        "both gateways hold the device"
    );

    d1.network.abort();
    let offline = tokio::time::timeout(Duration::from_secs(20), next_event(&mut watcher))
        .await
        .expect("device_offline at the Last Will, long before silent_after");
    assert_eq!(
        summary(&offline),
        (
            json!("device_offline"),
            json!("D1"),
            json!("status"),
            json!("mqtt")
        )
    );
    assert!(!holds(&one).await && !holds(&two).await);
    watcher.expect_silence(Duration::from_millis(500)).await;
}
