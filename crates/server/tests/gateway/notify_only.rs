//! Notify, then fetch (docs/notifications.md): subscribers of a channel
//! with `notify_only = true` get its events without `data` (kind,
//! keywords, key, offset), live, as snapshots, replayed on resume, over
//! WebSocket, SSE and long-polling; other channels are unchanged.

use chouquette_testkit::{APP, TestNode, config_with, token};
use serde_json::{Value, json};

use crate::url_transports::SseStream;

const DOCS: &str = "[apps.channels.docs]\nnotify_only = true\nkeep_state = true\n";

/// About 1 KiB of data.
fn data() -> Value {
    json!({"title": "Report", "text": "x".repeat(1000)})
}

/// Checks a `data` message of `docs` carries no `data`, and its fields.
fn assert_notice(m: &Value, offset: u64) {
    assert_eq!(
        (
            m["class"].as_str(),
            m["channel"].as_str(),
            m["offset"].as_u64()
        ),
        (Some("data"), Some("docs"), Some(offset)),
        "{m}"
    );
    assert!(
        m.get("data").is_none(),
        "no data on a notify-only channel: {m}"
    );
    assert_eq!(
        (&m["event_kind"], &m["keywords"], &m["key"]),
        (&json!("edited"), &json!(["doc:D1"]), &json!("doc:D1")),
        "{m}"
    );
}

async fn publish_doc(node: &TestNode) -> u64 {
    let event = json!({"app_id": APP, "channel": "docs", "event_kind": "edited",
                       "keywords": ["doc:D1"], "key": "doc:D1", "data": data()});
    node.publish_event(&event).await.1
}

#[tokio::test]
async fn websocket_subscribers_get_no_data_live_as_snapshots_and_on_resume() {
    let node = TestNode::start(&config_with("", DOCS)).await;
    let mut client = node.client().await;
    let (ack, _) = client.subscribe("docs", json!({"*": {}})).await;
    let epoch = ack["channels"]["docs"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    client.subscribe("bornes", json!({"*": {}})).await;

    let o1 = publish_doc(&node).await;
    assert_notice(&client.recv_until("data").await.0, o1);
    let b = node
        .publish("bornes", "status", &["borne:B1"], data())
        .await;
    let (full, _) = client.recv_until("data").await;
    assert_eq!(
        (full["channel"].as_str(), full["offset"].as_u64()),
        (Some("bornes"), Some(b))
    );
    assert_eq!(full["data"], data(), "other channels keep their data");

    // A fresh subscriber: the kept state as a snapshot, without data.
    let mut fresh = node.client().await;
    let (_, before) = fresh.subscribe("docs", json!({"*": {}})).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_notice(&before[0], o1);
    assert_eq!(before[0]["snapshot"], true);

    // A resume replays history the same way.
    let o2 = publish_doc(&node).await;
    let mut resumed = node.client().await;
    let tok = token("docs", json!({"*": {}}), 3600);
    resumed
        .send_json(
            &json!({"class": "subscribe", "app_id": APP, "channels": {"docs": {
            "filters": tok, "since": {"epoch": epoch, "offset": o1}}}}),
        )
        .await;
    let (ack, before) = resumed.recv_until("ack").await;
    assert_eq!(ack["channels"]["docs"]["recovered"], true, "{ack}");
    assert_eq!(before.len(), 1, "{before:?}");
    assert_notice(&before[0], o2);
    assert!(before[0].get("snapshot").is_none());
}

#[tokio::test]
async fn sse_and_long_poll_subscribers_get_no_data_either() {
    let node = TestNode::start(&config_with("", DOCS)).await;
    let tok = token("docs", json!({"*": {}}), 3600);
    let query = serde_urlencoded::to_string([("sub", tok.as_str())]).expect("query");
    let mut sse = SseStream::open(&node, &query, None).await;
    let (_, ack) = sse.next().await;
    assert_eq!(ack["class"], "ack", "{ack}");
    let o1 = publish_doc(&node).await;
    let (_, live) = sse.next().await;
    assert_notice(&live, o1);

    let (status, answer) = node.poll(&[&tok], None, 1).await;
    assert_eq!(status, 200, "{answer}");
    let snapshots: Vec<&Value> = answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["class"] == "data")
        .collect();
    assert_eq!(snapshots.len(), 1, "{answer}");
    assert_notice(snapshots[0], o1);
}
