//! The data model on a Redis Cluster, and failover through Sentinel.

use std::process::Stdio;
use std::time::Duration;

use chouquette_testkit::{BASE_CONFIG, RedisServer, TestNode, answers_ping, free_port, token};
use serde_json::json;
use tokio::process::Command;

use crate::{data, event, eventually, offsets_of};

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chq-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn query(port: u16, cmd: &mut redis::Cmd) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut con = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut con).await
}

/// A one-node Redis Cluster owning every slot: it refuses any command or
/// script whose keys are on different slots, so a key layout that works
/// here works on a Cluster of many shards.
#[tokio::test]
async fn every_script_and_command_keeps_to_one_cluster_slot() {
    let dir = scratch_dir("cluster");
    let conf = dir.join("nodes.conf");
    let redis = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        conf.to_str().unwrap(),
    ])
    .await;
    query(
        redis.port(),
        redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(0).arg(16383),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || {
            let info = query(redis.port(), redis::cmd("CLUSTER").arg("INFO")).await;
            matches!(info, Ok(redis::Value::VerbatimString { ref text, .. }) if text.contains("cluster_state:ok"))
                || matches!(info, Ok(redis::Value::BulkString(ref b)) if String::from_utf8_lossy(b).contains("cluster_state:ok"))
        })
        .await,
        "cluster ready"
    );
    // The control: this server does refuse keys of two slots together.
    let crossed = query(
        redis.port(),
        redis::cmd("EVAL")
            .arg("return redis.call('GET', KEYS[1])")
            .arg(2)
            .arg("a")
            .arg("b"),
    )
    .await;
    assert!(crossed.is_err(), "a cluster refuses cross-slot scripts");

    let node = TestNode::start(&chouquette_testkit::redis_config(&redis.url(), "c")).await;
    let mut client = node.client().await;
    client
        .subscribe("bornes", json!({"alarm": {}, "status": {}}))
        .await;
    let status = json!({"app_id": "bluelib", "channel": "bornes", "event_kind": "status",
                        "keywords": ["borne:B1"], "key": "B1", "data": "s"});
    node.publish_event(&status).await;
    node.publish_batch(&[event("bornes", json!(2)), event("bornes", json!(3))])
        .await;
    let got = data(&mut client, "bornes", 3).await;
    assert_eq!(offsets_of(&got), vec![1, 2, 3]);
    let epoch = got[0]["epoch"].as_str().map(String::from);
    // Resume and snapshot both read history and state in one script.
    let mut again = node.client().await;
    let (ack, snapshot) = again.subscribe("bornes", json!({"status": {}})).await;
    assert_eq!(offsets_of(&snapshot), vec![1]);
    let epoch =
        epoch.unwrap_or_else(|| ack["channels"]["bornes"]["epoch"].as_str().unwrap().into());
    let tok = token("bornes", json!({"alarm": {}}), 600);
    let mut resumer = node.client().await;
    resumer
        .send_json(
            &json!({"class": "subscribe", "app_id": "bluelib", "uuid": "r",
            "channels": {"bornes": {"filters": tok, "since": {"epoch": epoch, "offset": 1}}}}),
        )
        .await;
    let (ack, before) = resumer.recv_until("ack").await;
    assert_eq!(offsets_of(&before), vec![2, 3], "{ack}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A Sentinel process on a free port, killed when dropped.
struct Sentinel {
    port: u16,
    _child: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl Sentinel {
    async fn start(master_port: u16) -> Sentinel {
        let dir = scratch_dir("sentinel");
        let port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor m 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds m 500\n\
                 sentinel failover-timeout m 2000\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (sentinel mode) must be installed");
        assert!(
            eventually(Duration::from_secs(10), async || answers_ping(port).await).await,
            "sentinel answers"
        );
        Sentinel {
            port,
            _child: child,
            dir,
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn the_gateway_follows_a_sentinel_failover() {
    let mut master = RedisServer::start().await;
    let replica_of = master.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &replica_of]).await;
    let sentinel = Sentinel::start(master.port()).await;
    let config = format!(
        "[node]\nid = \"s\"\n\n[broker]\nkind = \"redis\"\nconnect_timeout = \"1s\"\n\
         command_timeout = \"1s\"\nreconnect_max = \"300ms\"\n\n[broker.sentinel]\n\
         addresses = [\"127.0.0.1:{}\"]\nmaster_name = \"m\"\n{BASE_CONFIG}",
        sentinel.port
    );
    let node = TestNode::start(&config).await;
    let mut client = node.client().await;
    let (ack, _) = client.subscribe("bornes", json!({"alarm": {}})).await;
    let epoch = ack["channels"]["bornes"]["epoch"].clone();
    for i in 0..3 {
        node.publish_event(&event("bornes", json!(i))).await;
    }
    assert_eq!(
        offsets_of(&data(&mut client, "bornes", 3).await),
        vec![1, 2, 3]
    );
    // The replica has everything before the master dies.
    assert!(
        eventually(Duration::from_secs(15), async || {
            let synced = query(master.port(), redis::cmd("WAIT").arg(1).arg(200)).await;
            matches!(synced, Ok(redis::Value::Int(1)))
        })
        .await,
        "replica in sync"
    );

    master.kill().await;
    let lost = client.recv().await;
    assert_eq!(lost["reason"], "broker_unavailable", "{lost}");
    let restored = tokio::time::timeout(Duration::from_secs(30), client.recv_until("reset"))
        .await
        .expect("the gateway reconnects to the promoted replica")
        .0;
    assert_eq!(restored["reason"], "broker_restored", "{restored}");
    // Same data on the new master: the epoch goes on, offsets continue.
    let (new_epoch, offset) = node.publish_event(&event("bornes", json!(3))).await;
    assert_eq!(json!(new_epoch), epoch);
    assert_eq!(offset, 4);
    assert_eq!(offsets_of(&data(&mut client, "bornes", 1).await), vec![4]);
    drop(replica);
}

/// Three masters sharing the 16,384 slots, on loopback.
async fn cluster_of_three() -> (Vec<RedisServer>, std::path::PathBuf) {
    let dir = scratch_dir("shards");
    let mut servers = Vec::new();
    for i in 0..3 {
        let conf = dir.join(format!("nodes-{i}.conf"));
        servers.push(
            RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().unwrap(),
                "--cluster-node-timeout",
                "2000",
            ])
            .await,
        );
    }
    for (server, (from, to)) in servers
        .iter()
        .zip([(0, 5460), (5461, 10922), (10923, 16383)])
    {
        query(
            server.port(),
            redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(from).arg(to),
        )
        .await
        .unwrap();
    }
    for other in &servers[1..] {
        query(
            servers[0].port(),
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(other.port()),
        )
        .await
        .unwrap();
    }
    for server in &servers {
        assert!(
            eventually(Duration::from_secs(20), async || {
                let info = query(server.port(), redis::cmd("CLUSTER").arg("INFO")).await;
                let text = match info {
                    Ok(redis::Value::VerbatimString { text, .. }) => text,
                    Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                    _ => String::new(),
                };
                text.contains("cluster_state:ok") && text.contains("cluster_known_nodes:3")
            })
            .await,
            "the cluster forms"
        );
    }
    (servers, dir)
}

/// Several gateways on a Cluster of three shards: channels spread over the
/// shards, each still one stream of offsets; resume, last state, the inbox
/// and kill switches work across shards and nodes.
#[tokio::test]
async fn gateways_on_a_three_shard_cluster() {
    let (shards, dir) = cluster_of_three().await;
    let seeds: Vec<String> = shards
        .iter()
        .map(|s| format!("\"127.0.0.1:{}\"", s.port()))
        .collect();
    let config = |id: &str| {
        format!(
            "[node]\nid = \"{id}\"\n\n[broker]\nkind = \"redis\"\nconnect_timeout = \"2s\"\n\
             command_timeout = \"2s\"\nreconnect_max = \"500ms\"\n\n[broker.cluster]\n\
             nodes = [{}]\n{BASE_CONFIG}",
            seeds.join(", ")
        )
    };
    let a = TestNode::start(&config("a")).await;
    let b = TestNode::start(&config("b")).await;
    let channels: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let mut client = b.client().await;
    for channel in &channels {
        let (ack, _) = client.subscribe(channel, json!({"alarm": {}})).await;
        assert_eq!(ack["class"], "ack", "{ack}");
    }
    for round in 0..3 {
        for channel in &channels {
            let (_, offset) = a.publish_event(&event(channel, json!(round))).await;
            assert_eq!(offset, round + 1, "{channel}");
        }
    }
    let mut seen = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for _ in 0..channels.len() * 3 {
        let m = loop {
            let m = client.recv().await;
            if m["class"] == "data" {
                break m;
            }
        };
        seen.entry(m["channel"].as_str().unwrap().to_string())
            .or_default()
            .push(m["offset"].as_u64().unwrap());
    }
    for channel in &channels {
        assert_eq!(seen[channel], vec![1, 2, 3], "{channel}");
    }
    // The channels' keys really are on several shards.
    let mut shards_used = 0;
    for shard in &shards {
        let size = query(shard.port(), &mut redis::cmd("DBSIZE")).await;
        if matches!(size, Ok(redis::Value::Int(n)) if n > 0) {
            shards_used += 1;
        }
    }
    assert!(shards_used >= 2, "keys on {shards_used} shard(s)");

    // Resume on node A from what node B delivered.
    let epoch = {
        let mut probe = a.client().await;
        let (ack, _) = probe.subscribe("c3", json!({"alarm": {}})).await;
        ack["channels"]["c3"]["epoch"].as_str().unwrap().to_string()
    };
    let tok = token("c3", json!({"alarm": {}}), 600);
    let mut resumer = a.client().await;
    resumer
        .send_json(
            &json!({"class": "subscribe", "app_id": "bluelib", "uuid": "r",
            "channels": {"c3": {"filters": tok, "since": {"epoch": epoch, "offset": 1}}}}),
        )
        .await;
    let (ack, before) = resumer.recv_until("ack").await;
    assert_eq!(offsets_of(&before), vec![2, 3], "{ack}");

    // Through the inbox (its own slot), and a kill switch (another).
    let mut inbox =
        redis::cluster::ClusterClient::new(shards.iter().map(|s| s.url()).collect::<Vec<_>>())
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("chq:inbox")
        .arg("*")
        .arg("event")
        .arg(event("c5", json!("inbox")).to_string())
        .query_async(&mut inbox)
        .await
        .unwrap();
    let via_inbox = data(&mut client, "c5", 1).await;
    assert_eq!(via_inbox[0]["data"], "inbox");
    assert_eq!(via_inbox[0]["offset"], 4);
    let off = json!({"scope": "channel", "app": "bluelib", "channel": "c1", "enabled": false});
    let (status, answer) = a.admin_post("/admin/switches", &off).await;
    assert_eq!(status, 200, "{answer}");
    let (reset, _) = client.recv_until("reset").await;
    assert_eq!(reset["reason"], "disabled", "{reset}");
    assert_eq!(reset["channel"], "c1");
    drop(shards);
    let _ = std::fs::remove_dir_all(dir);
}
