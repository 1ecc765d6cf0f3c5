//! The device-state scenario run on both brokers (docs/devices.md, "Last
//! known state, late messages and clock skew" and "Flapping sensors"):
//! `publisher` and `watcher` may be one node or two nodes on one Redis.

use chouquette_testkit::{APP, TestNode, WsClient, token};
use serde_json::{Value, json};

/// The channel's policy: state kept, `on` tracked, flapping past 2 changes
/// within a minute.
pub const CHANNEL_TOML: &str = r#"
[apps.channels.sensors]
history = 100
keep_state = true
state_field = "on"

[apps.channels.sensors.flapping]
changes = 2
window = "60s"
"#;

const SENSORS: &str = "sensors";

fn reading(device: &str, secs: u64, on: bool) -> Value {
    json!({"app_id": APP, "channel": SENSORS, "event_kind": "reading",
           "keywords": [format!("device:{device}")], "key": device,
           "time": secs, "data": {"on": on}})
}

fn filters() -> Value {
    json!({"reading": {}, "flapping": {}, "flapping_cleared": {}})
}

/// The next `data` message of the sensors channel.
async fn next_data(client: &mut WsClient) -> Value {
    loop {
        let m = client.recv().await;
        if m["class"] == "data" && m["channel"] == SENSORS {
            return m;
        }
    }
}

async fn publish(node: &TestNode, event: &Value) -> (String, u64) {
    node.publish_event(event).await
}

/// A late reading is delivered and kept in history flagged `late`, the
/// snapshot keeps the newest; a tracked value carries `since_change`; a
/// key changing too often raises one `flapping` event; the skew shows in
/// `/metrics` and the admin status.
pub async fn run(publisher: &TestNode, watcher: &TestNode) {
    let mut live = watcher.client().await;
    live.subscribe(SENSORS, filters()).await;

    // Late: D1 at 2000 s, then a reading of 1000 s arrives.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (epoch, fresh_offset) = publish(publisher, &reading("D1", now - 30, false)).await;
    let fresh = next_data(&mut live).await;
    assert_eq!(fresh["offset"], fresh_offset);
    assert!(fresh.get("late").is_none(), "{fresh}");
    assert!(fresh["device_time"].is_string(), "{fresh}");
    assert_eq!(fresh["received"], fresh["timestamp"], "{fresh}");
    publish(publisher, &reading("D1", now - 3 * 3600, true)).await;
    let late = next_data(&mut live).await;
    assert_eq!(late["late"], true, "{late}");
    assert_eq!(late["data"]["on"], true);

    // The snapshot is the newest reading; history has both, the old flagged.
    let mut joiner = watcher.client().await;
    let (_, before) = joiner.subscribe(SENSORS, filters()).await;
    let mut snapshot: Vec<Value> = before
        .into_iter()
        .filter(|m| m["class"] == "data")
        .collect();
    if snapshot.is_empty() {
        // Snapshots may follow the ack.
        snapshot.push(next_data(&mut joiner).await);
    }
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    assert_eq!(snapshot[0]["offset"], fresh_offset);
    assert_eq!(snapshot[0]["data"]["on"], false);
    let mut resumer = watcher.client().await;
    let tok = token(SENSORS, filters(), 3600);
    resumer
        .send_json(&json!({"class": "subscribe", "app_id": APP, "uuid": "r1",
                           "channels": {SENSORS: {"filters": tok,
                                                  "since": {"epoch": epoch, "offset": 0}}}}))
        .await;
    let replayed = [next_data(&mut resumer).await, next_data(&mut resumer).await];
    assert!(replayed[0].get("late").is_none(), "{replayed:?}");
    assert_eq!(replayed[1]["late"], true, "{replayed:?}");

    // Binary sensor: D2 switches at 110 s after 10 s off.
    publish(publisher, &reading("D2", now - 100, false)).await;
    let first = next_data(&mut live).await;
    assert!(first.get("since_change").is_none(), "{first}");
    publish(publisher, &reading("D2", now - 90, true)).await;
    let switched = next_data(&mut live).await;
    assert_eq!(switched["since_change"], 10.0, "{switched}");
    assert_eq!(
        switched["changed_at"], switched["device_time"],
        "{switched}"
    );

    // Flapping: a third change within the minute raises one event.
    publish(publisher, &reading("D2", now - 80, false)).await;
    let _ = next_data(&mut live).await;
    publish(publisher, &reading("D2", now - 70, true)).await;
    let third = next_data(&mut live).await;
    assert_eq!(third["event_kind"], "reading");
    let alarm = next_data(&mut live).await;
    assert_eq!(alarm["event_kind"], "flapping", "{alarm}");
    assert_eq!(alarm["keywords"], json!(["device:D2", "key:D2"]));
    assert_eq!(alarm["data"]["changes"], 3);
    assert_eq!(alarm["data"]["window"], 60.0);
    assert!(alarm.get("late").is_none());
    // Once per episode: a fourth change raises nothing more.
    publish(publisher, &reading("D2", now - 60, false)).await;
    let fourth = next_data(&mut live).await;
    assert_eq!(fourth["event_kind"], "reading");
    publish(publisher, &reading("D3", now, false)).await;
    let other = next_data(&mut live).await;
    assert_eq!(other["data"]["on"], false);
    assert_eq!(other["keywords"], json!(["device:D3"]));

    // Skew: every device measured once per fresh reading (about 30 s for D1).
    let skew = "chouquette_device_clock_skew_seconds_count{app=\"bluelib\"}";
    assert!(publisher.metric(skew).await.unwrap_or(0.0) >= 1.0);
    assert_eq!(
        publisher
            .metric("chouquette_device_clock_skew_devices")
            .await,
        Some(3.0)
    );
    let (status, body) = publisher.admin_get("/admin/status").await;
    assert_eq!(status, 200, "{body}");
    let top = &body["devices"]["most_skewed"];
    assert_eq!(top[0]["device"], "D2", "{body}");
    let d1 = top
        .as_array()
        .and_then(|all| all.iter().find(|d| d["device"] == "D1"))
        .unwrap_or_else(|| panic!("D1 in {body}"));
    let d1_skew = d1["skew_ms"].as_i64().unwrap_or_default();
    assert!((29_000..40_000).contains(&d1_skew), "{d1}");
}
