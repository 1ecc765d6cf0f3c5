//! Device liveness across gateways on one Redis (docs/devices.md,
//! "Liveness"): a device connected on two nodes goes offline only when it
//! leaves the last one, and a gateway process killed (SIGKILL) without a
//! word has its devices declared offline by a surviving node once its
//! lease lapses — exactly once, never a ghost "online"; a device on two
//! nodes that both find silent is announced silent once; and a command
//! sent to any node reaches the device on another, or knows at once,
//! with its last-seen time, that it left.

use std::time::{Duration, Instant};

use chouquette_testkit::{
    API_KEY, APP, Received, RedisServer, SECRET, TestNode, WsClient, redis_config_with, sign,
};
use serde_json::{Value, json};

use crate::eventually;
use crate::process::GatewayProcess;

/// `presence_timeout` of these tests: the devices' lease too.
const LEASE: Duration = Duration::from_secs(2);

fn config(redis: &RedisServer, node: &str) -> String {
    config_silent_after(redis, node, "1h")
}

fn config_silent_after(redis: &RedisServer, node: &str, silent_after: &str) -> String {
    redis_config_with(
        &redis.url(),
        node,
        "",
        &format!(
            "[apps.channels.liveness]\nhistory = 100\nkeep_state = true\n\
             [apps.channels.telemetry]\nhistory = 10\n\
             [apps.devices]\nchannel = \"liveness\"\nsilent_after = \"{silent_after}\"\n"
        ),
    )
    .replace(
        "topic_sweep = \"1s\"\n",
        "topic_sweep = \"1s\"\npresence_timeout = \"2s\"\n",
    )
}

/// A device `id` connected through `url`.
async fn device(url: &str, id: &str) -> WsClient {
    let exp = chouquette_core::clock::unix_now() + 3600;
    let claims = json!({"app_id": APP, "sub": id, "exp": exp,
        "publish": {"telemetry": [format!("device:{id}")]}});
    let mut client = WsClient::connect(url).await;
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": sign(&claims, SECRET)}))
        .await;
    let (ack, _) = client.recv_until("ack").await;
    assert_eq!(ack["class"], "ack");
    client
}

/// The next liveness event `watcher` gets.
async fn next_event(watcher: &mut WsClient) -> Value {
    loop {
        let m = watcher.recv().await;
        if m["class"] == "data" && m["channel"] == "liveness" {
            return m;
        }
    }
}

fn kind_of(event: &Value) -> (String, String, String) {
    (
        event["event_kind"].as_str().unwrap_or("").to_string(),
        event["data"]["device"].as_str().unwrap_or("").to_string(),
        event["data"]["reason"].as_str().unwrap_or("").to_string(),
    )
}

fn triple(kind: &str, device: &str, reason: &str) -> (String, String, String) {
    (kind.into(), device.into(), reason.into())
}

/// How many nodes hold `device` in the ledger.
async fn holders(redis: &RedisServer, device: &str) -> Option<i64> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGET")
        .arg(format!("chq:{{dev|{APP}}}:holders"))
        .arg(device)
        .query_async(&mut con)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_killed_node_s_devices_are_declared_offline_by_a_survivor() {
    let redis = RedisServer::start().await;
    let a = TestNode::start(&config(&redis, "node-a")).await;
    let mut b = GatewayProcess::start("node-b", &config(&redis, "node-b")).await;
    let mut watcher = a.client().await;
    watcher.subscribe("liveness", json!({"*": {}})).await;
    let on_b = b.ws_url();

    // D1 on node B comes online; D2 connects on both nodes: one event.
    let _d1 = device(&on_b, "D1").await;
    assert_eq!(
        kind_of(&next_event(&mut watcher).await),
        triple("device_online", "D1", "connected")
    );
    let d2_a = device(&a.ws_url(), "D2").await;
    assert_eq!(
        kind_of(&next_event(&mut watcher).await),
        triple("device_online", "D2", "connected")
    );
    let _d2_b = device(&on_b, "D2").await;
    let held_by_two = eventually(Duration::from_secs(5), async || {
        holders(&redis, "D2").await == Some(2)
    })
    .await;
    assert!(held_by_two, "node B's hold on D2 recorded");

    // D2 leaving node A is no offline: node B still holds it.
    d2_a.close().await;
    let d3 = device(&a.ws_url(), "D3").await;
    assert_eq!(
        kind_of(&next_event(&mut watcher).await),
        triple("device_online", "D3", "connected"),
        "no event for D2 leaving one of its two nodes"
    );

    // Node B dies without a word: node A declares D1 and D2 offline, once
    // each, within the lease (and a third: the renewal period).
    let killed = Instant::now();
    b.child.start_kill().unwrap();
    let mut gone = vec![
        kind_of(&next_event(&mut watcher).await),
        kind_of(&next_event(&mut watcher).await),
    ];
    gone.sort();
    assert_eq!(
        gone,
        [
            triple("device_offline", "D1", "node_lost"),
            triple("device_offline", "D2", "node_lost"),
        ]
    );
    assert!(killed.elapsed() < LEASE * 3, "{:?}", killed.elapsed());
    // D3, on the live node, stays: its next event is its own leaving.
    d3.close().await;
    assert_eq!(
        kind_of(&next_event(&mut watcher).await),
        triple("device_offline", "D3", "disconnected")
    );

    // A subscriber's snapshot: no ghost online.
    let mut late = a.client().await;
    let (_, snapshots) = late.subscribe("liveness", json!({"*": {}})).await;
    let kinds: Vec<_> = snapshots.iter().map(|s| s["event_kind"].clone()).collect();
    assert_eq!(kinds.len(), 3, "{snapshots:?}");
    assert!(kinds.iter().all(|k| k == "device_offline"), "{snapshots:?}");
}

/// The liveness events `watcher` gets within `wait`.
async fn events_within(watcher: &mut WsClient, wait: Duration) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + wait;
    let mut events = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match watcher.next_within(left).await {
            Some(Received::Json(m)) if m["class"] == "data" && m["channel"] == "liveness" => {
                events.push(kind_of(&m));
            }
            Some(Received::Json(_)) => {}
            Some(Received::Closed(_)) | None => return events,
        }
    }
}

#[tokio::test]
async fn a_device_on_two_nodes_is_announced_silent_once_and_offline_once() {
    let redis = RedisServer::start().await;
    let a = TestNode::start(&config_silent_after(&redis, "node-a", "2s")).await;
    let b = TestNode::start(&config_silent_after(&redis, "node-b", "2s")).await;
    let mut watcher = a.client().await;
    watcher.subscribe("liveness", json!({"*": {}})).await;
    let mut on_a = device(&a.ws_url(), "D1").await;
    let on_b = device(&b.ws_url(), "D1").await;
    // Both nodes hold D1 and each finds it silent after 2 s: one event each
    // time the whole cluster's view changes, not one per node.
    let events = events_within(&mut watcher, Duration::from_secs(4)).await;
    assert_eq!(
        events,
        [
            triple("device_online", "D1", "connected"),
            triple("device_silent", "D1", "silence"),
        ]
    );
    assert_eq!(holders(&redis, "D1").await, Some(2));
    // It speaks through A: online once (B still finds it silent).
    on_a.send_json(&json!({"class": "publish", "uuid": "u1", "app_id": APP,
        "channel": "telemetry", "event_kind": "status", "keywords": ["device:D1"],
        "data": {"ok": true}}))
        .await;
    assert_eq!(
        kind_of(&next_event(&mut watcher).await),
        triple("device_online", "D1", "message")
    );
    // It leaves A: B alone holds it, and finds it silent.
    on_a.close().await;
    assert_eq!(
        kind_of(&next_event(&mut watcher).await),
        triple("device_silent", "D1", "silence")
    );
    on_b.close().await;
    let events = events_within(&mut watcher, Duration::from_secs(2)).await;
    assert_eq!(events, [triple("device_offline", "D1", "disconnected")]);
}

#[tokio::test]
async fn a_command_to_any_node_reaches_the_device_or_knows_when_it_left() {
    const COMMANDS: &str = "/api/v1/devices/commands";
    let redis = RedisServer::start().await;
    let a = TestNode::start(&config(&redis, "node-a")).await;
    let b = TestNode::start(&config(&redis, "node-b")).await;
    let mut watcher = b.client().await;
    watcher.subscribe("liveness", json!({"*": {}})).await;
    let mut d1 = device(&a.ws_url(), "D1").await;
    assert_eq!(
        kind_of(&next_event(&mut watcher).await),
        triple("device_online", "D1", "connected")
    );

    // Connected on A, commanded through B.
    let body = json!({"app_id": APP, "device": "D1", "method": "device.status", "timeout": "10s"});
    let backend = b.api_post(COMMANDS, Some(API_KEY), &body);
    let answer = async {
        let (call, _) = d1.recv_until("call").await;
        d1.send_json(&json!({"class": "result", "id": call["id"], "result": "on A"}))
            .await;
    };
    let ((status, reply), ()) = tokio::join!(backend, answer);
    assert_eq!(
        (status, reply),
        (200, json!({"result": "on A", "transport": "ws"}))
    );

    // Gone from A: B answers offline at once, with A's last sight of it.
    d1.close().await;
    let offline = next_event(&mut watcher).await;
    assert_eq!(
        kind_of(&offline),
        triple("device_offline", "D1", "disconnected")
    );
    let last_seen = offline["data"]["last_seen"].as_u64().unwrap();
    let asked = Instant::now();
    let (status, reply) = b.api_post(COMMANDS, Some(API_KEY), &body).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        (status, &reply["code"]),
        (404, &json!("offline")),
        "{reply}"
    );
    let expected = chouquette_protocol::server::timestamp(
        std::time::UNIX_EPOCH + Duration::from_millis(last_seen),
    );
    assert_eq!(reply["last_seen"], json!(expected), "{reply}");
}
