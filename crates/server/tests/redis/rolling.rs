//! A rolling restart of the gateways under load (docs/deployment.md,
//! "Upgrading"): two nodes on one Redis are stopped and started again in
//! turn while events keep flowing through the Redis inbox; every client
//! follows its node's `shutdown` reset to the other node, resumes with
//! `since`, and ends with every offset once, in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chouquette_testkit::{APP, Received, RedisServer, TestNode, WsClient, redis_config, token};
use redis::AsyncCommands;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::{event, eventually};

const CHANNEL: &str = "rolling";
const CLIENTS: usize = 20;
const EVENTS: usize = 600;

/// The nodes' WebSocket URLs as a load balancer sees them: `None` while a
/// node is down.
type Balancer = Arc<Mutex<[Option<String>; 2]>>;

/// What one client saw: the offsets of its `data` messages, and how many
/// connections it took.
struct Followed {
    offsets: Vec<u64>,
    connections: usize,
}

/// A client that stays subscribed through restarts: on `shutdown` or a
/// closed socket it connects to the next node that is up and resumes from
/// the last offset it got.
async fn follow(balancer: Balancer, first: usize) -> Followed {
    let mut seen = Followed {
        offsets: Vec::new(),
        connections: 0,
    };
    let mut since: Option<(String, u64)> = None;
    let mut turn = first;
    while seen.offsets.last() != Some(&(EVENTS as u64)) {
        let url = balancer.lock().unwrap()[turn % 2].clone();
        turn += 1;
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok((stream, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        seen.connections += 1;
        let mut client = WsClient::from_stream(stream);
        let mut request = json!({"filters": token(CHANNEL, json!({"alarm": {}}), 600)});
        if let Some((epoch, offset)) = &since {
            request["since"] = json!({"epoch": epoch, "offset": offset});
        }
        let subscribe =
            json!({"class": "subscribe", "app_id": APP, "channels": {CHANNEL: request}});
        if client
            .try_send(Message::text(subscribe.to_string()))
            .await
            .is_err()
        {
            continue;
        }
        read_until_gone(&mut client, &mut since, &mut seen.offsets).await;
    }
    seen
}

/// Reads one connection until it ends (or the last event arrives).
async fn read_until_gone(
    client: &mut WsClient,
    since: &mut Option<(String, u64)>,
    offsets: &mut Vec<u64>,
) {
    while let Some(Received::Json(m)) = client.next_within(Duration::from_secs(10)).await {
        match m["class"].as_str() {
            Some("ack") => {
                let ack = &m["channels"][CHANNEL];
                let epoch = ack["epoch"].as_str().expect("epoch").to_string();
                match since {
                    Some((known, _)) => assert_eq!(*known, epoch, "one epoch throughout: {m}"),
                    None => *since = Some((epoch, ack["offset"].as_u64().expect("offset"))),
                }
            }
            Some("data") => {
                let offset = m["offset"].as_u64().expect("offset");
                offsets.push(offset);
                if let Some((_, last)) = since {
                    *last = offset;
                }
                if offset == EVENTS as u64 {
                    return;
                }
            }
            Some("reset") => {
                assert_eq!(m["reason"], "shutdown", "only shutdowns, never a gap: {m}");
                assert!(m.get("channel").is_none(), "{m}");
            }
            _ => panic!("unexpected message {m}"),
        }
    }
}

async fn start(redis: &RedisServer, id: &str) -> TestNode {
    TestNode::start(&redis_config(&redis.url(), id)).await
}

#[tokio::test]
async fn restarting_each_of_two_nodes_in_turn_under_load_loses_and_repeats_nothing() {
    let redis = RedisServer::start().await;
    let mut nodes = [
        Some(start(&redis, "node-0").await),
        Some(start(&redis, "node-1").await),
    ];
    let urls = nodes.each_ref().map(|n| n.as_ref().map(TestNode::ws_url));
    let balancer: Balancer = Arc::new(Mutex::new(urls));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(follow(balancer.clone(), i)))
        .collect();
    // Every client holds a subscription before the first event.
    let subscribed = eventually(Duration::from_secs(10), async || {
        let mut total = 0.0;
        for node in nodes.iter().flatten() {
            total += node.metric("chouquette_subscriptions").await.unwrap_or(0.0);
        }
        total >= CLIENTS as f64
    })
    .await;
    assert!(subscribed, "the clients did not connect");

    // Events keep coming through the Redis inbox, one every 5 ms.
    let published = Arc::new(AtomicUsize::new(0));
    let mut inbox = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let count = published.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..EVENTS {
            let e = event(CHANNEL, json!(i)).to_string();
            let _: String = inbox.xadd("chq:inbox", "*", &[("event", e)]).await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    for (i, at) in [(0, EVENTS / 4), (1, EVENTS / 2)] {
        let reached = eventually(Duration::from_secs(30), async || {
            published.load(Ordering::SeqCst) >= at
        })
        .await;
        assert!(reached, "the publisher stalled");
        balancer.lock().unwrap()[i] = None;
        if let Some(stopping) = nodes[i].take() {
            stopping.running.shutdown().await;
        }
        let restarted = start(&redis, &format!("node-{i}")).await;
        balancer.lock().unwrap()[i] = Some(restarted.ws_url());
        nodes[i] = Some(restarted);
    }
    publisher.await.unwrap();

    let expected: Vec<u64> = (1..=EVENTS as u64).collect();
    for client in clients {
        let seen = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("every client gets every event")
            .unwrap();
        assert_eq!(seen.offsets, expected, "no gap, no duplicate, in order");
        assert!(
            seen.connections >= 2,
            "each client was moved by a restart: {} connection(s)",
            seen.connections
        );
    }
}
