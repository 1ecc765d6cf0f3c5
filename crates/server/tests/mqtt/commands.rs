//! Backends commanding MQTT devices (docs/devices.md "Commands"): the
//! command arrives on the device's command topic with its correlation id,
//! the device's reply on its reply topic goes back to the backend; no
//! reply is a timeout; a reply from another device, or for an unknown id,
//! is counted and dropped; with two gateways on one Redis, each reads every
//! reply and keeps those of its own commands; a device whose Last Will said
//! it left is offline at once, not a timeout.

use std::time::Duration;

use chouquette_testkit::{
    API_KEY, APP, MQTT_PASSWORD, MosquittoServer, RedisServer, TestNode, eventually,
    redis_config_with,
};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{DEVICES_CHANNEL, WAIT, ready, source_section};

const COMMANDS: &str = "/api/v1/devices/commands";

/// The source of `source_section` with device commands for the app.
fn section_with_commands(broker: &MosquittoServer, client_id: &str) -> String {
    format!(
        "{}\n[[sources.mqtt.commands]]\napp = \"bluelib\"\n\
         command_topic = \"devices/{{device}}/commands\"\n\
         reply_topic = \"devices/{{device}}/replies\"\n",
        source_section(broker, client_id)
    )
}

async fn node_with_commands(broker: &MosquittoServer) -> TestNode {
    let config = chouquette_testkit::config_with("", DEVICES_CHANNEL);
    let node = TestNode::start(&format!(
        "{config}{}",
        section_with_commands(broker, "gw-1")
    ))
    .await;
    assert!(ready(&node).await, "the mqtt source subscribes");
    node
}

/// An MQTT device logged in as `name`, subscribed to its command topic:
/// hands each command it receives to the test, publishes what it is told.
struct CommandedDevice {
    client: AsyncClient,
    commands: mpsc::UnboundedReceiver<Value>,
}

impl CommandedDevice {
    async fn connect(broker: &MosquittoServer, name: &str) -> CommandedDevice {
        let mut options = MqttOptions::new(format!("device-{name}"), "127.0.0.1", broker.port());
        options.set_credentials(name, MQTT_PASSWORD);
        let (client, mut events) = AsyncClient::new(options, 100);
        let (tx, commands) = mpsc::unbounded_channel();
        let (subscribed, mut suback) = mpsc::unbounded_channel();
        client
            .subscribe(format!("devices/{name}/commands"), QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let command = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let _ = tx.send(json!({"topic": p.topic, "command": command}));
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(WAIT, suback.recv())
            .await
            .expect("the device subscribes")
            .expect("the device is connected");
        CommandedDevice { client, commands }
    }

    /// The next command: `{"topic", "command"}`.
    async fn next(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.commands.recv())
            .await
            .expect("a command arrives")
            .expect("the device is connected")
    }

    async fn reply(&self, topic: &str, reply: Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, reply.to_string())
            .await
            .unwrap();
    }
}

fn command_to(device: &str, method: &str, timeout: &str) -> Value {
    json!({"app_id": APP, "device": device, "method": method, "args": [1],
           "kwargs": {"level": 2}, "timeout": timeout})
}

async fn command(node: &TestNode, body: Value) -> (u16, Value) {
    node.api_post(COMMANDS, Some(API_KEY), &body).await
}

async fn dropped(node: &TestNode, reason: &str, n: f64) -> bool {
    let series = format!(r#"chouquette_device_command_replies_dropped_total{{reason="{reason}"}}"#);
    eventually(WAIT, async || node.metric(&series).await == Some(n)).await
}

#[tokio::test]
async fn a_command_arrives_on_the_device_topic_and_its_reply_returns() {
    let broker = MosquittoServer::start(&["D1"]).await;
    let node = node_with_commands(&broker).await;
    let mut d1 = CommandedDevice::connect(&broker, "D1").await;
    let backend = command(&node, command_to("D1", "device.status", "10s"));
    let device = async {
        let got = d1.next().await;
        assert_eq!(got["topic"], "devices/D1/commands");
        let c = &got["command"];
        assert_eq!(c["method"], "device.status", "{c}");
        assert_eq!(
            (&c["args"], &c["kwargs"]),
            (&json!([1]), &json!({"level": 2}))
        );
        assert_eq!(c["reply_to"], "devices/D1/replies");
        assert!(
            c["expires"].as_str().is_some_and(|e| e.ends_with('Z')),
            "{c}"
        );
        let id = c["id"].clone();
        // An unknown id first: dropped; then the answer.
        d1.reply(
            "devices/D1/replies",
            json!({"id": format!("{}x", id.as_str().unwrap()), "result": 0}),
        )
        .await;
        d1.reply(
            "devices/D1/replies",
            json!({"id": id, "result": {"battery": 87}}),
        )
        .await;
    };
    let ((status, body), ()) = tokio::join!(backend, device);
    assert_eq!(
        (status, body),
        (200, json!({"result": {"battery": 87}, "transport": "mqtt"}))
    );
    assert!(dropped(&node, "unknown", 1.0).await);

    let backend = command(&node, command_to("D1", "device.reboot", "10s"));
    let device = async {
        let id = d1.next().await["command"]["id"].clone();
        d1.reply(
            "devices/D1/replies",
            json!({"id": id, "error": {"code": "busy", "message": "charging"}}),
        )
        .await;
    };
    let ((status, body), ()) = tokio::join!(backend, device);
    let expected = json!({"error": {"code": "busy", "message": "charging"}, "transport": "mqtt"});
    assert_eq!((status, body), (200, expected));
    let series = |outcome: &str| {
        format!(r#"chouquette_device_commands_total{{transport="mqtt",outcome="{outcome}"}}"#)
    };
    assert_eq!(node.metric(&series("ok")).await, Some(1.0));
    assert_eq!(node.metric(&series("error")).await, Some(1.0));
    // Replies are not events: nothing was published from them.
    assert_eq!(
        node.metric(r#"chouquette_mqtt_messages_total{source="gw-1"}"#)
            .await,
        Some(0.0)
    );
}

#[tokio::test]
async fn no_reply_is_a_timeout_and_another_devices_reply_is_dropped() {
    let broker = MosquittoServer::start(&["D1", "D2"]).await;
    let node = node_with_commands(&broker).await;
    let mut d1 = CommandedDevice::connect(&broker, "D1").await;
    let d2 = CommandedDevice::connect(&broker, "D2").await;
    let backend = command(&node, command_to("D1", "device.status", "1s"));
    let device = async {
        let id = d1.next().await["command"]["id"].clone();
        // D2 cannot answer D1's command, even knowing its id.
        d2.reply("devices/D2/replies", json!({"id": id, "result": "spoofed"}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, device);
    assert_eq!((status, &body["code"]), (504, &json!("timeout")), "{body}");
    assert_eq!(body["transport"], "mqtt");
    assert!(dropped(&node, "wrong_device", 1.0).await);
    assert_eq!(
        node.metric("chouquette_device_commands_waiting").await,
        Some(0.0)
    );
    // Garbage on a reply topic is counted, never published.
    d1.reply("devices/D1/replies", json!("not a reply")).await;
    assert!(dropped(&node, "invalid", 1.0).await);
}

#[tokio::test]
async fn with_two_gateways_the_reply_reaches_the_one_that_sent_the_command() {
    let redis = RedisServer::start().await;
    let broker = MosquittoServer::start(&["D1"]).await;
    let start = async |id: &str| {
        let config = redis_config_with(&redis.url(), id, "", DEVICES_CHANNEL);
        let node =
            TestNode::start(&format!("{config}{}", section_with_commands(&broker, id))).await;
        assert!(ready(&node).await, "{id} subscribes");
        node
    };
    let one = start("gw-1").await;
    let two = start("gw-2").await;
    let mut d1 = CommandedDevice::connect(&broker, "D1").await;
    for (sender, other) in [(&two, &one), (&one, &two)] {
        let backend = command(sender, command_to("D1", "device.status", "10s"));
        let device = async {
            let id = d1.next().await["command"]["id"].clone();
            d1.reply("devices/D1/replies", json!({"id": id, "result": "here"}))
                .await;
        };
        let ((status, body), ()) = tokio::join!(backend, device);
        assert_eq!(
            (status, body),
            (200, json!({"result": "here", "transport": "mqtt"}))
        );
        // The other gateway read the reply too, and knew it was not its own.
        assert!(dropped(other, "other_node", 1.0).await);
        assert!(dropped(other, "unknown", 0.0).await);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), d1.commands.recv())
            .await
            .is_err(),
        "each command was published once"
    );
}

#[tokio::test]
async fn a_device_on_websocket_too_gets_the_command_there_first() {
    let broker = MosquittoServer::start(&["D1"]).await;
    let node = node_with_commands(&broker).await;
    let mut mqtt_d1 = CommandedDevice::connect(&broker, "D1").await;
    let mut ws_d1 = node.client().await;
    ws_d1.join_sync().await;
    ws_d1.identify("D1").await;
    let backend = command(&node, command_to("D1", "device.status", "10s"));
    let device = async {
        let (call, _) = ws_d1.recv_until("call").await;
        ws_d1
            .send_json(&json!({"class": "result", "id": call["id"], "result": "over ws"}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, device);
    assert_eq!(
        (status, body),
        (200, json!({"result": "over ws", "transport": "ws"}))
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), mqtt_d1.commands.recv())
            .await
            .is_err(),
        "nothing was published over MQTT"
    );
    // A device id that cannot be one topic level is refused for this app.
    let (status, body) = command(&node, command_to("D1/x", "device.status", "1s")).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("bad_message")),
        "{body}"
    );
}

#[tokio::test]
async fn a_command_while_the_mqtt_broker_is_away_is_refused_at_once() {
    let mut broker = MosquittoServer::start(&["D1"]).await;
    let node = node_with_commands(&broker).await;
    broker.kill().await;
    let down = eventually(WAIT, async || {
        node.metric(r#"chouquette_mqtt_up{source="gw-1"}"#).await == Some(0.0)
    })
    .await;
    assert!(down, "the source sees its broker go");
    let (status, body) = command(&node, command_to("D1", "device.status", "30s")).await;
    assert_eq!(
        (status, &body["code"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    assert_eq!(body["transport"], "mqtt");
    assert_eq!(
        node.metric("chouquette_device_commands_waiting").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn a_device_whose_last_will_said_it_left_is_offline_at_once() {
    let broker = MosquittoServer::start(&["D1"]).await;
    let app = format!(
        "{DEVICES_CHANNEL}[apps.channels.liveness]\nhistory = 100\nkeep_state = true\n\
         [apps.devices]\nchannel = \"liveness\"\nsilent_after = \"1h\"\n"
    );
    let status = "\n[[sources.mqtt.topics]]\nfilter = \"devices/+/state\"\napp = \"bluelib\"\n\
                  channel = \"devices\"\nevent_kind = \"state\"\ndevice = \"{1}\"\nformat = \"status\"\n";
    let config = chouquette_testkit::config_with("", &app);
    let node = TestNode::start(&format!(
        "{config}{}{status}",
        section_with_commands(&broker, "gw-1")
    ))
    .await;
    assert!(ready(&node).await, "the mqtt source subscribes");

    // The device says it is online, then vanishes: the broker publishes its
    // Last Will, `offline`.
    let mut options = MqttOptions::new("device-D1", "127.0.0.1", broker.port());
    options.set_credentials("D1", MQTT_PASSWORD);
    options.set_last_will(LastWill::new(
        "devices/D1/state",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut events) = AsyncClient::new(options, 10);
    let network = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
        .publish("devices/D1/state", QoS::AtLeastOnce, false, "online")
        .await
        .unwrap();
    let devices = node.running.node.devices();
    let online = eventually(WAIT, async || devices.is_online("bluelib", "D1")).await;
    assert!(online, "the device's status came through");
    network.abort();
    let offline = eventually(Duration::from_secs(30), async || {
        devices
            .liveness("bluelib", "D1")
            .is_some_and(|l| l.state == chouquette_core::devices::State::Offline)
    })
    .await;
    assert!(offline, "the Last Will arrives within the keep-alive");
    let last_seen = devices.last_seen("bluelib", "D1").unwrap();

    let asked = std::time::Instant::now();
    let (status, body) = command(&node, command_to("D1", "device.status", "10s")).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "at once, not after the timeout: {:?}",
        asked.elapsed()
    );
    assert_eq!((status, &body["code"]), (404, &json!("offline")), "{body}");
    assert_eq!(body["transport"], "mqtt");
    let expected = chouquette_protocol::server::timestamp(
        std::time::UNIX_EPOCH + Duration::from_millis(last_seen),
    );
    assert_eq!(body["last_seen"], json!(expected), "{body}");
    assert_eq!(
        node.metric(r#"chouquette_device_commands_total{transport="mqtt",outcome="offline"}"#)
            .await,
        Some(1.0)
    );
}
