//! Kill switches and disconnects act on every node sharing a Redis, and
//! switches outlive a node restart and an empty Redis.

use std::time::Duration;

use chouquette_testkit::{RedisServer, SECRET, TestNode, claims, redis_config, sign, subscribe};
use serde_json::{Value, json};

use crate::{becomes_ready, eventually, nodes};

fn off(enabled: bool) -> Value {
    json!({"scope": "channel", "app": "bluelib", "channel": "bornes", "enabled": enabled})
}

/// Subscribes a new client to `bornes` as `user`; returns it and the first answer.
async fn join(node: &TestNode, user: &str) -> (chouquette_testkit::WsClient, Value) {
    let mut c = claims("bornes", json!({"alarm": {}}), 600);
    c["sub"] = json!(user);
    let mut client = node.client().await;
    client
        .send_json(&subscribe("bornes", &sign(&c, SECRET)))
        .await;
    let first = client.recv().await;
    (client, first)
}

#[tokio::test]
async fn a_switch_set_on_one_node_acts_on_every_node_and_on_nodes_started_later() {
    let mut redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let (mut on_b, ack) = join(&nodes[1], "roger").await;
    assert_eq!(ack["class"], "ack", "{ack}");

    let (status, answer) = nodes[0].admin_post("/admin/switches", &off(false)).await;
    assert_eq!(status, 200, "{answer}");
    let reset = on_b.recv().await;
    assert_eq!(reset["class"], "reset", "{reset}");
    assert_eq!(reset["reason"], "disabled");
    let (_, refused) = join(&nodes[1], "vb").await;
    assert_eq!(refused["code"], "disabled", "{refused}");
    let (status, listed) = nodes[1].admin_get("/admin/switches").await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["switches"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // A node started now reads the switches from Redis.
    let late = TestNode::start(&redis_config(&redis.url(), "late")).await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            late.admin_get("/admin/switches").await.1["switches"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        })
        .await
    );
    let (_, refused) = join(&late, "vb").await;
    assert_eq!(refused["code"], "disabled", "{refused}");

    // Redis restarted empty: the nodes record their switches again.
    redis.restart().await;
    for node in [&nodes[0], &nodes[1], &late] {
        assert!(becomes_ready(node).await, "every node reconnects");
    }
    let (_, refused) = join(&nodes[0], "vb").await;
    assert_eq!(refused["code"], "disabled", "still in force: {refused}");

    // Lifted on the late node: everyone may subscribe again.
    let (status, answer) = late.admin_post("/admin/switches", &off(true)).await;
    assert_eq!(status, 200, "{answer}");
    for node in [&nodes[0], &nodes[1]] {
        assert!(
            eventually(Duration::from_secs(5), async || {
                node.admin_get("/admin/switches").await.1["switches"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
            })
            .await
        );
        let (_, ack) = join(node, "vb").await;
        assert_eq!(ack["class"], "ack", "{ack}");
    }
}

#[tokio::test]
async fn a_disconnect_on_one_node_closes_the_users_connections_on_every_node() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 3).await;
    let (mut roger_b, _) = join(&nodes[1], "roger").await;
    let (mut roger_c, _) = join(&nodes[2], "roger").await;
    let (mut vb, _) = join(&nodes[2], "vb").await;
    let (status, answer) = nodes[0]
        .admin_post(
            "/admin/disconnect",
            &json!({"app": "bluelib", "user": "roger", "reason": "bye"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["nodes"], 3, "{answer}");
    assert_eq!(answer["disconnected"], 0, "none on the node asked");
    for client in [&mut roger_b, &mut roger_c] {
        let (code, reason) = client.expect_close().await.expect("a close frame");
        assert_eq!(reason, "bye", "{code}");
    }
    vb.expect_silence(Duration::from_millis(300)).await;
}
