//! A channel's numbering restarting under connected clients (its keys gone
//! from Redis: `key_ttl` expiring a quiet channel, eviction, `DEL`,
//! `FLUSHDB`). Offsets start again at 1 under a new epoch; a client at
//! offset T used to drop 1..T as duplicates and miss them silently.

use std::time::Duration;

use chouquette_testkit::{RedisServer, TestNode, redis_config};
use serde_json::{Value, json};

use crate::{data, event};

/// Publishes `values` on `bornes` through `node`.
async fn publish_all(node: &TestNode, values: &[&str]) {
    for v in values {
        node.publish_event(&event("bornes", json!(v))).await;
    }
}

/// The messages up to and including the `n`th data message of `bornes`.
async fn until_data(client: &mut chouquette_testkit::WsClient, n: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut count = 0;
    while count < n {
        let m = client.recv().await;
        if m["class"] == "data" {
            count += 1;
        }
        seen.push(m);
    }
    seen
}

#[tokio::test]
async fn a_quiet_channel_with_subscribers_never_loses_events_to_key_ttl() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis.url(), "ttl")
        .replace("kind = \"redis\"\n", "kind = \"redis\"\nkey_ttl = \"1s\"\n");
    let node = TestNode::start(&config).await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"alarm": {}})).await;
    publish_all(&node, &["a", "b", "c"]).await;
    assert_eq!(data(&mut client, "bornes", 3).await[2]["data"], "c");
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish_all(&node, &["d", "e", "f"]).await;
    // Never nothing: and since the node keeps the keys of channels it has
    // subscribers on alive, the numbering simply goes on, no reset.
    let seen = until_data(&mut client, 3).await;
    let got: Vec<(&Value, &Value)> = seen.iter().map(|m| (&m["data"], &m["offset"])).collect();
    assert_eq!(
        got,
        [
            (&json!("d"), &json!(4)),
            (&json!("e"), &json!(5)),
            (&json!("f"), &json!(6))
        ],
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_channel_renumbered_under_its_subscribers_is_reset_not_dropped() {
    let redis = RedisServer::start().await;
    let node = TestNode::start(&redis_config(&redis.url(), "flush")).await;
    let mut client = node.client().await;
    let (ack, _) = client.subscribe("bornes", json!({"alarm": {}})).await;
    let epoch = ack["channels"]["bornes"]["epoch"].clone();
    publish_all(&node, &["a", "b", "c"]).await;
    assert_eq!(data(&mut client, "bornes", 3).await[2]["offset"], 3);

    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHDB").query_async(&mut con).await.unwrap();
    publish_all(&node, &["d", "e", "f"]).await;

    let seen = until_data(&mut client, 3).await;
    let reset = &seen[0];
    assert_eq!(reset["class"], "reset", "{seen:?}");
    assert_eq!(reset["reason"], "history_gap", "{reset}");
    assert_eq!(reset["channel"], "bornes", "{reset}");
    let events: Vec<&Value> = seen[1..].iter().collect();
    assert_eq!(events.len(), 3, "{seen:?}");
    for (m, (value, offset)) in events.iter().zip([("d", 1), ("e", 2), ("f", 3)]) {
        assert_eq!(m["data"], value, "{m}");
        assert_eq!(m["offset"], offset, "{m}");
    }
    // The premise: the channel was renumbered under a new epoch.
    let mut fresh = node.client().await;
    let (ack, _) = fresh.subscribe("bornes", json!({"alarm": {}})).await;
    assert_ne!(ack["channels"]["bornes"]["epoch"], epoch, "{ack}");
}

/// On the Redis broker too, a `reset` `history_gap` on a channel that keeps
/// state is followed by its snapshots.
#[tokio::test]
async fn a_history_gap_on_redis_is_followed_by_the_kept_state() {
    let redis = RedisServer::start().await;
    let node = TestNode::start(&redis_config(&redis.url(), "gap")).await;
    for (borne, status) in [("B1", "ok"), ("B2", "ok"), ("B1", "down")] {
        let mut e = event("bornes", json!(status));
        e["key"] = json!(format!("borne:{borne}"));
        node.publish_event(&e).await;
    }
    let mut client = node.client().await;
    let tok = chouquette_testkit::token("bornes", json!({"alarm": {}}), 600);
    client
        .send_json(
            &json!({"class": "subscribe", "app_id": "bluelib", "uuid": "r",
            "channels": {"bornes": {"filters": tok,
                                    "since": {"epoch": "not-the-epoch", "offset": 1}}}}),
        )
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert_eq!(before[0]["reason"], "history_gap", "{before:?}");
    let snapshots: Vec<(&Value, &Value, &Value)> = before[1..]
        .iter()
        .map(|m| (&m["offset"], &m["data"], &m["snapshot"]))
        .collect();
    let t = json!(true);
    assert_eq!(
        snapshots,
        [
            (&json!(2), &json!("ok"), &t),
            (&json!(3), &json!("down"), &t)
        ]
    );
    assert_eq!(ack["channels"]["bornes"]["offset"], 3, "{ack}");
}
