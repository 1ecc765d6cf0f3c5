//! Nothing lost, nothing doubled: Postgres restarted under the source, and
//! gateway processes killed (SIGKILL) after publishing changes they had not
//! acknowledged to the slot.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::{BORNE_TABLE, data, eventually, node_on, source_section};
use chouquette_testkit::{PostgresServer, RedisServer, TestNode, redis_config};

/// How many times each row (by `power`) arrived.
fn counts(messages: &[Value]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        *counts
            .entry(m["data"]["new"]["power"].as_u64().unwrap())
            .or_insert(0) += 1;
    }
    counts
}

async fn insert(db: &tokio_postgres::Client, from: u64, to: u64) {
    for i in from..to {
        db.execute(
            "INSERT INTO borne (uid, power) VALUES ($1, $2)",
            &[&format!("B{i}"), &(i as i32)],
        )
        .await
        .unwrap();
    }
}

/// Postgres stopped (as by a crash) and started again while rows are being
/// written: the source reconnects, is not ready meanwhile, and every row
/// arrives once.
#[tokio::test]
async fn postgres_restarted_mid_stream_loses_and_repeats_nothing() {
    let pg = PostgresServer::start().await;
    pg.client().await.batch_execute(BORNE_TABLE).await.unwrap();
    let node = node_on(&pg, "main").await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"borne_added": {}})).await;
    insert(&pg.client().await, 0, 50).await;
    pg.stop().await;
    assert!(
        eventually(Duration::from_secs(10), async || node
            .get("/readyz")
            .await
            .1
            .contains("postgres source"))
        .await,
        "/readyz says the source is down while Postgres is"
    );
    pg.restart().await;
    insert(&pg.client().await, 50, 100).await;
    let got = data(&mut client, 100, Duration::from_secs(30)).await;
    let counts = counts(&got);
    assert_eq!(counts.len(), 100, "missing rows");
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    client.expect_silence(Duration::from_millis(500)).await;
    assert!(super::ready(&node, Duration::from_secs(10)).await);
    assert!(
        node.metric("chouquette_postgres_reconnects_total{slot=\"main\"}")
            .await
            >= Some(1.0)
    );
}

/// A gateway process on Redis reading slot `slot`, ready; killed when dropped.
async fn gateway(
    redis: &RedisServer,
    pg: &PostgresServer,
    name: &str,
    slot: &str,
) -> (Child, std::path::PathBuf, String) {
    let internal = chouquette_testkit::free_port();
    let config = format!(
        "[listen]\npublic = \"127.0.0.1:{}\"\ninternal = \"127.0.0.1:{internal}\"\n{}{}",
        chouquette_testkit::free_port(),
        redis_config(&redis.url(), name),
        source_section(&pg.url(), slot)
    );
    let path = std::env::temp_dir().join(format!("chq-pg-{name}-{internal}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chouquette"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = chouquette::http_client::HttpClient::default();
    let ready = format!("http://127.0.0.1:{internal}/readyz");
    assert!(
        eventually(Duration::from_secs(20), async || {
            matches!(http.get(&ready, None).await, Ok((200, body)) if body == "ok\n")
        })
        .await,
        "{name} ready"
    );
    (child, path, format!("http://127.0.0.1:{internal}"))
}

/// A gateway process killed (SIGKILL) mid-stream, then another started on
/// the same slot; then a third on a copy of the slot taken before any
/// change, so that it reads again every change already published (the
/// "published, not acknowledged" case at its widest): a client on another
/// gateway gets every row exactly once, the replays being recognised by
/// their LSN-derived ids.
#[tokio::test]
async fn gateways_killed_before_acknowledging_publish_every_change_once() {
    const ROWS: u64 = 300;
    let redis = RedisServer::start().await;
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let watcher = TestNode::start(&redis_config(&redis.url(), "watcher")).await;
    let mut client = watcher.client().await;
    client.subscribe("bornes", json!({"borne_added": {}})).await;
    let (mut victim, path, _) = gateway(&redis, &pg, "victim", "main").await;
    db.execute(
        "SELECT pg_copy_logical_replication_slot('main', 'replay')",
        &[],
    )
    .await
    .unwrap();
    let writer = tokio::spawn({
        let db = pg.client().await;
        async move {
            for chunk in 0..ROWS / 10 {
                insert(&db, chunk * 10, chunk * 10 + 10).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let mut got = data(&mut client, 40, Duration::from_secs(20)).await;
    let pid = victim.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    let _ = victim.wait().await;
    writer.await.unwrap();
    let (_successor, path2, _) = gateway(&redis, &pg, "successor", "main").await;
    let rest = usize::try_from(ROWS).unwrap() - got.len();
    got.extend(data(&mut client, rest, Duration::from_secs(30)).await);
    let (_replayer, path3, replayer) = gateway(&redis, &pg, "replayer", "replay").await;
    client.expect_silence(Duration::from_secs(2)).await;
    // The replayer read every change again and found each published.
    let http = chouquette::http_client::HttpClient::default();
    let series = "chouquette_postgres_events_total{slot=\"replay\",outcome=\"duplicate\"}";
    let (_, metrics) = http
        .get(&format!("{replayer}/metrics"), None)
        .await
        .unwrap();
    let duplicates = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .map(str::trim);
    assert_eq!(duplicates, Some(ROWS.to_string().as_str()), "{metrics}");
    let counts = counts(&got);
    assert_eq!(counts.len(), usize::try_from(ROWS).unwrap(), "missing rows");
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    for p in [path, path2, path3] {
        let _ = std::fs::remove_file(p);
    }
}

/// A transaction larger than the app's publish burst: the source waits for
/// the app's tokens and goes on where it stopped (publishing nothing twice,
/// spending no tokens on duplicates), and the slot falling behind meanwhile
/// is reported, the gateway staying ready; the slot is acknowledged past
/// the transaction only once it is all published.
#[tokio::test]
async fn a_transaction_over_the_apps_rate_waits_and_the_lag_is_reported() {
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let config = format!(
        "{}{}",
        chouquette_testkit::config_with(
            "",
            "[apps.limits]\npublishes_per_second = 400\npublish_burst = 400\n"
        ),
        source_section(&pg.url(), "main")
            .replace("poll_interval", "max_lag_bytes = 10000\npoll_interval")
    );
    let node = TestNode::start(&config).await;
    assert!(super::ready(&node, Duration::from_secs(10)).await);
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"borne_added": {}})).await;
    db.batch_execute(
        "INSERT INTO borne (uid, power) SELECT 'B' || i, i FROM generate_series(1, 2000) i",
    )
    .await
    .unwrap();
    let behind = "chouquette_postgres_behind{slot=\"main\"}";
    assert!(
        eventually(Duration::from_secs(5), async || node.metric(behind).await
            == Some(1.0))
        .await,
        "the slot is reported behind while the app's rate holds it back"
    );
    assert_eq!(node.get("/readyz").await.0, 200);
    // Part of the transaction is published: the slot is not acknowledged
    // past its commit until all of it is.
    let mut got = data(&mut client, 1, Duration::from_secs(10)).await;
    let commit = got[0]["data"]["lsn"].as_str().unwrap().to_string();
    let acknowledged_past = async || -> bool {
        db.query_one(
            "SELECT confirmed_flush_lsn > $1::text::pg_lsn FROM pg_replication_slots \
             WHERE slot_name = 'main'",
            &[&commit],
        )
        .await
        .unwrap()
        .get(0)
    };
    assert!(!acknowledged_past().await, "acknowledged before published");
    got.extend(data(&mut client, 1999, Duration::from_secs(30)).await);
    assert!(
        eventually(Duration::from_secs(5), acknowledged_past).await,
        "acknowledged once published"
    );
    let powers: Vec<_> = got
        .iter()
        .map(|m| m["data"]["new"]["power"].as_u64().unwrap())
        .collect();
    assert_eq!(powers, (1..=2000).collect::<Vec<_>>());
    let series = "chouquette_postgres_events_total{slot=\"main\",outcome=\"duplicate\"}";
    assert_eq!(node.metric(series).await, Some(0.0));
    assert!(
        eventually(Duration::from_secs(5), async || node.metric(behind).await
            == Some(0.0))
        .await,
        "caught up"
    );
}
