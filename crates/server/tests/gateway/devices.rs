//! Device liveness (docs/devices.md, "Liveness"): a connection whose
//! `connect` token has a `publish` claim is a device of an app with
//! `[apps.devices]`; its coming, silence, return and going are published
//! on the configured channel and POSTed, signed, to the webhook.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use chouquette_core::rpc::signature::{SIGNATURE_HEADER, verify};
use chouquette_testkit::{APP, Backend, SECRET, TestNode, WsClient, config_with, sign};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// `[apps.devices]` on channel `liveness` (keeping state), with `extra`.
fn config(silent_after: &str, extra: &str) -> String {
    config_with(
        "",
        &format!(
            "[apps.channels.liveness]\nhistory = 100\nkeep_state = true\n\
             [apps.devices]\nchannel = \"liveness\"\nsilent_after = \"{silent_after}\"\n{extra}"
        ),
    )
}

/// A client connected as `user`, a device when `publish` is true.
async fn connected(node: &TestNode, user: &str, publish: bool) -> WsClient {
    let exp = chouquette_core::clock::unix_now() + 3600;
    let mut claims = json!({"app_id": APP, "sub": user, "exp": exp});
    if publish {
        claims["publish"] = json!({ "telemetry": [format!("device:{user}")] });
    }
    let token = sign(&claims, SECRET);
    let mut client = node.client().await;
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": token}))
        .await;
    let (ack, _) = client.recv_until("ack").await;
    assert_eq!(ack["class"], "ack");
    client
}

/// A subscriber to every liveness event; returns it with its snapshots.
async fn watcher(node: &TestNode) -> (WsClient, Vec<Value>) {
    let mut watcher = node.client().await;
    let (_, snapshots) = watcher.subscribe("liveness", json!({"*": {}})).await;
    (watcher, snapshots)
}

/// The next liveness event the watcher gets.
async fn next_event(watcher: &mut WsClient) -> Value {
    loop {
        let m = watcher.recv().await;
        if m["class"] == "data" && m["channel"] == "liveness" {
            return m;
        }
    }
}

fn assert_event(event: &Value, kind: &str, device: &str, reason: &str) {
    assert_eq!(event["event_kind"], kind, "{event}");
    assert_eq!(
        event["keywords"],
        json!([format!("device:{device}")]),
        "{event}"
    );
    assert_eq!(event["data"]["device"], device, "{event}");
    assert_eq!(event["data"]["reason"], reason, "{event}");
}

#[tokio::test]
async fn a_device_comes_online_goes_silent_comes_back_and_goes_offline() {
    let node = TestNode::start(&config("1s", "")).await;
    let (mut watcher, _) = watcher(&node).await;
    // A user without a `publish` claim is no device: the first event is D1's.
    let _user = connected(&node, "roger", false).await;
    let mut device = connected(&node, "D1", true).await;
    let online = next_event(&mut watcher).await;
    assert_event(&online, "device_online", "D1", "connected");
    assert_eq!(online["data"]["state"], "online");
    assert_eq!(online["data"]["transport"], "ws");
    assert_eq!(online["data"]["node"], node.running.node.id().to_string());
    assert!(node.running.node.devices().is_online(APP, "D1"));

    let silent = next_event(&mut watcher).await;
    assert_event(&silent, "device_silent", "D1", "silence");
    assert!(!node.running.node.devices().is_online(APP, "D1"));

    device
        .send_json(&json!({"class": "publish", "uuid": "p1", "app_id": APP,
            "channel": "telemetry", "event_kind": "reading",
            "keywords": ["device:D1"], "data": {"t": 21}}))
        .await;
    assert_eq!(device.recv().await["class"], "ack");
    let back = next_event(&mut watcher).await;
    assert_event(&back, "device_online", "D1", "message");
    let seen = back["data"]["last_seen"].as_u64().expect("last_seen");
    assert_eq!(node.running.node.devices().last_seen(APP, "D1"), Some(seen));

    device.close().await;
    let offline = next_event(&mut watcher).await;
    assert_event(&offline, "device_offline", "D1", "disconnected");
    assert_eq!(offline["data"]["last_seen"].as_u64(), Some(seen));

    // A new subscriber's snapshot shows the device's current liveness.
    let (_, snapshots) = self::watcher(&node).await;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0]["event_kind"], "device_offline");
    assert_eq!(snapshots[0]["snapshot"], true);
    let online = "chouquette_devices_transitions_total{app=\"bluelib\",state=\"online\"}";
    assert_eq!(node.metric(online).await, Some(2.0));
}

#[tokio::test]
async fn past_max_devices_a_new_connected_device_is_not_tracked() {
    let node = TestNode::start(&config("1h", "max_devices = 1\n")).await;
    let (mut watcher, _) = watcher(&node).await;
    let a = connected(&node, "A", true).await;
    assert_event(
        &next_event(&mut watcher).await,
        "device_online",
        "A",
        "connected",
    );
    let _b = connected(&node, "B", true).await;
    let untracked = "chouquette_devices_untracked_total{app=\"bluelib\"}";
    let counted = chouquette_testkit::eventually(Duration::from_secs(5), async || {
        node.metric(untracked).await == Some(1.0)
    })
    .await;
    assert!(counted, "B counted as untracked");
    a.close().await;
    // B never had an event: the next one is A's going.
    assert_event(
        &next_event(&mut watcher).await,
        "device_offline",
        "A",
        "disconnected",
    );
    assert!(!node.running.node.devices().is_online(APP, "B"));
}

/// A backend that hands each POST's signature header and body to `tx`.
fn hook(tx: mpsc::UnboundedSender<(String, Bytes)>) -> Router {
    Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let signature = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send((signature, body));
                "ok"
            }
        }),
    )
}

#[tokio::test]
async fn the_webhook_receives_each_event_signed_with_the_app_secret() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let backend = Backend::start(hook(tx)).await;
    let extra = format!("[apps.devices.webhook]\nurl = \"{}/hook\"\n", backend.url());
    let node = TestNode::start(&config("1h", &extra)).await;
    let device = connected(&node, "D7", true).await;
    let (signature, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a POST in time")
        .expect("a POST");
    let now = chouquette_core::clock::unix_now();
    verify(SECRET.as_bytes(), &signature, &body, now, 300).expect("signature verifies");
    assert!(verify(b"another secret", &signature, &body, now, 300).is_err());
    let event: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(event["app_id"], APP);
    assert_eq!(event["channel"], "liveness");
    assert_eq!(event["event_kind"], "device_online");
    assert_eq!(event["key"], "liveness:D7");
    assert_eq!(event["data"]["device"], "D7");
    assert_eq!(event["offset"], 1);
    device.close().await;
    let (_, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a second POST in time")
        .expect("a POST");
    let event: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(event["event_kind"], "device_offline");
    let delivered = "chouquette_devices_webhooks_total{app=\"bluelib\",outcome=\"delivered\"}";
    let counted = chouquette_testkit::eventually(Duration::from_secs(5), async || {
        node.metric(delivered).await == Some(2.0)
    })
    .await;
    assert!(counted);
}

#[tokio::test]
async fn a_command_to_a_device_that_left_is_offline_at_once_with_its_last_seen_time() {
    let node = TestNode::start(&config("1h", "")).await;
    let (mut watcher, _) = watcher(&node).await;
    let device = connected(&node, "D7", true).await;
    assert_event(
        &next_event(&mut watcher).await,
        "device_online",
        "D7",
        "connected",
    );
    drop(device);
    let offline = next_event(&mut watcher).await;
    assert_event(&offline, "device_offline", "D7", "disconnected");
    let body = json!({"app_id": APP, "device": "D7", "method": "device.status", "timeout": "30s"});
    let (status, answer) = node
        .api_post(
            "/api/v1/devices/commands",
            Some(chouquette_testkit::API_KEY),
            &body,
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["code"], "offline", "{answer}");
    let last_seen = answer["last_seen"].as_str().unwrap_or_default();
    assert!(last_seen.starts_with("20"), "an RFC 3339 time: {answer}");
}
