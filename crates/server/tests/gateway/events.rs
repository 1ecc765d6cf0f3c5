//! Events (docs/protocol.md "Messages" and "Publishing"): the `data` message,
//! offsets per (app, channel) from 1, batches in order.

use std::collections::HashSet;

use chouquette_testkit::TestNode;
use serde_json::json;

use crate::common::{assert_envelope, event, offsets};

#[tokio::test]
async fn a_data_message_carries_every_field() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client
        .subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;
    let payload = json!({"uid": "B1", "status": "oh, oh...", "nested": {"list": [1, 2.5, null, true]},
                         "unicode": "é ✓ \u{1F600}"});
    let published = json!({"app_id": "bluelib", "channel": "bornes", "event_kind": "alarm",
                           "keywords": ["borne:B1", "level:critical"], "key": "borne:B1",
                           "data": payload});
    let (epoch, offset) = node.publish_event(&published).await;
    assert!(!epoch.is_empty());
    assert_eq!(offset, 1);
    let data = client.recv().await;
    assert_envelope(&data);
    assert_eq!(data["class"], "data");
    assert_eq!(data["channel"], "bornes");
    assert_eq!(data["offset"], 1);
    assert_eq!(data["event_kind"], "alarm");
    assert_eq!(data["keywords"], json!(["borne:B1", "level:critical"]));
    assert_eq!(data["data"], payload);
    assert!(
        data.get("snapshot").is_none(),
        "live events are not snapshots: {data}"
    );

    // Without data, `data` is null; every message has its own uuid.
    node.publish_event(&json!({"app_id": "bluelib", "channel": "bornes",
                               "event_kind": "alarm", "keywords": ["borne:B1"]}))
        .await;
    let second = client.recv().await;
    assert_envelope(&second);
    assert_eq!(second["offset"], 2);
    assert!(second["data"].is_null(), "{second}");
    assert_ne!(second["uuid"], data["uuid"]);
    node.running.shutdown().await;
}

#[tokio::test]
async fn offsets_start_at_one_and_grow_by_one_per_channel() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client.subscribe("c1", json!({"*": {}})).await;
    client.subscribe("c2", json!({"*": {}})).await;
    let mut answers = Vec::new();
    for channel in ["c1", "c1", "c2", "c1", "c3", "c2", "c1"] {
        let (epoch, offset) = node
            .publish_event(&event(channel, "k", &[], json!(channel)))
            .await;
        answers.push((channel, epoch, offset));
    }
    let offsets_of = |c: &str| -> Vec<u64> {
        answers
            .iter()
            .filter(|(ch, _, _)| *ch == c)
            .map(|(_, _, o)| *o)
            .collect()
    };
    assert_eq!(offsets_of("c1"), vec![1, 2, 3, 4]);
    assert_eq!(offsets_of("c2"), vec![1, 2]);
    assert_eq!(offsets_of("c3"), vec![1]);
    // One epoch per channel.
    for c in ["c1", "c2"] {
        let epochs: HashSet<&str> = answers
            .iter()
            .filter(|(ch, _, _)| *ch == c)
            .map(|(_, e, _)| e.as_str())
            .collect();
        assert_eq!(epochs.len(), 1, "{c}: {epochs:?}");
    }
    // The client sees each channel's events in offset order, once each,
    // interleaved in publish order.
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(client.recv().await);
    }
    let seen: Vec<(String, u64)> = got
        .iter()
        .map(|m| {
            (
                m["channel"].as_str().expect("channel").to_string(),
                m["offset"].as_u64().expect("offset"),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("c1", 1),
        ("c1", 2),
        ("c2", 1),
        ("c1", 3),
        ("c2", 2),
        ("c1", 4),
    ]
    .iter()
    .map(|(c, o)| ((*c).to_string(), *o))
    .collect();
    assert_eq!(seen, expected);
    let uuids: HashSet<&str> = got.iter().filter_map(|m| m["uuid"].as_str()).collect();
    assert_eq!(uuids.len(), got.len(), "uuids are unique per message");
    node.running.shutdown().await;
}

#[tokio::test]
async fn a_batch_is_answered_in_order_and_delivered_in_order() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client.join_sync().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    client.subscribe("other", json!({"*": {}})).await;
    node.publish_event(&event("bornes", "k", &[], json!("before")))
        .await;
    let batch: Vec<_> = (0..50)
        .map(|i| {
            let channel = if i % 5 == 4 { "other" } else { "bornes" };
            event(channel, "k", &[], json!({"i": i}))
        })
        .collect();
    let positions = node.publish_batch(&batch).await;
    assert_eq!(positions.len(), 50);
    let mut next_bornes = 2;
    let mut next_other = 1;
    for (i, (_, offset)) in positions.iter().enumerate() {
        if i % 5 == 4 {
            assert_eq!(*offset, next_other, "event {i}");
            next_other += 1;
        } else {
            assert_eq!(*offset, next_bornes, "event {i}");
            next_bornes += 1;
        }
    }
    let marker = node.publish_marker().await;
    let got = client.until_marker(marker).await;
    assert_eq!(got.len(), 51);
    let order: Vec<i64> = got[1..]
        .iter()
        .map(|m| m["data"]["i"].as_i64().expect("i"))
        .collect();
    assert_eq!(order, (0..50).collect::<Vec<i64>>());
    assert_eq!(offsets(&got, "bornes"), (1..=41).collect::<Vec<u64>>());
    assert_eq!(offsets(&got, "other"), (1..=10).collect::<Vec<u64>>());

    // A batch of one is still answered by an array.
    let single = node
        .publish_batch(&[event("bornes", "k", &[], json!(null))])
        .await;
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].1, 42);
    node.running.shutdown().await;
}
