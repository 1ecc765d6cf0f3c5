//! Device time, late readings, binary sensors, flapping and clock skew on
//! the memory broker (the scenario is shared with the Redis tests).

use chouquette_testkit::{TestNode, config_with};

#[path = "device_state_scenario.rs"]
mod scenario;

#[tokio::test]
async fn late_readings_binary_sensors_flapping_and_skew_on_one_node() {
    let node = TestNode::start(&config_with("", scenario::CHANNEL_TOML)).await;
    scenario::run(&node, &node).await;
}

/// A device's WebSocket `publish` carries `time` like the HTTP API: a late
/// reading is delivered flagged and a `time` that is no time is refused.
#[tokio::test]
async fn a_device_publish_over_websocket_carries_its_time() {
    use chouquette_testkit::{APP, SECRET, sign};
    use serde_json::json;

    let node = TestNode::start(&config_with("", scenario::CHANNEL_TOML)).await;
    let mut watcher = node.client().await;
    watcher.subscribe("sensors", json!({"reading": {}})).await;
    let exp = chouquette_core::clock::unix_now() + 3600;
    let claims = json!({"app_id": APP, "sub": "D1", "exp": exp,
                        "publish": {"sensors": ["device:D1"]}});
    let mut device = node.client().await;
    device
        .send_json(&json!({"class": "connect", "uuid": "c1", "app_id": APP,
                           "token": sign(&claims, SECRET)}))
        .await;
    assert_eq!(device.recv().await["class"], "ack");
    let now = exp - 3600;
    let reading = |uuid: &str, time: serde_json::Value| {
        json!({"class": "publish", "uuid": uuid, "app_id": APP, "channel": "sensors",
               "event_kind": "reading", "keywords": ["device:D1"], "key": "D1",
               "time": time, "data": {"on": true}})
    };
    for (uuid, time) in [("p1", json!(now - 10)), ("p2", json!(now - 3600))] {
        device.send_json(&reading(uuid, time)).await;
        let answer = device.recv().await;
        assert_eq!(answer["class"], "ack", "{answer}");
    }
    let fresh = watcher.recv().await;
    assert!(fresh.get("late").is_none(), "{fresh}");
    assert!(fresh["device_time"].is_string(), "{fresh}");
    let late = watcher.recv().await;
    assert_eq!(late["late"], true, "{late}");
    device.send_json(&reading("p3", json!("tomorrow"))).await;
    let refused = device.recv().await;
    assert_eq!(refused["class"], "error", "{refused}");
    assert_eq!(refused["code"], "bad_message", "{refused}");
}
