//! The Redis inbox: published exactly once however many gateways consume
//! it, taken over from a gateway that died, refused entries kept aside.

use std::collections::BTreeMap;
use std::time::Duration;

use chouquette_testkit::{RedisServer, TestNode, redis_config, redis_config_with};
use redis::AsyncCommands;
use serde_json::json;

use crate::process::GatewayProcess;
use crate::{data, event, eventually};

const STREAM: &str = "chq:inbox";

async fn redis_client(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_entry_is_published_once_even_when_a_gateway_dies_while_consuming() {
    const ENTRIES: usize = 300;
    let redis = RedisServer::start().await;
    let mut con = redis_client(&redis).await;
    // A gateway that read entries and died before acknowledging them.
    let _: () = con
        .xgroup_create_mkstream(STREAM, "chouquette", "0")
        .await
        .unwrap();
    for i in 0..10 {
        let e = event("inbox", json!(i)).to_string();
        let _: String = con.xadd(STREAM, "*", &[("event", e)]).await.unwrap();
    }
    let taken: redis::streams::StreamReadReply = con
        .xread_options(
            &[STREAM],
            &[">"],
            &redis::streams::StreamReadOptions::default().group("chouquette", "ghost"),
        )
        .await
        .unwrap();
    assert_eq!(taken.keys[0].ids.len(), 10);

    let survivor = TestNode::start(&redis_config(&redis.url(), "survivor")).await;
    let doomed = TestNode::start(&redis_config(&redis.url(), "doomed")).await;
    let mut client = survivor.client().await;
    client.subscribe("inbox", json!({"alarm": {}})).await;
    for i in 10..ENTRIES {
        let e = event("inbox", json!(i)).to_string();
        let _: String = con.xadd(STREAM, "*", &[("event", e)]).await.unwrap();
        if i == ENTRIES / 2 {
            // The second gateway stops in the middle of consuming.
            doomed.running.stop();
        }
    }
    // Every entry once: the ghost's after `inbox_claim_after` (2 s).
    let got = tokio::time::timeout(Duration::from_secs(30), data(&mut client, "inbox", ENTRIES))
        .await
        .expect("every inbox entry arrives");
    let mut counts = BTreeMap::new();
    for m in &got {
        *counts.entry(m["data"].as_u64().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), ENTRIES, "missing entries");
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=ENTRIES as u64).collect::<Vec<_>>());
    client.expect_silence(Duration::from_millis(300)).await;
    // Nothing left pending.
    assert!(
        eventually(Duration::from_secs(10), async || {
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(STREAM)
                .arg("chouquette")
                .query_async(&mut con)
                .await
                .unwrap();
            matches!(pending, redis::Value::Array(ref v) if v.first() == Some(&redis::Value::Int(0)))
        })
        .await,
        "all entries acknowledged"
    );
    assert!(survivor.metric("chouquette_inbox_claimed_total").await >= Some(10.0));
}

#[tokio::test]
async fn a_refused_entry_goes_to_the_dead_letters_and_the_rest_is_published() {
    let redis = RedisServer::start().await;
    let mut con = redis_client(&redis).await;
    let node = TestNode::start(&redis_config(&redis.url(), "n")).await;
    let mut client = node.client().await;
    client.subscribe("inbox", json!({"alarm": {}})).await;
    let batch = json!([event("inbox", json!("a")), event("inbox", json!("b"))]).to_string();
    let bad_app = json!({"app_id": "nope", "channel": "inbox", "event_kind": "alarm"}).to_string();
    let _: String = con.xadd(STREAM, "*", &[("events", batch)]).await.unwrap();
    let _: String = con.xadd(STREAM, "*", &[("event", bad_app)]).await.unwrap();
    let _: String = con
        .xadd(STREAM, "*", &[("event", "{not json")])
        .await
        .unwrap();
    let _: String = con.xadd(STREAM, "*", &[("other", "x")]).await.unwrap();
    let last = event("inbox", json!("c")).to_string();
    let _: String = con.xadd(STREAM, "*", &[("event", last)]).await.unwrap();

    let got = data(&mut client, "inbox", 3).await;
    let values: Vec<_> = got.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(values, vec![json!("a"), json!("b"), json!("c")]);
    let offsets: Vec<_> = got.iter().map(|m| m["offset"].clone()).collect();
    assert_eq!(offsets, vec![json!(1), json!(2), json!(3)]);
    let read_dead = async || dead_letters(&redis).await;
    assert!(
        eventually(Duration::from_secs(5), async || read_dead().await.len()
            == 3)
        .await,
        "three dead letters: {:?}",
        read_dead().await
    );
    let dead = read_dead().await;
    assert_eq!(dead.len(), 3, "{dead:?}");
    let errors: Vec<&str> = dead
        .iter()
        .map(|(_, f)| f.iter().find(|(k, _)| k == "error").unwrap().1.as_str())
        .collect();
    assert!(errors[0].contains("unknown app"), "{errors:?}");
    assert!(errors[1].contains("field `event`"), "{errors:?}");
    assert!(
        errors[2].contains("no `event`, `events` or `notification`"),
        "{errors:?}"
    );
    assert_eq!(node.metric("chouquette_inbox_dead_total").await, Some(3.0));
}

/// The dead letters: each entry's id and its fields, sorted by name.
async fn dead_letters(redis: &RedisServer) -> Vec<(String, Vec<(String, String)>)> {
    let mut con = redis_client(redis).await;
    let reply: redis::streams::StreamRangeReply =
        con.xrange_all(format!("{STREAM}:dead")).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            let mut fields: Vec<(String, String)> = e
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap()))
                .collect();
            fields.sort();
            (e.id, fields)
        })
        .collect()
}

/// The publish API bounds its body by `max_publish_bytes`; an inbox entry
/// has no body limit of its own, and an event larger than what a client
/// connection is sized to write used to reach clients and break their
/// connections. It is now refused like any invalid event.
#[tokio::test]
async fn an_inbox_event_larger_than_max_publish_bytes_is_a_dead_letter() {
    let redis = RedisServer::start().await;
    let mut con = redis_client(&redis).await;
    let limits = "max_publish_bytes = 4096\n";
    let node = TestNode::start(&redis_config_with(&redis.url(), "n", limits, "")).await;
    let mut client = node.client().await;
    client.subscribe("inbox", json!({"alarm": {}})).await;
    let huge = event("inbox", json!("x".repeat(5000))).to_string();
    let _: String = con.xadd(STREAM, "*", &[("event", huge)]).await.unwrap();
    let fits = event("inbox", json!("y".repeat(3000))).to_string();
    let _: String = con.xadd(STREAM, "*", &[("event", fits)]).await.unwrap();

    let got = data(&mut client, "inbox", 1).await;
    assert_eq!(got[0]["data"], json!("y".repeat(3000)));
    assert_eq!(got[0]["offset"], json!(1), "the large one took no offset");
    assert!(
        eventually(Duration::from_secs(5), async || dead_letters(&redis)
            .await
            .len()
            == 1)
        .await,
        "one dead letter"
    );
    let dead = dead_letters(&redis).await;
    let error = &dead[0].1.iter().find(|(k, _)| k == "error").unwrap().1;
    assert!(error.contains("at most 4096"), "{error}");
}

/// The documented Python example (redis-py) publishes through the inbox.
#[tokio::test]
async fn the_python_example_publishes_through_the_inbox() {
    let redis = RedisServer::start().await;
    let node = TestNode::start(&redis_config(&redis.url(), "py")).await;
    let mut client = node.client().await;
    client
        .subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python/publish_inbox.py"
    );
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            "--url",
            &redis.url(),
            "--app",
            "bluelib",
            "--channel",
            "bornes",
        ])
        .args([
            "--event-kind",
            "alarm",
            "--keyword",
            "borne:B1",
            "--count",
            "2",
        ])
        .args(["--data", r#"{"status": "oh, oh..."}"#])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the example failed (scripts/test.sh installs examples/python/requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got = data(&mut client, "bornes", 2).await;
    assert_eq!(got[0]["data"]["status"], "oh, oh...");
    assert_eq!(got[1]["offset"], 2);
}

/// Appends `n` entries (data `from`, `from + 1`, ...) in one round trip;
/// returns the next data value.
async fn add_burst(con: &mut redis::aio::MultiplexedConnection, from: usize, n: usize) -> usize {
    let mut pipe = redis::pipe();
    for i in from..from + n {
        pipe.xadd(
            STREAM,
            "*",
            &[("event", event("inbox", json!(i)).to_string())],
        )
        .ignore();
    }
    let () = pipe.query_async(con).await.unwrap();
    from + n
}

/// The app's publish rate holds the inbox back instead of refusing: the
/// entries over it wait for the app's tokens, in order, and none goes to
/// the dead letters.
#[tokio::test]
async fn an_app_over_its_publish_rate_slows_the_inbox_and_loses_nothing() {
    let redis = RedisServer::start().await;
    let mut con = redis_client(&redis).await;
    let app = "[apps.limits]\npublishes_per_second = 4\npublish_burst = 2";
    let node = TestNode::start(&redis_config_with(&redis.url(), "slow", "", app)).await;
    let mut client = node.client().await;
    client.subscribe("inbox", json!({"alarm": {}})).await;
    let started = std::time::Instant::now();
    add_burst(&mut con, 0, 10).await;
    let got = tokio::time::timeout(Duration::from_secs(20), data(&mut client, "inbox", 10))
        .await
        .expect("every inbox entry arrives");
    let values: Vec<u64> = got.iter().map(|m| m["data"].as_u64().unwrap()).collect();
    assert_eq!(values, (0..10).collect::<Vec<u64>>());
    // 8 events over the burst of 2, at 4 per second: 2 s.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        node.metric("chouquette_limited_total{limit=\"publishes\"}")
            .await
            >= Some(1.0)
    );
    assert_eq!(
        node.metric("chouquette_inbox_dead_total")
            .await
            .unwrap_or(0.0),
        0.0
    );
}

/// A gateway *process* killed (SIGKILL) while it consumes the inbox: the
/// entries it had taken are taken over by the others and every entry is
/// published exactly once.
#[tokio::test]
async fn a_gateway_process_killed_mid_stream_loses_and_repeats_nothing() {
    const ENTRIES: usize = 400;
    let redis = RedisServer::start().await;
    let mut con = redis_client(&redis).await;
    let watcher = TestNode::start(&redis_config(&redis.url(), "watcher")).await;
    let mut client = watcher.client().await;
    client.subscribe("inbox", json!({"alarm": {}})).await;
    let mut victims = Vec::new();
    for name in ["victim-1", "victim-2"] {
        victims.push(GatewayProcess::start(name, &redis_config(&redis.url(), name)).await);
    }
    // Entries in bursts; the first victim is frozen (SIGSTOP) after a burst
    // until Redis shows it holding entries it has not acknowledged, then
    // killed (SIGKILL): the way a crashed or hung host looks to the others.
    let pending_of = async |con: &mut redis::aio::MultiplexedConnection, consumer: &str| {
        let reply: redis::streams::StreamPendingCountReply = con
            .xpending_consumer_count(STREAM, "chouquette", "-", "+", 1000, consumer)
            .await
            .unwrap();
        reply.ids.len()
    };
    let signal = |sig: &str, pid: u32| {
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
    };
    let victim = victims[0].child.id().unwrap();
    let mut added = 0;
    let mut stranded = 0;
    for _ in 0..500 {
        added = add_burst(&mut con, added, 10).await;
        signal("-STOP", victim);
        stranded = pending_of(&mut con, "victim-1").await;
        if stranded > 0 {
            signal("-KILL", victim);
            let _ = victims[0].child.wait().await;
            break;
        }
        signal("-CONT", victim);
    }
    assert!(stranded > 0, "the victim died holding entries");
    while added < ENTRIES {
        added = add_burst(&mut con, added, 10).await;
    }
    let entries = added;
    let got = tokio::time::timeout(Duration::from_secs(30), data(&mut client, "inbox", entries))
        .await
        .expect("every inbox entry arrives");
    let mut counts = BTreeMap::new();
    for m in &got {
        *counts.entry(m["data"].as_u64().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), entries, "missing entries");
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    // The survivors take the dead one's entries over (after
    // `inbox_claim_after`), skip what it had published, and ack them all.
    assert!(
        eventually(Duration::from_secs(15), async || {
            pending_of(&mut con, "victim-1").await == 0
        })
        .await,
        "the dead gateway's entries were taken over"
    );
    client.expect_silence(Duration::from_millis(500)).await;
    for mut victim in victims {
        let _ = victim.child.kill().await;
    }
}
