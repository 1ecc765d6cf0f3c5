//! `--scenario storm` (issue 11, "Reconnect storm"): `-n` clients
//! (19,000 by default) subscribed through one gateway on Redis, node 1,
//! while node 0 takes the publishes at `--rate` (2 events/s by default) on
//! `--channels` channels. Node 1 is stopped (`--storm-stop kill`: SIGKILL;
//! `term`: SIGTERM, then SIGKILL after its grace and 5 s) and started again
//! at once on the same ports and config; publishing goes on through node 0
//! meanwhile. Every client reconnects as soon as its connection ends and
//! resumes with `since` (`storm_client.rs`).
//!
//! Measured: the time from the stop signal to the last client resubscribed
//! (its `ack`) and to the last one caught up (it has every offset of its
//! channel up to what node 0 had acknowledged when the old process was
//! gone), each client's time from its drop to its `ack`, the new
//! process's CPU (utime + stime, from its start) until every client was
//! back, per reconnection, the gateway's refusals, and by the end every
//! client's offsets: missing, duplicated, reset, or behind the last one
//! published. The storm phase lasts at most `--duration`; then events flow
//! [`AFTER`] more, and the run ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::time::{Instant, sleep};

use crate::cli::{BrokerChoice, Options, Scenario, ServerChoice, StormStop};
use crate::fleet::Fleet;
use crate::gateway::{self, LimitsSpec};
use crate::histogram::Histogram;
use crate::pool::{self, Pool};
use crate::publisher;
use crate::storm_client::{self, Results, Share};
use crate::wire::{AppSpec, Plan, unix_nanos};

/// Events keep flowing this long after the storm, to see the clients
/// follow live again.
const AFTER: Duration = Duration::from_secs(2);
/// Time left for the last events to arrive once publishing stops.
const DRAIN: Duration = Duration::from_secs(2);
/// How often the workers are asked how far the clients are.
const POLL: Duration = Duration::from_millis(100);
/// The node holding the clients (node 0 takes the publishes).
const NODE: usize = 1;
/// The gateways' `[shutdown] grace` (gateway.rs), plus room.
const TERM_GRACE: Duration = Duration::from_secs(7);

/// Every figure of a run.
#[derive(Debug, Serialize)]
struct StormSummary {
    clients: usize,
    subscribed: usize,
    refused_at_first: usize,
    failed_at_first: usize,
    workers: usize,
    channels: usize,
    rate: f64,
    stop: StormStop,
    jitter_s: f64,
    /// From the signal to the old process gone.
    down_s: f64,
    /// From the start of the new process to its `/readyz` 200.
    ready_s: Option<f64>,
    dropped: u64,
    resubscribed: u64,
    caught_up: u64,
    /// From the signal to the last client's `ack`.
    last_resubscribed_s: Option<f64>,
    /// From the signal to the last client caught up.
    last_caught_up_s: Option<f64>,
    resubscribe_p50_ms: Option<f64>,
    resubscribe_p99_ms: Option<f64>,
    resubscribe_max_ms: Option<f64>,
    /// The new process's CPU from its start to the poll that saw every
    /// client back (or to the end of the storm phase).
    gateway_cpu_s: f64,
    gateway_cpu_us_per_reconnect: f64,
    /// Of which before its `/readyz` first answered 200.
    gateway_cpu_at_ready_s: Option<f64>,
    /// Node 0 and Redis over the same span.
    publisher_node_cpu_s: f64,
    redis_cpu_s: f64,
    reconnects: u64,
    refusals_by_restarted: u64,
    refusals_by_stopping: u64,
    connect_errors: u64,
    missing: u64,
    duplicates: u64,
    resets: u64,
    faulty_clients: u64,
    behind_at_end: u64,
    final_offsets: Vec<u64>,
    publish_errors: u64,
    all_ok: bool,
}

/// Runs the storm; prints its table and JSON line.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    if options.server != ServerChoice::Gateway
        || options.broker != BrokerChoice::Redis
        || options.nodes != 2
    {
        bail!(
            "--scenario storm runs two gateways on Redis (--broker redis --nodes 2, the default): node 0 publishes, node 1 holds the clients and is restarted"
        );
    }
    let app = AppSpec::fresh("bornes");
    let binary = gateway::binary(options.gateway.as_deref())?;
    let mut fleet = Fleet::start(options, &binary, &app, &LimitsSpec::default()).await?;
    let summary = storm(options, &app, &mut fleet).await;
    fleet.stop(Duration::from_secs(30)).await;
    let summary = summary?;
    print(&summary);
    Ok(())
}

/// The workers' time to open every client: 3x the connect rate's, plus a
/// minute.
fn connect_budget(options: &Options) -> Duration {
    let at_rate = options.connections as f64 / f64::from(options.connect_rate.max(1));
    Duration::from_secs_f64(at_rate * 3.0 + 60.0)
}

async fn storm(
    options: &Options,
    app: &AppSpec,
    fleet: &mut Fleet,
) -> anyhow::Result<StormSummary> {
    let node = fleet.node(NODE).context("no node 1")?;
    let plan = Plan {
        scenario: Scenario::Storm,
        target: node.public,
        app: app.clone(),
        first: 0,
        count: options.connections,
        per_source: options.per_source,
        connect_rate: options.connect_rate,
        lifetime: connect_budget(options)
            + options.warmup
            + options.duration
            + TERM_GRACE
            + AFTER
            + DRAIN
            + Duration::from_secs(120),
        abuse: None,
        hold: None,
        devices: None,
        channels: options.channels.max(1),
        storm: Some(Share {
            jitter: options.reconnect_jitter,
        }),
    };
    crate::plan::check(options)?;
    let workers = options.worker_count();
    let mut pool = Pool::spawn(&pool::split(&plan, workers))?;
    let connected = pool.wait_connected(connect_budget(options)).await?;
    eprintln!(
        "{} subscribed, {} refused, {} failed; publishing {} events/s through node 0, warming up",
        connected.connected,
        connected.refused,
        connected.failed,
        options.event_rate()
    );
    let channels = options.channels.max(1);
    let offsets: Arc<Vec<AtomicU64>> = Arc::new((0..channels).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publisher::run(
        publisher::Plan {
            internal: fleet.internal,
            app: app.clone(),
            scenario: Scenario::Storm,
            connections: options.connections,
            rate: options.event_rate(),
            every: options.publish_every,
            channels,
            offsets: Some(offsets.clone()),
        },
        stop.clone(),
    ));
    sleep(options.warmup).await;

    let node0_cpu0 = fleet.node(0).context("no node 0")?.cpu_seconds()?;
    let redis_cpu0 = fleet.redis_cpu_seconds()?.unwrap_or(0.0);
    let kill = options.storm_stop == StormStop::Kill;
    eprintln!(
        "stopping node 1 ({})",
        if kill { "SIGKILL" } else { "SIGTERM" }
    );
    let kill_ns = unix_nanos();
    let node = fleet.node_mut(NODE).context("no node 1")?;
    node.halt(kill, TERM_GRACE).await?;
    let gone_ns = unix_nanos();
    let targets: Vec<u64> = offsets.iter().map(|o| o.load(Ordering::Relaxed)).collect();
    pool.restart(targets.clone(), Duration::from_secs(10))
        .await?;
    node.relaunch()?;
    let started = Instant::now();
    eprintln!(
        "node 1 restarted (pid {}); clients must catch up to offsets {targets:?}",
        node.pid
    );

    let deadline = Instant::now() + options.duration;
    let mut ready_s = None;
    let mut cpu_at_ready = None;
    let expected = connected.connected as u64;
    let at_done = loop {
        let node = fleet.node(NODE).context("no node 1")?;
        if ready_s.is_none() && node.ready().await {
            ready_s = Some(started.elapsed().as_secs_f64());
            cpu_at_ready = Some(node.cpu_seconds()?);
        }
        let now = totals(&pool.storm_results(Duration::from_secs(10)).await?);
        if now.summary.resubscribed >= expected && now.summary.caught_up >= expected {
            break now;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "storm phase over ({:?}): {} of {expected} resubscribed, {} caught up",
                options.duration, now.summary.resubscribed, now.summary.caught_up
            );
            break now;
        }
        sleep(POLL).await;
    };
    let node = fleet.node(NODE).context("no node 1")?;
    let gateway_cpu_s = node.cpu_seconds()?;
    let publisher_node_cpu_s = fleet.node(0).context("no node 0")?.cpu_seconds()? - node0_cpu0;
    let redis_cpu_s = fleet.redis_cpu_seconds()?.unwrap_or(0.0) - redis_cpu0;

    sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let published = publishing.await.context("publisher failed")?;
    sleep(DRAIN).await;
    let finals: Vec<u64> = offsets.iter().map(|o| o.load(Ordering::Relaxed)).collect();
    let end = totals(&pool.storm_results(Duration::from_secs(30)).await?);
    pool.exit().await;
    if let Some(reason) = &published.last_error {
        eprintln!(
            "{} publish batches failed; last: {reason}",
            published.errors
        );
    }

    let secs = |ns: u64| (ns > kill_ns).then(|| (ns - kill_ns) as f64 / 1e9);
    let quantile = |q: f64| end.resubscribe.quantile(q).map(|us| us / 1000.0);
    let behind = behind(&end.summary.last_offsets, &finals);
    let mut summary = StormSummary {
        clients: options.connections,
        subscribed: connected.connected,
        refused_at_first: connected.refused,
        failed_at_first: connected.failed,
        workers,
        channels,
        rate: options.event_rate(),
        stop: options.storm_stop,
        jitter_s: options.reconnect_jitter.as_secs_f64(),
        down_s: (gone_ns - kill_ns) as f64 / 1e9,
        ready_s,
        dropped: end.summary.dropped,
        resubscribed: end.summary.resubscribed,
        caught_up: end.summary.caught_up,
        last_resubscribed_s: secs(end.summary.last_ack_ns),
        last_caught_up_s: secs(end.summary.last_caught_ns),
        resubscribe_p50_ms: quantile(0.5),
        resubscribe_p99_ms: quantile(0.99),
        resubscribe_max_ms: quantile(1.0),
        gateway_cpu_s,
        gateway_cpu_us_per_reconnect: gateway_cpu_s * 1e6
            / at_done.summary.resubscribed.max(1) as f64,
        gateway_cpu_at_ready_s: cpu_at_ready,
        publisher_node_cpu_s,
        redis_cpu_s,
        reconnects: end.reconnects,
        refusals_by_restarted: end.refusals_after,
        refusals_by_stopping: end.refusals_before,
        connect_errors: end.connect_errors,
        missing: end.missing,
        duplicates: end.duplicates,
        resets: end.resets,
        faulty_clients: end.faulty,
        behind_at_end: behind,
        final_offsets: finals,
        publish_errors: published.errors,
        all_ok: false,
    };
    summary.all_ok = summary.subscribed == summary.clients
        && summary.resubscribed == expected
        && summary.caught_up == expected
        && summary.faulty_clients == 0
        && summary.behind_at_end == 0
        && summary.publish_errors == 0;
    Ok(summary)
}

/// The workers' results added up.
#[derive(Default)]
struct Totals {
    summary: storm_client::Summary,
    resubscribe: Histogram,
    reconnects: u64,
    refusals_before: u64,
    refusals_after: u64,
    connect_errors: u64,
    missing: u64,
    duplicates: u64,
    resets: u64,
    faulty: u64,
}

fn totals(results: &[Results]) -> Totals {
    let mut t = Totals::default();
    for r in results {
        let s = &r.summary;
        t.summary.dropped += s.dropped;
        t.summary.resubscribed += s.resubscribed;
        t.summary.caught_up += s.caught_up;
        t.summary.first_drop_ns = match (t.summary.first_drop_ns, s.first_drop_ns) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        t.summary.last_ack_ns = t.summary.last_ack_ns.max(s.last_ack_ns);
        t.summary.last_caught_ns = t.summary.last_caught_ns.max(s.last_caught_ns);
        t.summary
            .last_offsets
            .extend(s.last_offsets.iter().copied());
        t.resubscribe.merge(&r.resubscribe_us);
        t.reconnects += r.reconnects;
        t.refusals_before += r.refusals_before_restart;
        t.refusals_after += r.refusals_after_restart;
        t.connect_errors += r.connect_errors;
        t.missing += r.missing;
        t.duplicates += r.duplicates;
        t.resets += r.resets;
        t.faulty += r.faulty;
    }
    t
}

/// Clients whose last offset is not their channel's last published one
/// (`last_offsets`: `(channel, offset, clients)`; `finals` per channel).
fn behind(last_offsets: &[(usize, u64, u64)], finals: &[u64]) -> u64 {
    last_offsets
        .iter()
        .filter(|(channel, offset, _)| finals.get(*channel) != Some(offset))
        .map(|(_, _, clients)| clients)
        .sum()
}

fn print(s: &StormSummary) {
    let secs = |v: Option<f64>| v.map_or("NOT ALL".into(), |v| format!("{v:.2} s"));
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    let verdict = if s.all_ok { "every client" } else { "NOT ALL" };
    let rows: Vec<(&str, String)> = vec![
        ("scenario", "storm".into()),
        (
            "clients",
            format!(
                "{} subscribed of {} ({} refused, {} failed) through node 1, {} workers, {} channel(s), {:.1} events/s through node 0",
                s.subscribed, s.clients, s.refused_at_first, s.failed_at_first, s.workers, s.channels, s.rate
            ),
        ),
        (
            "stop",
            format!(
                "{:?}; old process gone {:.3} s after the signal; new one ready {} after its start; reconnect jitter {:.1} s",
                s.stop,
                s.down_s,
                s.ready_s.map_or("never".into(), |r| format!("{r:.3} s")),
                s.jitter_s
            )
            .to_lowercase(),
        ),
        (
            "verdict",
            format!(
                "{verdict}: {} dropped, {} resubscribed, {} caught up of {}",
                s.dropped, s.resubscribed, s.caught_up, s.subscribed
            ),
        ),
        ("last resubscribed", format!("{} after the signal", secs(s.last_resubscribed_s))),
        ("last caught up", format!("{} after the signal", secs(s.last_caught_up_s))),
        (
            "drop to ack, per client",
            format!(
                "p50 {}, p99 {}, max {}",
                ms(s.resubscribe_p50_ms),
                ms(s.resubscribe_p99_ms),
                ms(s.resubscribe_max_ms)
            ),
        ),
        (
            "new gateway CPU",
            format!(
                "{:.2} s until every client was back ({} at /readyz), {:.0} µs per reconnect-and-subscribe",
                s.gateway_cpu_s,
                s.gateway_cpu_at_ready_s.map_or("-".into(), |c| format!("{c:.2} s")),
                s.gateway_cpu_us_per_reconnect
            ),
        ),
        (
            "node 0 / Redis CPU",
            format!("{:.2} s / {:.2} s over the same span", s.publisher_node_cpu_s, s.redis_cpu_s),
        ),
        (
            "refusals",
            format!(
                "{} by the restarted gateway (429/503/error), {} by the stopping one; {} attempts without an answer (no listener yet, reset)",
                s.refusals_by_restarted, s.refusals_by_stopping, s.connect_errors
            ),
        ),
        (
            "offsets",
            format!(
                "{} missing, {} duplicated, {} resets, {} clients with any; {} clients behind the last offsets {:?} at the end",
                s.missing, s.duplicates, s.resets, s.faulty_clients, s.behind_at_end, s.final_offsets
            ),
        ),
        ("publish errors", s.publish_errors.to_string()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &rows {
        println!("  {k:<width$}  {v}");
    }
    match serde_json::to_string(s) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("chouquette-bench: cannot serialize the summary: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_behind_the_last_offset_are_counted() {
        let last = [(0, 10, 5), (0, 9, 1), (1, 7, 3), (1, u64::MAX, 2)];
        assert_eq!(behind(&last, &[10, 7]), 3);
        assert_eq!(behind(&last, &[10]), 6, "a channel with no final offset");
    }

    #[test]
    fn totals_take_the_earliest_drop_and_the_latest_ack() {
        let a = Results {
            summary: storm_client::Summary {
                first_drop_ns: 0,
                last_ack_ns: 50,
                resubscribed: 2,
                ..storm_client::Summary::default()
            },
            missing: 1,
            ..Results::default()
        };
        let b = Results {
            summary: storm_client::Summary {
                first_drop_ns: 20,
                last_ack_ns: 40,
                resubscribed: 3,
                ..storm_client::Summary::default()
            },
            resubscribe_us: vec![(5, 2)],
            ..Results::default()
        };
        let t = totals(&[a, b]);
        assert_eq!(t.summary.first_drop_ns, 20);
        assert_eq!(t.summary.last_ack_ns, 50);
        assert_eq!(t.summary.resubscribed, 5);
        assert_eq!(t.missing, 1);
        assert_eq!(t.resubscribe.quantile(1.0).map(|v| v.round()), Some(5.0));
    }
}
