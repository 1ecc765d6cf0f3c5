//! Configured limits: connections per node, subscriptions per connection.

use chouquette_testkit::{APP, TestNode, config_with, token};
use serde_json::json;
use tokio_tungstenite::tungstenite;

use crate::common::{event, offsets, subscribe_msg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_the_upgrade_is_refused_with_503() {
    let node = TestNode::start(&config_with("max_connections = 2", "")).await;
    let mut first = node.client().await;
    let mut second = node.client().await;
    // Each ack proves its connection is open on the gateway's side.
    first.subscribe("bornes", json!({"*": {}})).await;
    second.subscribe("bornes", json!({"*": {}})).await;

    for _ in 0..3 {
        match tokio_tungstenite::connect_async(node.ws_url()).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 503, "{response:?}");
            }
            Err(other) => panic!("expected an HTTP 503 refusal, got {other}"),
            Ok(_) => panic!("a third connection was accepted"),
        }
    }

    // The first two keep working.
    node.publish_event(&event("bornes", "k", &[], json!("both")))
        .await;
    assert_eq!(first.recv().await["data"], "both");
    assert_eq!(second.recv().await["data"], "both");
    assert_eq!(node.metric("chouquette_connections").await, Some(2.0));
    assert!(
        node.metric("chouquette_closes_total{reason=\"full\"}")
            .await
            .is_some_and(|n| n >= 3.0)
    );
    node.running.shutdown().await;
}

#[tokio::test]
async fn past_max_subscriptions_per_connection_a_channel_is_refused() {
    let node = TestNode::start(&config_with("max_subscriptions_per_connection = 2", "")).await;
    let mut client = node.client().await;
    let all = json!({"*": {}});
    let (ta, tb, tc) = (
        token("a", all.clone(), 60),
        token("b", all.clone(), 60),
        token("c", all.clone(), 60),
    );
    client
        .send_json(&subscribe_msg(
            "s1",
            APP,
            &[("a", &ta), ("b", &tb), ("c", &tc)],
        ))
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["class"], "error");
    assert_eq!(before[0]["code"], "too_many_subscriptions");
    assert_eq!(before[0]["channel"], "c");
    assert_eq!(before[0]["ref"], "s1");
    let channels = ack["channels"].as_object().expect("channels");
    assert_eq!(
        channels.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["a", "b"]
    );

    // Subscribing again to a channel it holds replaces it: still allowed.
    client
        .send_json(&subscribe_msg("s2", APP, &[("a", &ta)]))
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["class"], "ack", "{ack}");
    // A third one alone is refused too.
    client
        .send_json(&subscribe_msg("s3", APP, &[("c", &tc)]))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["code"], "too_many_subscriptions", "{reply}");
    assert_eq!(reply["channel"], "c", "{reply}");
    // After leaving one, there is room again.
    client
        .send_json(&json!({"class": "unsubscribe", "uuid": "u", "channels": ["b"]}))
        .await;
    assert_eq!(client.recv().await["ref"], "u");
    client
        .send_json(&subscribe_msg("s4", APP, &[("c", &tc)]))
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["class"], "ack", "{ack}");

    // Delivery matches what is held: a and c, not b.
    let mut got = Vec::new();
    for chan in ["b", "a", "c"] {
        node.publish_event(&event(chan, "k", &[], json!(chan)))
            .await;
    }
    for _ in 0..2 {
        got.push(client.recv().await);
    }
    assert_eq!(offsets(&got, "a"), vec![1]);
    assert_eq!(offsets(&got, "c"), vec![1]);
    assert_eq!(node.metric("chouquette_subscriptions").await, Some(2.0));
    node.running.shutdown().await;
}

const HEARTBEAT: &str = "ping_interval = \"200ms\"\nidle_timeout = \"500ms\"";

/// A client that stops answering (no frame, not even a pong) is closed as
/// dead with 1001 `idle_timeout`, and counted.
#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let node = TestNode::start(&config_with(HEARTBEAT, "")).await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    // Not reading: the client's WebSocket layer cannot answer pings.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // The gateway sent close 1001 `idle_timeout` and dropped the socket; the
    // client may see that frame, or (when its own late pongs draw a reset
    // that discards unread data) just the end of the stream.
    let close = client.expect_close().await;
    assert!(
        close.is_none() || close == Some((1001, "idle_timeout".to_string())),
        "{close:?}"
    );
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"idle\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(node.metric("chouquette_connections").await, Some(0.0));
}

/// A client that keeps reading answers the pings and stays connected well
/// past the idle timeout.
#[tokio::test]
async fn a_client_answering_pings_stays_connected() {
    let node = TestNode::start(&config_with(HEARTBEAT, "")).await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    // Reading processes the pings and sends the pongs.
    client
        .expect_silence(std::time::Duration::from_millis(1500))
        .await;
    let offset = node
        .publish("bornes", "status", &["borne:B1"], json!({}))
        .await;
    assert_eq!(client.recv().await["offset"], offset);
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"idle\"}")
            .await,
        Some(0.0)
    );
}

/// A token for `channel` of [`APP`] carrying the user `sub`.
fn user_token(channel: &str, sub: &str) -> String {
    let mut claims = chouquette_testkit::claims(channel, json!({"*": {}}), 3600);
    claims["sub"] = json!(sub);
    chouquette_testkit::sign(&claims, chouquette_testkit::SECRET)
}

/// Over its app's message rate a connection gets `rate_limited` (the
/// message is not handled, the connection stays); past
/// `max_rate_limited_messages` refusals it is closed with 1008. The rate is
/// the app's once the connection holds it, the `[limits]` one before.
#[tokio::test]
async fn a_flooding_client_is_refused_then_closed() {
    let limits = "client_messages_per_second = 1000\nclient_messages_burst = 1000\n\
                  max_rate_limited_messages = 3";
    let app = "[apps.limits]\nclient_messages_per_second = 1\nclient_messages_burst = 3";
    let node = TestNode::start(&config_with(limits, app)).await;
    let mut bystander = node.client().await;
    bystander.subscribe("bornes", json!({"*": {}})).await;
    let mut client = node.client().await;
    // The subscribe passes at the node's rate and moves the connection to
    // the app's: 3 at once, then 1 per second.
    client.subscribe("bornes", json!({"*": {}})).await;
    let unsubscribe = |uuid: &str| json!({"class": "unsubscribe", "uuid": uuid, "channels": ["x"]});
    for i in 0..3 {
        client.send_json(&unsubscribe(&format!("u{i}"))).await;
        assert_eq!(client.recv().await["class"], "ack");
    }
    for _ in 0..3 {
        client.send_json(&unsubscribe("over")).await;
        let refused = client.recv().await;
        assert_eq!(refused["class"], "error", "{refused}");
        assert_eq!(refused["code"], "rate_limited", "{refused}");
    }
    client.send_json(&unsubscribe("last")).await;
    assert_eq!(
        client.expect_close().await,
        Some((1008, "rate_limited".to_string()))
    );
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"client_messages\"}")
            .await,
        Some(4.0)
    );
    assert_eq!(
        node.metric("chouquette_errors_total{code=\"rate_limited\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"misbehaving\"}")
            .await,
        Some(1.0)
    );
    // Others are untouched.
    let offset = node.publish("bornes", "k", &[], json!("still here")).await;
    assert_eq!(bystander.recv().await["offset"], offset);
    // Its address pays a share of its budget, not all of it: a new client
    // from it connects (address_penalty.rs has both sides of the rule).
    let mut again = node.client().await;
    again.subscribe("bornes", json!({"*": {}})).await;
    node.running.shutdown().await;
}

/// A user (token `sub`) holds at most `max_connections_per_user` connections
/// of an app on the node: one more gets `rate_limited` for that channel;
/// other users are not affected, and a closed connection frees its place.
#[tokio::test]
async fn connections_per_user_are_limited() {
    let app = "[apps.limits]\nmax_connections_per_user = 2";
    let node = TestNode::start(&config_with("", app)).await;
    let tok = user_token("bornes", "roger");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = node.client().await;
        c.send_json(&chouquette_testkit::subscribe("bornes", &tok))
            .await;
        assert_eq!(c.recv().await["class"], "ack");
        held.push(c);
    }
    let mut third = node.client().await;
    third
        .send_json(&chouquette_testkit::subscribe("bornes", &tok))
        .await;
    let refused = third.recv().await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert_eq!(refused["channel"], "bornes", "{refused}");
    // Another user is not limited by roger's connections.
    let mut vb = node.client().await;
    vb.send_json(&chouquette_testkit::subscribe(
        "bornes",
        &user_token("bornes", "vb"),
    ))
    .await;
    assert_eq!(vb.recv().await["class"], "ack");
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"connections_per_user\"}")
            .await,
        Some(1.0)
    );
    // Once one of roger's connections is gone, the third may subscribe.
    held.pop().expect("held").close().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        third
            .send_json(&chouquette_testkit::subscribe("bornes", &tok))
            .await;
        let reply = third.recv().await;
        if reply["class"] == "ack" {
            break;
        }
        assert_eq!(reply["code"], "rate_limited", "{reply}");
        assert!(tokio::time::Instant::now() < deadline, "never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    node.running.shutdown().await;
}

/// New connections from one address over `new_connections_per_address` (with
/// its burst) get HTTP 429 with `Retry-After` before any upgrade, on every
/// transport; the connections already open are not affected.
#[tokio::test]
async fn new_connections_per_address_are_limited_at_upgrade() {
    let limits = "new_connections_per_address = 1\nnew_connections_burst = 3";
    let node = TestNode::start(&config_with(limits, "")).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(node.client().await);
    }
    match tokio_tungstenite::connect_async(node.ws_url()).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429, "{response:?}");
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert_eq!(retry, Some(1), "{response:?}");
            let body = response.body().as_deref().unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
            assert_eq!(body["code"], "rate_limited");
        }
        Err(other) => panic!("expected HTTP 429, got {other}"),
        Ok(_) => panic!("a fourth connection was accepted at once"),
    }
    let tok = token("bornes", json!({"*": {}}), 60);
    let (status, body) = node.get_public(&format!("/poll?sub={tok}&timeout=0")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"connections_per_address\"}")
            .await,
        Some(2.0)
    );
    // The open ones still work; after a second the address has a token again.
    let (ack, _) = open[0].subscribe("bornes", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut later = node.client().await;
    later.subscribe("bornes", json!({"*": {}})).await;
    node.running.shutdown().await;
}

/// An app publishing faster than its `publishes_per_second` (every event of
/// a batch counts) gets 429 `rate_limited` and nothing of that request is
/// published; other apps keep their own budget.
#[tokio::test]
async fn publishes_per_app_are_limited() {
    let app = "[apps.limits]\npublishes_per_second = 1\npublish_burst = 3";
    let node = TestNode::start(&config_with("", app)).await;
    let batch: Vec<_> = (0..3)
        .map(|i| event("bornes", "k", &[], json!(i)))
        .collect();
    assert_eq!(node.publish_batch(&batch).await.len(), 3);
    let (status, body) = node
        .publish_raw(
            chouquette_testkit::API_KEY,
            &event("bornes", "k", &[], json!("over")),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    let other = json!({"app_id": "other", "channel": "c", "event_kind": "k",
                       "keywords": [], "data": null});
    let (status, body) = node.publish_raw("other-key", &other).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"publishes\"}")
            .await,
        Some(1.0)
    );
    // Nothing of the refused request went out: the next offset is 4.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(node.publish("bornes", "k", &[], json!("later")).await, 4);
    node.running.shutdown().await;
}

/// `max_subscriptions_per_connection` can be set per app, and refusals are
/// counted as `limit="subscriptions"`.
#[tokio::test]
async fn subscriptions_per_connection_per_app() {
    let app = "[apps.limits]\nmax_subscriptions_per_connection = 1";
    let node = TestNode::start(&config_with("", app)).await;
    let mut client = node.client().await;
    client.subscribe("a", json!({"*": {}})).await;
    let tb = token("b", json!({"*": {}}), 60);
    client
        .send_json(&subscribe_msg("s", APP, &[("b", &tb)]))
        .await;
    let refused = client.recv().await;
    assert_eq!(refused["code"], "too_many_subscriptions", "{refused}");
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"subscriptions\"}")
            .await,
        Some(1.0)
    );
    node.running.shutdown().await;
}

/// Issue 10, M6: `connect` set the connection's client-message rate from the
/// claimed app before verifying the token, so a junk token naming the most
/// lenient app got its rate. A refused `connect` leaves the `[limits]` rate.
#[tokio::test]
async fn a_junk_connect_naming_a_lenient_app_keeps_the_default_rate() {
    let limits = "client_messages_per_second = 1\nclient_messages_burst = 3\n\
                  max_rate_limited_messages = 10";
    let lenient = "[apps.limits]\nclient_messages_per_second = 1000\nclient_messages_burst = 1000";
    let node = TestNode::start(&config_with(limits, lenient)).await;
    let mut client = node.client().await;
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": "junk.junk.junk"}))
        .await;
    let refused = client.recv().await;
    assert_eq!(refused["class"], "error", "{refused}");
    assert_ne!(refused["code"], "rate_limited", "{refused}");
    // The connect took one of the default burst of 3: two more pass.
    let unsubscribe = |uuid: &str| json!({"class": "unsubscribe", "uuid": uuid, "channels": ["x"]});
    for i in 0..2 {
        client.send_json(&unsubscribe(&format!("u{i}"))).await;
        let acked = client.recv().await;
        assert_eq!(acked["class"], "ack", "{acked}");
    }
    client.send_json(&unsubscribe("over")).await;
    let limited = client.recv().await;
    assert_eq!(limited["class"], "error", "{limited}");
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    node.running.shutdown().await;
}
