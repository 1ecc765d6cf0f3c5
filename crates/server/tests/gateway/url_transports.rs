//! SSE and long-polling: the same session as WebSocket, framed differently,
//! resuming from the cursor exactly as `since` would.

use std::time::Duration;

use chouquette_testkit::{BASE_CONFIG, TestNode, token};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn classes(answer: &Value) -> Vec<String> {
    answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["class"].as_str().expect("class").to_string())
        .collect()
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

#[tokio::test]
async fn long_poll_snapshots_then_resumes_from_the_cursor() {
    let node = TestNode::base().await;
    let b1 = token("bornes", json!({"status": {"borne": "B1"}}), 3600);
    node.publish("bornes", "status", &["borne:B1"], json!({"n": 1}))
        .await;
    let (status, first) = node.poll(&[&b1], None, 5).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(classes(&first), vec!["ack"], "no keyed state: just the ack");
    let cursor = first["cursor"].as_str().expect("cursor").to_string();

    // Published while no request is open: the next poll gets exactly these.
    node.publish("bornes", "status", &["borne:B2"], json!({"n": 2}))
        .await;
    let o3 = node
        .publish("bornes", "status", &["borne:B1"], json!({"n": 3}))
        .await;
    let (_, second) = node.poll(&[&b1], Some(&cursor), 5).await;
    assert_eq!(offsets(&second), vec![o3]);
    assert!(
        !classes(&second).contains(&"ack".to_string()),
        "later polls leave out acks"
    );

    // Nothing new: the poll waits, and answers as soon as an event comes.
    let cursor = second["cursor"].as_str().expect("cursor").to_string();
    let tokens = [b1.as_str()];
    let waiting = node.poll(&tokens, Some(&cursor), 10);
    let publishing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        node.publish("bornes", "status", &["borne:B1"], json!({"n": 4}))
            .await
    };
    let ((_, third), o4) = tokio::join!(waiting, publishing);
    assert_eq!(offsets(&third), vec![o4]);
}

#[tokio::test]
async fn long_poll_after_token_expiry_keeps_the_channel_in_the_cursor() {
    // No leeway: the subscription ends at the token's `exp` itself.
    let config = format!("[tokens]\nleeway = \"0s\"\n{BASE_CONFIG}");
    let node = TestNode::start(&config).await;
    let short = token("bornes", json!({"*": {}}), 2);
    let (_, first) = node.poll(&[&short], None, 1).await;
    let cursor = first["cursor"].as_str().expect("cursor").to_string();
    let (_, expired) = node.poll(&[&short], Some(&cursor), 4).await;
    assert!(
        expired["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| m["code"] == "token_expired" && m["channel"] == "bornes"),
        "{expired}"
    );
    let after = expired["cursor"].as_str().expect("cursor").to_string();
    // Missed while the token was being renewed: the fresh token resumes.
    let missed = node
        .publish("bornes", "alarm", &["borne:B1"], json!({}))
        .await;
    let fresh = token("bornes", json!({"*": {}}), 3600);
    let (_, renewed) = node.poll(&[&fresh], Some(&after), 2).await;
    assert_eq!(offsets(&renewed), vec![missed], "{renewed}");
    assert!(
        !classes(&renewed).contains(&"reset".to_string()),
        "{renewed}"
    );
}

#[tokio::test]
async fn long_poll_refuses_bad_requests() {
    let node = TestNode::base().await;
    let (status, body) = node.get_public("/poll").await;
    assert_eq!(status, 400, "{body}");
    let (status, answer) = node.poll(&["not-a-token"], None, 0).await;
    assert_eq!(status, 200);
    assert_eq!(answer["messages"][0]["code"], "invalid_token", "{answer}");
    let b1 = token("bornes", json!({"*": {}}), 3600);
    let (_, answer) = node.poll(&[&b1], Some("garbage!"), 0).await;
    assert_eq!(answer["messages"][0]["code"], "bad_message", "{answer}");
}

/// A minimal SSE reader over a raw socket: the events' `id` and `data` lines.
pub(crate) struct SseStream {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl SseStream {
    pub(crate) async fn open(
        node: &TestNode,
        query: &str,
        last_event_id: Option<&str>,
    ) -> SseStream {
        let mut stream = TcpStream::connect(node.running.public)
            .await
            .expect("connect");
        let extra = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /sse?{query} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{extra}\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.expect("read").expect("status line");
        assert!(status.contains(" 200 "), "{status}");
        SseStream { lines }
    }

    /// The next event's (id, message), skipping comments and `retry`.
    pub(crate) async fn next(&mut self) -> (Option<String>, Value) {
        let mut id = None;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .expect("an event in time")
                .expect("read")
                .expect("stream open");
            // Chunked transfer encoding puts size lines between chunks.
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                return (id, serde_json::from_str(v).expect("JSON"));
            }
        }
    }
}

#[tokio::test]
async fn sse_streams_and_resumes_from_last_event_id() {
    let node = TestNode::base().await;
    let all = token("bornes", json!({"*": {}}), 3600);
    let query = serde_urlencoded::to_string([("sub", all.as_str())]).expect("query");
    let mut sse = SseStream::open(&node, &query, None).await;
    let (ack_id, ack) = sse.next().await;
    assert_eq!(ack["class"], "ack");
    assert!(ack_id.is_some(), "every batch ends with the cursor");
    let o1 = node
        .publish("bornes", "status", &["borne:B1"], json!({}))
        .await;
    let (id1, data) = sse.next().await;
    assert_eq!(data["offset"], o1);
    drop(sse);

    let o2 = node
        .publish("bornes", "status", &["borne:B2"], json!({}))
        .await;
    let o3 = node
        .publish("bornes", "status", &["borne:B3"], json!({}))
        .await;
    let mut resumed = SseStream::open(&node, &query, id1.as_deref()).await;
    let (_, first) = resumed.next().await;
    let (_, second) = resumed.next().await;
    assert_eq!(
        (first["offset"].as_u64(), second["offset"].as_u64()),
        (Some(o2), Some(o3))
    );
    let (_, ack) = resumed.next().await;
    assert_eq!(ack["class"], "ack");
    assert_eq!(ack["channels"]["bornes"]["recovered"], true);
}

/// M1: a channel refused on resubscribe (here an expired token) keeps the
/// position the cursor gave it, so the poll with a renewed token resumes
/// without a gap instead of starting over.
#[tokio::test]
async fn long_poll_refused_channel_keeps_its_position_in_the_cursor() {
    let node = TestNode::base().await;
    let all = json!({"*": {}});
    let bornes = token("bornes", all.clone(), 3600);
    let other = token("parkings", all.clone(), 3600);
    let (_, first) = node.poll(&[&bornes, &other], None, 1).await;
    let cursor = first["cursor"].as_str().expect("cursor").to_string();
    let missed = node
        .publish("bornes", "alarm", &["borne:B1"], json!({"n": 1}))
        .await;

    // The `bornes` token expired before this poll: that channel is refused.
    let expired = token("bornes", all.clone(), -10);
    let (_, refused) = node.poll(&[&expired, &other], Some(&cursor), 2).await;
    assert!(
        refused["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| m["code"] == "token_expired" && m["channel"] == "bornes"),
        "{refused}"
    );
    let kept = refused["cursor"].as_str().expect("cursor").to_string();

    let fresh = token("bornes", all, 3600);
    let (_, renewed) = node.poll(&[&fresh, &other], Some(&kept), 2).await;
    assert_eq!(offsets(&renewed), vec![missed], "{renewed}");
    assert!(
        !classes(&renewed).contains(&"reset".to_string()),
        "{renewed}"
    );
}

/// A cursor carrying many long channel names is larger than the fixed
/// cursor bound; it is still one the gateway issued for these tokens, and
/// must be accepted rather than refused (which would start over).
#[tokio::test]
async fn long_poll_cursor_of_many_long_channels_is_accepted_back() {
    let node = TestNode::base().await;
    let names: Vec<String> = (0..50)
        .map(|i| format!("{i:02}{}", "c".repeat(248)))
        .collect();
    let tokens: Vec<String> = names
        .iter()
        .map(|n| token(n, json!({"*": {}}), 3600))
        .collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let (status, first) = node.poll(&refs, None, 1).await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["cursor"].as_str().expect("cursor").to_string();
    assert!(cursor.len() > 16 * 1024, "{} bytes: {first}", cursor.len());
    let missed = node
        .publish(&names[0], "alarm", &["borne:B1"], json!({}))
        .await;
    let (_, second) = node.poll(&refs, Some(&cursor), 2).await;
    assert!(
        !second["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| m["code"] == "bad_message"),
        "{second}"
    );
    assert_eq!(offsets(&second), vec![missed], "{second}");
}
