//! `--scenario devices` (issue 14, "Load"): `-n` MQTT devices reporting
//! every `--device-interval`, plus one device flushing `--flush-messages`
//! of buffered data after a reconnect, through a Mosquitto of the bench's
//! own to a gateway whose `[[sources.mqtt]]` maps `devices/+/telemetry` to
//! the channel `devices` (keyword and key `device:{1}`, JSON).
//!
//! The regular devices (one rumqttc client each) run in worker processes
//! (`device_load`, [`DEVICES_PER_WORKER`] each by default), connected at
//! `--connect-rate` before the load, and publish QoS 1 on phases spread
//! uniformly over the interval, for `--warmup` then the window. In this
//! process, at a third of the window, the flushing device connects and
//! sends its messages as fast as its in-flight window of [`FLUSH_WINDOW`]
//! lets it. A dashboard (one WebSocket subscriber to everything on the
//! channel, on its own thread) measures each message's delay from send to
//! receipt, for regular messages sent in the window outside the flush,
//! those sent during it (from its first message sent to its last
//! received), and the flush's own; and how long the flush took to be
//! delivered entirely. Every message Mosquitto acknowledged (PUBACK) must
//! reach the dashboard once: lost and duplicated messages are counted by
//! `seq`.
//!
//! The generator is checked too: when it sent fewer messages in the window
//! than were due, or late against its schedule, the delays measure the
//! bench, not the gateway, and the run fails after its report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use crate::cli::{Options, Scenario};
use crate::dashboard::{self, Dashboard, Progress, Receipts};
use crate::device::{Counters, Device, Sent, topic};
use crate::device_load::{self, Share, due_before, instant_at, nanos};
use crate::gateway::{self, BrokerSpec, Gateway, LimitsSpec};
use crate::histogram::Histogram;
use crate::http::Http;
use crate::mqtt_server::MqttServer;
use crate::pg_load::{self, Exactness, Tally};
use crate::pool::{self, Pool};
use crate::procfs;
use crate::report::Latency;
use crate::wire::{AppSpec, Command, Plan, unix_nanos};

/// The flushing device's QoS 1 in-flight window (Mosquitto's own default
/// for what it sends, and a common device setting).
pub const FLUSH_WINDOW: u16 = 20;
/// Longest time the flush may take to be sent.
const FLUSH_LIMIT: Duration = Duration::from_secs(300);
/// How long the dashboard may take, after the load and the flush, to
/// receive the rest.
const DRAIN: Duration = Duration::from_secs(15);
/// Longest wait for the gateway's MQTT source to be subscribed.
const SOURCE_UP_LIMIT: Duration = Duration::from_secs(20);
/// Devices per worker process by default: well under the 20,000 files a
/// process may open, and few enough for one thread to keep the schedule.
pub const DEVICES_PER_WORKER: usize = 5_000;
/// From telling the workers the window to the load's start.
const LEAD: Duration = Duration::from_secs(1);
/// Files Mosquitto needs besides one per device: its listener, log,
/// epoll, the gateway's and the flushing device's connections.
const MOSQUITTO_SPARE_FILES: u64 = 32;
/// The generator keeps up when it sends at least this share of the
/// messages due in the window (and 99 % of them within `--max-send-lag`
/// of their schedule).
const MIN_SENT_SHARE: f64 = 0.99;

/// When the load runs, Unix ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timeline {
    /// The devices start publishing (the warmup before the window).
    load_start_ns: u64,
    /// The measured window starts.
    start_ns: u64,
    /// The window and the regular load end.
    end_ns: u64,
    /// The flushing device connects and starts.
    flush_ns: u64,
}

impl Timeline {
    /// The load starting `lead` after `now_ns`.
    fn new(options: &Options, now_ns: u64, lead: Duration) -> Timeline {
        let load_start_ns = now_ns + nanos(lead);
        let start_ns = load_start_ns + nanos(options.warmup);
        let window = nanos(options.duration);
        Timeline {
            load_start_ns,
            start_ns,
            end_ns: start_ns + window,
            flush_ns: start_ns + window / 3,
        }
    }

    fn holds(&self, t_ns: u64) -> bool {
        t_ns >= self.start_ns && t_ns < self.end_ns
    }

    fn window(&self) -> (u64, u64) {
        (self.start_ns, self.end_ns)
    }
}

/// What the flush did and how it was received.
#[derive(Debug, Default, Serialize)]
struct FlushFigures {
    messages: u64,
    sent: u64,
    acked: u64,
    received: u64,
    /// When its first message was sent, seconds after the window started.
    started_s: Option<f64>,
    /// From its first message sent to its last sent.
    sending_s: Option<f64>,
    /// From its first message sent until every one was received (`None`:
    /// some never were).
    delivered_s: Option<f64>,
    delay: Option<Latency>,
    exactness: Exactness,
}

/// The load generator against its schedule, over the window.
#[derive(Debug, Default, Serialize)]
struct Generator {
    /// Worker processes driving the regular devices.
    workers: usize,
    /// Regular messages due in the window, per second: `-n / interval`.
    target_per_s: f64,
    /// Regular messages sent in the window, per second.
    sent_per_s: f64,
    /// Messages due in the window.
    due: u64,
    /// How late against their schedule the window's messages were sent.
    lag: Option<Latency>,
    /// Why the generator did not produce the intended load (empty: it did).
    shortfalls: Vec<String>,
}

/// The measured figures of one run.
#[derive(Debug, Serialize)]
struct DevicesSummary {
    devices: usize,
    connected: usize,
    connect_s: f64,
    device_interval_s: f64,
    window_s: f64,
    generator: Generator,
    /// Regular messages sent in the window.
    sent: u64,
    /// Furthest a regular message was sent behind its schedule, ms.
    max_lag_ms: f64,
    /// Of those, acknowledged by Mosquitto.
    acked: u64,
    messages_per_s: f64,
    /// Regular messages sent in the window the dashboard received.
    delivered: u64,
    delay_quiet: Option<Latency>,
    delay_during_flush: Option<Latency>,
    flush: FlushFigures,
    /// Every regular message acknowledged in the run (warmup included)
    /// against the dashboard's receipts.
    exactness: Exactness,
    /// From the load's end (or the flush's last send, if later) until the
    /// dashboard had every acknowledged message (`None`: not within
    /// [`DRAIN`]).
    drained_s: Option<f64>,
    skipped: u64,
    dropped: u64,
    connection_errors: u64,
    unrecorded: u64,
    other_frames: u64,
    gateway_cpu_percent: f64,
    mosquitto_cpu_percent: f64,
    /// This process and the workers.
    bench_cpu_percent: f64,
    gateway_rss_before: u64,
    gateway_rss_after: u64,
    gateway_rss_peak: u64,
    gateway_rss_per_device: f64,
    mosquitto_rss: u64,
    mosquitto_rss_per_device: f64,
    /// Files open once every device connected, and the most allowed.
    mosquitto_open_files: u64,
    mosquitto_open_files_limit: u64,
    gateway_open_files: u64,
}

/// Runs the scenario and prints its report; fails after it when the load
/// generator did not keep up.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let mqtt = MqttServer::start().await?;
    let mosquitto_open_files_limit = check_mosquitto_room(&mqtt, options.connections)?;
    let app = AppSpec::fresh("devices");
    let binary = gateway::binary(options.gateway.as_deref())?;
    let gw = Gateway::start_with(
        &binary,
        &app,
        options.outbox_capacity,
        &LimitsSpec::default(),
        &BrokerSpec::Memory,
        &source_toml(&mqtt.url(), &app),
    )
    .await?;
    wait_source_up(&gw).await?;
    let dashboard = Dashboard::start(gw.public, app.clone()).await?;
    let mqtt_rss_empty = mqtt.rss()?;
    let workers = worker_count(options);
    let plans = plans(options, &app, gw.public, mqtt.port, workers);
    eprintln!(
        "connecting {} devices at {}/s from {workers} worker processes",
        options.connections, options.connect_rate
    );
    let began = Instant::now();
    let mut pool = Pool::spawn(&plans)?;
    let budget = device_load::connect_budget(plans[0].count, plans[0].connect_rate);
    let connected = pool
        .wait_connected(budget + Duration::from_secs(30))
        .await?
        .connected;
    let connect_s = began.elapsed().as_secs_f64();
    eprintln!(
        "{connected} of {} devices connected in {connect_s:.1} s",
        options.connections
    );
    if connected == 0 && options.connections > 0 {
        bail!("no device could connect to mosquitto on port {}", mqtt.port);
    }
    let mqtt_rss_connected = mqtt.rss()?;
    let mosquitto_open_files = procfs::open_files(mqtt.pid)?;
    let gateway_open_files = procfs::open_files(gw.pid)?;
    let gateway_rss_before = gw.rss()?;
    let timeline = Timeline::new(options, unix_nanos(), LEAD);
    pool.broadcast(&Command::Window {
        start_ns: timeline.start_ns,
        end_ns: timeline.end_ns,
    })
    .await?;
    let flushing = Arc::new(Counters::default());
    let flush_task = tokio::spawn(flush(
        mqtt.port,
        options.connections,
        options.flush_messages,
        options.device_interval,
        timeline,
        flushing.clone(),
    ));
    let cpu = measure_cpu(&gw, &mqtt, &pool, timeline).await?;
    eprintln!("window over; waiting for the flush to be sent");
    let Flushed {
        device: flush_device,
        run: flushed,
    } = flush_task.await.context("the flush panicked")??;
    let load_end_ns = timeline.end_ns.max(flushed.last_sent_ns.unwrap_or(0));
    let (drained_s, results) = drain(
        &dashboard.progress,
        &mut pool,
        &flushing,
        load_end_ns,
        flushed.sent,
    )
    .await?;
    pool.exit().await;
    if drained_s.is_none() {
        print_source_metrics(&gw).await;
    }
    let gateway_rss_after = gw.rss()?;
    let gateway_rss_peak = gw.peak_rss()?;
    let mosquitto_rss = mqtt.rss()?;
    let flush_acked = flush_device.stop();
    let receipts = dashboard.finish()?;
    gw.stop(Duration::from_secs(5)).await;
    let devices_n = options.connections.max(1) as f64;
    let mut summary = DevicesSummary {
        devices: options.connections,
        connected,
        connect_s,
        device_interval_s: options.device_interval.as_secs_f64(),
        window_s: options.duration.as_secs_f64(),
        generator: Generator::default(),
        sent: results.iter().map(|r| r.sent_in_window).sum(),
        max_lag_ms: results.iter().map(|r| r.max_lag_us).max().unwrap_or(0) as f64 / 1e3,
        acked: results.iter().map(|r| r.acked_in_window).sum(),
        messages_per_s: 0.0,
        delivered: 0,
        delay_quiet: None,
        delay_during_flush: None,
        flush: FlushFigures::default(),
        exactness: Exactness::default(),
        drained_s,
        skipped: results.iter().map(|r| r.skipped).sum(),
        dropped: results.iter().map(|r| r.dropped).sum(),
        connection_errors: results.iter().map(|r| r.connection_errors).sum(),
        unrecorded: receipts.unrecorded,
        other_frames: receipts.other_frames,
        gateway_cpu_percent: cpu.gateway,
        mosquitto_cpu_percent: cpu.mosquitto,
        bench_cpu_percent: cpu.bench,
        gateway_rss_before,
        gateway_rss_after,
        gateway_rss_peak,
        gateway_rss_per_device: (gateway_rss_after as f64 - gateway_rss_before as f64) / devices_n,
        mosquitto_rss,
        mosquitto_rss_per_device: (mqtt_rss_connected as f64 - mqtt_rss_empty as f64) / devices_n,
        mosquitto_open_files,
        mosquitto_open_files_limit,
        gateway_open_files,
    };
    summary.generator = generator(options, timeline, workers, connected, &results);
    summary.flush = flush_figures(options, timeline, &flushed, &flush_acked, &receipts);
    let flush_started_s = summary.flush.started_s;
    fill_regular(&mut summary, timeline, &results, &receipts, flush_started_s);
    print(&summary);
    if !summary.generator.shortfalls.is_empty() {
        bail!(
            "the load generator did not produce the intended load ({}): the delays above \
             measure the bench, not the gateway; try more --workers or a quieter machine",
            summary.generator.shortfalls.join("; ")
        );
    }
    Ok(())
}

/// Worker processes for the regular devices: `--workers`, or one per
/// [`DEVICES_PER_WORKER`].
fn worker_count(options: &Options) -> usize {
    options
        .workers
        .unwrap_or_else(|| options.connections.div_ceil(DEVICES_PER_WORKER))
        .clamp(1, options.connections.max(1))
}

/// The workers' plans: consecutive devices each, the connect rate shared.
fn plans(
    options: &Options,
    app: &AppSpec,
    gateway: SocketAddr,
    mqtt_port: u16,
    workers: usize,
) -> Vec<Plan> {
    let budget = device_load::connect_budget(
        options.connections.div_ceil(workers.max(1)),
        (options.connect_rate / workers.max(1) as u32).max(1),
    );
    let plan = Plan {
        scenario: Scenario::Devices,
        target: gateway,
        app: app.clone(),
        first: 0,
        count: options.connections,
        per_source: options.per_source,
        connect_rate: options.connect_rate,
        lifetime: budget
            + LEAD
            + options.warmup
            + options.duration
            + FLUSH_LIMIT
            + DRAIN
            + Duration::from_secs(60),
        abuse: None,
        hold: None,
        channels: 1,
        storm: None,
        devices: Some(Share {
            mqtt_port,
            total: options.connections,
            interval: options.device_interval,
            warmup: options.warmup,
        }),
    };
    pool::split(&plan, workers)
}

/// Mosquitto is one process holding one file per connection: checks that
/// its open-file limit leaves room for `devices` (and the gateway, the
/// flushing device, its own files); the limit.
fn check_mosquitto_room(mqtt: &MqttServer, devices: usize) -> anyhow::Result<u64> {
    let limit = procfs::open_files_limit(mqtt.pid)?;
    let needed = devices as u64 + MOSQUITTO_SPARE_FILES;
    if needed > limit {
        bail!(
            "mosquitto may open {limit} files (it inherits this process's limit, raised to \
             the hard limit: `ulimit -Hn`); {devices} devices need about {needed}: at most {} \
             devices here",
            limit.saturating_sub(MOSQUITTO_SPARE_FILES)
        );
    }
    Ok(limit)
}

/// The generator's figures, and what it fell short of: devices that never
/// connected, fewer messages sent in the window than due, or sent late.
fn generator(
    options: &Options,
    t: Timeline,
    workers: usize,
    connected: usize,
    results: &[device_load::Results],
) -> Generator {
    let window_s = (t.end_ns - t.start_ns) as f64 / 1e9;
    let due = due_before(
        t.load_start_ns,
        t.end_ns,
        options.connections,
        options.device_interval,
    ) - due_before(
        t.load_start_ns,
        t.start_ns,
        options.connections,
        options.device_interval,
    );
    let sent: u64 = results.iter().map(|r| r.sent_in_window).sum();
    let mut lag = Histogram::default();
    for r in results {
        lag.merge(&r.lag);
    }
    let lag = Latency::from_histogram(&lag);
    let mut shortfalls = Vec::new();
    if connected < options.connections {
        shortfalls.push(format!(
            "only {connected} of {} devices connected",
            options.connections
        ));
    }
    if (sent as f64) < due as f64 * MIN_SENT_SHARE {
        shortfalls.push(format!(
            "sent {sent} of the {due} messages due in the window ({:.0}/s of {:.0}/s)",
            sent as f64 / window_s,
            due as f64 / window_s
        ));
    }
    let limit_ms = options.max_send_lag.as_secs_f64() * 1e3;
    if let Some(l) = lag.as_ref().filter(|l| l.p99_ms > limit_ms) {
        shortfalls.push(format!(
            "sent late: p99 {:.1} ms behind schedule (limit {limit_ms:.0} ms, --max-send-lag)",
            l.p99_ms
        ));
    }
    Generator {
        workers,
        target_per_s: due as f64 / window_s,
        sent_per_s: sent as f64 / window_s,
        due,
        lag,
        shortfalls,
    }
}

/// The `[[sources.mqtt]]` of the gateway: every device's telemetry to the
/// app's channel, keyword and last-state key from the device id.
fn source_toml(url: &str, app: &AppSpec) -> String {
    format!(
        "\n[[sources.mqtt]]\nurl = \"{url}\"\nclient_id = \"chouquette-bench\"\n\n\
         [[sources.mqtt.topics]]\nfilter = \"devices/+/telemetry\"\napp = \"{app_id}\"\n\
         channel = \"{channel}\"\nevent_kind = \"telemetry\"\nkeywords = [\"device:{{1}}\"]\n\
         key = \"device:{{1}}\"\nformat = \"json\"\n",
        app_id = app.app,
        channel = app.channel,
    )
}

/// Polls the gateway's metrics until its MQTT source is connected and
/// subscribed (`/readyz` answers 200 before: the source's state is a line
/// in it, not a refusal).
async fn wait_source_up(gw: &Gateway) -> anyhow::Result<()> {
    let http = Http::default();
    let url = format!("http://{}/metrics", gw.internal);
    let began = Instant::now();
    loop {
        let (status, text) = http.get(&url).await?;
        if status == 200 && source_up(&text) {
            return Ok(());
        }
        if began.elapsed() > SOURCE_UP_LIMIT {
            bail!(
                "the gateway's MQTT source was not up within {} s",
                SOURCE_UP_LIMIT.as_secs()
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Prints the gateway's MQTT source metrics to stderr: where messages
/// stopped, when some never reached the dashboard.
async fn print_source_metrics(gw: &Gateway) {
    let url = format!("http://{}/metrics", gw.internal);
    if let Ok((_, text)) = Http::default().get(&url).await {
        for line in text.lines().filter(|l| l.starts_with("chouquette_mqtt_")) {
            eprintln!("gateway: {line}");
        }
    }
}

/// Whether a Prometheus page says an MQTT source is up.
fn source_up(metrics: &str) -> bool {
    metrics
        .lines()
        .filter(|l| l.starts_with("chouquette_mqtt_up{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .any(|v| v >= 1.0)
}

/// The flushing device, and what it did.
struct Flushed {
    device: Device,
    run: FlushRun,
}

/// What the flushing device sent.
#[derive(Debug, Default, Clone, Copy)]
struct FlushRun {
    sent: u64,
    first_sent_ns: Option<u64>,
    last_sent_ns: Option<u64>,
}

/// At a third of the window, device `index` connects and sends `messages`
/// buffered readings (one per `interval` of the hours it was away), as fast
/// as its in-flight window lets it.
async fn flush(
    port: u16,
    index: usize,
    messages: u64,
    interval: Duration,
    timeline: Timeline,
    counters: Arc<Counters>,
) -> anyhow::Result<Flushed> {
    sleep_until(instant_at(timeline.flush_ns)).await;
    let mut device = Device::connect(port, index, FLUSH_WINDOW, counters.clone());
    if !device.wait_connected(Duration::from_secs(10)).await {
        bail!("the flushing device {} could not connect", topic(index));
    }
    let interval_s = interval.as_secs().max(1);
    let away_from_s = (unix_nanos() / 1_000_000_000).saturating_sub(messages * interval_s);
    eprintln!("flushing {messages} buffered messages");
    let deadline = Instant::now() + FLUSH_LIMIT;
    let mut flushed = Flushed {
        device,
        run: FlushRun::default(),
    };
    for seq in 1..=messages {
        let at_s = away_from_s + (seq - 1) * interval_s;
        let sending = flushed.device.send(seq, at_s, true, &counters);
        match timeout_at(deadline, sending).await {
            Ok(Some(sent_ns)) => {
                flushed.run.sent += 1;
                flushed.run.first_sent_ns.get_or_insert(sent_ns);
                flushed.run.last_sent_ns = Some(sent_ns);
            }
            Ok(None) => {}
            Err(_) => {
                eprintln!("the flush was not sent within {} s", FLUSH_LIMIT.as_secs());
                break;
            }
        }
    }
    Ok(flushed)
}

/// CPU over the window, percent of one core.
struct Cpu {
    gateway: f64,
    mosquitto: f64,
    bench: f64,
}

async fn measure_cpu(
    gw: &Gateway,
    mqtt: &MqttServer,
    pool: &Pool,
    t: Timeline,
) -> anyhow::Result<Cpu> {
    let me = std::process::id();
    let bench = || -> anyhow::Result<f64> { Ok(procfs::cpu_seconds(me)? + pool.cpu_seconds()) };
    sleep_until(instant_at(t.start_ns)).await;
    eprintln!(
        "measuring for {:.0} s",
        (t.end_ns - t.start_ns) as f64 / 1e9
    );
    let before = (gw.cpu_seconds()?, mqtt.cpu_seconds()?, bench()?);
    sleep_until(instant_at(t.end_ns)).await;
    let after = (gw.cpu_seconds()?, mqtt.cpu_seconds()?, bench()?);
    let window_s = (t.end_ns - t.start_ns) as f64 / 1e9;
    let percent = |a: f64, b: f64| ((b - a) * 1000.0 / window_s).round() / 10.0;
    Ok(Cpu {
        gateway: percent(before.0, after.0),
        mosquitto: percent(before.1, after.1),
        bench: percent(before.2, after.2),
    })
}

/// Waits until every worker's load is over and the dashboard received as
/// many messages as were acknowledged, and every flushed message sent;
/// seconds after `end_ns` (`None`: not within [`DRAIN`]), and the workers'
/// last results. The condition must still hold a second after `end_ns`,
/// for the last acknowledgements to be counted; the time given is when it
/// first held.
async fn drain(
    progress: &Progress,
    pool: &mut Pool,
    flushing: &Counters,
    end_ns: u64,
    flush_sent: u64,
) -> anyhow::Result<(Option<f64>, Vec<device_load::Results>)> {
    let deadline = Instant::now() + DRAIN;
    let mut since: Option<u64> = None;
    loop {
        let results = pool.device_results(Duration::from_secs(10)).await?;
        let acked: u64 = results.iter().map(|r| r.acked).sum();
        let regular_in = progress.regular.load(Ordering::Relaxed);
        let flush_in = progress.flush.load(Ordering::Relaxed);
        let now = unix_nanos();
        if results.iter().all(|r| r.done)
            && regular_in >= acked
            && flush_in >= flushing.acked.load(Ordering::Relaxed).max(flush_sent)
        {
            let first = *since.get_or_insert(now);
            if now >= end_ns + 1_000_000_000 {
                return Ok((Some(first.saturating_sub(end_ns) as f64 / 1e9), results));
            }
        } else {
            since = None;
        }
        if Instant::now() >= deadline {
            return Ok((None, results));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Counts per acknowledged message against the dashboard's tally.
fn exactness(acked: &[Sent], tally: &Tally) -> Exactness {
    let mut seqs: Vec<u64> = acked.iter().map(|s| s.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    pg_load::check(&seqs, tally)
}

fn flush_figures(
    options: &Options,
    t: Timeline,
    flushed: &FlushRun,
    acked: &[Sent],
    receipts: &Receipts,
) -> FlushFigures {
    let exactness = exactness(acked, &receipts.flush);
    let received = acked.len() as u64 - exactness.lost + exactness.unexpected;
    let seconds = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e9;
    let complete = flushed.sent == options.flush_messages && received >= flushed.sent;
    let mut delays = Histogram::default();
    delays.merge(&receipts.flush_delays);
    FlushFigures {
        messages: options.flush_messages,
        sent: flushed.sent,
        acked: acked.len() as u64,
        received,
        started_s: flushed
            .first_sent_ns
            .map(|first| (first as f64 - t.start_ns as f64) / 1e9),
        sending_s: flushed
            .first_sent_ns
            .zip(flushed.last_sent_ns)
            .map(|(a, b)| seconds(a, b)),
        delivered_s: flushed
            .first_sent_ns
            .zip(receipts.flush_last_received_ns)
            .filter(|_| complete)
            .map(|(a, b)| seconds(a, b)),
        delay: Latency::from_histogram(&delays),
        exactness,
    }
}

/// The regular messages' figures, the flush's span being known.
fn fill_regular(
    s: &mut DevicesSummary,
    t: Timeline,
    results: &[device_load::Results],
    receipts: &Receipts,
    flush_started_s: Option<f64>,
) {
    let span = flush_started_s.map(|started| {
        let first = t.start_ns as f64 + started * 1e9;
        let last = receipts.flush_last_received_ns.unwrap_or(t.end_ns);
        (first as u64, last)
    });
    let (quiet, during) = dashboard::delays(&receipts.samples, t.window(), span);
    s.messages_per_s = s.acked as f64 / s.window_s.max(1e-9);
    s.delivered = receipts
        .samples
        .iter()
        .filter(|r| t.holds(r.sent_ns))
        .count() as u64;
    s.delay_quiet = Latency::from_histogram(&quiet);
    s.delay_during_flush = Latency::from_histogram(&during);
    let mut seqs: Vec<u64> = results
        .iter()
        .flat_map(|r| device_load::expand(&r.acked_seqs))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    s.exactness = pg_load::check(&seqs, &receipts.regular);
}

fn show(l: &Option<Latency>) -> String {
    l.as_ref().map_or("- (none received)".into(), |l| {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        )
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The generator's rate next to its target; its shortfalls in capitals.
fn print_generator(g: &Generator, max_lag_ms: f64) {
    let lag = g.lag.as_ref().map_or("-".into(), |l| {
        format!("p50 {:.2} ms, p99 {:.2} ms", l.p50_ms, l.p99_ms)
    });
    println!(
        "bench generator          {:.0}/s sent of {:.0}/s due ({} workers); late against schedule {lag}, max {max_lag_ms:.1} ms",
        g.sent_per_s, g.target_per_s, g.workers
    );
    for shortfall in &g.shortfalls {
        println!("GENERATOR FELL SHORT     {shortfall}");
    }
}

fn print(s: &DevicesSummary) {
    let f = &s.flush;
    println!(
        "scenario devices: {} devices ({} connected in {:.1} s), one message every {:.1} s each, {:.0} s window",
        s.devices, s.connected, s.connect_s, s.device_interval_s, s.window_s
    );
    println!(
        "regular messages         {:.0}/s acknowledged ({} sent, {} acked, {} received in the window; {} skipped, {} dropped, {} connection errors)",
        s.messages_per_s, s.sent, s.acked, s.delivered, s.skipped, s.dropped, s.connection_errors
    );
    print_generator(&s.generator, s.max_lag_ms);
    println!("delay outside the flush  {}", show(&s.delay_quiet));
    println!("delay during the flush   {}", show(&s.delay_during_flush));
    println!("delay of the flush       {}", show(&f.delay));
    let started = f.started_s.map_or("-".into(), |v| format!("{v:.1} s"));
    let sending = f.sending_s.map_or("-".into(), |v| format!("{v:.2} s"));
    match f.delivered_s {
        Some(d) => println!(
            "flush                    {} messages delivered entirely in {d:.2} s (sent in {sending}, from {started} into the window)",
            f.messages
        ),
        None => println!(
            "flush                    NOT delivered entirely: {} of {} sent, {} acked, {} received (from {started} into the window)",
            f.sent, f.messages, f.acked, f.received
        ),
    }
    let e = &s.exactness;
    let fe = &f.exactness;
    println!(
        "exactly once             regular: {} lost, {} duplicated, {} unexpected; flush: {} lost, {} duplicated, {} unexpected",
        e.lost, e.duplicated, e.unexpected, fe.lost, fe.duplicated, fe.unexpected
    );
    match s.drained_s {
        Some(d) => println!("all delivered            {d:.2} s after the load ended"),
        None => println!(
            "all delivered            NOT within {} s after the load ended",
            DRAIN.as_secs()
        ),
    }
    println!(
        "CPU                      gateway {:.0}%, mosquitto {:.0}%, bench {:.0}% of one core",
        s.gateway_cpu_percent, s.mosquitto_cpu_percent, s.bench_cpu_percent
    );
    println!(
        "gateway RSS              {} before the load, {} after ({:.0} B per device), peak {}",
        mib(s.gateway_rss_before),
        mib(s.gateway_rss_after),
        s.gateway_rss_per_device,
        mib(s.gateway_rss_peak)
    );
    println!(
        "mosquitto RSS            {} ({:.0} B per device connection)",
        mib(s.mosquitto_rss),
        s.mosquitto_rss_per_device
    );
    println!(
        "open files               mosquitto {} (limit {}), gateway {}",
        s.mosquitto_open_files, s.mosquitto_open_files_limit, s.gateway_open_files
    );
    if s.unrecorded > 0 || s.other_frames > 0 {
        println!(
            "dashboard                {} delays not recorded (over {}), {} frames not understood",
            s.unrecorded,
            dashboard::MAX_SAMPLES,
            s.other_frames
        );
    }
    println!("{}", serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::AtomicHistogram;
    use clap::Parser;

    fn options(args: &[&str]) -> Options {
        let mut argv = vec!["chouquette-bench", "--scenario", "devices"];
        argv.extend_from_slice(args);
        crate::cli::Cli::parse_from(argv).options
    }

    #[test]
    fn defaults_are_the_issues_load() {
        let o = options(&[]);
        assert_eq!(o.connections, 3000);
        assert_eq!(o.device_interval, Duration::from_secs(5));
        assert_eq!(o.flush_messages, 3600);
        assert!((o.event_rate() - 600.0).abs() < 1e-9);
        assert_eq!(options(&["-n", "19000"]).connections, 19000);
        let idle = crate::cli::Cli::parse_from(["chouquette-bench", "--scenario", "idle"]);
        assert_eq!(
            idle.options.connections, 1000,
            "other scenarios keep theirs"
        );
    }

    #[test]
    fn the_flush_starts_at_a_third_of_the_window() {
        let o = options(&["--duration", "30s", "--warmup", "3s"]);
        let t = Timeline::new(&o, 1_000, Duration::from_secs(1));
        assert_eq!(t.load_start_ns, 1_000_001_000);
        assert_eq!(t.start_ns, 4_000_001_000);
        assert_eq!(t.end_ns, 34_000_001_000);
        assert_eq!(t.flush_ns, 14_000_001_000);
        assert!(t.holds(t.start_ns) && !t.holds(t.end_ns));
    }

    #[test]
    fn devices_are_spread_over_worker_processes() {
        assert_eq!(worker_count(&options(&[])), 1);
        assert_eq!(worker_count(&options(&["-n", "19000"])), 4);
        assert_eq!(worker_count(&options(&["-n", "300", "--workers", "3"])), 3);
        assert_eq!(worker_count(&options(&["-n", "2", "--workers", "8"])), 2);
        let o = options(&["-n", "19000"]);
        let app = AppSpec {
            app: "a".into(),
            channel: "c".into(),
            secret: "s".into(),
            api_key: "k".into(),
        };
        let plans = plans(&o, &app, SocketAddr::from(([127, 0, 0, 1], 1)), 1883, 4);
        let counts: Vec<(usize, usize)> = plans.iter().map(|p| (p.first, p.count)).collect();
        assert_eq!(
            counts,
            vec![(0, 4750), (4750, 4750), (9500, 4750), (14250, 4750)]
        );
        for p in &plans {
            assert_eq!(p.connect_rate, 500);
            let share = p.devices.expect("a device plan");
            assert_eq!((share.total, share.mqtt_port), (19_000, 1883));
            assert!(p.lifetime > o.warmup + o.duration + FLUSH_LIMIT + DRAIN);
        }
    }

    fn results(sent_in_window: u64, lag_ms: u64) -> device_load::Results {
        let lag = AtomicHistogram::default();
        for _ in 0..sent_in_window {
            lag.record(lag_ms * 1000);
        }
        device_load::Results {
            sent_in_window,
            lag: lag.snapshot(),
            done: true,
            ..device_load::Results::default()
        }
    }

    #[test]
    fn a_generator_behind_its_schedule_is_called_out() {
        let o = options(&["-n", "19000", "--duration", "20s"]);
        let t = Timeline::new(&o, 0, Duration::ZERO);
        // 19,000 devices every 5 s: 76,000 messages due in 20 s.
        let kept = generator(&o, t, 4, 19_000, &[results(38_000, 1), results(38_000, 2)]);
        assert_eq!(kept.due, 76_000);
        assert!((kept.target_per_s - 3_800.0).abs() < 1e-9);
        assert!((kept.sent_per_s - 3_800.0).abs() < 1e-9);
        assert!(kept.shortfalls.is_empty(), "{:?}", kept.shortfalls);
        let slow = generator(&o, t, 1, 19_000, &[results(18_580, 1)]);
        assert_eq!(slow.shortfalls.len(), 1, "{:?}", slow.shortfalls);
        assert!(
            slow.shortfalls[0].contains("929/s of 3800/s"),
            "{:?}",
            slow.shortfalls
        );
        let late = generator(&o, t, 4, 19_000, &[results(76_000, 500)]);
        assert!(late.shortfalls[0].contains("late"), "{:?}", late.shortfalls);
        let lenient = options(&["-n", "19000", "--duration", "20s", "--max-send-lag", "1s"]);
        let tolerated = generator(&lenient, t, 4, 19_000, &[results(76_000, 500)]);
        assert!(
            tolerated.shortfalls.is_empty(),
            "{:?}",
            tolerated.shortfalls
        );
        let missing = generator(&o, t, 4, 18_000, &[results(76_000, 1)]);
        assert!(
            missing.shortfalls[0].contains("18000 of 19000"),
            "{:?}",
            missing.shortfalls
        );
    }

    #[test]
    fn reads_whether_the_mqtt_source_is_up() {
        let down = "# TYPE chouquette_mqtt_up gauge\nchouquette_mqtt_up{source=\"a\"} 0\n";
        assert!(!source_up(down));
        assert!(source_up("chouquette_mqtt_up{source=\"a\"} 1\n"));
        assert!(!source_up(
            "chouquette_mqtt_messages_total{source=\"a\"} 5\n"
        ));
    }

    #[test]
    fn exactness_counts_lost_and_doubled_acknowledged_messages() {
        let acked: Vec<Sent> = [1, 2, 3]
            .iter()
            .map(|&seq| Sent { seq, sent_ns: 0 })
            .collect();
        let mut tally = Tally::default();
        for seq in [1, 1, 4] {
            tally.add(seq);
        }
        let e = exactness(&acked, &tally);
        assert_eq!((e.lost, e.duplicated, e.unexpected), (2, 1, 1));
    }

    #[test]
    fn the_source_maps_every_devices_telemetry() {
        let app = AppSpec {
            app: "bench".into(),
            channel: "devices".into(),
            secret: "s".into(),
            api_key: "k".into(),
        };
        let text = source_toml("mqtt://127.0.0.1:1", &app);
        assert!(text.contains("filter = \"devices/+/telemetry\""), "{text}");
        assert!(text.contains("keywords = [\"device:{1}\"]"), "{text}");
        assert!(text.contains("key = \"device:{1}\""), "{text}");
    }
}
