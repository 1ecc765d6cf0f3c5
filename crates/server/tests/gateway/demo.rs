//! The demo's charging points are devices of its gateway (issue 14,
//! docs/devices.md "The demo"): `chouquette demo` really runs (a small
//! fleet), a user's page is played by a WebSocket client subscribing with
//! the backend's own subscribe message, and commands go through the
//! backend's `/api/command`. What is shown: each point reports with its
//! keywords and its time and is announced online; a point's token cannot
//! publish as another point; a command reaches its point and the answer
//! comes back (offline at once while it restarts); an outage shows
//! `device_silent`, `device_offline`, then `device_online`.

use std::collections::HashMap;
use std::time::Duration;

use chouquette::demo::{self, DemoOptions, Liveness};
use chouquette::http_client::HttpClient;
use chouquette::serve::Running;
use chouquette_testkit::{Received, WsClient};
use serde_json::{Value, json};
use tokio::time::Instant;

const SECRET: &str = "the-demo-test-secret";
const POINTS: usize = 8;

/// A calm fleet: no outage within a test, a steady heartbeat.
fn calm() -> Liveness {
    Liveness {
        silent_after: Duration::from_secs(10),
        telemetry_every: Duration::from_millis(300),
        outage_every: Duration::from_secs(3600),
        mute: Duration::from_secs(1),
        cut: Duration::from_secs(1),
    }
}

async fn start(rate: f64, liveness: Liveness) -> Running {
    let any = "127.0.0.1:0".parse().unwrap();
    let mut options = DemoOptions::new(any, any, rate);
    options.fleet_size = POINTS;
    options.secret = Some(SECRET.into());
    options.liveness = liveness;
    demo::start(options).await.expect("the demo starts")
}

/// `user`'s page: subscribed with what the backend's
/// `/api/get_subscription` gives; returns its snapshots too.
async fn page(demo: &Running, user: &str) -> (WsClient, Vec<Value>) {
    let url = format!("http://{}/api/get_subscription?user={user}", demo.public);
    let (status, body) = HttpClient::default().get(&url, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mut client = WsClient::connect(&format!("ws://{}/ws", demo.public)).await;
    client
        .send_json(&serde_json::from_str(&body).unwrap())
        .await;
    let (ack, snapshots) = client.recv_until("ack").await;
    assert_eq!(ack["class"], "ack", "{ack}");
    (client, snapshots)
}

/// The next `data` message within what is left until `deadline`.
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

/// Posts to the backend's `/api/command`.
async fn command(demo: &Running, user: &str, borne: &str, what: &str) -> (u16, Value) {
    let url = format!("http://{}/api/command", demo.public);
    let body = json!({"user": user, "borne": borne, "command": what}).to_string();
    let (status, text) = HttpClient::default()
        .send_json("POST", &url, None, body.into_bytes())
        .await
        .unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn keywords(m: &Value) -> Vec<&str> {
    m["keywords"]
        .as_array()
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_point_is_an_online_device_reporting_with_its_keywords_and_time() {
    let demo = start(10.0, calm()).await;
    let (mut vb, snapshots) = page(&demo, "vb").await;
    let mut online = std::collections::HashSet::new();
    let mut reporting = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = snapshots.into_iter();
    while online.len() < POINTS || reporting.len() < POINTS {
        let m = match events.next() {
            Some(m) => m,
            None => next_data(&mut vb, deadline)
                .await
                .unwrap_or_else(|| panic!("online {online:?}, reporting {reporting:?}")),
        };
        let kind = m["event_kind"].as_str().unwrap_or_default();
        if kind == "device_online" {
            assert_eq!(
                keywords(&m),
                [format!("device:{}", m["data"]["device"].as_str().unwrap())]
            );
            assert_eq!(m["data"]["transport"], "ws", "{m}");
            online.insert(m["data"]["device"].as_str().unwrap().to_string());
        } else if kind == "telemetry" || kind == "status" || kind == "alarm" {
            let uid = m["data"]["uid"].as_str().unwrap();
            assert!(
                keywords(&m).contains(&format!("borne:{uid}").as_str()),
                "{m}"
            );
            assert!(m["device_time"].is_string(), "the point's own time: {m}");
            if kind == "telemetry" {
                reporting.insert(uid.to_string());
            }
        }
    }
    demo.shutdown().await;
}

#[tokio::test]
async fn a_points_token_cannot_publish_as_another_point() {
    let demo = start(1.0, calm()).await;
    let (mut vb, _) = page(&demo, "vb").await;
    let mut b2 = WsClient::connect(&format!("ws://{}/ws", demo.public)).await;
    let token = demo::device::token(SECRET, "B2");
    b2.send_json(&json!({"class": "connect", "app_id": demo::APP, "token": token}))
        .await;
    assert_eq!(b2.recv_until("ack").await.0["class"], "ack");
    let event = |uuid: &str, borne: &str, marker: &str| {
        json!({"class": "publish", "uuid": uuid, "app_id": demo::APP, "channel": demo::CHANNEL,
               "event_kind": "alarm", "keywords": [format!("borne:{borne}"), "level:critical"],
               "data": {"uid": borne, "level": "critical", "message": marker}})
    };
    b2.send_json(&event("spoof", "B1", "spoofed")).await;
    let (answer, _) = b2.recv_until("error").await;
    assert_eq!(
        (answer["code"].as_str(), answer["ref"].as_str()),
        (Some("not_allowed"), Some("spoof"))
    );
    b2.send_json(&event("own", "B2", "marker")).await;
    let (answer, _) = b2.recv_until("ack").await;
    assert_eq!(answer["ref"], "own", "{answer}");
    // The page sees B2's own event, and never the one claiming to be B1.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = next_data(&mut vb, deadline).await.expect("B2's own event");
        assert_ne!(m["data"]["message"], "spoofed", "{m}");
        if m["data"]["message"] == "marker" {
            assert_eq!(keywords(&m), ["borne:B2", "level:critical"]);
            break;
        }
    }
    demo.shutdown().await;
}

#[tokio::test]
async fn a_command_reaches_its_point_and_its_answer_comes_back() {
    let demo = start(1.0, calm()).await;
    // Every point connected: B3 announced online on the page.
    let (mut vb, snapshots) = page(&demo, "vb").await;
    let online = |m: &Value| m["event_kind"] == "device_online" && m["data"]["device"] == "B3";
    if !snapshots.iter().any(online) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !online(&next_data(&mut vb, deadline).await.expect("B3 online")) {}
    }
    // Roger may command only B1; a command is unlock or restart.
    assert_eq!(command(&demo, "roger", "B3", "unlock").await.0, 403);
    assert_eq!(command(&demo, "vb", "B3", "explode").await.0, 400);

    let (status, body) = command(&demo, "vb", "B3", "restart").await;
    assert_eq!(status, 200, "{body}");
    let back = json!({"restarting": true, "back_in_ms": 3000});
    assert_eq!(body, json!({"result": back, "transport": "ws"}));
    // While it restarts, the gateway says at once that it is away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    let (status, body) = command(&demo, "vb", "B3", "unlock").await;
    assert_eq!((status, &body["code"]), (404, &json!("offline")), "{body}");
    assert!(body["last_seen"].is_string(), "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    // Back within its 3 s: unlocked (a restart cleared any fault; the
    // simulator may have put it in fault since, which it says itself).
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, body) = loop {
        let (status, body) = command(&demo, "vb", "B3", "unlock").await;
        if status != 404 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["transport"], "ws", "{body}");
    let unlocked = body["result"] == json!({"status": "available"});
    assert!(unlocked || body["error"]["code"] == "fault", "{body}");
    if unlocked {
        // The point reported its new status itself.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = next_data(&mut vb, deadline).await.expect("B3's status");
            if m["event_kind"] == "status"
                && m["data"]["uid"] == "B3"
                && m["data"]["status"] == "available"
            {
                break;
            }
        }
    }
    demo.shutdown().await;
}

#[tokio::test]
async fn an_outage_shows_the_point_silent_then_offline_then_online() {
    let liveness = Liveness {
        silent_after: Duration::from_secs(1),
        telemetry_every: Duration::from_millis(250),
        outage_every: Duration::from_secs(4),
        mute: Duration::from_millis(1800),
        cut: Duration::from_secs(1),
    };
    let demo = start(2.0, liveness).await;
    let (mut vb, _) = page(&demo, "vb").await;
    // Each device's liveness states, in the order announced.
    let mut states: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
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
        if state != "online" {
            assert_ne!(device, "B1", "B1 never goes out: {m}");
        }
        let list = states.entry(device.clone()).or_default();
        list.push(state.to_string());
        let whole = ["silent", "offline", "online"].map(String::from);
        if list.windows(3).any(|w| w == whole) {
            break device;
        }
    };
    assert!(seen.starts_with('B'), "{seen}");
    demo.shutdown().await;
}
