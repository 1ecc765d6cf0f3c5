//! Lattices across gateways on one Redis: the values are stored in Redis
//! (merged by compare-and-set, so concurrent updates from several nodes
//! lose nothing) and changes reach subscribers on every node over the
//! users topic.

use chouquette_testkit::{
    API_KEY, APP, LatticeView, RedisServer, TestNode, WsClient, redis_config,
};
use serde_json::{Value, json};

use crate::nodes;

fn update(shared: Value, users: Value) -> Value {
    json!({"app_id": APP, "namespace": "unread", "shared": shared, "users": users})
}

async fn post(node: &TestNode, body: &Value) -> Value {
    let (status, answer) = node.lattice_update(Some(API_KEY), body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A tab of `user` on `node`, subscribed to `unread`, and its view.
async fn subscribed_tab(node: &TestNode, user: &str) -> (WsClient, LatticeView) {
    let mut client = node.client().await;
    client.join_sync().await;
    client.identify(user).await;
    client
        .send_json(&json!({"class": "lattice_subscribe", "namespace": "unread"}))
        .await;
    let (full, before) = client.recv_until("lattice").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(full["full"], true, "{full}");
    let mut view = LatticeView::default();
    view.apply(&full);
    (client, view)
}

/// Applies every `lattice` message `client` gets before a marker
/// published on `node`.
async fn catch_up(node: &TestNode, client: &mut WsClient, view: &mut LatticeView) {
    let marker = node.publish_marker().await;
    for m in client.until_marker(marker).await {
        view.apply(&m);
    }
}

#[tokio::test]
async fn an_update_posted_on_one_node_reaches_tabs_on_another() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let (mut roger, mut roger_view) = subscribed_tab(&nodes[1], "roger").await;
    let (mut vb, mut vb_view) = subscribed_tab(&nodes[1], "vb").await;
    let answer = post(
        &nodes[0],
        &update(
            json!({"total": {"counter": 7}}),
            json!({"roger": {"rooms": {"set": ["r1", "r2"]}}}),
        ),
    )
    .await;
    assert_eq!(answer, json!({"changed": {"shared": 1, "users": 1}}));
    // Changes travel through Redis like the marker, published after them.
    catch_up(&nodes[0], &mut roger, &mut roger_view).await;
    catch_up(&nodes[0], &mut vb, &mut vb_view).await;
    assert_eq!(
        roger_view.json(),
        json!({"shared": {"total": {"counter": 7}}, "user": {"rooms": {"set": ["r1", "r2"]}}})
    );
    assert_eq!(
        vb_view.json(),
        json!({"shared": {"total": {"counter": 7}}, "user": {}})
    );
}

#[tokio::test]
async fn concurrent_updates_from_two_nodes_converge_with_nothing_lost() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let (mut on_a, mut view_a) = subscribed_tab(&nodes[0], "roger").await;
    let (mut on_b, mut view_b) = subscribed_tab(&nodes[1], "roger").await;
    // Each node merges its own elements into the same keys, at once.
    let from = |node: usize| {
        let target = &nodes[node];
        async move {
            for i in 0..25u64 {
                let element = format!("n{node}-{i}");
                let body = update(
                    json!({"seen": {"set": [element.clone()]}, "top": {"counter": i * 2 + node as u64}}),
                    json!({"roger": {"mine": {"set": [element]}}}),
                );
                post(target, &body).await;
            }
        }
    };
    tokio::join!(from(0), from(1));
    let mut all: Vec<String> = (0..2)
        .flat_map(|n| (0..25).map(move |i| format!("n{n}-{i}")))
        .collect();
    all.sort();
    let expected = json!({
        "shared": {"seen": {"set": all.clone()}, "top": {"counter": 49}},
        "user": {"mine": {"set": all}}
    });
    catch_up(&nodes[0], &mut on_a, &mut view_a).await;
    catch_up(&nodes[1], &mut on_b, &mut view_b).await;
    assert_eq!(view_a.json(), expected, "tab on node A");
    assert_eq!(view_b.json(), expected, "tab on node B");
    // And what Redis holds, read by a new subscriber.
    let (_, fresh) = subscribed_tab(&nodes[1], "roger").await;
    assert_eq!(fresh.json(), expected);
}

#[tokio::test]
async fn the_values_survive_a_gateway_restart() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis.url(), "node-0");
    let first = TestNode::start(&config).await;
    post(
        &first,
        &update(
            json!({"total": {"counter": 3}}),
            json!({"roger": {"status": {"register": {"value": {"away": true}, "ts": 5}}}}),
        ),
    )
    .await;
    first.running.shutdown().await;
    let again = TestNode::start(&config).await;
    let (_, view) = subscribed_tab(&again, "roger").await;
    assert_eq!(
        view.json(),
        json!({"shared": {"total": {"counter": 3}},
               "user": {"status": {"register": {"value": {"away": true}, "ts": 5.0}}}})
    );
    // Merging goes on from the stored values.
    let answer = post(&again, &update(json!({"total": {"counter": 2}}), json!({}))).await;
    assert_eq!(answer, json!({"changed": {"shared": 0, "users": 0}}));
}

#[tokio::test]
async fn tabs_subscribing_during_updates_miss_no_change() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    // Four writers on node A, each update a key of its own: a change missed
    // would not be repaired by a later one (each carries merged values).
    let writer = |w: u64| {
        let node = &nodes[0];
        async move {
            for n in 0..30u64 {
                let key = format!("w{w}-{n:02}");
                let body = update(
                    json!({ key.clone(): {"counter": n} }),
                    json!({"roger": { key: {"set": ["x"]} }}),
                );
                post(node, &body).await;
            }
        }
    };
    // Tabs on node B subscribe one after another meanwhile: each full state
    // is read while changes are in flight.
    let subscribing = async {
        let mut tabs = Vec::new();
        for _ in 0..20 {
            tabs.push(subscribed_tab(&nodes[1], "roger").await);
        }
        tabs
    };
    let (_, _, _, _, tabs) = tokio::join!(writer(0), writer(1), writer(2), writer(3), subscribing);
    let mut shared = serde_json::Map::new();
    let mut user = serde_json::Map::new();
    for w in 0..4 {
        for n in 0..30u64 {
            let key = format!("w{w}-{n:02}");
            shared.insert(key.clone(), json!({"counter": n}));
            user.insert(key, json!({"set": ["x"]}));
        }
    }
    let expected = json!({"shared": shared, "user": user});
    for (mut client, mut view) in tabs {
        catch_up(&nodes[0], &mut client, &mut view).await;
        assert_eq!(view.json(), expected);
    }
}

/// A tab holding only a lattice subscription is told of an outage, and
/// gets the namespace's full state again once Redis is back (changes may
/// have been missed meanwhile).
#[tokio::test]
async fn after_an_outage_the_full_state_is_sent_again() {
    let mut redis = RedisServer::start().await;
    let nodes = nodes(&redis, 1).await;
    let mut client = nodes[0].client().await;
    client.identify("roger").await;
    client
        .send_json(&json!({"class": "lattice_subscribe", "namespace": "unread"}))
        .await;
    let (full, _) = client.recv_until("lattice").await;
    assert_eq!(full["full"], true);
    redis.kill().await;
    let lost = client.recv().await;
    assert_eq!(
        (&lost["class"], &lost["reason"]),
        (&json!("reset"), &json!("broker_unavailable")),
        "{lost}"
    );
    let (status, _) = nodes[0]
        .lattice_update(
            Some(API_KEY),
            &update(json!({"n": {"counter": 1}}), json!({})),
        )
        .await;
    assert_eq!(status, 503);
    redis.restart().await;
    let restored = client.recv().await;
    assert_eq!(restored["reason"], "broker_restored", "{restored}");
    let again = client.recv().await;
    assert_eq!(
        (&again["class"], &again["full"]),
        (&json!("lattice"), &json!(true)),
        "{again}"
    );
    assert_eq!(again["namespace"], "unread");
}
