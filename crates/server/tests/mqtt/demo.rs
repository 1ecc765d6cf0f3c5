//! `chouquette demo --mqtt`: the demo's charging points talk MQTT through a
//! Mosquitto of the test's own (each point logs in as itself; the ACL keeps
//! it under `devices/<its id>/`), read by the gateway's MQTT source. A page
//! (a WebSocket client with the backend's subscribe message) sees every
//! point online over `mqtt` with its telemetry; a command goes out on the
//! point's command topic and its answer comes back; an outage ends in the
//! point's Last Will (offline) and its return (online).

use std::collections::HashMap;
use std::time::Duration;

use chouquette::demo::{self, DemoOptions, Liveness, MqttDemo};
use chouquette::http_client::HttpClient;
use chouquette::serve::Running;
use chouquette_testkit::{MQTT_PASSWORD, MosquittoServer, Received, WsClient};
use serde_json::{Value, json};
use tokio::time::Instant;

const POINTS: usize = 6;
const NAMES: [&str; POINTS] = ["B1", "B2", "B3", "B4", "B5", "B6"];

async fn start(broker: &MosquittoServer, liveness: Liveness) -> Running {
    let any = "127.0.0.1:0".parse().unwrap();
    let mut options = DemoOptions::new(any, any, 2.0);
    options.fleet_size = POINTS;
    options.liveness = liveness;
    options.mqtt = Some(MqttDemo {
        url: format!("mqtt://gateway:{MQTT_PASSWORD}@127.0.0.1:{}", broker.port()),
        device_password: Some(MQTT_PASSWORD.into()),
    });
    demo::start(options).await.expect("the demo starts")
}

/// VB's page, subscribed with the backend's subscribe message.
async fn page(demo: &Running) -> WsClient {
    let url = format!("http://{}/api/get_subscription?user=vb", demo.public);
    let (status, body) = HttpClient::default().get(&url, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mut client = WsClient::connect(&format!("ws://{}/ws", demo.public)).await;
    client
        .send_json(&serde_json::from_str(&body).unwrap())
        .await;
    client
}

async fn next_data(client: &mut WsClient, deadline: Instant) -> Option<Value> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_within(left).await? {
            Received::Json(m) if m["class"] == "data" => return Some(m),
            Received::Json(_) => continue,
            Received::Closed(frame) => panic!("the page's connection closed: {frame:?}"),
        }
    }
}

async fn command(demo: &Running, borne: &str, what: &str) -> (u16, Value) {
    let url = format!("http://{}/api/command", demo.public);
    let body = json!({"user": "vb", "borne": borne, "command": what}).to_string();
    let (status, text) = HttpClient::default()
        .send_json("POST", &url, None, body.into_bytes())
        .await
        .unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_points_report_over_mqtt_and_answer_commands() {
    let broker = MosquittoServer::start(&NAMES).await;
    let calm = Liveness {
        silent_after: Duration::from_secs(10),
        telemetry_every: Duration::from_millis(300),
        outage_every: Duration::from_secs(3600),
        mute: Duration::from_secs(1),
        cut: Duration::from_secs(1),
    };
    let demo = start(&broker, calm).await;
    let mut vb = page(&demo).await;
    let mut online = std::collections::HashSet::new();
    let mut reporting = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while online.len() < POINTS || reporting.len() < POINTS {
        let m = next_data(&mut vb, deadline)
            .await
            .unwrap_or_else(|| panic!("online {online:?}, reporting {reporting:?}"));
        match m["event_kind"].as_str().unwrap_or_default() {
            "device_online" => {
                assert_eq!(m["data"]["transport"], "mqtt", "{m}");
                online.insert(m["data"]["device"].as_str().unwrap().to_string());
            }
            "telemetry" => {
                let uid = m["data"]["uid"].as_str().unwrap();
                assert_eq!(m["keywords"], json!([format!("borne:{uid}")]), "{m}");
                assert!(m["device_time"].is_string(), "{m}");
                reporting.insert(uid.to_string());
            }
            _ => {}
        }
    }
    // A command on B3's topic, answered on its reply topic.
    let (status, body) = command(&demo, "B3", "unlock").await;
    assert_eq!(
        (status, &body["transport"]),
        (200, &json!("mqtt")),
        "{body}"
    );
    let unlocked = body["result"] == json!({"status": "available"});
    assert!(unlocked || body["error"]["code"] == "fault", "{body}");
    // A restart: answered, then the point says offline and comes back.
    let (status, body) = command(&demo, "B3", "restart").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["restarting"], true, "{body}");
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while states != ["offline", "online"] {
        let m = next_data(&mut vb, deadline)
            .await
            .unwrap_or_else(|| panic!("B3 after its restart: {states:?}"));
        let state = m["event_kind"]
            .as_str()
            .and_then(|k| k.strip_prefix("device_"));
        if let (true, Some(state)) = (m["data"]["device"] == "B3", state) {
            states.push(state.to_string());
        }
    }
    demo.shutdown().await;
}

#[tokio::test]
async fn an_outage_over_mqtt_ends_in_the_last_will_then_the_return() {
    let broker = MosquittoServer::start(&NAMES).await;
    let liveness = Liveness {
        silent_after: Duration::from_secs(1),
        telemetry_every: Duration::from_millis(250),
        outage_every: Duration::from_secs(4),
        mute: Duration::from_millis(1800),
        cut: Duration::from_secs(1),
    };
    let demo = start(&broker, liveness).await;
    let mut vb = page(&demo).await;
    let mut states: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = next_data(&mut vb, deadline)
            .await
            .unwrap_or_else(|| panic!("no outage seen whole: {states:?}"));
        let Some(state) = m["event_kind"]
            .as_str()
            .and_then(|k| k.strip_prefix("device_"))
        else {
            continue;
        };
        let device = m["data"]["device"].as_str().unwrap().to_string();
        let reason = m["data"]["reason"].as_str().unwrap_or_default().to_string();
        let list = states.entry(device).or_default();
        list.push((state.to_string(), reason));
        // Silent, then offline by its Last Will (`status`), then online.
        let whole = |w: &[(String, String)]| {
            w[0].0 == "silent" && w[1] == ("offline".into(), "status".into()) && w[2].0 == "online"
        };
        if list.windows(3).any(whole) {
            break;
        }
    }
    demo.shutdown().await;
}
