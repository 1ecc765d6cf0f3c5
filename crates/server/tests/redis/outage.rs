//! Redis killed mid-stream and started again.

use chouquette_testkit::{API_KEY, RedisServer, token};
use serde_json::json;

use crate::{becomes_ready, data, event, nodes, offsets_of};

#[tokio::test]
async fn clients_are_told_publishes_refused_and_delivery_resumes_when_redis_returns() {
    let mut redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut client = b.client().await;
    let (ack, _) = client.subscribe("bornes", json!({"alarm": {}})).await;
    let epoch = ack["channels"]["bornes"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..5 {
        a.publish_event(&event("bornes", json!(i))).await;
    }
    assert_eq!(
        offsets_of(&data(&mut client, "bornes", 5).await),
        vec![1, 2, 3, 4, 5]
    );

    redis.kill().await;
    let reset = client.recv().await;
    assert_eq!(reset["class"], "reset", "{reset}");
    assert_eq!(reset["reason"], "broker_unavailable");
    assert!(
        reset.get("channel").is_none(),
        "concerns every subscription: {reset}"
    );
    for node in [a, b] {
        let (status, _) = node.get("/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(node.metric("chouquette_broker_up").await, Some(0.0));
    }
    // Refused, never accepted and then dropped.
    let (status, answer) = a
        .publish_raw(API_KEY, &event("bornes", json!("lost")))
        .await;
    assert_eq!(status, 503, "{answer}");
    // A new subscribe is refused while the broker is away.
    let mut late = b.client().await;
    let tok = token("bornes", json!({"alarm": {}}), 600);
    late.send_json(&chouquette_testkit::subscribe("bornes", &tok))
        .await;
    let refused = late.recv().await;
    assert_eq!(refused["class"], "error", "{refused}");
    assert_eq!(refused["code"], "unavailable");

    redis.restart().await;
    let restored = client.recv().await;
    assert_eq!(restored["class"], "reset", "{restored}");
    assert_eq!(restored["reason"], "broker_restored");
    assert!(becomes_ready(a).await, "node A ready again");
    // Redis came back empty: a new epoch, offsets from 1, delivered live.
    let (new_epoch, offset) = a.publish_event(&event("bornes", json!("after"))).await;
    assert_eq!(offset, 1);
    assert_ne!(new_epoch, epoch);
    let after = data(&mut client, "bornes", 1).await;
    assert_eq!(after[0]["data"], "after");
    assert_eq!(after[0]["offset"], 1);

    // A client resuming from before the outage learns of the gap.
    let mut resumer = b.client().await;
    resumer
        .send_json(
            &json!({"class": "subscribe", "app_id": "bluelib", "uuid": "r",
            "channels": {"bornes": {"filters": tok, "since": {"epoch": epoch, "offset": 5}}}}),
        )
        .await;
    let (_, before) = resumer.recv_until("ack").await;
    assert_eq!(before[0]["reason"], "history_gap", "{before:?}");
    assert!(b.metric("chouquette_broker_losses_total").await >= Some(1.0));
}

#[tokio::test]
async fn a_node_started_while_redis_is_down_becomes_ready_when_it_appears() {
    let mut redis = RedisServer::start().await;
    redis.kill().await;
    let node = &nodes(&redis, 1).await[0];
    let (status, _) = node.get("/readyz").await;
    assert_eq!(status, 503);
    redis.restart().await;
    assert!(becomes_ready(node).await, "ready once Redis answers");
    node.publish_event(&event("bornes", json!(1))).await;
}

/// A message that reaches a node long after Redis published it means the
/// node is not keeping up: it drops its link (and the buffer behind it)
/// rather than pile messages up, and its clients are told.
#[tokio::test]
async fn a_node_that_falls_behind_drops_its_link_and_tells_its_clients() {
    let redis = RedisServer::start().await;
    let node = &nodes(&redis, 1).await[0];
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"alarm": {}})).await;
    // A message Redis "published" a minute ago (broker.max_lag is 30 s).
    let minute_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 60_000;
    let body = json!({"app_id": "bluelib", "channel": "bornes", "event_kind": "alarm",
                      "keywords": [], "uuid": "u", "timestamp": "t", "data": null});
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("chq:{bluelib|bornes}")
        .arg(format!("e 1 {minute_ago} {body}"))
        .query_async(&mut con)
        .await
        .unwrap();
    let lost = client.recv().await;
    assert_eq!(lost["reason"], "broker_unavailable", "{lost}");
    let back = client.recv().await;
    assert_eq!(back["reason"], "broker_restored", "{back}");
    assert_eq!(
        node.metric("chouquette_broker_lag_drops_total").await,
        Some(1.0)
    );
    // Delivery goes on.
    node.publish_event(&event("bornes", json!("after"))).await;
    assert_eq!(data(&mut client, "bornes", 1).await[0]["data"], "after");
}

/// Issue 10: the Redis error text reached clients in `error` messages and
/// backends in the publish API's 503 body. Both now get the fixed message;
/// the detail goes to the log.
#[tokio::test]
async fn redis_error_text_does_not_reach_clients_or_backends() {
    let mut redis = RedisServer::start().await;
    let node = &nodes(&redis, 1).await[0];
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"alarm": {}})).await;
    redis.kill().await;
    let reset = client.recv().await;
    assert_eq!(reset["reason"], "broker_unavailable", "{reset}");

    let fixed = "the broker is unavailable; retry";
    let (status, answer) = node
        .publish_raw(API_KEY, &event("bornes", json!("lost")))
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "unavailable", "{answer}");
    assert_eq!(answer["message"], format!("{fixed} (after 0 published)"));

    let mut late = node.client().await;
    let tok = token("bornes", json!({"alarm": {}}), 600);
    late.send_json(&chouquette_testkit::subscribe("bornes", &tok))
        .await;
    let refused = late.recv().await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(refused["message"], fixed, "{refused}");
    redis.restart().await;
}
