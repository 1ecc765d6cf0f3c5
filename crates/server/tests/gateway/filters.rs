//! Filters exactly as docs/protocol.md "Filters": entries by event kind (`"*"`
//! for any), every constraint met by some `name:value` keyword, one met entry
//! suffices, `{}` takes every event of its kind, an empty filter object
//! nothing; the value is everything after the first colon.

use chouquette_testkit::TestNode;
use serde_json::{Value, json};

use crate::common::{event, offsets};

/// One event to publish: kind and keywords.
type Case = (&'static str, &'static [&'static str]);

/// Subscribes a fresh client to `chan` with `filters`, publishes `cases`
/// in order, and returns the 1-based indexes of the cases it received.
async fn delivered(node: &TestNode, chan: &str, filters: Value, cases: &[Case]) -> Vec<u64> {
    let mut client = node.client().await;
    client.join_sync().await;
    let (ack, before) = client.subscribe(chan, filters.clone()).await;
    assert!(before.is_empty(), "{before:?}");
    assert!(
        ack["channels"][chan].is_object(),
        "{filters} refused: {ack}"
    );
    let mut first = None;
    for (kind, keywords) in cases {
        let (_, offset) = node
            .publish_event(&event(chan, kind, keywords, json!({"kind": kind})))
            .await;
        first.get_or_insert(offset);
    }
    let marker = node.publish_marker().await;
    let got = client.until_marker(marker).await;
    for m in &got {
        assert_eq!(m["class"], "data", "{m}");
        assert!(m.get("snapshot").is_none(), "{m}");
    }
    let base = first.expect("at least one case") - 1;
    offsets(&got, chan).into_iter().map(|o| o - base).collect()
}

#[tokio::test]
async fn the_protocol_example() {
    let node = TestNode::base().await;
    let filters = json!({"alarm": {"level": "critical", "borne": ["B1"]}, "status": {}});
    let cases: &[Case] = &[
        ("alarm", &["borne:B1", "level:critical"]), // 1: met
        ("alarm", &["level:critical", "borne:B1"]), // 2: met, any order
        ("alarm", &["borne:B2", "level:critical"]), // 3: wrong borne
        ("alarm", &["borne:B1", "level:minor"]),    // 4: wrong level
        ("alarm", &["borne:B1"]),                   // 5: level missing
        ("alarm", &[]),                             // 6: nothing
        ("status", &[]),                            // 7: {} takes every status
        ("status", &["borne:B9", "level:x"]),       // 8
        ("other", &["borne:B1", "level:critical"]), // 9: no entry for the kind
        ("alarm", &["borne:B2", "borne:B1", "level:critical"]), // 10: some keyword matches
        ("alarm", &["borne:B1", "level:critical", "extra:1"]), // 11: extra keywords are fine
        ("Alarm", &["borne:B1", "level:critical"]), // 12: kinds are case-sensitive
        ("alarm", &["borne:b1", "level:critical"]), // 13: values are case-sensitive
    ];
    assert_eq!(
        delivered(&node, "bornes", filters, cases).await,
        vec![1, 2, 7, 8, 10, 11]
    );
    node.running.shutdown().await;
}

#[tokio::test]
async fn star_applies_to_every_kind() {
    let node = TestNode::base().await;
    let cases: &[Case] = &[
        ("alarm", &["borne:B1"]),           // 1
        ("status", &["borne:B1"]),          // 2
        ("anything", &["borne:B1", "x:y"]), // 3
        ("alarm", &["borne:B2"]),           // 4
        ("alarm", &[]),                     // 5
        ("alarm", &["borne:B11"]),          // 6: not a prefix match
    ];
    let star = json!({"*": {"borne": "B1"}});
    assert_eq!(delivered(&node, "c1", star, cases).await, vec![1, 2, 3]);
    let everything = json!({"*": {}});
    assert_eq!(
        delivered(&node, "c2", everything, cases).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    // One met entry is enough: the named entry fails, "*" holds.
    let either = json!({"alarm": {"borne": "B2"}, "*": {"borne": "B11"}});
    assert_eq!(delivered(&node, "c3", either, cases).await, vec![4, 6]);
    node.running.shutdown().await;
}

#[tokio::test]
async fn empty_entry_takes_every_event_of_its_kind() {
    let node = TestNode::base().await;
    let cases: &[Case] = &[
        ("status", &[]),           // 1
        ("status", &["borne:B1"]), // 2
        ("alarm", &[]),            // 3
        ("statuses", &[]),         // 4
    ];
    assert_eq!(
        delivered(&node, "c", json!({"status": {}}), cases).await,
        vec![1, 2]
    );
    node.running.shutdown().await;
}

#[tokio::test]
async fn an_empty_filter_object_delivers_nothing() {
    let node = TestNode::base().await;
    let cases: &[Case] = &[
        ("status", &[]),
        ("alarm", &["borne:B1", "level:critical"]),
        ("x", &["a:b"]),
    ];
    assert_eq!(
        delivered(&node, "c", json!({}), cases).await,
        Vec::<u64>::new()
    );
    node.running.shutdown().await;
}

#[tokio::test]
async fn a_list_allows_any_of_its_values() {
    let node = TestNode::base().await;
    let cases: &[Case] = &[
        ("alarm", &["borne:B1"]), // 1
        ("alarm", &["borne:B2"]), // 2
        ("alarm", &["borne:B3"]), // 3
        ("alarm", &["site:B1"]),  // 4: another keyword name
        ("alarm", &["borne:"]),   // 5: empty value
    ];
    let filters = json!({"alarm": {"borne": ["B1", "B3"]}});
    assert_eq!(delivered(&node, "c1", filters, cases).await, vec![1, 3]);
    // An empty list allows nothing.
    let none = json!({"alarm": {"borne": []}});
    assert_eq!(delivered(&node, "c2", none, cases).await, Vec::<u64>::new());
    // The empty string is a value like any other.
    let empty = json!({"alarm": {"borne": ""}});
    assert_eq!(delivered(&node, "c3", empty, cases).await, vec![5]);
    node.running.shutdown().await;
}

#[tokio::test]
async fn the_value_is_everything_after_the_first_colon() {
    let node = TestNode::base().await;
    let cases: &[Case] = &[
        ("e", &["url:http://x:80/a"]),   // 1
        ("e", &["url:http"]),            // 2
        ("e", &["url:http://x:80/a:b"]), // 3
        ("e", &["url:http://x:80"]),     // 4
        ("e", &["url::http://x:80/a"]),  // 5: the value starts with a colon
    ];
    let filters = json!({"e": {"url": "http://x:80/a"}});
    assert_eq!(delivered(&node, "c1", filters, cases).await, vec![1]);
    let colon = json!({"e": {"url": ":http://x:80/a"}});
    assert_eq!(delivered(&node, "c2", colon, cases).await, vec![5]);
    node.running.shutdown().await;
}

#[tokio::test]
async fn a_client_filtered_to_one_borne_never_sees_another() {
    let node = TestNode::base().await;
    let mut b1 = node.client().await;
    let mut b2 = node.client().await;
    let mut ops = node.client().await;
    for c in [&mut b1, &mut b2, &mut ops] {
        c.join_sync().await;
    }
    b1.subscribe("bornes", json!({"*": {"borne": "B1"}})).await;
    b2.subscribe("bornes", json!({"*": {"borne": "B2"}})).await;
    ops.subscribe("bornes", json!({"*": {}})).await;
    let kinds = ["alarm", "status", "telemetry"];
    let mut expected_b1 = Vec::new();
    let mut expected_b2 = Vec::new();
    for i in 0..60usize {
        let borne = ["B1", "B2", "B12", "b1"][i % 4];
        let keyword = format!("borne:{borne}");
        let (_, offset) = node
            .publish_event(&event(
                "bornes",
                kinds[i % 3],
                &[keyword.as_str(), "level:critical"],
                json!({"uid": borne}),
            ))
            .await;
        match borne {
            "B1" => expected_b1.push(offset),
            "B2" => expected_b2.push(offset),
            _ => {}
        }
    }
    let marker = node.publish_marker().await;
    let got_b1 = b1.until_marker(marker).await;
    let got_b2 = b2.until_marker(marker).await;
    let got_ops = ops.until_marker(marker).await;
    assert_eq!(offsets(&got_b1, "bornes"), expected_b1);
    assert_eq!(offsets(&got_b2, "bornes"), expected_b2);
    assert_eq!(offsets(&got_ops, "bornes"), (1..=60).collect::<Vec<u64>>());
    assert!(got_b1.iter().all(|m| m["data"]["uid"] == "B1"));
    assert!(got_b2.iter().all(|m| m["data"]["uid"] == "B2"));
    node.running.shutdown().await;
}
