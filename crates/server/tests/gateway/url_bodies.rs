//! Tokens out of URLs: `POST /sse` and `POST /poll` take the tokens and the
//! cursor in a JSON body, so that they never reach a proxy's access log;
//! everything else is what the query string form does.

use std::time::Duration;

use chouquette_testkit::{TestNode, config_with, token};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::raw_http;

/// One `POST path` with a JSON (or any) body; status and parsed body.
async fn post(node: &TestNode, path: &str, body: &[u8]) -> (u16, Value) {
    let head = format!("POST {path} HTTP/1.1\r\nContent-Type: application/json");
    let (status, text) = raw_http(node.running.public, &head, body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn offsets(answer: &Value) -> Vec<u64> {
    answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["class"] == "data")
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect()
}

/// An event stream opened by `POST /sse`: the events' `id` and `data`.
struct PostedStream {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl PostedStream {
    async fn open(node: &TestNode, body: &Value, last_event_id: Option<&str>) -> PostedStream {
        let mut stream = TcpStream::connect(node.running.public)
            .await
            .expect("connect");
        let body = body.to_string();
        let extra = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST /sse HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.expect("read").expect("status line");
        assert!(status.contains(" 200 "), "{status}");
        PostedStream { lines }
    }

    /// The next event's (id, message), skipping comments and `retry`.
    async fn next(&mut self) -> (Option<String>, Value) {
        let mut id = None;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .expect("an event in time")
                .expect("read")
                .expect("stream open");
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                return (id, serde_json::from_str(v).expect("JSON"));
            }
        }
    }
}

/// Tokens in `/poll?sub=...` land in every proxy's access log: a `POST`
/// carries them (and the cursor) in its body instead.
#[tokio::test]
async fn post_poll_takes_tokens_in_the_body_and_resumes_from_its_cursor() {
    let node = TestNode::base().await;
    let b1 = token("bornes", json!({"status": {"borne": "B1"}}), 3600);
    let (status, first) = post(&node, "/poll", json!({"sub": [b1]}).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["messages"][0]["class"], "ack", "{first}");
    let cursor = first["cursor"].as_str().expect("cursor").to_string();

    node.publish("bornes", "status", &["borne:B2"], json!({}))
        .await;
    let o2 = node
        .publish("bornes", "status", &["borne:B1"], json!({}))
        .await;
    let body = json!({"sub": [b1], "cursor": cursor, "timeout": 2});
    let (status, second) = post(&node, "/poll", body.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(offsets(&second), vec![o2], "{second}");
    node.running.shutdown().await;
}

#[tokio::test]
async fn post_sse_streams_and_resumes_from_a_body_cursor_or_last_event_id() {
    let node = TestNode::base().await;
    let all = token("bornes", json!({"*": {}}), 3600);
    let mut sse = PostedStream::open(&node, &json!({"sub": [all]}), None).await;
    let (_, ack) = sse.next().await;
    assert_eq!(ack["class"], "ack", "{ack}");
    let o1 = node
        .publish("bornes", "status", &["borne:B1"], json!({}))
        .await;
    let (id1, data) = sse.next().await;
    assert_eq!(data["offset"], o1);
    let id1 = id1.expect("the batch ends with its cursor");
    drop(sse);

    let o2 = node
        .publish("bornes", "status", &["borne:B2"], json!({}))
        .await;
    let body = json!({"sub": [all], "cursor": id1});
    let mut resumed = PostedStream::open(&node, &body, None).await;
    let (_, first) = resumed.next().await;
    assert_eq!(first["offset"], o2, "{first}");
    let (_, ack) = resumed.next().await;
    assert_eq!(ack["channels"]["bornes"]["recovered"], true, "{ack}");

    // `Last-Event-ID` (a reconnecting stream's) wins over the body's cursor.
    let stale = json!({"sub": [all], "cursor": "not-a-cursor"});
    let mut again = PostedStream::open(&node, &stale, Some(&id1)).await;
    let (_, first) = again.next().await;
    assert_eq!(first["offset"], o2, "{first}");
    node.running.shutdown().await;
}

/// A bad body is answered as clearly as a bad query string: `bad_message`
/// with what was expected, and never a stream or a poll.
#[tokio::test]
async fn post_bodies_that_are_not_a_subscription_get_bad_message() {
    let node = TestNode::start(&config_with("max_message_bytes = 4096", "")).await;
    let t = token("bornes", json!({"*": {}}), 3600);
    for path in ["/poll", "/sse"] {
        for body in [
            format!("sub={t}"),
            json!({"sub": t}).to_string(),
            json!({"sub": [1]}).to_string(),
            json!(["sub"]).to_string(),
            String::new(),
        ] {
            let (status, answer) = post(&node, path, body.as_bytes()).await;
            assert_eq!(status, 400, "{path} {body}: {answer}");
            assert_eq!(answer["code"], "bad_message", "{path} {body}: {answer}");
            let message = answer["message"].as_str().expect("message");
            assert!(message.contains("\"sub\": [\"<token>\""), "{message}");
        }
        let (status, answer) = post(&node, path, br#"{"cursor": "x"}"#).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .expect("message")
                .contains("`sub`")
        );
        // 3 x 4096 + 16 KiB is the bound with these limits.
        let big = json!({"sub": ["x".repeat(40_000)]}).to_string();
        let (status, answer) = post(&node, path, big.as_bytes()).await;
        assert_eq!(status, 413, "{path}: {answer}");
        assert_eq!(answer["code"], "bad_message", "{path}: {answer}");
    }
    // A bad cursor is told in the answer, as in the query form.
    let body = json!({"sub": [t], "cursor": "garbage!", "timeout": 0});
    let (status, answer) = post(&node, "/poll", body.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["messages"][0]["code"], "bad_message", "{answer}");
    node.running.shutdown().await;
}
