//! The offline fallback across gateways on one Redis (docs/notifications.md
//! "Offline fallback"): "last connected" is shared, so a user connected to
//! one node gets no e-mail from another; a user checked by two nodes gets
//! one digest, not two (the per-user lock).

use std::time::Duration;

use chouquette_testkit::{
    API_KEY, APP, RedisServer, SmtpServer, TestNode, WsClient, eventually, redis_config_with,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn email_fallback(port: u16) -> String {
    format!(
        "[apps.notifications.fallback]\nafter = \"1s\"\nperiod = \"1s\"\n\
         [apps.notifications.fallback.email]\nhost = \"127.0.0.1\"\nport = {port}\n\
         tls = \"none\"\nfrom = \"noreply@bluelib.example\"\n\
         to = \"{{user}}@users.example\"\nsubject = \"{{count}} for {{user}}\"\n"
    )
}

async fn nodes(redis: &RedisServer, smtp: &SmtpServer) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for i in 0..2 {
        let config = redis_config_with(
            &redis.url(),
            &format!("node-{i}"),
            "",
            &email_fallback(smtp.port()),
        );
        nodes.push(TestNode::start(&config).await);
    }
    nodes
}

async fn notify(node: &TestNode, users: &[&str], title: &str) {
    let body = json!({"app_id": APP, "users": users, "kind": "comment", "title": title});
    let (status, answer) = node.api_post("/api/v1/notify", Some(API_KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn counter(nodes: &[TestNode], name: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        sum += node
            .metric(&format!("chouquette_fallback_{name}_total"))
            .await
            .unwrap_or(0.0);
    }
    sum
}

async fn mails(smtp: &SmtpServer, n: usize) -> Vec<Value> {
    let arrived = eventually(WAIT, async || smtp.mails().len() >= n).await;
    let mails = smtp.mails();
    assert!(arrived, "expected {n} mails, got {mails:?}");
    mails
}

#[tokio::test]
async fn two_nodes_send_one_digest_for_an_offline_user() {
    let redis = RedisServer::start().await;
    // Slower than a tick: without the per-user lock both nodes would be
    // sending at once.
    let smtp = SmtpServer::start_slow(Duration::from_millis(1500)).await;
    let nodes = nodes(&redis, &smtp).await;
    notify(&nodes[0], &["lucie"], "from node 0").await;
    notify(&nodes[1], &["lucie"], "from node 1").await;

    let mail = mails(&smtp, 1).await.remove(0);
    assert_eq!(mail["subject"], "2 for lucie", "{mail}");
    let body = mail["body"].as_str().expect("body");
    assert!(
        body.contains("from node 0") && body.contains("from node 1"),
        "{body}"
    );
    // Checked again a period later (by either node): nothing new.
    assert!(eventually(WAIT, async || counter(&nodes, "checks").await >= 2.0).await);
    assert_eq!(smtp.mails().len(), 1, "{:?}", smtp.mails());
    assert_eq!(counter(&nodes, "digests").await, 1.0);
}

#[tokio::test]
async fn a_user_connected_to_another_node_gets_no_email() {
    let redis = RedisServer::start().await;
    let smtp = SmtpServer::start().await;
    let nodes = nodes(&redis, &smtp).await;
    let mut roger = WsClient::connect(&nodes[1].ws_url()).await;
    roger.identify("roger").await;
    notify(&nodes[0], &["roger", "lucie"], "hello").await;

    let mail = mails(&smtp, 1).await.remove(0);
    assert_eq!(mail["to"], "lucie@users.example", "{mail}");
    // Node 0 has no connection of roger: its deferral read Redis.
    let node0_deferred = async || {
        nodes[0]
            .metric("chouquette_fallback_deferred_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    };
    assert!(
        eventually(WAIT, node0_deferred).await,
        "node 0 put roger off"
    );
    let to: Vec<Value> = smtp.mails().iter().map(|m| m["to"].clone()).collect();
    assert_eq!(to, [json!("lucie@users.example")]);
}
