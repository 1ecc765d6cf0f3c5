//! Notifications across gateways on one Redis (docs/notifications.md): the
//! pending lists live in Redis (changed by compare-and-set, so concurrent
//! notifications from several nodes lose nothing), a user reconnecting on
//! another node gets every pending one once, and they survive a restart.

use chouquette_testkit::{API_KEY, APP, RedisServer, TestNode, WsClient, redis_config};
use serde_json::{Value, json};

use crate::nodes;

fn notification(user: &str, title: &str) -> Value {
    json!({"app_id": APP, "users": [user], "kind": "comment", "title": title})
}

async fn notify(node: &TestNode, body: &Value) -> String {
    let (status, answer) = node.api_post("/api/v1/notify", Some(API_KEY), body).await;
    assert_eq!(status, 200, "{answer}");
    answer["id"].as_str().expect("id").to_string()
}

async fn tab(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.identify(user).await;
    client
}

/// The ids of the notifications `client` gets before the answer to a
/// probe: the pending ones read at connect come before it.
async fn pending(client: &mut WsClient) -> Vec<String> {
    client
        .send_json(&json!({"class": "notification_ack", "ids": ["n-probe"], "uuid": "probe"}))
        .await;
    let mut ids = Vec::new();
    loop {
        let m = client.recv().await;
        if m["class"] == "ack" && m["ref"] == "probe" {
            return ids;
        }
        if m["class"] == "notification" {
            ids.push(m["id"].as_str().expect("id").to_string());
        }
    }
}

#[tokio::test]
async fn a_user_offline_reconnecting_on_another_node_gets_every_pending_one_once() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    // Notifications posted on both nodes at once, while roger is away.
    let writer = |n: usize| {
        let node = &nodes[n];
        async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                ids.push(notify(node, &notification("roger", &format!("{n}-{i}"))).await);
            }
            ids
        }
    };
    let (a, b) = tokio::join!(writer(0), writer(1));
    let mut client = tab(&nodes[1], "roger").await;
    let got = pending(&mut client).await;
    let mut expected: Vec<String> = a.iter().chain(&b).cloned().collect();
    let mut sorted = got.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "every one, once");
    // Oldest first: each writer's own order is kept.
    for own in [&a, &b] {
        let positions: Vec<usize> = own
            .iter()
            .map(|id| got.iter().position(|g| g == id).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }

    // Acknowledged on node B: gone for the tab on node A, and for good.
    let mut other_tab = tab(&nodes[0], "roger").await;
    assert_eq!(pending(&mut other_tab).await.len(), 50);
    let ids: Vec<&str> = got.iter().map(String::as_str).collect();
    client
        .send_json(&json!({"class": "notification_ack", "ids": ids, "uuid": "a1"}))
        .await;
    let (acked, _) = other_tab.recv_until("notification_acked").await;
    assert_eq!(acked["ids"].as_array().unwrap().len(), 50, "{acked}");
    let mut again = tab(&nodes[0], "roger").await;
    assert!(pending(&mut again).await.is_empty());

    // Live: posted on one node, received on the other.
    let live = notify(&nodes[1], &notification("roger", "live")).await;
    let (n, _) = other_tab.recv_until("notification").await;
    assert_eq!(n["id"], json!(live));
}

#[tokio::test]
async fn pending_ones_and_idempotency_ids_survive_a_gateway_restart() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis.url(), "node-0");
    let first = TestNode::start(&config).await;
    let mut body = notification("roger", "kept");
    body["id"] = json!("order-7");
    let id = notify(&first, &body).await;
    first.running.shutdown().await;

    let again = TestNode::start(&config).await;
    assert_eq!(
        notify(&again, &body).await,
        id,
        "the idempotency id is remembered"
    );
    let mut client = tab(&again, "roger").await;
    assert_eq!(pending(&mut client).await, [id]);

    // Stored with an expiry under the user's hash tag.
    let mut redis_client = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("chq:{{{APP}|roger}}:notifications");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis_client)
        .await
        .unwrap();
    assert!(ttl > 29 * 86_400_000, "{key}: {ttl}");
}

#[tokio::test]
async fn a_burst_posted_on_two_nodes_is_one_notification_then_one_group_on_a_third() {
    let redis = RedisServer::start().await;
    // Long enough for the 31 requests of the burst under a loaded machine.
    let extra = "[[apps.notifications.group]]\nkind = \"comment\"\nwindow = \"2s\"\n";
    let mut nodes = Vec::new();
    for i in 0..3 {
        let config =
            chouquette_testkit::redis_config_with(&redis.url(), &format!("node-{i}"), "", extra);
        nodes.push(TestNode::start(&config).await);
    }
    let mut client = tab(&nodes[2], "roger").await;
    let first = notify(&nodes[0], &notification("roger", "first")).await;
    let writer = |n: usize| {
        let node = &nodes[n];
        async move {
            let mut ids = Vec::new();
            for i in 0..15 {
                ids.push(notify(node, &notification("roger", &format!("{n}-{i}"))).await);
            }
            ids
        }
    };
    let (a, b) = tokio::join!(writer(0), writer(1));
    let (n, before) = client.recv_until("notification").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(n["id"], json!(first));
    let (group, before) = client.recv_until("notification").await;
    assert!(before.is_empty(), "{before:?}");
    let mut got: Vec<String> = serde_json::from_value(group["grouped"]["ids"].clone()).unwrap();
    assert_eq!(group["grouped"]["count"], 30, "{group}");
    let mut expected: Vec<String> = a.into_iter().chain(b).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "every one of the burst, once");
}
