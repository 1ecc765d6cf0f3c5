//! Presence on one node (memory broker): PROTOCOL.md section 10 "Presence".

use std::time::Duration;

use chouquette_testkit::{
    SECRET, TestNode, WsClient, claims, config_with, eventually, sign, subscribe,
};
use serde_json::{Value, json};

const CHAT: &str = "[apps.channels.chat]\npresence = true\n";

async fn chat_node() -> TestNode {
    TestNode::start(&config_with("", CHAT)).await
}

/// A client with the `connect` identity `user` (none: anonymous),
/// subscribed to `chat`; returns it and the `present` list it got first,
/// without `user` (its own arrival is recorded while the list is read, so
/// it may be in it or not; its `joined` follows either way).
async fn join(node: &TestNode, user: Option<&str>) -> (WsClient, Vec<String>) {
    let mut client = node.client().await;
    if let Some(user) = user {
        client.identify(user).await;
    }
    let (ack, before) = client.subscribe("chat", json!({"msg": {}})).await;
    assert!(ack["channels"]["chat"].is_object(), "{ack}");
    assert_eq!(
        before.len(),
        1,
        "only the present list before the ack: {before:?}"
    );
    let mut present = present_of(&before[0]);
    present.retain(|u| Some(u.as_str()) != user);
    (client, present)
}

fn present_of(m: &Value) -> Vec<String> {
    assert_eq!(m["class"], "presence", "{m}");
    assert_eq!(m["channel"], "chat", "{m}");
    assert!(m.get("offset").is_none(), "no offset: {m}");
    serde_json::from_value(m["present"].clone()).expect("a present list")
}

/// The next presence change: (joined, left).
async fn change(client: &mut WsClient) -> (Vec<String>, Vec<String>) {
    let (m, before) = client.recv_until("presence").await;
    assert!(before.is_empty(), "{before:?}");
    assert!(m.get("present").is_none(), "{m}");
    let list = |k: &str| serde_json::from_value(m[k].clone()).unwrap_or_default();
    (list("joined"), list("left"))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn subscribers_get_who_is_present_then_who_joins_and_leaves() {
    let node = chat_node().await;
    let (mut roger, present) = join(&node, Some("roger")).await;
    assert!(present.is_empty(), "{present:?}");
    // Its own arrival is announced to it like to anyone.
    assert_eq!(change(&mut roger).await, (names(&["roger"]), vec![]));

    let (mut vb, present) = join(&node, Some("vb")).await;
    assert_eq!(present, names(&["roger"]));
    assert_eq!(change(&mut roger).await, (names(&["vb"]), vec![]));
    assert_eq!(change(&mut vb).await, (names(&["vb"]), vec![]));
    assert_eq!(node.metric("chouquette_presence_users").await, Some(2.0));

    // Leaving by unsubscribe, then by closing.
    vb.send_json(&json!({"class": "unsubscribe", "channels": ["chat"]}))
        .await;
    assert_eq!(change(&mut roger).await, (vec![], names(&["vb"])));
    let (mut ana, present) = join(&node, Some("ana")).await;
    assert_eq!(present, names(&["roger"]));
    assert_eq!(change(&mut roger).await, (names(&["ana"]), vec![]));
    assert_eq!(change(&mut ana).await, (names(&["ana"]), vec![]));
    roger.close().await;
    assert_eq!(change(&mut ana).await, (vec![], names(&["roger"])));
    assert!(
        eventually(Duration::from_secs(5), async || {
            node.metric("chouquette_presence_users").await == Some(1.0)
        })
        .await
    );
}

#[tokio::test]
async fn a_user_with_two_tabs_leaves_when_the_last_one_closes() {
    let node = chat_node().await;
    let (mut watcher, _) = join(&node, Some("vb")).await;
    assert_eq!(change(&mut watcher).await, (names(&["vb"]), vec![]));
    let (tab1, _) = join(&node, Some("roger")).await;
    let (tab2, present) = join(&node, Some("roger")).await;
    assert_eq!(present, names(&["vb"]));
    assert_eq!(change(&mut watcher).await, (names(&["roger"]), vec![]));

    tab1.close().await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            node.metric("chouquette_connections").await == Some(2.0)
        })
        .await,
        "the first tab is gone"
    );
    // The next change is ana's arrival: roger did not leave with one tab.
    let (_ana, _) = join(&node, Some("ana")).await;
    assert_eq!(change(&mut watcher).await, (names(&["ana"]), vec![]));
    tab2.close().await;
    assert_eq!(change(&mut watcher).await, (vec![], names(&["roger"])));
}

#[tokio::test]
async fn a_subscription_token_sub_names_the_user_and_without_any_identity_nobody_joins() {
    let node = chat_node().await;
    let (mut watcher, _) = join(&node, Some("vb")).await;
    assert_eq!(change(&mut watcher).await, (names(&["vb"]), vec![]));

    // No identity at all: it sees presence, and is not present itself.
    let (mut anonymous, present) = join(&node, None).await;
    assert_eq!(present, names(&["vb"]));
    // A subscription token naming its user (`sub`), without `connect`.
    let mut by_token = node.client().await;
    let mut c = claims("chat", json!({"msg": {}}), 3600);
    c["sub"] = json!("ana");
    by_token
        .send_json(&subscribe("chat", &sign(&c, SECRET)))
        .await;
    let (_, before) = by_token.recv_until("ack").await;
    assert_eq!(present_of(&before[0]), names(&["vb"]));
    // Ana is the next (and only) change: the anonymous client was none.
    assert_eq!(change(&mut watcher).await, (names(&["ana"]), vec![]));
    assert_eq!(change(&mut anonymous).await, (names(&["ana"]), vec![]));
    anonymous.close().await;
    by_token.close().await;
    assert_eq!(change(&mut watcher).await, (vec![], names(&["ana"])));
}

#[tokio::test]
async fn a_channel_without_presence_gets_no_presence_frames() {
    let node = chat_node().await;
    let mut client = node.client().await;
    client.identify("roger").await;
    let (_, before) = client.subscribe("bornes", json!({"alarm": {}})).await;
    assert!(before.is_empty(), "no present list: {before:?}");
    let (_, before) = client.subscribe("chat", json!({"msg": {}})).await;
    assert_eq!(present_of(&before[0]), Vec::<String>::new());
    assert_eq!(change(&mut client).await, (names(&["roger"]), vec![]));

    let mut other = node.client().await;
    other.identify("ana").await;
    other.subscribe("bornes", json!({"alarm": {}})).await;
    other.subscribe("chat", json!({"msg": {}})).await;
    // Both channels' frames of a tick are queued together, before this
    // event: none of them is about `bornes`.
    assert_eq!(change(&mut client).await, (names(&["ana"]), vec![]));
    node.publish("bornes", "alarm", &["borne:B1"], json!(1))
        .await;
    let (event, before) = client.recv_until("data").await;
    assert_eq!(event["channel"], "bornes");
    assert!(before.is_empty(), "{before:?}");
}
