//! `POST /api/v1/publish` errors: authentication per app, bad input refused
//! as a whole, nothing published by a refused request.

use chouquette_testkit::{API_KEY, TestNode};
use serde_json::{Value, json};

use crate::common::{event, offsets, raw_http};

/// Publishes one good event on `chan` and returns its offset: tells how many
/// events the channel has had.
async fn next_offset(node: &TestNode, chan: &str) -> u64 {
    node.publish_event(&event(chan, "probe", &[], json!(null)))
        .await
        .1
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn authentication_is_per_app() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client.join_sync().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    let good = event("bornes", "alarm", &["borne:B1"], json!(1));

    // No Authorization header at all.
    let (status, body) = raw_http(
        node.running.internal,
        "POST /api/v1/publish HTTP/1.1\r\nContent-Type: application/json",
        good.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    // Not a bearer scheme.
    let (status, body) = raw_http(
        node.running.internal,
        &format!("POST /api/v1/publish HTTP/1.1\r\nAuthorization: Basic {API_KEY}"),
        good.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = node.publish_raw("wrong-key", &good).await;
    assert_error(status, &body, 403, "not_allowed");
    // An empty key is no key.
    let (status, body) = node.publish_raw("", &good).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = node.publish_raw("other-key", &good).await;
    assert_error(status, &body, 403, "not_allowed");
    // The other app's key is good for the other app only.
    let mut for_other = good.clone();
    for_other["app_id"] = json!("other");
    let (status, body) = node.publish_raw(API_KEY, &for_other).await;
    assert_error(status, &body, 403, "not_allowed");
    let (status, body) = node.publish_raw("other-key", &for_other).await;
    assert_eq!(status, 200, "{body}");

    let mut unknown = good.clone();
    unknown["app_id"] = json!("no-such-app");
    let (status, body) = node.publish_raw(API_KEY, &unknown).await;
    assert_error(status, &body, 403, "not_allowed");

    // None of the refused requests published on bluelib's channel.
    assert_eq!(next_offset(&node, "bornes").await, 1);
    let marker = node.publish_marker().await;
    let got = client.until_marker(marker).await;
    assert_eq!(offsets(&got, "bornes"), vec![1]);
    node.running.shutdown().await;
}

/// Issue 10: the publish API answered 404 `unknown_app` before checking the
/// key, so app ids could be listed without credentials. An unknown app now
/// answers exactly as a wrong key does, whatever key is presented.
#[tokio::test]
async fn unknown_app_is_indistinguishable_from_a_wrong_key() {
    let node = TestNode::base().await;
    let good = event("bornes", "alarm", &["borne:B1"], json!(1));
    let mut unknown = good.clone();
    unknown["app_id"] = json!("no-such-app");
    let (wrong_status, wrong_body) = node.publish_raw("guessed-key", &good).await;
    assert_error(wrong_status, &wrong_body, 403, "not_allowed");
    for key in ["guessed-key", API_KEY, "other-key"] {
        let (status, body) = node.publish_raw(key, &unknown).await;
        assert_eq!((status, &body), (wrong_status, &wrong_body), "key {key}");
    }
    // In a batch, the refused event is named the same way.
    let (status, body) = node
        .publish_raw("guessed-key", &json!([good, unknown]))
        .await;
    assert_error(status, &body, 403, "not_allowed");
    assert_eq!(body["message"], wrong_body["message"], "{body}");
    node.running.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_are_refused_and_publish_nothing() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client.join_sync().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    let url = format!("{}/api/v1/publish", node.internal_url());
    let http = chouquette::http_client::HttpClient::default();
    for raw in [
        "",
        "{",
        "not json",
        "{\"app_id\": \"bluelib\", \"channel\": \"bornes\"",
        "null",
        "42",
        "\"text\"",
        "[1, 2]",
    ] {
        let (status, text) = http
            .post_json(&url, API_KEY, raw.as_bytes().to_vec())
            .await
            .expect("request");
        let body: Value = serde_json::from_str(&text).expect("a JSON error body");
        assert_error(status, &body, 400, "bad_message");
    }

    let mut bad_events = Vec::new();
    let good = event("bornes", "alarm", &["borne:B1"], json!(1));
    let mut with = |field: &str, value: Value| {
        let mut e = good.clone();
        e[field] = value;
        bad_events.push(e);
    };
    with("channel", json!(""));
    with("channel", json!("has space"));
    with("channel", json!("x".repeat(300)));
    with("channel", json!(7));
    with("event_kind", json!(""));
    with("event_kind", json!("*"));
    with("keywords", json!(["no-colon"]));
    with("keywords", json!("borne:B1"));
    with("keywords", json!([1]));
    with("key", json!(""));
    with("unexpected", json!(true));
    let mut missing_kind = good.clone();
    missing_kind
        .as_object_mut()
        .expect("object")
        .remove("event_kind");
    bad_events.push(missing_kind);
    for bad in &bad_events {
        let (status, body) = node.publish_raw(API_KEY, bad).await;
        assert_error(status, &body, 400, "bad_message");
        assert!(body.get("offset").is_none(), "{body}");
    }

    // A batch with one bad event publishes none of it.
    let mut batch: Vec<Value> = (0..5)
        .map(|i| event("bornes", "k", &[], json!(i)))
        .collect();
    batch.push(bad_events[0].clone());
    batch.push(event("bornes", "k", &[], json!(6)));
    let (status, body) = node.publish_raw(API_KEY, &Value::from(batch)).await;
    assert_error(status, &body, 400, "bad_message");
    assert_eq!(body["index"], 5, "the bad event is named: {body}");
    // Same with a bad event of an unknown app, or one the key does not cover.
    let mut batch: Vec<Value> = (0..3)
        .map(|i| event("bornes", "k", &[], json!(i)))
        .collect();
    let mut foreign = good.clone();
    foreign["app_id"] = json!("other");
    batch.push(foreign);
    let (status, body) = node.publish_raw(API_KEY, &Value::from(batch)).await;
    assert_error(status, &body, 403, "not_allowed");

    // Nothing was published: the channel's next offset is 1, and the
    // subscriber saw only that probe.
    assert_eq!(next_offset(&node, "bornes").await, 1);
    let marker = node.publish_marker().await;
    let got = client.until_marker(marker).await;
    assert_eq!(offsets(&got, "bornes"), vec![1]);
    assert_eq!(got.len(), 1, "{got:?}");
    node.running.shutdown().await;
}

/// An event with an `id` is published once however often it is sent while
/// its first copy is in history: a retry answers the first position with
/// `"duplicate": true`, and subscribers see it once.
#[tokio::test]
async fn a_retried_publish_with_an_id_is_published_once() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client.join_sync().await;
    client.subscribe("bornes", json!({"alarm": {}})).await;
    let mut with_id = event("bornes", "alarm", &["borne:B1"], json!("once"));
    with_id["id"] = json!("backend-42");
    let (status, first) = node.publish_raw(API_KEY, &with_id).await;
    assert_eq!(status, 200, "{first}");
    assert!(first.get("duplicate").is_none(), "{first}");
    let (status, retry) = node.publish_raw(API_KEY, &with_id).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["offset"], first["offset"], "{retry}");
    assert_eq!(retry["epoch"], first["epoch"]);
    assert_eq!(retry["duplicate"], true, "{retry}");
    // In a batch too, and beside new events.
    let other = event("bornes", "alarm", &[], json!("new"));
    let (status, batch) = node
        .publish_raw(API_KEY, &json!([with_id.clone(), other]))
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch[0]["duplicate"], true, "{batch}");
    assert!(batch[1].get("duplicate").is_none(), "{batch}");
    let marker = node.publish_marker().await;
    let got = client.until_marker(marker).await;
    assert_eq!(offsets(&got, "bornes"), vec![1, 2], "{got:?}");
    // Bounds: an empty or overlong id is refused, nothing published.
    for bad in [json!(""), json!("x".repeat(129))] {
        let mut e = event("bornes", "alarm", &[], json!(null));
        e["id"] = bad;
        let (status, body) = node.publish_raw(API_KEY, &e).await;
        assert_error(status, &body, 400, "bad_message");
    }
    assert_eq!(next_offset(&node, "bornes").await, 3);
}

/// A keyword without a colon got "at most 64, each `name:value`…", which
/// does not say which keyword or what is wrong, while `:B1` and `bo rne:B1`
/// (which no filter can match) were accepted.
#[tokio::test]
async fn a_bad_keyword_is_named_with_what_is_wrong() {
    let node = TestNode::base().await;
    let before = next_offset(&node, "bornes").await;
    for (keyword, says) in [
        ("B1", "must be `name:value`"),
        (":B1", "name before the colon"),
        ("bo rne:B1", "name before the colon"),
    ] {
        let bad = event("bornes", "alarm", &["level:critical", keyword], json!(1));
        let (status, body) = node.publish_raw(API_KEY, &bad).await;
        assert_error(status, &body, 400, "bad_message");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("keyword 1 (`{keyword}`)")),
            "{message}"
        );
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(
        next_offset(&node, "bornes").await,
        before + 1,
        "nothing published"
    );
}
