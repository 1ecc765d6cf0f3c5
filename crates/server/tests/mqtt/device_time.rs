//! Device time from MQTT payloads: a SenML pack's latest absolute `t`, a
//! JSON payload's `time_field`. A pack buffered hours ago and flushed after
//! a newer one is delivered flagged `late` and leaves the state alone.

use serde_json::{Value, json};

use super::{DEVICES_CHANNEL, Device, data, every_kind, ready, source_section};
use chouquette_testkit::{MosquittoServer, TestNode};

const TIMED_TOPIC: &str = r#"
[[sources.mqtt.topics]]
filter = "devices/+/timed"
app = "bluelib"
channel = "devices"
event_kind = "telemetry"
keywords = ["device:{1}"]
key = "timed:{1}"
time_field = "ts"
"#;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn an_old_senml_pack_is_late_and_a_json_time_field_is_the_device_time() {
    let broker = MosquittoServer::start(&["D1"]).await;
    let config = chouquette_testkit::config_with("", DEVICES_CHANNEL);
    let source = format!("{}{TIMED_TOPIC}", source_section(&broker, "gw-1"));
    let node = TestNode::start(&format!("{config}{source}")).await;
    assert!(ready(&node).await, "the mqtt source subscribes");
    let mut ws = node.client().await;
    ws.subscribe("devices", every_kind()).await;
    let mut d1 = Device::connect(&broker, "D1").await;

    let now = now_secs();
    let pack = |t: u64, v: f64| {
        json!([{"bn": "D1/", "bt": t, "n": "temp", "v": v}, {"n": "hum", "t": -5, "v": 40}])
            .to_string()
    };
    d1.publish("devices/D1/senml", &pack(now - 60, 21.0)).await;
    // Five hours of buffered readings, flushed after a reconnect.
    d1.publish("devices/D1/senml", &pack(now - 5 * 3600, 18.0))
        .await;
    d1.publish(
        "devices/D1/timed",
        &format!(r#"{{"ts": {}, "temp": 3}}"#, now - 10),
    )
    .await;
    let got = data(&mut ws, 3).await;
    assert!(got[0].get("late").is_none(), "{}", got[0]);
    let device_time = |m: &Value| {
        humantime::parse_rfc3339(m["device_time"].as_str().expect("device_time"))
            .expect("rfc3339")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    // The latest record time of the pack (`bt`; `hum` is 5 s earlier).
    assert_eq!(device_time(&got[0]), now - 60);
    assert_eq!(got[1]["late"], true, "{}", got[1]);
    assert_eq!(device_time(&got[1]), now - 5 * 3600);
    assert_eq!(device_time(&got[2]), now - 10);
    assert!(got[2].get("late").is_none());

    // The state is still the newest pack.
    let mut joiner = node.client().await;
    let (_, snapshots) = joiner.subscribe("devices", every_kind()).await;
    let senml: Vec<&Value> = snapshots
        .iter()
        .filter(|m| m["class"] == "data" && m["event_kind"] == "measure")
        .collect();
    assert_eq!(senml.len(), 1, "{snapshots:?}");
    assert_eq!(senml[0]["data"][0]["v"], 21.0);

    // A time field that is no time is counted, not published.
    d1.publish("devices/D1/timed", r#"{"ts": "soon"}"#).await;
    let bad = "chouquette_mqtt_invalid_total{source=\"gw-1\",reason=\"bad_time\"}";
    assert!(
        chouquette_testkit::eventually(super::WAIT, async || node.metric(bad).await == Some(1.0))
            .await
    );
}
