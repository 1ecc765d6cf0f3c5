//! Issue 10, H2: connections that hold nothing. A WebSocket that never
//! subscribes (nor `connect`s) answered pings and lived forever; now
//! `limits.subscribe_timeout` closes a connection that has held no
//! subscription and no identity that long, with 1008 and a reason.

use std::time::Duration;

use chouquette_testkit::{APP, TestNode, claims, config_with, sign, token};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SHORT: &str = "subscribe_timeout = \"300ms\"";
const REASON: &str = "no subscription within 300ms";

#[tokio::test]
async fn a_websocket_that_never_subscribes_is_closed_with_1008_after_subscribe_timeout() {
    let node = TestNode::start(&config_with(SHORT, "")).await;
    let mut subscribed = node.client().await;
    subscribed.subscribe("bornes", json!({"*": {}})).await;
    let opened = Instant::now();
    let mut bare = node.client().await;
    let close = bare.expect_close().await;
    let waited = opened.elapsed();
    assert_eq!(close, Some((1008, REASON.to_string())));
    assert!(
        waited >= Duration::from_millis(300),
        "closed early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "closed late: {waited:?}");
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"subscribe_timeout\"}")
            .await,
        Some(1.0)
    );
    // The subscribed one, on the same gateway, is untouched.
    let offset = node.publish("bornes", "k", &[], json!("still here")).await;
    assert_eq!(subscribed.recv().await["offset"], offset);
    node.running.shutdown().await;
}

/// The clock runs while a connection holds nothing, from its opening or
/// from its last unsubscribe: subscribing once does not buy a lifetime.
#[tokio::test]
async fn a_websocket_that_unsubscribes_from_everything_is_closed_after_subscribe_timeout() {
    let node = TestNode::start(&config_with(SHORT, "")).await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    // Twice the deadline while subscribed: still open.
    client.expect_silence(Duration::from_millis(600)).await;
    let unsubscribe = json!({"class": "unsubscribe", "uuid": "u1", "channels": ["bornes"]});
    client.send_json(&unsubscribe).await;
    assert_eq!(client.recv().await["class"], "ack");
    let left = Instant::now();
    assert_eq!(
        client.expect_close().await,
        Some((1008, REASON.to_string()))
    );
    let waited = left.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed early: {waited:?}"
    );
    node.running.shutdown().await;
}

/// A `connect`ed connection holds an identity (it may receive user
/// messages, or subscribe later): it is not closed for holding no channel.
#[tokio::test]
async fn a_connected_websocket_without_subscriptions_stays_open() {
    let node = TestNode::start(&config_with(SHORT, "")).await;
    let mut client = node.client().await;
    let mut c = claims("", json!({}), 3600);
    c["sub"] = json!("roger");
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": sign(&c, chouquette_testkit::SECRET)}))
        .await;
    assert_eq!(client.recv().await["class"], "ack");
    client.expect_silence(Duration::from_millis(900)).await;
    let (ack, _) = client.subscribe("bornes", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack");
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"subscribe_timeout\"}")
            .await,
        Some(0.0)
    );
    node.running.shutdown().await;
}

/// An SSE stream whose every subscription was refused holds nothing and
/// can never gain anything (it has no inbound side): it ends after the
/// deadline instead of sending heartbeats forever.
#[tokio::test]
async fn an_sse_stream_whose_subscriptions_were_all_refused_ends_after_subscribe_timeout() {
    let limits = "subscribe_timeout = \"300ms\"";
    let node = TestNode::start(&format!(
        "{}\n[transports]\nsse_heartbeat = \"100ms\"\n",
        config_with(limits, "")
    ))
    .await;
    let bad = sign(&claims("bornes", json!({"*": {}}), 3600), "wrong-secret");
    let good = token("bornes", json!({"*": {}}), 3600);
    let refused = sse_lifetime(&node, &bad, Duration::from_secs(3)).await;
    let refused = refused.expect("a refused stream ends");
    assert!(refused >= Duration::from_millis(300), "{refused:?}");
    // A stream that holds its subscription outlives the deadline.
    assert_eq!(
        sse_lifetime(&node, &good, Duration::from_secs(1)).await,
        None
    );
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"subscribe_timeout\"}")
            .await,
        Some(1.0)
    );
    node.running.shutdown().await;
}

/// How long an SSE stream for `tok` stays open, if it ends within `within`.
async fn sse_lifetime(node: &TestNode, tok: &str, within: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(node.running.public)
        .await
        .expect("connect");
    let request = format!("GET /sse?sub={tok} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let opened = Instant::now();
    let mut lines = BufReader::new(stream).lines();
    let read_all = async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        seen
    };
    match tokio::time::timeout(within, read_all).await {
        Ok(seen) => {
            assert!(
                seen.first().is_some_and(|s| s.contains(" 200 ")),
                "{seen:?}"
            );
            Some(opened.elapsed())
        }
        Err(_) => None,
    }
}
