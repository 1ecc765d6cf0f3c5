//! Presence across gateways on one Redis, and a gateway process killed
//! (SIGKILL) without a chance to say its users left.

use std::time::{Duration, Instant};

use chouquette_testkit::{RedisServer, TestNode, WsClient, redis_config_with};
use serde_json::{Value, json};

use crate::process::GatewayProcess;

/// `presence_timeout` of these tests: a killed node's users must leave
/// within it plus a third (the refresh period), plus a tick or two.
const TIMEOUT: &str = "2s";

fn config(redis: &RedisServer, node: &str) -> String {
    redis_config_with(
        &redis.url(),
        node,
        "",
        "[apps.channels.chat]\npresence = true\n",
    )
    .replace(
        "topic_sweep = \"1s\"\n",
        &format!("topic_sweep = \"1s\"\npresence_timeout = \"{TIMEOUT}\"\n"),
    )
}

/// `user` subscribed to `chat` on `client`; returns the `present` list
/// without `user` (whose own arrival may or may not be in it: it is
/// recorded while the list is read; its `joined` follows either way).
async fn join(client: &mut WsClient, user: &str) -> Vec<String> {
    client.identify(user).await;
    let (ack, before) = client.subscribe("chat", json!({"msg": {}})).await;
    assert!(ack["channels"]["chat"].is_object(), "{ack}");
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["class"], "presence");
    let mut present: Vec<String> = serde_json::from_value(before[0]["present"].clone()).unwrap();
    present.retain(|u| u != user);
    present
}

/// Presence changes until `user` is in a `field` list (`joined` or
/// `left`); returns every (joined, left) pair read.
async fn until(client: &mut WsClient, field: &str, user: &str) -> Vec<(Value, Value)> {
    let mut seen = Vec::new();
    loop {
        let (m, _) = client.recv_until("presence").await;
        seen.push((m["joined"].clone(), m["left"].clone()));
        if m[field]
            .as_array()
            .is_some_and(|l| l.iter().any(|u| u == user))
        {
            return seen;
        }
    }
}

#[tokio::test]
async fn presence_spans_nodes_and_a_killed_node_s_users_leave_in_time() {
    let redis = RedisServer::start().await;
    let a = TestNode::start(&config(&redis, "node-a")).await;
    let b = GatewayProcess::start("node-b", &config(&redis, "node-b")).await;

    let mut roger = a.client().await;
    assert!(join(&mut roger, "roger").await.is_empty());
    until(&mut roger, "joined", "roger").await;

    let mut vb = b.client().await;
    assert_eq!(join(&mut vb, "vb").await, ["roger"]);
    until(&mut roger, "joined", "vb").await;

    // Zoe has a tab on each node.
    let mut zoe_a = a.client().await;
    join(&mut zoe_a, "zoe").await;
    until(&mut roger, "joined", "zoe").await;
    let mut zoe_b = b.client().await;
    assert_eq!(join(&mut zoe_b, "zoe").await, ["roger", "vb"]);

    // A newcomer on either node sees the users of both.
    let mut ana = a.client().await;
    assert_eq!(join(&mut ana, "ana").await, ["roger", "vb", "zoe"]);
    until(&mut roger, "joined", "ana").await;

    // Node B dies without a word: vb leaves within the timeout (and a
    // third); zoe, still on node A, does not.
    let mut b = b;
    let killed = Instant::now();
    b.child.start_kill().unwrap();
    let _ = b.child.wait().await;
    let seen = tokio::time::timeout(Duration::from_secs(10), until(&mut roger, "left", "vb"))
        .await
        .expect("vb is announced left");
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(2000 * 4 / 3 + 1500),
        "{took:?}"
    );
    for (joined, left) in &seen {
        assert!(!left.to_string().contains("zoe"), "zoe stayed: {seen:?}");
        assert!(joined.is_null(), "{seen:?}");
    }
    let mut late = a.client().await;
    assert_eq!(join(&mut late, "late").await, ["ana", "roger", "zoe"]);
}

/// Redis restarted empty: the gateway records its users again and every
/// subscriber of a presence channel gets a fresh `present` list (the
/// changes of the outage were not seen).
#[tokio::test]
async fn after_an_outage_subscribers_get_a_fresh_present_list() {
    let mut redis = RedisServer::start().await;
    let a = TestNode::start(&config(&redis, "node-a")).await;
    let mut roger = a.client().await;
    join(&mut roger, "roger").await;
    until(&mut roger, "joined", "roger").await;

    redis.kill().await;
    let (reset, _) = roger.recv_until("reset").await;
    assert_eq!(reset["reason"], "broker_unavailable", "{reset}");
    redis.restart().await;
    let (mut restored, mut list) = (false, None);
    while !restored || list.is_none() {
        let m = roger.recv().await;
        if m["class"] == "reset" {
            assert_eq!(m["reason"], "broker_restored", "{m}");
            restored = true;
        } else if m["class"] == "presence" && m.get("present").is_some() {
            list = Some(m["present"].clone());
        }
    }
    assert_eq!(list, Some(json!(["roger"])));
    // Recorded again in Redis: a newcomer sees roger.
    let mut ana = a.client().await;
    assert_eq!(join(&mut ana, "ana").await, ["roger"]);
}
