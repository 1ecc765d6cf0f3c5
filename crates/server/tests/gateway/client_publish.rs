//! Clients publishing (docs/protocol.md, "Client publish"): only where the
//! `publish` claim of their `connect` token allows it, pinned to its
//! keywords, within the per-user rate; through the same pipeline as the
//! HTTP API.

use chouquette_testkit::{APP, SECRET, TestNode, WsClient, config_with, sign};
use serde_json::{Value, json};

/// A `connect` token of [`APP`] for `user`, with `publish` as its claim
/// (none when null).
fn connect_token(user: &str, publish: Value) -> String {
    let exp = chouquette_core::clock::unix_now() + 3600;
    let mut claims = json!({"app_id": APP, "sub": user, "exp": exp});
    if !publish.is_null() {
        claims["publish"] = publish;
    }
    sign(&claims, SECRET)
}

/// Connects `client` as `user` with `publish`; returns the answer.
async fn connect(client: &mut WsClient, user: &str, publish: Value) -> Value {
    let token = connect_token(user, publish);
    client
        .send_json(&json!({"class": "connect", "uuid": "c1", "app_id": APP, "token": token}))
        .await;
    client.recv().await
}

/// A device connected as `user`, allowed to publish on `devices` pinned to
/// `device:<user>`.
async fn device(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    let pin = format!("device:{user}");
    let answer = connect(&mut client, user, json!({ "devices": [pin] })).await;
    assert_eq!(answer["class"], "ack", "{answer}");
    client
}

/// A `publish` message on `channel` with `keywords`.
fn publish_msg(uuid: &str, channel: &str, keywords: &[&str], data: Value) -> Value {
    json!({"class": "publish", "uuid": uuid, "app_id": APP, "channel": channel,
           "event_kind": "status", "keywords": keywords, "data": data})
}

/// Sends a publish and returns the answer (the next message).
async fn publish(client: &mut WsClient, message: &Value) -> Value {
    client.send_json(message).await;
    client.recv().await
}

fn assert_refused(answer: &Value, code: &str, uuid: &str) {
    assert_eq!(answer["class"], "error", "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    assert_eq!(answer["ref"], uuid, "{answer}");
}

/// A subscriber to every `status` event of `devices`, synchronised on
/// markers.
async fn watcher(node: &TestNode) -> WsClient {
    let mut watcher = node.client().await;
    watcher.join_sync().await;
    watcher.subscribe("devices", json!({"status": {}})).await;
    watcher
}

/// The `data` messages of `devices` the watcher got before the next marker.
async fn seen(node: &TestNode, watcher: &mut WsClient) -> Vec<Value> {
    let marker = node.publish_marker().await;
    watcher
        .until_marker(marker)
        .await
        .into_iter()
        .filter(|m| m["class"] == "data" && m["channel"] == "devices")
        .collect()
}

#[tokio::test]
async fn a_device_publishes_as_itself_and_subscribers_receive_it() {
    let node = TestNode::base().await;
    let mut watcher = watcher(&node).await;
    let mut d1 = device(&node, "D1").await;
    let answer = publish(
        &mut d1,
        &publish_msg("p1", "devices", &["device:D1", "zone:Z"], json!({"t": 21})),
    )
    .await;
    assert_eq!(answer["class"], "ack", "{answer}");
    assert_eq!(answer["ref"], "p1", "{answer}");
    assert_eq!(answer["offset"], 1, "{answer}");
    assert!(answer["epoch"].is_string(), "{answer}");
    assert!(answer.get("duplicate").is_none(), "{answer}");
    let got = seen(&node, &mut watcher).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["data"], json!({"t": 21}));
    assert_eq!(got[0]["keywords"], json!(["device:D1", "zone:Z"]));
    let published = "chouquette_app_published_total{app=\"bluelib\"}";
    assert!(node.metric(published).await.unwrap_or(0.0) >= 1.0);
}

#[tokio::test]
async fn a_device_cannot_publish_as_another_or_add_a_second_device_keyword() {
    let node = TestNode::base().await;
    let mut watcher = watcher(&node).await;
    let mut d1 = device(&node, "D1").await;
    for (uuid, keywords) in [
        ("as-d2", vec!["device:D2"]),
        ("both", vec!["device:D1", "device:D2"]),
        ("none", vec!["zone:Z"]),
    ] {
        let answer = publish(&mut d1, &publish_msg(uuid, "devices", &keywords, json!(1))).await;
        assert_refused(&answer, "not_allowed", uuid);
    }
    assert_eq!(seen(&node, &mut watcher).await, Vec::<Value>::new());
    let rejected = node.metric("chouquette_publish_rejected_total").await;
    assert_eq!(rejected, Some(3.0));
}

#[tokio::test]
async fn a_channel_outside_the_claim_is_not_allowed() {
    let node = TestNode::base().await;
    let mut watcher = node.client().await;
    watcher.join_sync().await;
    watcher.subscribe("bornes", json!({"status": {}})).await;
    let mut d1 = device(&node, "D1").await;
    let message = publish_msg("p", "bornes", &["device:D1"], json!(1));
    assert_refused(&publish(&mut d1, &message).await, "not_allowed", "p");
    let marker = node.publish_marker().await;
    let before = watcher.until_marker(marker).await;
    assert!(
        before.iter().all(|m| m["channel"] != "bornes"),
        "{before:?}"
    );
}

#[tokio::test]
async fn publishing_needs_a_connect_whose_token_has_the_claim() {
    let node = TestNode::base().await;
    let mut watcher = watcher(&node).await;
    let message = publish_msg("p", "devices", &["device:D1"], json!(1));
    let mut anonymous = node.client().await;
    assert_refused(&publish(&mut anonymous, &message).await, "not_allowed", "p");
    let mut unclaimed = node.client().await;
    let answer = connect(&mut unclaimed, "D1", Value::Null).await;
    assert_eq!(answer["class"], "ack", "{answer}");
    assert_refused(&publish(&mut unclaimed, &message).await, "not_allowed", "p");
    assert_eq!(seen(&node, &mut watcher).await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_malformed_publish_claim_refuses_the_connect() {
    let node = TestNode::base().await;
    for claim in [
        json!(["devices"]),
        json!({"devices": "device:D1"}),
        json!({"devices": ["no-colon"]}),
        json!({"bad name": []}),
    ] {
        let mut client = node.client().await;
        let answer = connect(&mut client, "D1", claim.clone()).await;
        assert_refused(&answer, "invalid_token", "c1");
        let message = answer["message"].as_str().unwrap_or("");
        assert!(message.contains("publish"), "{claim}: {answer}");
        // No identity came of it.
        let message = publish_msg("p", "devices", &["device:D1"], json!(1));
        assert_refused(&publish(&mut client, &message).await, "not_allowed", "p");
    }
}

#[tokio::test]
async fn a_user_over_its_publish_rate_is_refused_while_another_user_publishes() {
    let app = "[apps.limits]\nclient_publishes_per_second = 1\nclient_publish_burst = 2";
    let node = TestNode::start(&config_with("", app)).await;
    let mut watcher = watcher(&node).await;
    let mut d1 = device(&node, "D1").await;
    let mut d2 = device(&node, "D2").await;
    for i in 0..2 {
        let message = publish_msg(&format!("ok{i}"), "devices", &["device:D1"], json!(i));
        assert_eq!(publish(&mut d1, &message).await["class"], "ack");
    }
    let over = publish_msg("over", "devices", &["device:D1"], json!("over"));
    assert_refused(&publish(&mut d1, &over).await, "rate_limited", "over");
    let other = publish_msg("d2", "devices", &["device:D2"], json!("d2"));
    assert_eq!(publish(&mut d2, &other).await["class"], "ack");
    let got: Vec<Value> = seen(&node, &mut watcher)
        .await
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(got, vec![json!(0), json!(1), json!("d2")]);
    let limited = "chouquette_limited_total{limit=\"client_publishes\"}";
    assert_eq!(node.metric(limited).await, Some(1.0));
}

#[tokio::test]
async fn a_repeated_publish_id_answers_duplicate_and_publishes_once() {
    let node = TestNode::base().await;
    let mut watcher = watcher(&node).await;
    let mut d1 = device(&node, "D1").await;
    let mut message = publish_msg("p1", "devices", &["device:D1"], json!("once"));
    message["id"] = json!("reading-42");
    let first = publish(&mut d1, &message).await;
    assert_eq!(first["class"], "ack", "{first}");
    message["uuid"] = json!("p2");
    let again = publish(&mut d1, &message).await;
    assert_eq!(again["class"], "ack", "{again}");
    assert_eq!(again["ref"], "p2");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(
        (&again["epoch"], &again["offset"]),
        (&first["epoch"], &first["offset"])
    );
    assert_eq!(seen(&node, &mut watcher).await.len(), 1);
}

#[tokio::test]
async fn a_publish_with_bad_fields_is_a_bad_message_and_publishes_nothing() {
    let node = TestNode::base().await;
    let mut watcher = watcher(&node).await;
    let mut d1 = device(&node, "D1").await;
    let mut unknown = publish_msg("u", "devices", &["device:D1"], json!(1));
    unknown["extra"] = json!(true);
    assert_refused(&publish(&mut d1, &unknown).await, "bad_message", "u");
    let mut kind = publish_msg("k", "devices", &["device:D1"], json!(1));
    kind["event_kind"] = json!("*");
    assert_refused(&publish(&mut d1, &kind).await, "bad_message", "k");
    assert_eq!(seen(&node, &mut watcher).await, Vec::<Value>::new());
}

/// docs/backend-quickstart.md, "Let a device publish", run as written: the
/// Python backend's `device-connect` message lets D1 publish as D1 only.
#[tokio::test]
async fn the_quickstart_device_connect_publishes_as_its_device_only() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python/backend.py"
    );
    let output = tokio::process::Command::new("python3")
        .args([script, "device-connect", "--device", "D1"])
        .env("CHOUQUETTE_SECRET", SECRET)
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the quickstart backend failed: {stderr}"
    );
    let message: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let node = TestNode::base().await;
    let mut watcher = watcher(&node).await;
    let mut d1 = node.client().await;
    d1.send_json(&message).await;
    assert_eq!(d1.recv().await["class"], "ack");
    let own = publish_msg("own", "devices", &["device:D1"], json!("D1"));
    assert_eq!(publish(&mut d1, &own).await["class"], "ack");
    let other = publish_msg("other", "devices", &["device:D2"], json!("D2"));
    assert_refused(&publish(&mut d1, &other).await, "not_allowed", "other");
    let got: Vec<Value> = seen(&node, &mut watcher)
        .await
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(got, vec![json!("D1")]);
}
