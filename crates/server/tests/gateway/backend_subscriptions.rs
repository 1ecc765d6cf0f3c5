//! Backend-driven subscriptions (docs/protocol.md "Backend-driven
//! subscriptions"): `POST /api/v1/subscriptions` subscribes every connection
//! of a user now and at its later `connect`s, `DELETE` ends it; other users
//! get nothing. On the memory broker; `tests/redis/users.rs` crosses nodes.

use chouquette_testkit::{API_KEY, APP, TestNode, WsClient};
use serde_json::{Value, json};

/// A POST body for `user` on `channel` with `filters`.
fn grant(user: &str, channel: &str, filters: Value) -> Value {
    json!({"app_id": APP, "user": user, "channel": channel, "filters": filters})
}

/// A DELETE body for `user` on `channel`.
fn revoke(user: &str, channel: &str) -> Value {
    json!({"app_id": APP, "user": user, "channel": channel})
}

/// A client with the identity `user`, listening for markers.
async fn identified(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.join_sync().await;
    client.identify(user).await;
    client
}

/// Reads up to `subscribed` for `channel`; returns it and what came before.
async fn subscribed(client: &mut WsClient, channel: &str) -> (Value, Vec<Value>) {
    let (message, before) = client.recv_until("subscribed").await;
    assert_eq!(message["channel"], channel, "{message}");
    assert!(message["epoch"].is_string(), "{message}");
    assert!(message["uuid"].is_string() && message["timestamp"].is_string());
    (message, before)
}

/// The `data` messages of `channel` before the next marker.
async fn data_before_marker(node: &TestNode, client: &mut WsClient, channel: &str) -> Vec<Value> {
    let marker = node.publish_marker().await;
    let got = client.until_marker(marker).await;
    got.into_iter()
        .filter(|m| m["class"] == "data" && m["channel"] == channel)
        .collect()
}

#[tokio::test]
async fn a_backend_subscription_reaches_every_connection_of_the_user_and_no_one_else() {
    let node = TestNode::base().await;
    let mut roger_1 = identified(&node, "roger").await;
    let mut roger_2 = identified(&node, "roger").await;
    let mut vb = identified(&node, "vb").await;
    let filters = json!({"alarm": {"borne": "B1"}});
    let (status, body) = node
        .user_subscription("POST", Some(API_KEY), &grant("roger", "alerts", filters))
        .await;
    assert_eq!((status, &body), (200, &json!({"connections": 2})));
    for client in [&mut roger_1, &mut roger_2] {
        let (message, before) = subscribed(client, "alerts").await;
        assert!(before.is_empty(), "{before:?}");
        assert_eq!(message["offset"], 0, "{message}");
    }
    node.publish("alerts", "alarm", &["borne:B1"], json!("for roger"))
        .await;
    node.publish("alerts", "alarm", &["borne:B2"], json!("filtered out"))
        .await;
    for client in [&mut roger_1, &mut roger_2] {
        let got = data_before_marker(&node, client, "alerts").await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["data"], "for roger");
    }
    let marker = node.publish_marker().await;
    assert_eq!(vb.until_marker(marker).await, Vec::<Value>::new());
    // Each identity's grants read at connect, then the POST to roger's two.
    let posted = node
        .metric(r#"chouquette_user_commands_total{outcome="posted"}"#)
        .await;
    assert_eq!(posted, Some(5.0));
}

#[tokio::test]
async fn a_connection_the_user_opens_later_is_subscribed_at_connect() {
    let node = TestNode::base().await;
    let filters = json!({"alarm": {}});
    let (status, body) = node
        .user_subscription("POST", Some(API_KEY), &grant("roger", "alerts", filters))
        .await;
    assert_eq!((status, &body), (200, &json!({"connections": 0})));
    let mut later = identified(&node, "roger").await;
    let (message, before) = subscribed(&mut later, "alerts").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(message["offset"], 0);
    node.publish("alerts", "alarm", &["borne:B7"], json!(1))
        .await;
    let got = data_before_marker(&node, &mut later, "alerts").await;
    assert_eq!(got.len(), 1, "{got:?}");
    // Another user connecting later gets nothing.
    let mut other = identified(&node, "vb").await;
    node.publish("alerts", "alarm", &["borne:B7"], json!(2))
        .await;
    assert!(
        data_before_marker(&node, &mut other, "alerts")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn delete_ends_the_backend_subscription_with_unsubscribed_and_no_more_events() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let body = grant("roger", "alerts", json!({"alarm": {}}));
    assert_eq!(
        node.user_subscription("POST", Some(API_KEY), &body).await.0,
        200
    );
    subscribed(&mut roger, "alerts").await;
    let (status, body) = node
        .user_subscription("DELETE", Some(API_KEY), &revoke("roger", "alerts"))
        .await;
    assert_eq!((status, &body), (200, &json!({"connections": 1})));
    let (message, before) = roger.recv_until("unsubscribed").await;
    assert_eq!(message["channel"], "alerts");
    assert!(before.is_empty(), "{before:?}");
    node.publish("alerts", "alarm", &["borne:B1"], json!("too late"))
        .await;
    assert!(
        data_before_marker(&node, &mut roger, "alerts")
            .await
            .is_empty()
    );
    // Revoked for later connections too.
    let mut later = identified(&node, "roger").await;
    node.publish("alerts", "alarm", &["borne:B1"], json!("still late"))
        .await;
    let got = {
        let marker = node.publish_marker().await;
        later.until_marker(marker).await
    };
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn keep_state_snapshots_come_before_subscribed() {
    let node = TestNode::base().await;
    let event = json!({"app_id": APP, "channel": "bornes", "event_kind": "status",
                       "keywords": ["borne:B1"], "key": "B1", "data": {"state": "free"}});
    let (_, offset) = node.publish_event(&event).await;
    let mut roger = identified(&node, "roger").await;
    let body = grant("roger", "bornes", json!({"status": {"borne": "B1"}}));
    assert_eq!(
        node.user_subscription("POST", Some(API_KEY), &body).await.0,
        200
    );
    let (message, before) = subscribed(&mut roger, "bornes").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["class"], "data");
    assert_eq!(before[0]["data"], json!({"state": "free"}));
    assert_eq!(message["offset"], offset, "{message}");
}

#[tokio::test]
async fn a_client_subscribe_replaces_the_backend_one_which_delete_then_leaves_alone() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let body = grant("roger", "alerts", json!({"alarm": {"borne": "B1"}}));
    node.user_subscription("POST", Some(API_KEY), &body).await;
    subscribed(&mut roger, "alerts").await;
    // The client's own token, for B2 only, replaces the backend's.
    let (ack, _) = roger
        .subscribe("alerts", json!({"alarm": {"borne": "B2"}}))
        .await;
    assert!(ack["channels"]["alerts"].is_object(), "{ack}");
    let (status, _) = node
        .user_subscription("DELETE", Some(API_KEY), &revoke("roger", "alerts"))
        .await;
    assert_eq!(status, 200);
    node.publish("alerts", "alarm", &["borne:B1"], json!("B1"))
        .await;
    node.publish("alerts", "alarm", &["borne:B2"], json!("B2"))
        .await;
    let marker = node.publish_marker().await;
    let got = roger.until_marker(marker).await;
    let classes: Vec<_> = got.iter().map(|m| m["class"].clone()).collect();
    assert_eq!(
        classes,
        [json!("data")],
        "no unsubscribed, one event: {got:?}"
    );
    assert_eq!(got[0]["data"], "B2");
}

#[tokio::test]
async fn subscription_requests_are_authenticated_first_then_checked() {
    let node = TestNode::base().await;
    let good = grant("roger", "alerts", json!({"alarm": {}}));
    let (status, body) = node.user_subscription("POST", None, &good).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("not_allowed")));
    let (wrong, wrong_body) = node.user_subscription("POST", Some("nope"), &good).await;
    assert_eq!(
        (wrong, wrong_body["code"].as_str()),
        (403, Some("not_allowed"))
    );
    // An unknown app reads exactly as a wrong key, even with junk filters.
    let mut unknown = grant("roger", "alerts", json!("junk"));
    unknown["app_id"] = json!("nobody");
    let (status, body) = node
        .user_subscription("POST", Some(API_KEY), &unknown)
        .await;
    assert_eq!((status, &body), (403, &wrong_body));
    let (status, _) = node
        .user_subscription("DELETE", Some("nope"), &revoke("roger", "alerts"))
        .await;
    assert_eq!(status, 403);
    let bad_bodies = [
        grant("roger", "alerts", json!("not filters")),
        grant("roger", "alerts", json!({"alarm": 7})),
        grant("roger", "bad channel!", json!({"alarm": {}})),
        grant("", "alerts", json!({"alarm": {}})),
        json!({"app_id": APP, "user": "roger", "channel": "alerts"}),
    ];
    for body in bad_bodies {
        let (status, answer) = node.user_subscription("POST", Some(API_KEY), &body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("bad_message")),
            "{body}"
        );
    }
    // Nothing was stored: a connection opened now is not subscribed.
    let mut roger = identified(&node, "roger").await;
    let marker = node.publish_marker().await;
    assert!(roger.until_marker(marker).await.is_empty());
}

/// A `connect` message for `user` of [`APP`] expiring at `exp`.
fn connect_until(user: &str, exp: u64) -> Value {
    let claims = json!({"app_id": APP, "sub": user, "exp": exp});
    json!({"class": "connect", "app_id": APP, "token": chouquette_testkit::sign(&claims, chouquette_testkit::SECRET)})
}

#[tokio::test]
async fn backend_subscriptions_end_when_the_identity_expires_or_changes_hands() {
    let node = TestNode::start(&format!(
        "[tokens]\nleeway = \"0s\"\n{}",
        chouquette_testkit::BASE_CONFIG
    ))
    .await;
    let body = grant("roger", "alerts", json!({"alarm": {}}));
    node.user_subscription("POST", Some(API_KEY), &body).await;
    let now = chouquette_core::clock::unix_now();
    // Expiry: `token_expired`, then `unsubscribed`, then no more events.
    let mut expiring = node.client().await;
    expiring.join_sync().await;
    expiring.send_json(&connect_until("roger", now + 2)).await;
    assert_eq!(expiring.recv().await["class"], "ack");
    subscribed(&mut expiring, "alerts").await;
    let (gone, before) = expiring.recv_until("unsubscribed").await;
    assert_eq!(gone["channel"], "alerts");
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["code"], "token_expired");
    node.publish("alerts", "alarm", &[], json!("after expiry"))
        .await;
    assert!(
        data_before_marker(&node, &mut expiring, "alerts")
            .await
            .is_empty()
    );
    // Another user's connect on the same connection ends roger's grants.
    let mut shared = identified(&node, "roger").await;
    subscribed(&mut shared, "alerts").await;
    shared.send_json(&connect_until("vb", now + 3600)).await;
    let (gone, _) = shared.recv_until("unsubscribed").await;
    assert_eq!(gone["channel"], "alerts");
    assert_eq!(shared.recv().await["class"], "ack");
    node.publish("alerts", "alarm", &[], json!("for roger only"))
        .await;
    assert!(
        data_before_marker(&node, &mut shared, "alerts")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_user_past_64_backend_subscriptions_is_refused_a_new_channel_but_may_change_filters() {
    let node = TestNode::base().await;
    for i in 0..64 {
        let body = grant("roger", &format!("c{i}"), json!({"alarm": {}}));
        let (status, _) = node.user_subscription("POST", Some(API_KEY), &body).await;
        assert_eq!(status, 200, "channel {i}");
    }
    let one_more = grant("roger", "c64", json!({"alarm": {}}));
    let (status, body) = node
        .user_subscription("POST", Some(API_KEY), &one_more)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (507, Some("too_many_subscriptions"))
    );
    let changed = grant("roger", "c0", json!({"status": {}}));
    let (status, _) = node
        .user_subscription("POST", Some(API_KEY), &changed)
        .await;
    assert_eq!(status, 200);
    // Another user is not affected by roger's bound.
    let (status, _) = node
        .user_subscription(
            "POST",
            Some(API_KEY),
            &grant("vb", "c64", json!({"alarm": {}})),
        )
        .await;
    assert_eq!(status, 200);
}

const PYTHON_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/python/backend_subscriptions.py"
);

/// Runs docs/protocol.md's Python example with `args`; returns its exit
/// status and what it printed.
async fn python_example(node: &TestNode, key: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("python3")
        .arg(PYTHON_EXAMPLE)
        .args(["--gateway", &node.internal_url(), "--app", APP])
        .args(args)
        .env("CHOUQUETTE_API_KEY", key)
        .output()
        .await
        .expect("python3 runs");
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    });
    (out.status.success(), text.trim().to_string())
}

/// The Python example, run as written, subscribes and unsubscribes a user,
/// and reports the gateway's refusal of a wrong key.
#[tokio::test]
async fn the_python_example_subscribes_and_unsubscribes_a_user() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let filters = r#"{"alarm": {"borne": "B1"}}"#;
    let args = ["subscribe", "roger", "alerts", filters];
    let (ok, printed) = python_example(&node, API_KEY, &args).await;
    assert_eq!((ok, printed.as_str()), (true, r#"{"connections": 1}"#));
    subscribed(&mut roger, "alerts").await;
    node.publish("alerts", "alarm", &["borne:B1"], json!("for roger"))
        .await;
    let got = data_before_marker(&node, &mut roger, "alerts").await;
    assert_eq!(got.len(), 1, "{got:?}");

    let (ok, printed) = python_example(&node, API_KEY, &["unsubscribe", "roger", "alerts"]).await;
    assert_eq!((ok, printed.as_str()), (true, r#"{"connections": 1}"#));
    let (message, _) = roger.recv_until("unsubscribed").await;
    assert_eq!(message["channel"], "alerts");

    let (ok, printed) = python_example(&node, "wrong-key", &args).await;
    assert!(!ok && printed.starts_with("403 not_allowed"), "{printed}");
}
