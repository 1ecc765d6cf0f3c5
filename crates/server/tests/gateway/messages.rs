//! User-to-user messages (docs/notifications.md, "User-to-user messages"):
//! sent where the `connect` token's `message` claim allows, delivered as a
//! notification `from` the sender (live, or pending until the recipient
//! connects), refused with their own codes: `not_allowed`,
//! `too_many_recipients`, `rate_limited`, `disabled`. Nothing refused
//! reaches anyone. On the memory broker; `tests/redis/messages.rs` crosses
//! nodes.

use chouquette_testkit::{APP, SECRET, TestNode, WsClient, config_with, sign};
use serde_json::{Value, json};

/// Burst 2 (and 1 a second after), at most 3 recipients.
const MESSAGES: &str = "[apps.messages]\nper_second = 1\nburst = 2\nmax_recipients = 3\n";

/// The claim most senders get: two users, a group of four.
fn claim() -> Value {
    json!({"users": ["ana", "bob"], "groups": {"team": ["roger", "ana", "carl", "dan"],
                                               "pair": ["roger", "ana"]}})
}

/// A connection of `user` whose `connect` token carries `message` (none
/// when null).
pub async fn sender(node: &TestNode, user: &str, message: Value) -> WsClient {
    let exp = chouquette_core::clock::unix_now() + 3600;
    let mut claims = json!({"app_id": APP, "sub": user, "exp": exp});
    if !message.is_null() {
        claims["message"] = message;
    }
    let token = sign(&claims, SECRET);
    let mut client = node.client().await;
    client
        .send_json(&json!({"class": "connect", "uuid": "c1", "app_id": APP, "token": token}))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["class"], "ack", "{answer}");
    client
}

/// A recipient's connection.
async fn tab(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.identify(user).await;
    client
}

fn chat(uuid: &str, to: &[&str], groups: &[&str]) -> Value {
    json!({"class": "message", "uuid": uuid, "to": to, "groups": groups, "kind": "chat",
           "title": "Hi", "body": "lunch?", "data": {"room": "r1"}})
}

/// Sends `message` and returns the answer.
async fn send(client: &mut WsClient, message: &Value) -> Value {
    client.send_json(message).await;
    client.recv().await
}

fn assert_refused(answer: &Value, code: &str, uuid: &str) {
    assert_eq!(
        (answer["class"].as_str(), answer["code"].as_str()),
        (Some("error"), Some(code)),
        "{answer}"
    );
    assert_eq!(answer["ref"], uuid, "{answer}");
}

/// The notifications `client` holds before the answer to a probe (pending
/// ones and live ones sent before it).
async fn received(client: &mut WsClient) -> Vec<Value> {
    client
        .send_json(&json!({"class": "notification_ack", "ids": ["n-probe"], "uuid": "probe"}))
        .await;
    let mut got = Vec::new();
    loop {
        let m = client.recv().await;
        if m["class"] == "ack" && m["ref"] == "probe" {
            return got;
        }
        if m["class"] == "notification" {
            got.push(m);
        }
    }
}

#[tokio::test]
async fn an_allowed_message_reaches_an_online_recipient_and_an_offline_one_at_connect() {
    let node = TestNode::start(&config_with("", MESSAGES)).await;
    let mut roger = sender(&node, "roger", claim()).await;
    let mut ana = tab(&node, "ana").await;
    let answer = send(&mut roger, &chat("m1", &["ana", "bob"], &[])).await;
    assert_eq!(
        (answer["class"].as_str(), answer["ref"].as_str()),
        (Some("ack"), Some("m1")),
        "{answer}"
    );
    assert_eq!(answer["recipients"], 2, "{answer}");
    let id = answer["id"].as_str().expect("id");

    let (live, before) = ana.recv_until("notification").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(
        (
            &live["id"],
            &live["from"],
            &live["kind"],
            &live["body"],
            &live["data"]
        ),
        (
            &json!(id),
            &json!("roger"),
            &json!("chat"),
            &json!("lunch?"),
            &json!({"room": "r1"})
        ),
        "{live}"
    );
    // bob was offline: it waited for him, pending until acknowledged.
    let mut bob = tab(&node, "bob").await;
    let pending = received(&mut bob).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (&pending[0]["id"], &pending[0]["from"]),
        (&json!(id), &json!("roger"))
    );
    // The sender is no recipient.
    assert!(received(&mut roger).await.is_empty());
}

#[tokio::test]
async fn a_group_message_reaches_the_members_the_claim_lists_but_not_the_sender() {
    let node = TestNode::start(&config_with("", "[apps.messages]\nmax_recipients = 10\n")).await;
    let mut roger = sender(&node, "roger", claim()).await;
    let answer = send(&mut roger, &chat("g1", &["ana"], &["team"])).await;
    assert_eq!(answer["recipients"], 3, "ana once, carl, dan: {answer}");
    for user in ["ana", "carl", "dan"] {
        let mut member = tab(&node, user).await;
        let got = received(&mut member).await;
        assert_eq!(got.len(), 1, "{user}: {got:?}");
        assert_eq!(got[0]["from"], "roger");
    }
    let mut again = tab(&node, "roger").await;
    assert!(received(&mut again).await.is_empty(), "not to the sender");
}

#[tokio::test]
async fn refusals_have_their_codes_and_send_nothing() {
    let node = TestNode::start(&config_with("", MESSAGES)).await;
    let mut ana = tab(&node, "ana").await;

    // No `message` claim; a user or a group the claim does not name.
    let mut plain = sender(&node, "eve", Value::Null).await;
    assert_refused(
        &send(&mut plain, &chat("n1", &["ana"], &[])).await,
        "not_allowed",
        "n1",
    );
    let mut roger = sender(&node, "roger", claim()).await;
    assert_refused(
        &send(&mut roger, &chat("n2", &["zoe"], &[])).await,
        "not_allowed",
        "n2",
    );
    assert_refused(
        &send(&mut roger, &chat("n3", &[], &["board"])).await,
        "not_allowed",
        "n3",
    );
    // bob, then team's ana, carl and dan (roger left out): 4, over 3.
    let many = send(&mut roger, &chat("n4", &["bob"], &["team"])).await;
    assert_refused(&many, "too_many_recipients", "n4");
    // A message naming nobody is a bad message.
    let empty = send(&mut roger, &chat("n5", &[], &[])).await;
    assert_refused(&empty, "bad_message", "n5");
    assert!(received(&mut ana).await.is_empty(), "nothing was sent");

    // The burst (2), then the rate.
    for uuid in ["r1", "r2"] {
        let ok = send(&mut roger, &chat(uuid, &["ana"], &[])).await;
        assert_eq!(ok["class"], "ack", "{ok}");
    }
    let limited = send(&mut roger, &chat("r3", &["ana"], &[])).await;
    assert_refused(&limited, "rate_limited", "r3");
    assert_eq!(received(&mut ana).await.len(), 2);
    // Another sender has a bucket of its own.
    let mut bob = sender(&node, "bob", json!({"users": ["ana"]})).await;
    let ok = send(&mut bob, &chat("b1", &["ana"], &[])).await;
    assert_eq!(ok["class"], "ack", "{ok}");
    assert_eq!(received(&mut ana).await.len(), 1);
}

#[tokio::test]
async fn a_user_kill_switch_stops_that_user_sending_until_lifted() {
    let node = TestNode::start(&config_with("", "[apps.messages]\nburst = 100\n")).await;
    let mut roger = sender(&node, "roger", claim()).await;
    let mut bob = sender(&node, "bob", json!({"users": ["ana"]})).await;
    let mut ana = tab(&node, "ana").await;
    let switch = json!({"scope": "user", "app": APP, "user": "roger", "enabled": false});
    let (status, answer) = node.admin_post("/admin/switches", &switch).await;
    assert_eq!(status, 200, "{answer}");

    let refused = send(&mut roger, &chat("k1", &["ana"], &[])).await;
    assert_refused(&refused, "disabled", "k1");
    let ok = send(&mut bob, &chat("k2", &["ana"], &[])).await;
    assert_eq!(ok["class"], "ack", "another user still sends: {ok}");
    let got = received(&mut ana).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["from"], "bob");

    let mut lift = switch.clone();
    lift["enabled"] = json!(true);
    let (status, answer) = node.admin_post("/admin/switches", &lift).await;
    assert_eq!(status, 200, "{answer}");
    let ok = send(&mut roger, &chat("k3", &["ana"], &[])).await;
    assert_eq!(ok["class"], "ack", "{ok}");
}

#[tokio::test]
async fn a_malformed_message_claim_refuses_the_connect() {
    let node = TestNode::base().await;
    let exp = chouquette_core::clock::unix_now() + 3600;
    let claims = json!({"app_id": APP, "sub": "roger", "exp": exp, "message": {"users": "ana"}});
    let mut client = node.client().await;
    let token = sign(&claims, SECRET);
    client
        .send_json(&json!({"class": "connect", "uuid": "c1", "app_id": APP, "token": token}))
        .await;
    let answer = client.recv().await;
    assert_refused(&answer, "invalid_token", "c1");
}
