//! Hostile input (docs/protocol.md "Errors and closes"): a bad message gets
//! `bad_message` and the connection stays open; past the limits the gateway
//! closes with 1008 (or 1009 for size); no input crashes the node.

use std::time::Duration;

use chouquette_testkit::{APP, TestNode, WsClient, config_with, token};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{Rng, event, raw_http};

/// Asserts the next message is a `bad_message` error (with `reference`, if any).
async fn expect_bad_message(client: &mut WsClient, reference: Option<&str>, what: &str) {
    let reply = client.recv().await;
    assert_eq!(reply["class"], "error", "{what}: {reply}");
    assert_eq!(reply["code"], "bad_message", "{what}: {reply}");
    crate::common::assert_envelope(&reply);
    match reference {
        Some(r) => assert_eq!(reply["ref"], r, "{what}: {reply}"),
        None => assert!(reply.get("ref").is_none(), "{what}: {reply}"),
    }
}

/// Subscribes to `bornes`, publishes, and receives: the connection works.
async fn still_usable(node: &TestNode, client: &mut WsClient, data: &str) {
    let (ack, before) = client.subscribe("bornes", json!({"*": {}})).await;
    assert!(before.is_empty(), "{before:?}");
    assert!(ack["channels"]["bornes"].is_object(), "{ack}");
    node.publish_event(&event("bornes", "k", &[], json!(data)))
        .await;
    let m = client.recv().await;
    assert_eq!(m["data"], data, "{m}");
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_connection_stays_usable() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(String, Option<&str>)> = vec![
        ("not json".into(), None),
        ("{".into(), None),
        ("".into(), None),
        ("[]".into(), None),
        ("null".into(), None),
        ("42".into(), None),
        (deep, None),
        (r#"{"uuid": "m1"}"#.into(), Some("m1")),
        (r#"{"class": "nope", "uuid": "m2"}"#.into(), Some("m2")),
        (r#"{"class": 7, "uuid": "m3"}"#.into(), Some("m3")),
        (r#"{"class": "subscribe", "uuid": "m4"}"#.into(), Some("m4")),
        (
            r#"{"class": "subscribe", "uuid": "m5", "app_id": "bluelib", "channels": "bornes"}"#.into(),
            Some("m5"),
        ),
        (
            r#"{"class": "subscribe", "uuid": "m6", "app_id": "bluelib", "channels": {"bornes": {"filters": 7}}}"#.into(),
            Some("m6"),
        ),
        (
            r#"{"class": "subscribe", "uuid": "m7", "app_id": "bluelib", "channels": {"bornes": {"filters": "t", "since": {"epoch": 1}}}}"#.into(),
            Some("m7"),
        ),
        (r#"{"class": "unsubscribe", "uuid": "m8", "channels": "bornes"}"#.into(), Some("m8")),
        (r#"{"class": "subscribe", "uuid": {"a": 1}}"#.into(), None),
    ];
    for (text, reference) in &cases {
        client.send_text(text).await;
        expect_bad_message(&mut client, *reference, text.get(..40).unwrap_or(text)).await;
    }
    client
        .send_binary(b"{\"class\": \"subscribe\"}".to_vec())
        .await;
    expect_bad_message(&mut client, None, "binary frame").await;

    // A channel name that is not a name is refused for that channel only.
    let tok = token("bornes", json!({"*": {}}), 60);
    client
        .send_json(&json!({"class": "subscribe", "app_id": APP, "uuid": "m9",
                           "channels": {"bad name!": {"filters": tok}}}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["class"], "error", "{reply}");
    assert_eq!(reply["code"], "bad_message", "{reply}");
    assert_eq!(reply["channel"], "bad name!", "{reply}");

    still_usable(&node, &mut client, "after the bad ones").await;
    node.running.shutdown().await;
}

#[tokio::test]
async fn a_message_over_max_message_bytes_is_refused_and_the_connection_stays() {
    let node = TestNode::start(&config_with(
        "max_message_bytes = 2048\nmax_frame_bytes = 65536",
        "",
    ))
    .await;
    let mut client = node.client().await;
    let tok = token("bornes", json!({"*": {}}), 60);
    let mut big = json!({"class": "subscribe", "app_id": APP, "uuid": "big",
                         "channels": {"bornes": {"filters": tok}}});
    big["pad"] = json!("x".repeat(4000));
    client.send_json(&big).await;
    let reply = client.recv().await;
    assert_eq!(reply["class"], "error", "{reply}");
    assert_eq!(reply["code"], "bad_message", "{reply}");
    // Nothing was subscribed by the oversized message.
    node.publish_event(&event("bornes", "k", &[], json!(null)))
        .await;
    still_usable(&node, &mut client, "after the big one").await;
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_frame_closes_with_1009_and_others_are_served() {
    let node = TestNode::base().await;
    let mut bystander = node.client().await;
    bystander.subscribe("bornes", json!({"*": {}})).await;

    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .expect("connects");
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        // The gateway stops reading mid-frame: this send may fail.
        let _ = sink.send(Message::text("a".repeat(10 * 1024 * 1024))).await;
        sink
    });
    let mut close = None;
    let mut texts = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await
    {
        match message {
            Ok(Message::Close(frame)) => {
                close = frame.map(|f| (f.code, f.reason.to_string()));
                break;
            }
            Ok(Message::Text(t)) => texts.push(t.to_string()),
            Ok(_) => {}
            Err(e) => panic!("connection failed before the close frame: {e}; got {texts:?}"),
        }
    }
    let _ = sender.await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Size, "{reason}");
    for t in &texts {
        let v: Value = serde_json::from_str(t).expect("JSON");
        assert_eq!(v["code"], "bad_message", "{v}");
    }

    // The node keeps serving: the bystander, and new clients.
    node.publish_event(&event("bornes", "k", &[], json!("still here")))
        .await;
    assert_eq!(bystander.recv().await["data"], "still here");
    let mut fresh = node.client().await;
    still_usable(&node, &mut fresh, "fresh").await;
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"too_large\"}")
            .await,
        Some(1.0)
    );
    node.running.shutdown().await;
}

#[tokio::test]
async fn past_max_bad_messages_the_connection_is_closed_with_1008() {
    let node = TestNode::start(&config_with("max_bad_messages = 3", "")).await;
    let mut client = node.client().await;
    for i in 0..3 {
        client.send_text("nope").await;
        expect_bad_message(&mut client, None, &format!("bad {i}")).await;
    }
    // The connection still works at the limit...
    still_usable(&node, &mut client, "at the limit").await;
    // ...and one more closes it.
    client.send_text("nope").await;
    let (code, reason) = client.expect_close().await.expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"misbehaving\"}")
            .await,
        Some(1.0)
    );
    let mut fresh = node.client().await;
    still_usable(&node, &mut fresh, "fresh").await;
    node.running.shutdown().await;
}

/// A masked client frame built by hand (RFC 6455 section 5.2).
fn raw_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Writes `bytes` under the WebSocket layer of a fresh connection and ends
/// the client's side of the stream, then waits for the gateway to end the
/// connection (any way it likes).
async fn raw_after_handshake(node: &TestNode, bytes: &[u8]) {
    let mut client = node.client().await;
    let tcp = match client.stream_mut().get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => panic!("plain TCP expected"),
    };
    // The gateway may close before taking it all.
    let _ = tcp.write_all(bytes).await;
    let _ = tcp.flush().await;
    let _ = tcp.shutdown().await;
    loop {
        match client.next_within(Duration::from_secs(10)).await {
            Some(chouquette_testkit::Received::Closed(_)) => return,
            Some(chouquette_testkit::Received::Json(_)) => continue,
            None => panic!("the gateway kept a connection sending garbage frames"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_crashes_the_node() {
    // Hundreds of messages in a burst: lift the message rate, garbage is the point.
    let limits = "max_bad_messages = 100000\nclient_messages_per_second = 0";
    let node = TestNode::start(&config_with(limits, "")).await;
    let mut watcher = node.client().await;
    watcher.subscribe("bornes", json!({"*": {}})).await;
    let mut rng = Rng::new(0x5eed_c0de);

    // Binary frames of random bytes: each one a bad_message.
    let mut client = node.client().await;
    for _ in 0..50 {
        let len = rng.below(4096);
        client.send_binary(rng.bytes(len)).await;
        expect_bad_message(&mut client, None, "random binary").await;
    }

    // Text frames: a valid subscribe with random ASCII mutations. Each is
    // followed by a probe; every reply must be a well-formed message.
    let tok = token("bornes", json!({"alarm": {"borne": "B1"}}), 60);
    let valid = json!({"class": "subscribe", "app_id": APP, "uuid": "fz",
                       "channels": {"bornes": {"filters": tok,
                                               "since": {"epoch": "e", "offset": 3}}}})
    .to_string()
    .into_bytes();
    for i in 0..300 {
        let mut text = valid.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(text.len());
            match rng.below(3) {
                0 => text[at] = b' ' + rng.below(95) as u8,
                1 => {
                    text.remove(at);
                }
                _ => text.insert(at, b"{}[]\":,0\\"[rng.below(9)]),
            }
        }
        client
            .send_text(std::str::from_utf8(&text).expect("ASCII"))
            .await;
        let probe = format!("probe-{i}");
        client
            .send_json(&json!({"class": "unsubscribe", "uuid": probe, "channels": ["bornes"]}))
            .await;
        loop {
            let m = client.recv().await;
            let class = m["class"].as_str().unwrap_or_default().to_string();
            assert!(
                ["error", "ack", "reset", "data"].contains(&class.as_str()),
                "{m}"
            );
            crate::common::assert_envelope(&m);
            if class == "ack" && m["ref"] == probe.as_str() {
                break;
            }
        }
    }

    // Under the WebSocket layer: random bytes, a text frame that is not
    // UTF-8, a frame with a reserved opcode, an unmasked frame, a truncated
    // header announcing a huge length.
    raw_after_handshake(&node, &rng.bytes(2000)).await;
    raw_after_handshake(&node, &raw_frame(0x1, &[0xff, 0xfe, 0xc3], [1, 2, 3, 4])).await;
    raw_after_handshake(&node, &raw_frame(0x3, b"reserved", [9, 9, 9, 9])).await;
    raw_after_handshake(&node, &[0x81, 0x05, b'h', b'e', b'l', b'l', b'o']).await;
    let huge = [
        0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
    ];
    raw_after_handshake(&node, &huge).await;

    // Garbage instead of HTTP, on both listeners.
    for addr in [node.running.public, node.running.internal] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let _ = tcp.write_all(&rng.bytes(3000)).await;
        drop(tcp);
        let (status, _) = raw_http(addr, "GET /ws HTTP/1.1\r\nX-Junk: \u{1}", b"").await;
        assert!((400..500).contains(&status), "{status}");
    }

    // Still alive, still serving.
    let (status, _) = node.get("/healthz").await;
    assert_eq!(status, 200);
    node.publish_event(&event("bornes", "k", &[], json!("alive")))
        .await;
    assert_eq!(watcher.recv().await["data"], "alive");
    let mut fresh = node.client().await;
    still_usable(&node, &mut fresh, "fresh").await;
    node.running.shutdown().await;
}

/// M3: the write limit was four times `max_frame_bytes` (the read limit), so
/// an accepted event larger than that cut the TCP connection without a close
/// frame, live, and again on every replay. Now any event a publish may carry
/// is written, live and in replay.
#[tokio::test]
async fn an_event_over_four_max_frame_bytes_is_delivered_live_and_in_replay() {
    let node = TestNode::start(&config_with(
        "max_message_bytes = 2048\nmax_frame_bytes = 4096",
        "",
    ))
    .await;
    let mut live = node.client().await;
    live.subscribe("bornes", json!({"*": {}})).await;
    let big = "x".repeat(64 * 1024);
    let (epoch, offset) = node
        .publish_event(&event("bornes", "k", &[], json!(big)))
        .await;
    let m = live.recv().await;
    assert_eq!(m["offset"], offset, "live");
    assert_eq!(m["data"].as_str().map(str::len), Some(big.len()));

    let mut replayed = node.client().await;
    let tok = token("bornes", json!({"*": {}}), 60);
    let resume = crate::common::resume_msg("r", "bornes", &tok, &epoch, offset - 1);
    replayed.send_json(&resume).await;
    let (_, before) = replayed.recv_until("ack").await;
    let data: Vec<&Value> = before.iter().filter(|m| m["class"] == "data").collect();
    assert_eq!(data.len(), 1, "replay");
    assert_eq!(data[0]["offset"], offset, "replay");
    // Both connections are still open and serve what follows.
    node.publish_event(&event("bornes", "k", &[], json!("after")))
        .await;
    assert_eq!(live.recv().await["data"], "after");
    assert_eq!(replayed.recv().await["data"], "after");
}
