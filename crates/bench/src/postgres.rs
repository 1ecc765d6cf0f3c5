//! `--scenario postgres`: row changes from Postgres to WebSocket clients.
//! Starts a cluster of its own, a table, a gateway whose `[[sources.postgres]]`
//! maps the table to a channel, `-n` subscribers to everything on it; then
//! `--writers` tasks commit single-row changes at `--rate` for the warmup and
//! the window. Reports changes committed and events delivered per second,
//! the lag from a row's commit to its receipt (p50, p99, max), the CPU of the
//! gateway and of Postgres, and whether every committed change reached every
//! subscriber exactly once.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{Options, Scenario};
use crate::client::{self, Outcome, Ws};
use crate::gateway::{self, BrokerSpec, Gateway, LimitsSpec};
use crate::histogram::{AtomicHistogram, Histogram};
use crate::pg_catchup;
use crate::pg_load::{self, Exactness, LoadWindow, Tally, Written};
use crate::pg_server::PgServer;
use crate::report::Latency;
use crate::wire::{AppSpec, unix_nanos};
use crate::workload;

/// The slot and publication the gateway reads.
const SLOT: &str = "chouquette_bench";
/// How long the subscribers may take, after the load, to receive the rest.
const DRAIN: Duration = Duration::from_secs(15);

/// The measured figures of one run.
#[derive(Debug, Serialize)]
struct PgSummary {
    subscribers: usize,
    writers: usize,
    target_rate: f64,
    window_s: f64,
    committed: u64,
    committed_per_s: f64,
    write_errors: u64,
    delivered: u64,
    delivered_per_s: f64,
    lag: Option<Latency>,
    committed_total: u64,
    exactness: Exactness,
    /// From the load's end until every subscriber had every change
    /// (`None`: not within [`DRAIN`]).
    drained_s: Option<f64>,
    gateway_cpu_percent: f64,
    postgres_cpu_percent: f64,
}

/// What the subscribers share while they read.
#[derive(Default)]
struct Receipts {
    lag: AtomicHistogram,
    in_window: AtomicU64,
    received: AtomicU64,
}

/// Runs the scenario and prints its report.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    if options.pg_backlog > 0 {
        return pg_catchup::run(options).await;
    }
    let (pg, app, binary) = prepare(options).await?;
    let extra = source_toml(&pg.url(), &app, options);
    let gw = Gateway::start_with(
        &binary,
        &app,
        options.outbox_capacity,
        &LimitsSpec::default(),
        &BrokerSpec::Memory,
        &extra,
    )
    .await?;
    wait_for_slot(&pg).await?;
    let subscribers = options.connections.max(1);
    let (stop, stopped) = watch::channel(false);
    let receipts = Arc::new(Receipts::default());
    let mut sockets = Vec::new();
    for i in 0..subscribers {
        sockets.push(subscribe(&gw, &app, i).await?);
    }
    let window = load_window(options);
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(read(ws, window, receipts.clone(), stopped.clone())))
        .collect();
    let writers = start_writers(&pg, options, window).await?;
    let cpu = measure_cpu(&gw, &pg, window).await?;
    let written = join_writers(writers).await?;
    let committed_total = written.committed.len() as u64;
    let drained_s = drain(&receipts, committed_total * subscribers as u64, window).await;
    let _ = stop.send(true);
    let mut exactness = Exactness::default();
    for reader in readers {
        let tally = reader.await.context("a subscriber panicked")?;
        exactness = exactness.plus(pg_load::check(&written.committed, &tally));
    }
    gw.stop(Duration::from_secs(5)).await;
    let mut summary = summarize(options, subscribers, &written, &receipts, exactness, cpu);
    summary.drained_s = drained_s;
    print(&summary);
    Ok(())
}

/// What both Postgres scenarios start from: a cluster of the bench's own
/// with the bench table, the app, and the gateway binary to run.
pub(crate) async fn prepare(options: &Options) -> anyhow::Result<(PgServer, AppSpec, PathBuf)> {
    let pg = PgServer::start().await?;
    pg.client()
        .await?
        .batch_execute(pg_load::CREATE_TABLE)
        .await
        .context("cannot create the bench table")?;
    let app = AppSpec::fresh("rows");
    let binary = gateway::binary(options.gateway.as_deref())?;
    Ok((pg, app, binary))
}

/// The `[[sources.postgres]]` of the gateway: the bench table to the
/// subscribers' channel, one event kind for every operation.
pub(crate) fn source_toml(url: &str, app: &AppSpec, options: &Options) -> String {
    format!(
        "\n[[sources.postgres]]\nurl = \"{url}\"\npublication = \"{SLOT}\"\nslot = \"{SLOT}\"\n\
         poll_interval = \"{poll}\"\nbatch = {batch}\n\n\
         [[sources.postgres.tables]]\ntable = \"{table}\"\napp = \"{app_id}\"\n\
         channel = \"{channel}\"\nevent_kind = \"row_changed\"\n",
        poll = humantime::format_duration(options.pg_poll_interval),
        batch = options.pg_batch,
        table = pg_load::TABLE,
        app_id = app.app,
        channel = app.channel,
    )
}

/// Waits until the gateway has made its slot: changes committed before it
/// exists are not in it.
pub(crate) async fn wait_for_slot(pg: &PgServer) -> anyhow::Result<()> {
    let client = pg.client().await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = client
            .query(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )
            .await
            .context("cannot list the replication slots")?;
        if !rows.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the gateway did not create its slot {SLOT} within 20 s");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn load_window(options: &Options) -> LoadWindow {
    // A second to open the writers' connections before the load starts.
    let load_start_ns = unix_nanos() + 1_000_000_000;
    let start_ns = load_start_ns + nanos(options.warmup);
    LoadWindow {
        load_start_ns,
        start_ns,
        end_ns: start_ns + nanos(options.duration),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The `Instant` at Unix time `ns` (now if it has passed).
fn instant_at(ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.saturating_sub(unix_nanos()))
}

pub(crate) async fn subscribe(gw: &Gateway, app: &AppSpec, index: usize) -> anyhow::Result<Ws> {
    let exp = unix_nanos() / 1_000_000_000 + 24 * 3600;
    let message = workload::subscribe(app, Scenario::Postgres, index, exp);
    let source = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    match client::open(gw.public, source, &message).await {
        Outcome::Subscribed(ws) => Ok(*ws),
        Outcome::Refused => bail!("the gateway refused subscriber {index} (503)"),
        Outcome::Failed(reason) => bail!("subscriber {index} failed: {reason}"),
    }
}

/// One subscriber: counts every change it receives by `seq` and records
/// the lag of those made within the window, until told to stop.
async fn read(
    mut ws: Ws,
    window: LoadWindow,
    receipts: Arc<Receipts>,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let message = tokio::select! {
            m = ws.next() => m,
            _ = stop.changed() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let now = unix_nanos();
        for change in changes(text.as_str()) {
            tally.add(change.seq);
            receipts.received.fetch_add(1, Ordering::Relaxed);
            if window.holds(change.t_ns) {
                receipts.in_window.fetch_add(1, Ordering::Relaxed);
                receipts.lag.record(now.saturating_sub(change.t_ns) / 1000);
            }
        }
    }
    tally
}

/// A delivered frame: one message, or a batch of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Frames {
    One(Frame),
    Many(Vec<Frame>),
}

/// The part of a `data` message the bench reads: `data.new.{seq,t_ns}`.
#[derive(Deserialize)]
struct Frame {
    class: Option<String>,
    data: Option<Change>,
}

#[derive(Deserialize)]
struct Change {
    new: Option<Row>,
}

/// A bench row's numbers, as the source publishes them.
#[derive(Debug, Deserialize, PartialEq, Eq)]
struct Row {
    seq: u64,
    t_ns: u64,
}

/// The changes in one text frame; a frame the bench cannot read yields none.
fn changes(text: &str) -> Vec<Row> {
    let frames = match serde_json::from_str::<Frames>(text) {
        Ok(Frames::One(frame)) => vec![frame],
        Ok(Frames::Many(frames)) => frames,
        Err(_) => return Vec::new(),
    };
    frames
        .into_iter()
        .filter(|f| f.class.as_deref() == Some("data"))
        .filter_map(|f| f.data?.new)
        .collect()
}

type WriterTask = tokio::task::JoinHandle<anyhow::Result<Written>>;

/// Connects the writers, each starting at the load's start.
async fn start_writers(
    pg: &PgServer,
    options: &Options,
    window: LoadWindow,
) -> anyhow::Result<Vec<WriterTask>> {
    let count = options.writers.max(1);
    let share = options.event_rate().max(0.0) / count as f64;
    let next_seq = Arc::new(AtomicU64::new(1));
    let options_tx_rows = options.pg_tx_rows;
    let mut tasks = Vec::new();
    for index in 0..count {
        let client = pg.client().await?;
        let next_seq = next_seq.clone();
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        tasks.push(tokio::spawn(async move {
            sleep_until(instant_at(window.load_start_ns)).await;
            let plan = pg_load::Plan {
                rate: share,
                tx_rows: options_tx_rows,
                last_seq: u64::MAX,
            };
            pg_load::writer(client, index, plan, window, next_seq).await
        }));
    }
    Ok(tasks)
}

/// Every writer's changes, `committed` sorted.
async fn join_writers(tasks: Vec<WriterTask>) -> anyhow::Result<Written> {
    let mut all = Written::default();
    for task in tasks {
        let written = task.await.context("a writer panicked")??;
        all.committed.extend(written.committed);
        all.in_window += written.in_window;
        all.errors += written.errors;
    }
    all.committed.sort_unstable();
    Ok(all)
}

/// CPU seconds used within the window: (gateway, Postgres).
async fn measure_cpu(
    gw: &Gateway,
    pg: &PgServer,
    window: LoadWindow,
) -> anyhow::Result<(f64, f64)> {
    sleep_until(instant_at(window.start_ns)).await;
    let (gw_before, pg_before) = (gw.cpu_seconds()?, pg.cpu_seconds()?);
    sleep_until(instant_at(window.end_ns)).await;
    Ok((gw.cpu_seconds()? - gw_before, pg.cpu_seconds()? - pg_before))
}

/// Waits until `expected` receipts are counted, or [`DRAIN`] has passed;
/// the seconds from the load's end until they were (`None`: not in time).
async fn drain(receipts: &Receipts, expected: u64, window: LoadWindow) -> Option<f64> {
    let deadline = Instant::now() + DRAIN;
    loop {
        if receipts.received.load(Ordering::Relaxed) >= expected {
            let after = unix_nanos().saturating_sub(window.end_ns);
            return Some(after as f64 / 1e9);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

fn summarize(
    options: &Options,
    subscribers: usize,
    written: &Written,
    receipts: &Receipts,
    exactness: Exactness,
    (gw_cpu, pg_cpu): (f64, f64),
) -> PgSummary {
    let window_s = options.duration.as_secs_f64();
    let mut lag = Histogram::default();
    lag.merge(&receipts.lag.snapshot());
    let delivered = receipts.in_window.load(Ordering::Relaxed);
    PgSummary {
        subscribers,
        writers: options.writers.max(1),
        target_rate: options.event_rate(),
        window_s,
        committed: written.in_window,
        committed_per_s: written.in_window as f64 / window_s,
        write_errors: written.errors,
        delivered,
        delivered_per_s: delivered as f64 / window_s,
        lag: Latency::from_histogram(&lag),
        committed_total: written.committed.len() as u64,
        exactness,
        drained_s: None,
        gateway_cpu_percent: (gw_cpu * 1000.0 / window_s).round() / 10.0,
        postgres_cpu_percent: (pg_cpu * 1000.0 / window_s).round() / 10.0,
    }
}

fn print(s: &PgSummary) {
    let rate = if s.target_rate > 0.0 {
        format!("{:.0}/s", s.target_rate)
    } else {
        "as fast as possible".into()
    };
    println!(
        "scenario postgres: {} subscribers, {} writers, target {rate}, {:.0} s window",
        s.subscribers, s.writers, s.window_s
    );
    println!(
        "rows committed        {:.0}/s ({} in the window, {} write errors)",
        s.committed_per_s, s.committed, s.write_errors
    );
    println!(
        "events delivered      {:.0}/s ({:.0}/s per subscriber)",
        s.delivered_per_s,
        s.delivered_per_s / s.subscribers.max(1) as f64
    );
    match &s.lag {
        Some(l) => println!(
            "lag commit -> client  p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        ),
        None => println!("lag commit -> client  - (nothing delivered in the window)"),
    }
    let e = &s.exactness;
    println!(
        "exactly once          {} changes x {} subscribers: {} not arrived (by the end of the wait), {} duplicated, {} unexpected",
        s.committed_total, s.subscribers, e.lost, e.duplicated, e.unexpected
    );
    match s.drained_s {
        Some(d) => println!("all delivered         {d:.2} s after the load ended"),
        None => println!(
            "all delivered         NOT within {} s after the load ended",
            DRAIN.as_secs()
        ),
    }
    println!(
        "CPU                   gateway {:.0}%, postgres {:.0}% of one core",
        s.gateway_cpu_percent, s.postgres_cpu_percent
    );
    println!("{}", serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_row_numbers_of_single_and_batched_data_frames() {
        let one = r#"{"class":"data","channel":"rows","offset":3,
            "data":{"op":"insert","new":{"id":7,"seq":7,"t_ns":99,"payload":"x"},"old":null}}"#;
        assert_eq!(changes(one), vec![Row { seq: 7, t_ns: 99 }]);
        let many = r#"[{"class":"data","data":{"op":"update","new":{"seq":8,"t_ns":5}}},
            {"class":"ack","channels":{}},{"class":"data","data":{"new":{"seq":9,"t_ns":6}}}]"#;
        assert_eq!(
            changes(many),
            vec![Row { seq: 8, t_ns: 5 }, Row { seq: 9, t_ns: 6 }]
        );
        assert!(changes(r#"{"class":"error","data":"nope"}"#).is_empty());
        assert!(changes("not json").is_empty());
    }
}
