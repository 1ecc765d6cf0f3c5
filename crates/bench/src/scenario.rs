//! One benchmark run: start the gateway, measure its baseline, connect the
//! workers, measure memory, then (for load scenarios) publish through a
//! warmup and a measured window and gather every figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use crate::abuse::Abuse;
use crate::cli::{Options, Scenario, ServerChoice};
use crate::fleet::Fleet;
use crate::gateway::{self, LimitsSpec};
use crate::histogram::Histogram;
use crate::idle_abuse;
use crate::pool::{self, Connected, Pool};
use crate::publisher::{self, Published};
use crate::report::{Held, Latency, Load, Memory, NodeFigures, Phase, Summary};
use crate::wire::{AppSpec, Command, Plan, Results, unix_nanos};
use crate::workload;

/// Time left for in-flight deliveries after the window and the publisher end.
pub(crate) const DRAIN: Duration = Duration::from_secs(2);
/// Workers are told the window this long before it starts.
const WINDOW_LEAD: Duration = Duration::from_millis(500);

/// Runs the scenario of `options`; the gateway and workers never outlive it.
pub async fn run(options: &Options) -> anyhow::Result<Summary> {
    let app = AppSpec::fresh("bornes");
    let binary = gateway::binary(options.gateway.as_deref())?;
    let limits = LimitsSpec {
        default_rates: options.scenario == Scenario::Abuse,
        extra: match options.scenario {
            Scenario::IdleAbuse => idle_abuse::limits(options),
            _ => String::new(),
        },
    };
    let fleet = Fleet::start(options, &binary, &app, &limits).await?;
    let summary = measure(options, &app, &fleet).await;
    let alive = fleet.stop(Duration::from_secs(30)).await;
    let mut summary = summary?;
    summary.gateway_ok &= alive;
    Ok(summary)
}

/// The time a worker may live: every phase, with room to spare.
fn lifetime(options: &Options) -> Duration {
    let connecting = connect_budget(options);
    connecting
        + options.settle
        + options.warmup
        + options.duration
        + options.pause_before_window.unwrap_or_default()
        + idle_abuse::extra_lifetime(options)
        + Duration::from_secs(120)
}

fn connect_budget(options: &Options) -> Duration {
    let at_rate = options.connections as f64 / f64::from(options.connect_rate.max(1));
    Duration::from_secs_f64(at_rate * 3.0 + 60.0)
}

async fn measure(options: &Options, app: &AppSpec, gateway: &Fleet) -> anyhow::Result<Summary> {
    sleep(Duration::from_millis(500)).await;
    let rss_baseline = gateway.rss()?;
    let targets = gateway.subscriber_targets();
    let plan = Plan {
        scenario: options.scenario,
        target: targets[0],
        app: app.clone(),
        first: 0,
        count: options.connections,
        per_source: options.per_source,
        connect_rate: options.connect_rate,
        lifetime: lifetime(options),
        abuse: None,
        hold: None,
        devices: None,
        channels: options.channels,
        storm: None,
    };
    if options.nodes > 1 {
        crate::plan::check(options)?;
    }
    let workers = options.worker_count();
    let mut plans = pool::split(&plan, workers);
    for (i, part) in plans.iter_mut().enumerate() {
        part.target = targets[i % targets.len()];
    }
    let mut pool = Pool::spawn(&plans)?;
    let started = Instant::now();
    let cpu_before = gateway.cpu_seconds()?;
    let connected = pool.wait_connected(connect_budget(options)).await?;
    let connect_s = started.elapsed().as_secs_f64();
    let connect_cpu_s = gateway.cpu_seconds()? - cpu_before;
    eprintln!(
        "{} connected, {} refused, {} failed in {connect_s:.1} s; settling",
        connected.connected, connected.refused, connected.failed
    );
    sleep(options.settle).await;
    let rss_connected = gateway.rss()?;
    let nodes = node_figures(gateway)?;
    let loaded = load_phases(options, app, gateway, &mut pool, &plan).await?;
    let results = pool.results(Duration::from_secs(30)).await?;
    pool.exit().await;
    let memory = Memory {
        rss_baseline,
        rss_connected,
        rss_per_connection: per_connection(rss_baseline, rss_connected, connected.connected),
        rss_total_per_connection: per_connection(0, rss_connected, connected.connected),
    };
    Ok(Summary {
        scenario: options.scenario,
        server: match options.server {
            ServerChoice::Gateway => "gateway",
            ServerChoice::Floor => "floor",
        },
        server_cpus: options.server_cpus.clone(),
        channels: options.channels.max(1),
        broker: options.broker,
        nodes: options.nodes.max(1),
        connections: options.connections,
        connected: connected.connected,
        refused: connected.refused,
        failed: connected.failed,
        dropped: results.iter().map(|r| r.dropped).sum(),
        workers,
        connect_s,
        connect_us_per_connection: connect_cpu_s * 1e6 / connected.connected.max(1) as f64,
        memory,
        rss_peak: gateway.peak_rss()?,
        load: loaded
            .window
            .map(|w| load(options, &w, connected, &results)),
        phases: loaded.phases,
        held: loaded.held,
        node_figures: nodes,
        gateway_ok: gateway.ready().await,
    })
}

/// Each node's RSS and open files once every connection has settled.
fn node_figures(gateway: &Fleet) -> anyhow::Result<Vec<NodeFigures>> {
    let rss = gateway.rss_per_node()?;
    let files = gateway.open_files()?;
    Ok(rss
        .into_iter()
        .zip(files)
        .map(|(rss, (open_files, open_files_limit))| NodeFigures {
            rss,
            open_files,
            open_files_limit,
        })
        .collect())
}

/// What the load part of a scenario measured.
#[derive(Default)]
struct Loaded {
    window: Option<Window>,
    phases: Option<Vec<Phase>>,
    held: Option<Vec<Held>>,
}

/// Runs the scenario's load, if it has one, once every subscriber is up.
async fn load_phases(
    options: &Options,
    app: &AppSpec,
    gateway: &Fleet,
    pool: &mut Pool,
    plan: &Plan,
) -> anyhow::Result<Loaded> {
    Ok(match options.scenario {
        Scenario::Idle
        | Scenario::Rpc
        | Scenario::Postgres
        | Scenario::NotifyBytes
        | Scenario::Notifications
        | Scenario::Storm
        | Scenario::Devices => Loaded::default(),
        Scenario::Broadcast | Scenario::Filtered => Loaded {
            window: Some(publish_window(options, app, gateway, pool).await?),
            ..Loaded::default()
        },
        Scenario::Abuse => Loaded {
            phases: Some(abuse_phases(options, app, gateway, pool, plan).await?),
            ..Loaded::default()
        },
        Scenario::IdleAbuse => {
            let (phases, held) = idle_abuse::phases(options, app, gateway, pool, plan).await?;
            Loaded {
                phases: Some(phases),
                held: Some(held),
                ..Loaded::default()
            }
        }
    })
}

fn per_connection(before: u64, after: u64, connections: usize) -> f64 {
    (after as f64 - before as f64) / connections.max(1) as f64
}

/// What happened in the measured window.
struct Window {
    start_ns: u64,
    end_ns: u64,
    published: Published,
    gateway_cpu_s: f64,
    gateway_user_cpu_s: f64,
    loadgen_cpu_s: f64,
    redis_cpu_s: Option<f64>,
}

/// Starts publishing to node 0 at the run's rate and waits out the warmup;
/// returns the stop flag and the publisher's task.
pub(crate) async fn start_publishing(
    options: &Options,
    app: &AppSpec,
    gateway: &Fleet,
) -> (Arc<AtomicBool>, JoinHandle<Published>) {
    let stop = Arc::new(AtomicBool::new(false));
    let plan = publisher::Plan {
        internal: gateway.internal,
        app: app.clone(),
        scenario: options.scenario,
        connections: options.connections,
        rate: options.event_rate(),
        every: options.publish_every,
        channels: options.channels,
        offsets: None,
    };
    let publishing = tokio::spawn(publisher::run(plan, stop.clone()));
    eprintln!(
        "publishing {:.1} events/s; warming up",
        options.event_rate()
    );
    sleep(options.warmup).await;
    (stop, publishing)
}

async fn publish_window(
    options: &Options,
    app: &AppSpec,
    gateway: &Fleet,
    pool: &mut Pool,
) -> anyhow::Result<Window> {
    let (stop, publishing) = start_publishing(options, app, gateway).await;
    if let Some(pause) = options.pause_before_window {
        eprintln!(
            "gateway pid {}: attach a profiler now ({pause:?})",
            gateway.pid
        );
        sleep(pause).await;
    }
    let start_ns = unix_nanos() + WINDOW_LEAD.as_nanos() as u64;
    let end_ns = start_ns + options.duration.as_nanos() as u64;
    pool.broadcast(&Command::Window { start_ns, end_ns })
        .await?;
    sleep(WINDOW_LEAD).await;
    let (gateway_cpu0, loadgen_cpu0) = (gateway.cpu_split()?, pool.cpu_seconds());
    let redis_cpu0 = gateway.redis_cpu_seconds()?;
    eprintln!("measuring for {:?}", options.duration);
    sleep(options.duration).await;
    let (gateway_cpu1, loadgen_cpu1) = (gateway.cpu_split()?, pool.cpu_seconds());
    let redis_cpu1 = gateway.redis_cpu_seconds()?;
    stop.store(true, Ordering::Relaxed);
    let published = publishing.await.context("publisher failed")?;
    sleep(DRAIN).await;
    Ok(Window {
        start_ns,
        end_ns,
        published,
        gateway_cpu_s: (gateway_cpu1.0 + gateway_cpu1.1) - (gateway_cpu0.0 + gateway_cpu0.1),
        gateway_user_cpu_s: gateway_cpu1.0 - gateway_cpu0.0,
        loadgen_cpu_s: loadgen_cpu1 - loadgen_cpu0,
        redis_cpu_s: redis_cpu1.zip(redis_cpu0).map(|(b, a)| b - a),
    })
}

/// The phases of `--scenario abuse`, in order: `None` is no abuse.
const PHASES: [Option<Abuse>; 5] = [
    None,
    Some(Abuse::Flood),
    None,
    Some(Abuse::Reconnect),
    Some(Abuse::Burn),
];

/// Publishes through every phase of the abuse scenario; measures each
/// phase's subscriber latency separately (histogram deltas between reports).
async fn abuse_phases(
    options: &Options,
    app: &AppSpec,
    gateway: &Fleet,
    pool: &mut Pool,
    plan: &Plan,
) -> anyhow::Result<Vec<Phase>> {
    let (stop, publishing) = start_publishing(options, app, gateway).await;
    let mut tally = Tally::default();
    let mut phases = Vec::new();
    for abuse in PHASES {
        let mut abuser = start_abuser(options, plan, abuse).await?;
        let name = phase_name(abuse);
        eprintln!("phase `{name}`: measuring for {:?}", options.duration);
        open_window(pool, options.duration).await?;
        let cpu0 = (
            gateway.cpu_seconds()?,
            abuser.as_ref().map(Pool::cpu_seconds),
        );
        sleep(options.duration).await;
        let cpu1 = (
            gateway.cpu_seconds()?,
            abuser.as_ref().map(Pool::cpu_seconds),
        );
        let abuse_results = match abuser.as_mut() {
            Some(p) => p
                .abuse_results(Duration::from_secs(10))
                .await?
                .first()
                .copied(),
            None => None,
        };
        if let Some(p) = abuser.take() {
            p.exit().await;
        }
        sleep(DRAIN).await;
        let (deliveries, latency) = tally.phase(pool).await?;
        let window_s = options.duration.as_secs_f64();
        phases.push(Phase {
            abuse: name.to_string(),
            deliveries,
            latency,
            gateway_cpu_percent: (cpu1.0 - cpu0.0) * 100.0 / window_s,
            abuser_cpu_percent: match (cpu0.1, cpu1.1) {
                (Some(a), Some(b)) => Some((b - a) * 100.0 / window_s),
                _ => None,
            },
            abuser: abuse_results,
        });
    }
    stop_publishing(stop, publishing).await?;
    Ok(phases)
}

/// Starts the abusive client of a phase, if it has one, and waits for its
/// abuse to reach a steady state.
async fn start_abuser(
    options: &Options,
    plan: &Plan,
    abuse: Option<Abuse>,
) -> anyhow::Result<Option<Pool>> {
    let Some(abuse) = abuse else {
        return Ok(None);
    };
    let abuser_plan = Plan {
        abuse: Some(abuse),
        count: 0,
        ..plan.clone()
    };
    let mut p = Pool::spawn_nice(&[abuser_plan], options.abuser_nice)?;
    p.wait_connected(Duration::from_secs(10)).await?;
    sleep(Duration::from_secs(1)).await;
    Ok(Some(p))
}

fn phase_name(abuse: Option<Abuse>) -> &'static str {
    abuse.map_or("none", |a| match a {
        Abuse::Flood => "flood",
        Abuse::Reconnect => "reconnect",
        Abuse::Burn => "burn",
    })
}

/// Tells the subscribers the next window, `length` long from shortly after
/// now, and waits for its start.
pub(crate) async fn open_window(pool: &mut Pool, length: Duration) -> anyhow::Result<()> {
    let start_ns = unix_nanos() + WINDOW_LEAD.as_nanos() as u64;
    let end_ns = start_ns + length.as_nanos() as u64;
    pool.broadcast(&Command::Window { start_ns, end_ns })
        .await?;
    sleep(WINDOW_LEAD).await;
    Ok(())
}

/// Stops the publisher and says if some of its batches failed.
pub(crate) async fn stop_publishing(
    stop: Arc<AtomicBool>,
    publishing: JoinHandle<Published>,
) -> anyhow::Result<()> {
    stop.store(true, Ordering::Relaxed);
    let published = publishing.await.context("publisher failed")?;
    if published.errors > 0 {
        eprintln!(
            "{} publish batches failed; last: {:?}",
            published.errors, published.last_error
        );
    }
    Ok(())
}

/// The subscribers' cumulative deliveries and latencies at the end of the
/// last phase: a phase is measured as the difference.
#[derive(Default)]
pub(crate) struct Tally {
    histogram: Histogram,
    delivered: u64,
}

impl Tally {
    /// The deliveries and latency of the phase that just ended.
    pub(crate) async fn phase(
        &mut self,
        pool: &mut Pool,
    ) -> anyhow::Result<(u64, Option<Latency>)> {
        let results = pool.results(Duration::from_secs(30)).await?;
        let mut now = Histogram::default();
        for r in &results {
            now.merge(&r.histogram);
        }
        let delivered: u64 = results.iter().map(|r| r.in_window).sum();
        let phase = (
            delivered.saturating_sub(self.delivered),
            Latency::from_histogram(&now.since(&self.histogram)),
        );
        self.histogram = now;
        self.delivered = delivered;
        Ok(phase)
    }
}

fn load(options: &Options, window: &Window, connected: Connected, results: &[Results]) -> Load {
    let window_s = (window.end_ns - window.start_ns) as f64 / 1e9;
    let events = window.published.in_window(window.start_ns, window.end_ns);
    let fan_out = workload::fan_out(
        options.scenario,
        connected.connected,
        options.connections,
        options.channels,
    );
    let deliveries: u64 = results.iter().map(|r| r.in_window).sum();
    let mut histogram = Histogram::default();
    for r in results {
        histogram.merge(&r.histogram);
    }
    if let Some(reason) = &window.published.last_error {
        eprintln!(
            "{} publish batches failed; last: {reason}",
            window.published.errors
        );
    }
    Load {
        rate: options.event_rate(),
        window_s,
        events_published: events,
        events_total: window.published.total(),
        deliveries_expected: (events as f64 * fan_out).round() as u64,
        deliveries,
        delivered_per_s: deliveries as f64 / window_s,
        latency: Latency::from_histogram(&histogram),
        gateway_cpu_s: window.gateway_cpu_s,
        gateway_cpu_us_per_delivery: window.gateway_cpu_s * 1e6 / deliveries.max(1) as f64,
        gateway_user_us_per_delivery: window.gateway_user_cpu_s * 1e6 / deliveries.max(1) as f64,
        gateway_cpu_percent: window.gateway_cpu_s * 100.0 / window_s,
        loadgen_cpu_percent: window.loadgen_cpu_s * 100.0 / window_s,
        publish_errors: window.published.errors,
        redis_cpu_us_per_delivery: window
            .redis_cpu_s
            .map(|s| s * 1e6 / deliveries.max(1) as f64),
    }
}
