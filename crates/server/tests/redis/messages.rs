//! User-to-user messages across gateways on one Redis (docs/notifications.md,
//! "User-to-user messages"): a message sent on one node reaches its
//! recipient connected to another at once, and a recipient offline until
//! then gets it when connecting to either node; a refusal sends nothing
//! anywhere.

use chouquette_testkit::{APP, RedisServer, SECRET, TestNode, WsClient, sign};
use serde_json::{Value, json};

use crate::nodes;

async fn sender(node: &TestNode, user: &str, claim: Value) -> WsClient {
    let exp = chouquette_core::clock::unix_now() + 3600;
    let claims = json!({"app_id": APP, "sub": user, "exp": exp, "message": claim});
    let mut client = node.client().await;
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": sign(&claims, SECRET)}))
        .await;
    let (ack, _) = client.recv_until("ack").await;
    assert!(ack.get("code").is_none(), "{ack}");
    client
}

async fn tab(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.identify(user).await;
    client
}

/// The notifications before the answer to a probe.
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
async fn a_message_sent_on_one_node_reaches_recipients_on_the_other_online_and_later() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let mut roger = sender(&nodes[0], "roger", json!({"users": ["ana", "bob"]})).await;
    let mut ana = tab(&nodes[1], "ana").await;
    roger
        .send_json(
            &json!({"class": "message", "uuid": "m1", "to": ["ana", "bob"],
                           "kind": "chat", "body": "hello"}),
        )
        .await;
    let answer = roger.recv().await;
    assert_eq!(
        (answer["class"].as_str(), answer["recipients"].as_u64()),
        (Some("ack"), Some(2)),
        "{answer}"
    );
    let id = answer["id"].clone();

    let (live, _) = ana.recv_until("notification").await;
    assert_eq!(
        (&live["id"], &live["from"], &live["body"]),
        (&id, &json!("roger"), &json!("hello"))
    );

    // bob connects later, on the other node, and acknowledges it there.
    let mut bob = tab(&nodes[1], "bob").await;
    let pending = received(&mut bob).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (&pending[0]["id"], &pending[0]["from"]),
        (&id, &json!("roger"))
    );

    // Refused (not in the claim): nothing anywhere.
    roger
        .send_json(&json!({"class": "message", "uuid": "m2", "to": ["zoe"], "kind": "chat"}))
        .await;
    let refused = roger.recv().await;
    assert_eq!(refused["code"], "not_allowed", "{refused}");
    let mut zoe = tab(&nodes[0], "zoe").await;
    assert!(received(&mut zoe).await.is_empty());
}
