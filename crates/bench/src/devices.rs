//! `--scenario devices` (issue 14, "Load"): `-n` MQTT devices reporting
//! every `--device-interval`, plus one device flushing `--flush-messages`
//! of buffered data after a reconnect, through a Mosquitto of the bench's
//! own to a gateway whose `[[sources.mqtt]]` maps `devices/+/telemetry` to
//! the channel `devices` (keyword and key `device:{1}`, JSON).
//!
//! Runs in this process: the devices (one rumqttc client each, connected
//! at `--connect-rate` before the load) publish QoS 1 on phases spread
//! uniformly over the interval, for `--warmup` then the window; at a third
//! of the window the flushing device connects and sends its messages as
//! fast as its in-flight window of [`FLUSH_WINDOW`] lets it. A dashboard
//! (one WebSocket subscriber to everything on the channel, on its own
//! thread) measures each message's delay from send to receipt, for regular
//! messages sent in the window outside the flush, those sent during it
//! (from its first message sent to its last received), and the flush's
//! own; and how long the flush took to be delivered entirely. Every
//! message Mosquitto acknowledged (PUBACK) must reach the dashboard once:
//! lost and duplicated messages are counted by `seq`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use crate::cli::Options;
use crate::dashboard::{self, Dashboard, Progress, Receipts};
use crate::device::{Counters, Device, Sent, topic};
use crate::gateway::{self, BrokerSpec, Gateway, LimitsSpec};
use crate::histogram::Histogram;
use crate::http::Http;
use crate::mqtt_server::MqttServer;
use crate::pg_load::{self, Exactness, Tally};
use crate::procfs;
use crate::report::Latency;
use crate::wire::{AppSpec, unix_nanos};

/// A regular device's QoS 1 in-flight window: one message every few
/// seconds never needs more, unless the broker stops acknowledging.
const REGULAR_WINDOW: u16 = 4;
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

/// The measured figures of one run.
#[derive(Debug, Serialize)]
struct DevicesSummary {
    devices: usize,
    connected: usize,
    connect_s: f64,
    device_interval_s: f64,
    window_s: f64,
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
    bench_cpu_percent: f64,
    gateway_rss_before: u64,
    gateway_rss_after: u64,
    gateway_rss_peak: u64,
    gateway_rss_per_device: f64,
    mosquitto_rss: u64,
    mosquitto_rss_per_device: f64,
}

/// Runs the scenario and prints its report.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let mqtt = MqttServer::start().await?;
    let app = AppSpec {
        app: "bench".into(),
        channel: "devices".into(),
        secret: format!("secret-{}", unix_nanos()),
        api_key: format!("key-{}", unix_nanos()),
    };
    let binary = match &options.gateway {
        Some(path) => path.clone(),
        None => gateway::default_binary()?,
    };
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
    let regular = Arc::new(Counters::default());
    let (devices, connect_s) = connect_devices(mqtt.port, options, &regular).await?;
    let connected = regular.connected.load(Ordering::Relaxed);
    let mqtt_rss_connected = mqtt.rss()?;
    let gateway_rss_before = gw.rss()?;
    let timeline = Timeline::new(options, unix_nanos(), Duration::from_secs(1));
    let loading = tokio::spawn(regular_load(
        devices,
        options.device_interval,
        timeline,
        regular.clone(),
    ));
    let flushing = Arc::new(Counters::default());
    let flush_task = tokio::spawn(flush(
        mqtt.port,
        options.connections,
        options.flush_messages,
        options.device_interval,
        timeline,
        flushing.clone(),
    ));
    let cpu = measure_cpu(&gw, &mqtt, timeline).await?;
    let (devices, loaded) = loading.await.context("the devices' load panicked")?;
    eprintln!("window over; waiting for the flush to be sent");
    let Flushed {
        device: flush_device,
        run: flushed,
    } = flush_task.await.context("the flush panicked")??;
    let load_end_ns = timeline.end_ns.max(flushed.last_sent_ns.unwrap_or(0));
    let drained_s = drain(
        &dashboard.progress,
        &regular,
        &flushing,
        load_end_ns,
        flushed.sent,
    )
    .await;
    if drained_s.is_none() {
        print_source_metrics(&gw).await;
    }
    let gateway_rss_after = gw.rss()?;
    let gateway_rss_peak = gw.peak_rss()?;
    let mosquitto_rss = mqtt.rss()?;
    let acked: Vec<Sent> = devices.into_iter().flat_map(Device::stop).collect();
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
        sent: loaded.sent,
        max_lag_ms: loaded.max_lag_ms,
        acked: 0,
        messages_per_s: 0.0,
        delivered: 0,
        delay_quiet: None,
        delay_during_flush: None,
        flush: FlushFigures::default(),
        exactness: Exactness::default(),
        drained_s,
        skipped: regular.skipped.load(Ordering::Relaxed),
        dropped: regular.dropped.load(Ordering::Relaxed),
        connection_errors: regular.connection_errors.load(Ordering::Relaxed),
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
    };
    summary.flush = flush_figures(options, timeline, &flushed, &flush_acked, &receipts);
    let flush_started_s = summary.flush.started_s;
    fill_regular(&mut summary, timeline, &acked, &receipts, flush_started_s);
    print(&summary);
    Ok(())
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

/// Connects the `-n` devices at `--connect-rate` and waits until the
/// broker accepted them all (or a budget passed); how long it took.
async fn connect_devices(
    port: u16,
    options: &Options,
    counters: &Arc<Counters>,
) -> anyhow::Result<(Vec<Device>, f64)> {
    let count = options.connections;
    let rate = f64::from(options.connect_rate.max(1));
    eprintln!("connecting {count} devices at {rate:.0}/s");
    let began = Instant::now();
    let mut devices = Vec::with_capacity(count);
    for index in 0..count {
        sleep_until(began + Duration::from_secs_f64(index as f64 / rate)).await;
        devices.push(Device::connect(
            port,
            index,
            REGULAR_WINDOW,
            counters.clone(),
        ));
    }
    let deadline = began + Duration::from_secs_f64(count as f64 / rate * 3.0 + 30.0);
    while counters.connected.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    let connected = counters.connected.load(Ordering::Relaxed);
    let connect_s = began.elapsed().as_secs_f64();
    eprintln!("{connected} of {count} devices connected in {connect_s:.1} s");
    if connected == 0 && count > 0 {
        bail!("no device could connect to mosquitto on port {port}");
    }
    Ok((devices, connect_s))
}

/// When message `m` of the regular load is due: device `m % devices`
/// sends every `interval`, device `i` at phase `i * interval / devices`.
fn due_ns(load_start_ns: u64, m: u64, devices: usize, interval: Duration) -> u64 {
    let offset = u128::from(m) * interval.as_nanos() / devices.max(1) as u128;
    load_start_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// What the regular load did.
#[derive(Debug, Default, Clone, Copy)]
struct Loaded {
    /// Messages sent within the window.
    sent: u64,
    /// Furthest a message was sent behind its schedule, ms: the bench's
    /// own lag (its thread busy), not the gateway's.
    max_lag_ms: f64,
}

/// Sends the regular messages, numbered from 1, until the window ends;
/// gives the devices back with what was sent.
async fn regular_load(
    devices: Vec<Device>,
    interval: Duration,
    timeline: Timeline,
    counters: Arc<Counters>,
) -> (Vec<Device>, Loaded) {
    let mut loaded = Loaded::default();
    if devices.is_empty() {
        return (devices, loaded);
    }
    for m in 0u64.. {
        let due = due_ns(timeline.load_start_ns, m, devices.len(), interval);
        if due >= timeline.end_ns {
            break;
        }
        sleep_until(instant_at(due)).await;
        let device = &devices[(m % devices.len() as u64) as usize];
        let at_s = unix_nanos() / 1_000_000_000;
        if let Some(sent_ns) = device.try_send(m + 1, at_s, false, &counters) {
            loaded.sent += u64::from(timeline.holds(sent_ns));
            let lag_ms = sent_ns.saturating_sub(due) as f64 / 1e6;
            loaded.max_lag_ms = loaded.max_lag_ms.max(lag_ms);
        }
    }
    (devices, loaded)
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

async fn measure_cpu(gw: &Gateway, mqtt: &MqttServer, t: Timeline) -> anyhow::Result<Cpu> {
    let me = std::process::id();
    sleep_until(instant_at(t.start_ns)).await;
    eprintln!(
        "measuring for {:.0} s",
        (t.end_ns - t.start_ns) as f64 / 1e9
    );
    let before = (
        gw.cpu_seconds()?,
        mqtt.cpu_seconds()?,
        procfs::cpu_seconds(me)?,
    );
    sleep_until(instant_at(t.end_ns)).await;
    let after = (
        gw.cpu_seconds()?,
        mqtt.cpu_seconds()?,
        procfs::cpu_seconds(me)?,
    );
    let window_s = (t.end_ns - t.start_ns) as f64 / 1e9;
    let percent = |a: f64, b: f64| ((b - a) * 1000.0 / window_s).round() / 10.0;
    Ok(Cpu {
        gateway: percent(before.0, after.0),
        mosquitto: percent(before.1, after.1),
        bench: percent(before.2, after.2),
    })
}

/// Waits until the dashboard received as many messages as were
/// acknowledged, and every flushed message sent; seconds after `end_ns`
/// (`None`: not within [`DRAIN`]). The condition must still hold a second
/// after `end_ns`, for the last acknowledgements to be counted; the time
/// given is when it first held.
async fn drain(
    progress: &Progress,
    regular: &Counters,
    flushing: &Counters,
    end_ns: u64,
    flush_sent: u64,
) -> Option<f64> {
    let deadline = Instant::now() + DRAIN;
    let mut since: Option<u64> = None;
    loop {
        let regular_in = progress.regular.load(Ordering::Relaxed);
        let flush_in = progress.flush.load(Ordering::Relaxed);
        let now = unix_nanos();
        if regular_in >= regular.acked.load(Ordering::Relaxed)
            && flush_in >= flushing.acked.load(Ordering::Relaxed).max(flush_sent)
        {
            let first = *since.get_or_insert(now);
            if now >= end_ns + 1_000_000_000 {
                return Some(first.saturating_sub(end_ns) as f64 / 1e9);
            }
        } else {
            since = None;
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(10)).await;
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
    acked: &[Sent],
    receipts: &Receipts,
    flush_started_s: Option<f64>,
) {
    let span = flush_started_s.map(|started| {
        let first = t.start_ns as f64 + started * 1e9;
        let last = receipts.flush_last_received_ns.unwrap_or(t.end_ns);
        (first as u64, last)
    });
    let (quiet, during) = dashboard::delays(&receipts.samples, t.window(), span);
    s.acked = acked.iter().filter(|a| t.holds(a.sent_ns)).count() as u64;
    s.messages_per_s = s.acked as f64 / s.window_s.max(1e-9);
    s.delivered = receipts
        .samples
        .iter()
        .filter(|r| t.holds(r.sent_ns))
        .count() as u64;
    s.delay_quiet = Latency::from_histogram(&quiet);
    s.delay_during_flush = Latency::from_histogram(&during);
    s.exactness = exactness(acked, &receipts.regular);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The `Instant` at Unix time `ns` (now if it has passed).
fn instant_at(ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.saturating_sub(unix_nanos()))
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
    println!(
        "bench schedule           sent at most {:.1} ms late",
        s.max_lag_ms
    );
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
    fn devices_send_on_phases_spread_over_the_interval() {
        let interval = Duration::from_secs(5);
        assert_eq!(due_ns(10, 0, 4, interval), 10);
        assert_eq!(due_ns(10, 1, 4, interval), 10 + 1_250_000_000);
        assert_eq!(due_ns(10, 4, 4, interval), 10 + 5_000_000_000);
        // Device 1 (every 4th message from the 2nd) every 5 s.
        assert_eq!(
            due_ns(0, 5, 4, interval) - due_ns(0, 1, 4, interval),
            5_000_000_000
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
