//! Three gateways on one Redis.

use chouquette_testkit::{RedisServer, token};
use serde_json::json;

use crate::{data, event, nodes, offsets_of};

#[tokio::test]
async fn an_event_published_on_any_node_reaches_every_node_once_in_offset_order() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 3).await;
    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = node.client().await;
        let (ack, before) = client.subscribe("bornes", json!({"alarm": {}})).await;
        assert!(before.is_empty(), "{before:?}");
        assert_eq!(ack["channels"]["bornes"]["offset"], 0, "{ack}");
        clients.push(client);
    }
    // Publishers take turns on the three nodes: one sequence of offsets.
    let mut epochs = Vec::new();
    for i in 0..30 {
        let (epoch, offset) = nodes[i % 3].publish_event(&event("bornes", json!(i))).await;
        assert_eq!(offset, i as u64 + 1);
        epochs.push(epoch);
    }
    epochs.dedup();
    assert_eq!(epochs.len(), 1, "one epoch across nodes: {epochs:?}");
    let mut seen = Vec::new();
    for client in &mut clients {
        let got = data(client, "bornes", 30).await;
        assert_eq!(offsets_of(&got), (1..=30).collect::<Vec<_>>());
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m["data"], json!(i));
        }
        seen.push(got);
    }
    // The same message on every node: one uuid and timestamp per event.
    for ((a, b), c) in seen[0].iter().zip(&seen[1]).zip(&seen[2]) {
        assert_eq!(a["uuid"], b["uuid"]);
        assert_eq!(a["timestamp"], c["timestamp"]);
    }
    // Nothing more, nothing twice.
    for client in &mut clients {
        client
            .expect_silence(std::time::Duration::from_millis(300))
            .await;
    }
}

#[tokio::test]
async fn a_client_resumes_on_another_node_from_offsets_it_got_on_the_first() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let filters = json!({"alarm": {"borne": "B1"}});
    let mut on_a = nodes[0].client().await;
    let (ack, _) = on_a.subscribe("bornes", filters.clone()).await;
    let epoch = ack["channels"]["bornes"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        nodes[0].publish_event(&event("bornes", json!(i))).await;
    }
    let got = data(&mut on_a, "bornes", 3).await;
    assert_eq!(offsets_of(&got), vec![1, 2, 3]);
    on_a.close().await;

    // Missed while away: 4 and 5 match, 6 does not.
    nodes[1].publish_event(&event("bornes", json!(3))).await;
    nodes[0].publish_event(&event("bornes", json!(4))).await;
    let other = json!({"app_id": "bluelib", "channel": "bornes", "event_kind": "alarm",
                       "keywords": ["borne:B2"], "data": 5});
    nodes[1].publish_event(&other).await;

    let mut on_b = nodes[1].client().await;
    let tok = token("bornes", filters, 600);
    on_b.send_json(
        &json!({"class": "subscribe", "app_id": "bluelib", "uuid": "r",
        "channels": {"bornes": {"filters": tok, "since": {"epoch": epoch, "offset": 3}}}}),
    )
    .await;
    let (ack, before) = on_b.recv_until("ack").await;
    assert_eq!(offsets_of(&before), vec![4, 5], "{before:?}");
    assert_eq!(ack["channels"]["bornes"]["recovered"], true, "{ack}");
    assert_eq!(ack["channels"]["bornes"]["offset"], 6, "{ack}");
    // Then live, from any node.
    nodes[0].publish_event(&event("bornes", json!(7))).await;
    assert_eq!(offsets_of(&data(&mut on_b, "bornes", 1).await), vec![7]);

    // A resume from an epoch Redis never had is a gap.
    let mut stale = nodes[1].client().await;
    let tok = token("bornes", json!({"alarm": {}}), 600);
    stale
        .send_json(
            &json!({"class": "subscribe", "app_id": "bluelib", "uuid": "s",
        "channels": {"bornes": {"filters": tok, "since": {"epoch": "nope", "offset": 1}}}}),
        )
        .await;
    let (_, before) = stale.recv_until("ack").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["class"], "reset");
    assert_eq!(before[0]["reason"], "history_gap");
}

#[tokio::test]
async fn last_known_state_is_shared_by_every_node() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    for (borne, v) in [("B1", 1), ("B2", 2), ("B1", 3)] {
        let e = json!({"app_id": "bluelib", "channel": "bornes", "event_kind": "status",
                       "keywords": [format!("borne:{borne}")], "key": borne, "data": v});
        nodes[0].publish_event(&e).await;
    }
    let mut client = nodes[1].client().await;
    let (ack, before) = client.subscribe("bornes", json!({"status": {}})).await;
    assert_eq!(offsets_of(&before), vec![2, 3], "{before:?}");
    assert!(before.iter().all(|m| m["snapshot"] == true));
    assert_eq!(ack["channels"]["bornes"]["offset"], 3);
}

#[tokio::test]
async fn a_thousand_clients_over_three_nodes_each_get_every_event_exactly_once() {
    const CLIENTS: usize = 1000;
    const EVENTS: usize = 20;
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 3).await;
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut client = nodes[i % 3].client().await;
        let (ack, _) = client.subscribe("bornes", json!({"alarm": {}})).await;
        assert_eq!(ack["class"], "ack");
        clients.push(client);
    }
    for i in 0..EVENTS {
        nodes[i % 3].publish_event(&event("bornes", json!(i))).await;
    }
    let readers = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let got = offsets_of(&data(&mut client, "bornes", EVENTS).await);
            client
                .expect_silence(std::time::Duration::from_millis(200))
                .await;
            got
        })
    });
    let expected: Vec<u64> = (1..=EVENTS as u64).collect();
    for reader in readers.collect::<Vec<_>>() {
        assert_eq!(reader.await.unwrap(), expected);
    }
}

#[tokio::test]
async fn history_in_redis_is_bounded_by_length_and_by_age() {
    let redis = RedisServer::start().await;
    let extra = "[apps.channels.brief]\nhistory = 3\nhistory_ttl = \"1s\"\n";
    let config = chouquette_testkit::redis_config_with(&redis.url(), "h", "", extra);
    let node = chouquette_testkit::TestNode::start(&config).await;
    let mut epoch = String::new();
    for i in 0..5 {
        epoch = node.publish_event(&event("brief", json!(i))).await.0;
    }
    let resume = async |since: u64| {
        let mut client = node.client().await;
        let tok = token("brief", json!({"alarm": {}}), 600);
        client
            .send_json(&json!({"class": "subscribe", "app_id": "bluelib", "uuid": "r",
                "channels": {"brief": {"filters": tok, "since": {"epoch": epoch, "offset": since}}}}))
            .await;
        client.recv_until("ack").await.1
    };
    // Three kept: from 2 on, a gap; from 3 on, 4 and 5.
    assert_eq!(resume(1).await[0]["reason"], "history_gap");
    assert_eq!(offsets_of(&resume(2).await), vec![3, 4, 5]);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = resume(4).await;
    assert_eq!(after[0]["reason"], "history_gap", "aged out: {after:?}");
    assert_eq!(offsets_of(&resume(5).await), Vec::<u64>::new());
}

#[tokio::test]
async fn an_id_is_published_once_across_nodes_and_through_the_inbox() {
    use redis::AsyncCommands;
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 3).await;
    let mut client = nodes[2].client().await;
    client.join_sync().await;
    client.subscribe("bornes", json!({"alarm": {}})).await;
    let mut e = event("bornes", json!("once"));
    e["id"] = json!("order-7");
    let (status, first) = nodes[0].publish_raw(chouquette_testkit::API_KEY, &e).await;
    assert_eq!(status, 200, "{first}");
    // The backend did not get its answer and retries on another node.
    let (status, retry) = nodes[1].publish_raw(chouquette_testkit::API_KEY, &e).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["offset"], first["offset"]);
    // Or through the inbox: the same id.
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: String = con
        .xadd("chq:inbox", "*", &[("event", e.to_string())])
        .await
        .unwrap();
    let fresh = event("bornes", json!("fresh"));
    let _: String = con
        .xadd("chq:inbox", "*", &[("event", fresh.to_string())])
        .await
        .unwrap();
    let got = data(&mut client, "bornes", 2).await;
    assert_eq!(got[0]["data"], "once");
    assert_eq!(
        got[1]["data"], "fresh",
        "the inbox copy was skipped: {got:?}"
    );
    let marker = nodes[0].publish_marker().await;
    let rest = client.until_marker(marker).await;
    assert!(rest.is_empty(), "nothing twice: {rest:?}");
}

/// A node listens only on the topics of channels it has subscribers for:
/// Redis sends each event to the nodes that serve its channel, not to all.
#[tokio::test]
async fn a_node_receives_only_the_channels_it_serves() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 3).await;
    let mut on_a = nodes[0].client().await;
    on_a.subscribe("only-a", json!({"alarm": {}})).await;
    let mut on_b = nodes[1].client().await;
    on_b.subscribe("a-and-b", json!({"alarm": {}})).await;
    let mut also_a = nodes[0].client().await;
    also_a.subscribe("a-and-b", json!({"alarm": {}})).await;
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("chq:{bluelib|only-a}")
        .arg("chq:{bluelib|a-and-b}")
        .arg("chq:{bluelib|nobody}")
        .query_async(&mut con)
        .await
        .unwrap();
    let listeners: Vec<i64> = numsub.into_iter().map(|(_, n)| n).collect();
    assert_eq!(listeners, vec![1, 2, 0], "one node, two nodes, none");

    // Its last subscriber gone, node B stops listening at its next sweep
    // (`topic_sweep`, 1 s in tests); node A keeps its own.
    on_b.close().await;
    assert!(
        crate::eventually(std::time::Duration::from_secs(10), async || {
            let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("chq:{bluelib|a-and-b}")
                .query_async(&mut con)
                .await
                .unwrap();
            numsub[0].1 == 1
        })
        .await,
        "node B let go of the topic"
    );
    let offset = nodes[2]
        .publish("a-and-b", "alarm", &[], json!("still"))
        .await;
    assert_eq!(data(&mut also_a, "a-and-b", 1).await[0]["offset"], offset);
}
