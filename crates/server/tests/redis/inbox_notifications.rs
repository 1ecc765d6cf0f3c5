//! Notifications through the Redis inbox (docs/notifications.md, "From a
//! backend"): an entry's `notification` field, the body of `POST
//! /api/v1/notify`, stored and delivered as the route does, once however
//! often the entry is read, and refused entries kept aside with the reason.

use std::time::Duration;

use chouquette_testkit::{API_KEY, APP, RedisServer, TestNode, WsClient, redis_config_with};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::eventually;

const STREAM: &str = "chq:inbox";

async fn redis_client(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A gateway on `redis` that does not read the inbox (`inbox = ""`), so
/// that the other one does.
async fn deaf_node(redis: &RedisServer, name: &str) -> TestNode {
    let config = redis_config_with(&redis.url(), name, "", "").replacen(
        "[broker]\n",
        "[broker]\ninbox = \"\"\n",
        1,
    );
    TestNode::start(&config).await
}

async fn xadd(con: &mut redis::aio::MultiplexedConnection, field: &str, value: &Value) -> String {
    con.xadd(STREAM, "*", &[(field, value.to_string())])
        .await
        .unwrap()
}

async fn tab(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.identify(user).await;
    client
}

/// The notifications `client` gets before the answer to a probe: the
/// pending ones read at connect come before it.
async fn pending(client: &mut WsClient) -> Vec<Value> {
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

async fn nothing_pending_in_the_group(con: &mut redis::aio::MultiplexedConnection) -> bool {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg("chouquette")
        .query_async(con)
        .await
        .unwrap();
    matches!(reply, redis::Value::Array(ref v) if v.first() == Some(&redis::Value::Int(0)))
}

#[tokio::test]
async fn an_inbox_notification_reaches_a_user_on_another_node_and_one_offline_at_connect() {
    let redis = RedisServer::start().await;
    let mut con = redis_client(&redis).await;
    let node_a = deaf_node(&redis, "a").await;
    let _node_b = TestNode::start(&redis_config_with(&redis.url(), "b", "", "")).await;
    let mut roger = tab(&node_a, "roger").await;
    let entry = xadd(
        &mut con,
        "notification",
        &json!({"app_id": APP, "users": ["roger", "ana", "roger"], "kind": "comment",
                "title": "New comment", "body": "Ana commented", "link": "/posts/7",
                "data": {"post": 7}, "id": "comment-1234"}),
    )
    .await;

    // Live on node A, although node B consumed the entry.
    let (live, _) = roger.recv_until("notification").await;
    assert_eq!(
        (&live["kind"], &live["title"], &live["body"], &live["link"]),
        (
            &json!("comment"),
            &json!("New comment"),
            &json!("Ana commented"),
            &json!("/posts/7")
        ),
        "{live}"
    );
    assert_eq!(live["data"], json!({"post": 7}));
    assert!(
        live.get("from").is_none(),
        "a backend's notification: {live}"
    );
    let id = live["id"].as_str().unwrap().to_string();
    roger.expect_silence(Duration::from_millis(300)).await;

    // Ana was offline: pending at her connect, on either node.
    let mut ana = tab(&node_a, "ana").await;
    let got = pending(&mut ana).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["id"], json!(id));

    // One idempotency id for both ways in: the route answers the inbox's.
    let body = json!({"app_id": APP, "users": ["roger"], "kind": "comment", "id": "comment-1234"});
    let (status, answer) = node_a
        .api_post("/api/v1/notify", Some(API_KEY), &body)
        .await;
    assert_eq!((status, &answer["id"]), (200, &json!(id)), "{answer}");
    roger.expect_silence(Duration::from_millis(300)).await;

    assert!(
        eventually(Duration::from_secs(5), async || {
            nothing_pending_in_the_group(&mut con).await
        })
        .await,
        "entry {entry} acknowledged"
    );
}

/// A gateway that stored an entry's notification and died before
/// acknowledging it: the entry is taken over (`inbox_claim_after`, 2 s
/// here) and read again, and its derived idempotency id (`inbox:<entry
/// id>`, recorded when the first gateway stored it) keeps it once.
#[tokio::test]
async fn an_entry_read_again_after_a_crash_is_not_stored_twice() {
    let redis = RedisServer::start().await;
    let mut con = redis_client(&redis).await;
    let _: () = con
        .xgroup_create_mkstream(STREAM, "chouquette", "0")
        .await
        .unwrap();
    let entry = xadd(
        &mut con,
        "notification",
        &json!({"app_id": APP, "users": ["roger"], "kind": "comment", "title": "once"}),
    )
    .await;
    // The ghost gateway takes the entry...
    let taken: redis::streams::StreamReadReply = con
        .xread_options(
            &[STREAM],
            &[">"],
            &redis::streams::StreamReadOptions::default().group("chouquette", "ghost"),
        )
        .await
        .unwrap();
    assert_eq!(taken.keys[0].ids.len(), 1);
    let node = TestNode::start(&redis_config_with(&redis.url(), "survivor", "", "")).await;
    // ...stores its notification (what it does with it, under the id the
    // entry derives) and dies before acknowledging.
    let stored = json!({"app_id": APP, "users": ["roger"], "kind": "comment", "title": "once",
                        "id": format!("inbox:{entry}")});
    let (status, answer) = node
        .api_post("/api/v1/notify", Some(API_KEY), &stored)
        .await;
    assert_eq!(status, 200, "{answer}");

    assert!(
        eventually(Duration::from_secs(15), async || {
            nothing_pending_in_the_group(&mut con).await
        })
        .await,
        "the survivor took the entry over and acknowledged it"
    );
    assert!(node.metric("chouquette_inbox_claimed_total").await >= Some(1.0));
    assert_eq!(
        node.metric("chouquette_notifications_duplicates_total")
            .await,
        Some(1.0),
        "read again, answered from its idempotency id"
    );
    let mut roger = tab(&node, "roger").await;
    let got = pending(&mut roger).await;
    assert_eq!(got.len(), 1, "stored once: {got:?}");
    assert_eq!(got[0]["id"], answer["id"]);
    assert!(dead_letters(&redis).await.is_empty());
}

#[tokio::test]
async fn a_refused_notification_entry_is_a_dead_letter_with_the_reason() {
    let redis = RedisServer::start().await;
    let mut con = redis_client(&redis).await;
    let limits = "max_publish_bytes = 4096\n";
    let node = TestNode::start(&redis_config_with(&redis.url(), "n", limits, "")).await;
    let mut roger = tab(&node, "roger").await;
    let good =
        |title: &str| json!({"app_id": APP, "users": ["roger"], "kind": "k", "title": title});
    let mut refused = Vec::new();
    let mut add_bad = async |field: &str, value: Value, reason: &str| {
        let id = xadd(&mut con, field, &value).await;
        refused.push((id, reason.to_string()));
    };
    add_bad(
        "notification",
        json!({"app_id": "nope", "users": ["roger"], "kind": "k"}),
        "unknown app `nope`",
    )
    .await;
    add_bad(
        "notification",
        json!({"app_id": APP, "users": ["roger"], "kind": "k".repeat(65)}),
        "`kind` must have 1 to 64 bytes",
    )
    .await;
    add_bad(
        "notification",
        json!({"app_id": APP, "users": [], "kind": "k"}),
        "`users`: 1 to 1000 user ids",
    )
    .await;
    add_bad(
        "notification",
        json!({"app_id": APP, "users": ["roger"], "kind": "k", "titel": "typo"}),
        "unknown field `titel`",
    )
    .await;
    add_bad(
        "notification",
        json!({"app_id": APP, "users": ["roger"], "kind": "k", "data": "x".repeat(5000)}),
        "`data` larger than 4096 bytes",
    )
    .await;
    add_bad(
        "notification",
        json!("not an object"),
        "field `notification`",
    )
    .await;
    let id = {
        let mut pipe = redis::pipe();
        pipe.xadd(
            STREAM,
            "*",
            &[
                ("notification", good("twice").to_string()),
                ("event", "{}".to_string()),
            ],
        );
        let (id,): (String,) = pipe.query_async(&mut con).await.unwrap();
        id
    };
    refused.push((id, "an entry holds one of".to_string()));
    xadd(&mut con, "notification", &good("fine")).await;

    let (n, _) = roger.recv_until("notification").await;
    assert_eq!(n["title"], "fine");
    roger.expect_silence(Duration::from_millis(300)).await;
    assert!(
        eventually(Duration::from_secs(5), async || dead_letters(&redis)
            .await
            .len()
            == refused.len())
        .await,
        "{:?}",
        dead_letters(&redis).await
    );
    let dead = dead_letters(&redis).await;
    for ((id, reason), (_, fields)) in refused.iter().zip(&dead) {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(&field("id"), id, "{dead:?}");
        assert!(field("error").contains(reason), "{reason}: {dead:?}");
    }
    assert_eq!(
        node.metric("chouquette_inbox_dead_total").await,
        Some(refused.len() as f64)
    );
}

/// The dead letters: each entry's id and its fields.
async fn dead_letters(redis: &RedisServer) -> Vec<(String, Vec<(String, String)>)> {
    let mut con = redis_client(redis).await;
    let reply: redis::streams::StreamRangeReply =
        con.xrange_all(format!("{STREAM}:dead")).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            let fields = e
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap()))
                .collect();
            (e.id, fields)
        })
        .collect()
}
