//! The XMPP federation (docs/federation.md) end to end: two gateways
//! standing for two organisations, each with its own Postgres (its own
//! cluster, so one can be restarted alone), joined through one real
//! Prosody of the test's own. Events flow both ways with ids mapped and
//! nothing duplicated; a Prosody restart and a Postgres restart mid-stream
//! lose nothing and duplicate nothing; malformed SenML and an unknown
//! sender are refused and kept as failed inbox entries with the reason.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chouquette::source::xmpp::stream::{self, Link};
use chouquette_testkit::{
    PG_DATABASE, PG_ROLE, PostgresServer, ProsodyServer, Received, TestNode, WsClient, eventually,
};
use serde_json::json;

/// How long anything here may take.
const WAIT: Duration = Duration::from_secs(30);

/// The components Prosody knows: the two organisations, a third allowed
/// by `b` (the test plays it, to send what a gateway never would) and an
/// unknown one.
const COMPONENTS: &[(&str, &str)] = &[
    ("a.localhost", "secret-a"),
    ("b.localhost", "secret-b"),
    ("m.localhost", "secret-m"),
    ("x.localhost", "secret-x"),
];

/// One organisation: its gateway and its own Postgres.
struct Org {
    node: TestNode,
    pg: PostgresServer,
    component: &'static str,
}

/// The config of organisation `me` (`a` or `b`) federating with `peer`:
/// its `devices` telemetry goes out with its device id mapped to the shared
/// one; what the peer sends lands on `federated`, mapped back.
fn config(
    me: &str,
    peer: &str,
    prosody: &ProsodyServer,
    pg: &PostgresServer,
    header: &str,
) -> String {
    format!(
        r#"{header}
[admin]
key = "admin-key"

[[apps]]
id = "bluelib"
secrets = ["s3cret-current"]
api_key = "pub-key"

[apps.channels.devices]
history = 1000

[apps.channels.federated]
history = 1000

[[sources.xmpp]]
server = "{server}"
component = "{me}.localhost"
secret = "secret-{me}"
database = "{database}"
fill_interval = "50ms"
send_interval = "50ms"
process_interval = "50ms"
retry_initial = "300ms"
retry_max = "1s"
reconnect_max = "200ms"

[[sources.xmpp.consumers]]
name = "to-{peer}"
app = "bluelib"
channel = "devices"
filter = {{ telemetry = {{}} }}
to = "{peer}.localhost"
object_field = "device"
fields = ["temp", "seq"]
id_map = {{ "{me}-dev" = "shared-dev" }}

[[sources.xmpp.incoming]]
from = "{peer}.localhost"
app = "bluelib"
channel = "federated"
id_map = {{ "shared-dev" = "{me}-dev" }}

[[sources.xmpp.incoming]]
from = "m.localhost"
app = "bluelib"
channel = "federated"
"#,
        server = prosody.component_address(),
        database = pg.url_as(PG_ROLE, PG_DATABASE),
    )
}

async fn org(me: &'static str, peer: &str, prosody: &ProsodyServer, header: &str) -> Org {
    let pg = PostgresServer::start_with_wal_level("replica").await;
    let node = TestNode::start(&config(me, peer, prosody, &pg, header)).await;
    let component = if me == "a" {
        "a.localhost"
    } else {
        "b.localhost"
    };
    Org {
        node,
        pg,
        component,
    }
}

/// Waits until the org is linked, its mailboxes answer and its consumer
/// has a position (events published from then on go out).
async fn ready(org: &Org) {
    let series = format!("chouquette_xmpp_up{{component=\"{}\"}}", org.component);
    assert!(
        eventually(WAIT, async || org.node.metric(&series).await == Some(1.0)).await,
        "{} never came up: {:?}",
        org.component,
        org.node.admin_get("/admin/status").await
    );
    let client = org.pg.client().await;
    assert!(
        eventually(WAIT, async || {
            client
                .query_one("SELECT count(*) FROM fed_consumer", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        })
        .await,
        "{}'s consumer has no position",
        org.component
    );
}

async fn two_orgs() -> (ProsodyServer, Org, Org) {
    two_orgs_with("").await
}

/// Like [`two_orgs`], `a_header` heading `a`'s config (its broker).
async fn two_orgs_with(a_header: &str) -> (ProsodyServer, Org, Org) {
    let prosody = ProsodyServer::start(COMPONENTS).await;
    let (a, b) = tokio::join!(
        org("a", "b", &prosody, a_header),
        org("b", "a", &prosody, "")
    );
    ready(&a).await;
    ready(&b).await;
    (prosody, a, b)
}

async fn subscriber(org: &Org) -> WsClient {
    let mut client = org.node.client().await;
    client.subscribe("federated", json!({"senml": {}})).await;
    client
}

/// Publishes telemetry `seq` of `org`'s device.
async fn telemetry(org: &Org, device: &str, seq: u64) {
    org.node
        .publish(
            "devices",
            "telemetry",
            &[],
            json!({"device": device, "temp": 20.0 + seq as f64 / 10.0, "seq": seq, "note": "not sent"}),
        )
        .await;
}

/// The `seq` of every `federated` event arriving within `quiet` of the
/// last one, once `n` have arrived: counts per seq (a duplicate shows as 2).
async fn arrivals(client: &mut WsClient, n: usize, object: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let wait = if total >= n {
            Duration::from_millis(1500)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match client.next_within(wait).await {
            Some(Received::Json(m)) if m["class"] == "data" && m["channel"] == "federated" => {
                let data = &m["data"];
                assert_eq!(data["object"], object, "{m}");
                let seq = data["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["n"] == format!("{object}/seq"))
                    .and_then(|r| r["v"].as_f64())
                    .unwrap_or_else(|| panic!("no seq record in {m}"));
                *seen.entry(seq as u64).or_insert(0) += 1;
                total += 1;
            }
            Some(Received::Json(_)) => {}
            None if total >= n => return seen,
            other => panic!("{n} events expected, {total} arrived, then {other:?}"),
        }
    }
}

fn exactly_once(seen: &BTreeMap<u64, usize>, n: u64) {
    let expected: BTreeMap<u64, usize> = (0..n).map(|s| (s, 1)).collect();
    assert_eq!(seen, &expected, "every event once, no duplicate");
}

async fn outbox_drains(org: &Org) {
    let client = org.pg.client().await;
    assert!(
        eventually(WAIT, async || {
            client
                .query_one("SELECT count(*) FROM fed_outbox", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 0)
        })
        .await,
        "{}'s outbox never drained",
        org.component
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_both_ways_once_with_ids_mapped() {
    let (_prosody, a, b) = two_orgs().await;
    let mut at_a = subscriber(&a).await;
    let mut at_b = subscriber(&b).await;
    for seq in 0..10 {
        telemetry(&a, "a-dev", seq).await;
        telemetry(&b, "b-dev", seq).await;
    }
    // Not matched by the consumers' filter: stays home.
    a.node
        .publish(
            "devices",
            "debug",
            &[],
            json!({"device": "a-dev", "seq": 99}),
        )
        .await;
    exactly_once(&arrivals(&mut at_b, 10, "b-dev").await, 10);
    exactly_once(&arrivals(&mut at_a, 10, "a-dev").await, 10);
    outbox_drains(&a).await;
    outbox_drains(&b).await;
    let (_, status) = a.node.admin_get("/admin/status").await;
    let federation = &status["federation"][0];
    assert_eq!(federation["component"], "a.localhost", "{status}");
    assert_eq!(federation["counts"]["published"], 10, "{status}");
    assert_eq!(federation["counts"]["filled"], 10, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_on_the_redis_broker_sends_each_event_once() {
    // The fill job reads the channel's history from Redis (its own prefix:
    // nothing shared with other tests on the machine's Redis).
    let prefix = format!("fedtest-{}", std::process::id());
    let header = format!(
        "[node]\nid = \"fed-a\"\n\n[broker]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"{prefix}\"\n"
    );
    let (_prosody, a, b) = two_orgs_with(&header).await;
    let mut at_b = subscriber(&b).await;
    for seq in 0..10 {
        telemetry(&a, "a-dev", seq).await;
    }
    exactly_once(&arrivals(&mut at_b, 10, "b-dev").await, 10);
    outbox_drains(&a).await;
}

/// Sends `total` telemetry events from `org`, one every 30 ms, calling
/// `midway` after the first third.
async fn stream_with<F: AsyncFnOnce()>(org: &Org, total: u64, midway: F) {
    for seq in 0..total / 3 {
        telemetry(org, "a-dev", seq).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    midway().await;
    for seq in total / 3..total {
        telemetry(org, "a-dev", seq).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prosody_restart_mid_stream_loses_and_repeats_nothing() {
    let (mut prosody, a, b) = two_orgs().await;
    let mut at_b = subscriber(&b).await;
    stream_with(&a, 30, async || prosody.restart().await).await;
    exactly_once(&arrivals(&mut at_b, 30, "b-dev").await, 30);
    outbox_drains(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_postgres_restart_mid_stream_loses_and_repeats_nothing() {
    let (_prosody, a, b) = two_orgs().await;
    let mut at_b = subscriber(&b).await;
    stream_with(&a, 30, async || {
        b.pg.stop().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        b.pg.restart().await;
    })
    .await;
    exactly_once(&arrivals(&mut at_b, 30, "b-dev").await, 30);
    outbox_drains(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_senders_postgres_restart_mid_stream_loses_and_repeats_nothing() {
    let (_prosody, a, b) = two_orgs().await;
    let mut at_b = subscriber(&b).await;
    stream_with(&a, 30, async || {
        a.pg.stop().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        a.pg.restart().await;
    })
    .await;
    exactly_once(&arrivals(&mut at_b, 30, "b-dev").await, 30);
    outbox_drains(&a).await;
}

/// Logs in as `component` and sends `body` to `b` as message `id`.
async fn send_as(
    prosody: &ProsodyServer,
    component: &str,
    secret: &str,
    id: &str,
    body: &str,
) -> Link {
    let mut link = stream::connect(&prosody.component_address(), component, secret, 65536)
        .await
        .unwrap();
    link.send_message(component, "b.localhost", id, body)
        .await
        .unwrap();
    link
}

/// Whether `link` gets a receipt for `id` within a second.
async fn receipt(link: &mut Link, id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(Ok(stanza))) = tokio::time::timeout_at(deadline, link.stanzas.recv()).await {
        if stanza.child("received").and_then(|r| r.attr("id")) == Some(id) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_senml_and_unknown_senders_are_refused_and_kept() {
    let (prosody, _a, b) = two_orgs().await;
    let mut at_b = subscriber(&b).await;
    let mut known = send_as(&prosody, "m.localhost", "secret-m", "bad-1", "not json").await;
    assert!(
        receipt(&mut known, "bad-1").await,
        "a stored message is acknowledged"
    );
    known
        .send_message("m.localhost", "b.localhost", "bad-2", r#"[{"n":"dev/x"}]"#)
        .await
        .unwrap();
    assert!(receipt(&mut known, "bad-2").await);
    let good = r#"[{"bn":"dev/","n":"seq","v":0}]"#;
    let mut unknown = send_as(&prosody, "x.localhost", "secret-x", "u-1", good).await;
    assert!(
        !receipt(&mut unknown, "u-1").await,
        "an unknown sender is not acknowledged"
    );
    // A valid pack from the allowed third party goes through (and a repeat
    // of its id does not).
    known
        .send_message("m.localhost", "b.localhost", "ok-1", good)
        .await
        .unwrap();
    assert!(receipt(&mut known, "ok-1").await);
    known
        .send_message("m.localhost", "b.localhost", "ok-1", good)
        .await
        .unwrap();
    assert!(
        receipt(&mut known, "ok-1").await,
        "a repeat is acknowledged again"
    );
    exactly_once(&arrivals(&mut at_b, 1, "dev").await, 1);

    let client = b.pg.client().await;
    let rows = client
        .query(
            "SELECT from_jid, message_id, status, coalesce(reason, '') FROM fed_inbox ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let find = |id: &str| {
        rows.iter()
            .find(|r| r.1 == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {rows:?}"))
    };
    assert_eq!(find("bad-1").2, "failed");
    assert!(find("bad-1").3.contains("malformed SenML"), "{rows:?}");
    assert_eq!(find("bad-2").2, "failed");
    assert!(find("bad-2").3.contains("no value"), "{rows:?}");
    assert_eq!(
        find("u-1"),
        (
            "x.localhost".into(),
            "u-1".into(),
            "failed".into(),
            "unknown sender".into()
        )
    );
    assert_eq!(find("ok-1").2, "published");
    assert_eq!(rows.len(), 4, "the repeat is stored once: {rows:?}");
    let series = "chouquette_xmpp_refused_total{component=\"b.localhost\"}";
    assert_eq!(b.node.metric(series).await, Some(3.0));
}

/// Organisation `a` run by two gateways sharing one Redis and one Postgres,
/// both configured as the same component: the server takes one, refuses
/// the other (`conflict`) until the first is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_takes_the_component_over_when_the_first_stops() {
    let prosody = ProsodyServer::start(COMPONENTS).await;
    let prefix = format!("fedtest-failover-{}", std::process::id());
    let header = |id: &str| {
        format!(
            "[node]\nid = \"{id}\"\n\n[broker]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"{prefix}\"\n"
        )
    };
    let shared_pg = PostgresServer::start_with_wal_level("replica").await;
    let a1 = Org {
        node: TestNode::start(&config("a", "b", &prosody, &shared_pg, &header("fed-a1"))).await,
        pg: shared_pg,
        component: "a.localhost",
    };
    let b = org("b", "a", &prosody, "").await;
    ready(&a1).await;
    ready(&b).await;
    let a2 = TestNode::start(&config("a", "b", &prosody, &a1.pg, &header("fed-a2"))).await;
    let up = "chouquette_xmpp_up{component=\"a.localhost\"}";
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a2.metric(up).await,
        Some(0.0),
        "the server takes one component at a time"
    );

    let mut at_b = subscriber(&b).await;
    let mut at_a2 = a2.client().await;
    at_a2.subscribe("federated", json!({"senml": {}})).await;
    for seq in 0..10 {
        telemetry(&a1, "a-dev", seq).await;
    }
    exactly_once(&arrivals(&mut at_b, 10, "b-dev").await, 10);

    // The first gateway stops; events published meanwhile through the
    // second (same Redis channel) still go out, and what `b` sends comes in.
    let Org {
        node: first, pg, ..
    } = a1;
    first.running.shutdown().await;
    let a2 = Org {
        node: a2,
        pg,
        component: "a.localhost",
    };
    for seq in 10..20 {
        telemetry(&a2, "a-dev", seq).await;
        telemetry(&b, "b-dev", seq).await;
    }
    assert!(
        eventually(WAIT, async || a2.node.metric(up).await == Some(1.0)).await,
        "the second gateway never took the component over"
    );
    let later = arrivals(&mut at_b, 10, "b-dev").await;
    assert_eq!(
        later,
        (10..20).map(|s| (s, 1)).collect(),
        "every later event once"
    );
    exactly_once(
        &arrivals(&mut at_a2, 10, "a-dev")
            .await
            .into_iter()
            .map(|(s, n)| (s - 10, n))
            .collect(),
        10,
    );
    outbox_drains(&a2).await;
}
