//! Health and metrics on the internal listener (docs/operations.md "Health and
//! metrics").

use chouquette_testkit::{APP, TestNode, claims, sign};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{event, raw_http, read_response, subscribe_msg};

#[tokio::test]
async fn healthz_readyz_and_metrics() {
    let node = TestNode::base().await;
    let (status, _) = node.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = node.get("/readyz").await;
    assert_eq!(status, 200);
    // Open on the internal listener: no key needed.
    let (status, _) = raw_http(node.running.internal, "GET /metrics HTTP/1.1", b"").await;
    assert_eq!(status, 200);

    let mut a = node.client().await;
    let mut b = node.client().await;
    a.subscribe("bornes", json!({"*": {}})).await;
    a.subscribe("other", json!({"*": {}})).await;
    b.subscribe("bornes", json!({"*": {}})).await;
    // Two refusals for bad tokens.
    let forged = sign(&claims("bornes", json!({}), 60), "forged");
    b.send_json(&subscribe_msg(
        "x",
        APP,
        &[("bornes", &forged), ("other", &forged)],
    ))
    .await;
    assert_eq!(b.recv().await["code"], "invalid_token");
    assert_eq!(b.recv().await["code"], "invalid_token");
    for i in 0..5 {
        node.publish_event(&event("bornes", "k", &[], json!(i)))
            .await;
    }
    for _ in 0..5 {
        a.recv().await;
        b.recv().await;
    }

    let (status, text) = node.get("/metrics").await;
    assert_eq!(status, 200);
    for series in [
        "chouquette_connections",
        "chouquette_subscriptions",
        "chouquette_publications_total",
        "chouquette_messages_out_total",
        "chouquette_errors_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {series} ")),
            "{series} missing from:\n{text}"
        );
    }
    assert_eq!(node.metric("chouquette_connections").await, Some(2.0));
    assert_eq!(node.metric("chouquette_subscriptions").await, Some(3.0));
    assert_eq!(
        node.metric("chouquette_publications_total").await,
        Some(5.0)
    );
    assert_eq!(
        node.metric("chouquette_errors_total{code=\"invalid_token\"}")
            .await,
        Some(2.0)
    );
    // At least: 3 acks and 10 data messages read above, 2 errors.
    let out = node
        .metric("chouquette_messages_out_total")
        .await
        .expect("messages out");
    assert!(out >= 15.0, "{out}");

    // Closing a client is reflected in the gauges (no message tells when
    // the gateway has seen the close: poll).
    a.close().await;
    let mut tries = 0;
    while node.metric("chouquette_connections").await != Some(1.0) {
        tries += 1;
        assert!(tries < 500, "connection gauge did not go down");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(node.metric("chouquette_subscriptions").await, Some(1.0));
    node.running.shutdown().await;
}

#[tokio::test]
async fn readyz_turns_503_during_shutdown() {
    let node = TestNode::base().await;
    let addr = node.running.internal;
    // A connection accepted before the stop, with a request not yet
    // complete: the gateway answers it while stopping.
    let mut pending = TcpStream::connect(addr).await.expect("connect");
    pending
        .write_all(format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .expect("write");
    // The accept queue is first in, first out: once a later connection is
    // answered, `pending` has been accepted.
    let (status, _) = raw_http(addr, "GET /readyz HTTP/1.1", b"").await;
    assert_eq!(status, 200);

    node.running.stop();
    pending
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .expect("write");
    let (status, body) = read_response(&mut pending).await;
    assert_eq!(status, 503, "{body}");
    node.running.wait().await;
}

/// A client's ping is answered at once (the WebSocket layer flushes the
/// pong while reading; this pins that behaviour).
#[tokio::test]
async fn websocket_ping_gets_a_pong() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let node = TestNode::base().await;
    let mut client = node.client().await;
    let stream = client.stream_mut();
    stream
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    let reply = tokio::time::timeout(std::time::Duration::from_secs(2), stream.next())
        .await
        .expect("a reply within 2 s")
        .expect("stream open")
        .expect("a frame");
    assert_eq!(reply, Message::Pong(b"are you there".to_vec().into()));
}
