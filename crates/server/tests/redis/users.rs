//! Backend-driven subscriptions across gateways on one Redis: the grant is
//! stored in Redis and the message reaches every node over the users topic.

use chouquette_testkit::{API_KEY, APP, RedisServer, WsClient};
use serde_json::{Value, json};

use crate::nodes;

fn grant(user: &str) -> Value {
    json!({"app_id": APP, "user": user, "channel": "alerts", "filters": {"alarm": {}}})
}

/// Reads up to `subscribed`; asserts it names `alerts` and nothing came before.
async fn expect_subscribed(client: &mut WsClient) {
    let (message, before) = client.recv_until("subscribed").await;
    assert_eq!(message["channel"], "alerts", "{message}");
    assert!(before.is_empty(), "{before:?}");
}

#[tokio::test]
async fn a_post_on_one_node_subscribes_the_users_connection_on_another() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let mut on_b = nodes[1].client().await;
    on_b.identify("roger").await;
    let (status, body) = nodes[0]
        .user_subscription("POST", Some(API_KEY), &grant("roger"))
        .await;
    // Node A holds none of roger's connections: it counts its own.
    assert_eq!((status, &body), (200, &json!({"connections": 0})));
    expect_subscribed(&mut on_b).await;
    nodes[0]
        .publish("alerts", "alarm", &["borne:B1"], json!("across"))
        .await;
    let (data, _) = on_b.recv_until("data").await;
    assert_eq!(data["data"], "across");
    let (status, _) = nodes[0]
        .user_subscription(
            "DELETE",
            Some(API_KEY),
            &json!({"app_id": APP, "user": "roger", "channel": "alerts"}),
        )
        .await;
    assert_eq!(status, 200);
    let (gone, _) = on_b.recv_until("unsubscribed").await;
    assert_eq!(gone["channel"], "alerts");
}

#[tokio::test]
async fn a_connect_on_another_node_after_the_post_reads_the_grant_from_redis() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let (status, _) = nodes[0]
        .user_subscription("POST", Some(API_KEY), &grant("roger"))
        .await;
    assert_eq!(status, 200);
    let mut on_b = nodes[1].client().await;
    on_b.identify("roger").await;
    expect_subscribed(&mut on_b).await;
    nodes[0]
        .publish("alerts", "alarm", &["borne:B3"], json!("later"))
        .await;
    let (data, _) = on_b.recv_until("data").await;
    assert_eq!(data["data"], "later");
    // Another user on node B is not subscribed: nothing before a marker
    // published after an event of the channel.
    let mut vb = nodes[1].client().await;
    vb.join_sync().await;
    vb.identify("vb").await;
    nodes[0]
        .publish("alerts", "alarm", &["borne:B3"], json!("not for vb"))
        .await;
    let marker = nodes[0].publish_marker().await;
    assert!(vb.until_marker(marker).await.is_empty());
}
