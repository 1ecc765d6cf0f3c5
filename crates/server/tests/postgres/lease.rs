//! Several gateways on one Redis configured with the same slot: one reads
//! it at a time (a lease in Redis), another takes over when it stops.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::{BORNE_TABLE, data, eventually, ready, source_section};
use chouquette_testkit::{PostgresServer, RedisServer, TestNode, redis_config};

async fn up(node: &TestNode) -> bool {
    node.metric("chouquette_postgres_up{slot=\"main\"}").await == Some(1.0)
}

async fn insert(db: &tokio_postgres::Client, rows: std::ops::Range<i32>) {
    for i in rows {
        db.execute(
            "INSERT INTO borne (uid, power) VALUES ($1, $2)",
            &[&format!("B{i}"), &i],
        )
        .await
        .unwrap();
    }
}

/// Exactly one of two gateways reads the slot while the other stands by,
/// ready; when the reader stops (its tasks end, as in a crash), the other
/// takes the slot over after the lease's TTL, and every row arrives once.
#[tokio::test]
async fn gateways_sharing_a_slot_take_turns_and_publish_each_change_once() {
    let redis = RedisServer::start().await;
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let section = source_section(&pg.url(), "main");
    let a = TestNode::start(&format!("{}{section}", redis_config(&redis.url(), "gw-a"))).await;
    let b = TestNode::start(&format!("{}{section}", redis_config(&redis.url(), "gw-b"))).await;
    let watcher = TestNode::start(&redis_config(&redis.url(), "watcher")).await;
    assert!(ready(&a, Duration::from_secs(10)).await && ready(&b, Duration::from_secs(10)).await);
    assert!(
        eventually(Duration::from_secs(10), async || up(&a).await
            != up(&b).await)
        .await,
        "exactly one gateway reads the slot"
    );
    let (reader, standby) = if up(&a).await { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        standby
            .metric("chouquette_postgres_standby{slot=\"main\"}")
            .await,
        Some(1.0)
    );
    let mut client = watcher.client().await;
    client.subscribe("bornes", json!({"borne_added": {}})).await;
    insert(&db, 0..50).await;
    let mut got = data(&mut client, 50, Duration::from_secs(10)).await;
    assert!(
        !up(standby).await,
        "the standby stays out while the reader renews"
    );
    reader.running.stop();
    insert(&db, 50..100).await;
    got.extend(data(&mut client, 50, Duration::from_secs(15)).await);
    assert!(up(standby).await, "the standby took over");
    let rows: BTreeSet<u64> = got
        .iter()
        .map(|m| m["data"]["new"]["power"].as_u64().unwrap())
        .collect();
    assert_eq!(rows.len(), 100, "every row once");
    client.expect_silence(Duration::from_millis(500)).await;
}
