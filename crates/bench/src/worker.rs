//! A load-generator process: opens its share of the connections at a steady
//! rate, reports when they are up, times every data message, and answers the
//! parent's commands. It exits on `exit`, when its stdin closes (the parent
//! is gone) or when its lifetime ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use std::io::{BufRead, Write};

use tokio::sync::mpsc;
use tokio::time::sleep;

use crate::client::{self, Outcome};
use crate::histogram::AtomicHistogram;
use crate::pace;
use crate::wire::{Command, PLAN_VAR, Plan, Report, Results, SENT_PATTERN, unix_nanos};
use crate::workload;

/// Counters shared by every connection task of this worker.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    delivered: AtomicU64,
    in_window: AtomicU64,
    window_start: AtomicU64,
    window_end: AtomicU64,
    latency: AtomicHistogram,
}

impl Counters {
    fn settled(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
            + self.refused.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }

    /// Counts every event in one text frame (one object or a batch array).
    fn record(&self, text: &str) {
        let now = unix_nanos();
        let pattern = SENT_PATTERN;
        let mut rest = text;
        while let Some(at) = rest.find(pattern) {
            rest = &rest[at + pattern.len()..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if let Ok(sent) = rest[..digits].parse::<u64>() {
                self.count(sent, now);
            }
        }
    }

    fn count(&self, sent: u64, now: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let start = self.window_start.load(Ordering::Relaxed);
        let end = self.window_end.load(Ordering::Relaxed);
        if start <= sent && sent < end {
            self.in_window.fetch_add(1, Ordering::Relaxed);
            self.latency.record(now.saturating_sub(sent) / 1000);
        }
    }

    fn results(&self) -> Results {
        let connected = self.connected.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        Results {
            delivered: self.delivered.load(Ordering::Relaxed),
            in_window: self.in_window.load(Ordering::Relaxed),
            histogram: self.latency.snapshot(),
            dropped,
            open: connected.saturating_sub(dropped),
        }
    }
}

/// Entry point of `chouquette-bench worker`.
pub fn main() -> anyhow::Result<()> {
    let plan = std::env::var(PLAN_VAR).with_context(|| format!("{PLAN_VAR} is not set"))?;
    let plan: Plan = serde_json::from_str(&plan).context("bad worker plan")?;
    rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-file limit")?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(plan))
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    if let Some(abuse) = plan.abuse {
        return run_abuser(plan, abuse).await;
    }
    if let Some(hold) = plan.hold {
        return run_holder(plan, hold).await;
    }
    if let Some(share) = plan.devices {
        return crate::device_load::run(plan, share).await;
    }
    if let Some(share) = plan.storm {
        return crate::storm_client::run(plan, share).await;
    }
    let counters = Arc::new(Counters::default());
    let lifetime = sleep(plan.lifetime);
    tokio::pin!(lifetime);
    let mut opening = tokio::spawn(open_all(plan, counters.clone()));
    let mut opened = false;
    let mut commands = commands();
    loop {
        tokio::select! {
            _ = &mut lifetime => return Ok(()),
            done = &mut opening, if !opened => {
                opened = true;
                done.context("opener failed")?;
                send(&Report::Connected {
                    connected: counters.connected.load(Ordering::Relaxed),
                    refused: counters.refused.load(Ordering::Relaxed),
                    failed: counters.failed.load(Ordering::Relaxed),
                })?;
            }
            command = commands.recv() => {
                // `None`: stdin closed, the parent is gone.
                let Some(command) = command else {
                    return Ok(());
                };
                match command {
                    Command::Window { start_ns, end_ns } => {
                        counters.window_end.store(end_ns, Ordering::Relaxed);
                        counters.window_start.store(start_ns, Ordering::Relaxed);
                    }
                    Command::Report => send(&Report::Result(counters.results()))?,
                    Command::Exit => return Ok(()),
                    Command::Restart { .. } => send(&Report::Armed)?,
                }
            }
        }
    }
}

/// The abusive client: abuses until told to exit, reports its counters.
async fn run_abuser(plan: Plan, abuse: crate::abuse::Abuse) -> anyhow::Result<()> {
    let counters = Arc::new(crate::abuse::Counters::default());
    let exp = chouquette_core::clock::unix_now() + plan.lifetime.as_secs() + 3600;
    let message = Arc::<str>::from(workload::subscribe(&plan.app, plan.scenario, 0, exp));
    let abusing = tokio::spawn(crate::abuse::run(
        abuse,
        plan.target,
        message,
        counters.clone(),
    ));
    let _abort = AbortOnDrop(abusing);
    send(&Report::Connected {
        connected: 0,
        refused: 0,
        failed: 0,
    })?;
    answer_reports(plan.lifetime, || Report::Abuse(counters.results())).await
}

/// Until `lifetime` passes or the parent says `Exit` (or is gone),
/// answers each `Report` with `report()`; a worker whose connections
/// need no measuring window (abusers, held sockets) ends this way.
async fn answer_reports(lifetime: Duration, report: impl Fn() -> Report) -> anyhow::Result<()> {
    let lifetime = sleep(lifetime);
    tokio::pin!(lifetime);
    let mut commands = commands();
    loop {
        tokio::select! {
            _ = &mut lifetime => return Ok(()),
            command = commands.recv() => match command {
                None | Some(Command::Exit) => return Ok(()),
                Some(Command::Report) => send(&report())?,
                Some(Command::Window { .. }) => {}
                Some(Command::Restart { .. }) => send(&Report::Armed)?,
            },
        }
    }
}

/// Held sockets: opens them, reports once every attempt ended (or after
/// `connect_budget`), then reports what they saw when asked.
async fn run_holder(plan: Plan, hold: crate::holders::Hold) -> anyhow::Result<()> {
    let counters = Arc::new(crate::holders::Counters::default());
    let plan = Arc::new(plan);
    let count = plan.count as u64;
    let opening = tokio::spawn(crate::holders::open_all(
        plan.clone(),
        hold,
        counters.clone(),
    ));
    let _abort = AbortOnDrop(opening);
    let budget = Duration::from_secs_f64(count as f64 / f64::from(plan.connect_rate.max(1)))
        + Duration::from_secs(15);
    let _ = tokio::time::timeout(budget, async {
        while counters.settled() < count {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let held = counters.results(hold);
    send(&Report::Connected {
        connected: usize::try_from(held.opened).unwrap_or(usize::MAX),
        refused: 0,
        failed: usize::try_from(held.failed).unwrap_or(usize::MAX),
    })?;
    answer_reports(plan.lifetime, || Report::Held(counters.results(hold))).await
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes one report line to stdout (a short blocking write).
pub fn send(report: &Report) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(report)?;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line).context("cannot write to the parent")?;
    out.flush().context("cannot write to the parent")?;
    Ok(())
}

/// Commands read from stdin by a plain thread; the channel closes with stdin
/// (or on a line that is not a command).
pub fn commands() -> mpsc::UnboundedReceiver<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let command = match serde_json::from_str::<Command>(&line) {
                Ok(command) => command,
                Err(e) => {
                    eprintln!("chouquette-bench worker: bad command {line:?}: {e}");
                    break;
                }
            };
            if tx.send(command).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts every connection at the planned rate; returns once each attempt
/// has ended (subscribed, refused or failed).
async fn open_all(plan: Plan, counters: Arc<Counters>) {
    let plan = Arc::new(plan);
    let exp = chouquette_core::clock::unix_now() + plan.lifetime.as_secs() + 3600;
    // One message per channel when every connection has the same filter.
    let shared: Vec<Arc<str>> = if workload::shared_filter(plan.scenario) {
        (0..plan.channels.max(1))
            .map(|c| workload::subscribe_on(&plan.app, plan.scenario, c, exp, plan.channels).into())
            .collect()
    } else {
        Vec::new()
    };
    pace::paced(plan.connect_rate, plan.first, plan.count, |index| {
        let message = match shared.get(index % plan.channels.max(1)) {
            Some(m) => m.clone(),
            None => {
                workload::subscribe_on(&plan.app, plan.scenario, index, exp, plan.channels).into()
            }
        };
        tokio::spawn(connection(plan.clone(), index, message, counters.clone()));
    })
    .await;
    while counters.settled() < plan.count {
        sleep(Duration::from_millis(20)).await;
    }
}

async fn connection(plan: Arc<Plan>, index: usize, subscribe: Arc<str>, counters: Arc<Counters>) {
    match client::open(plan.target, plan.source(index), &subscribe).await {
        Outcome::Subscribed(ws) => {
            counters.connected.fetch_add(1, Ordering::Relaxed);
            drop(subscribe);
            client::read_all(*ws, |text| counters.record(text)).await;
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Refused => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Failed(reason) => {
            if counters.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("chouquette-bench worker: connection {index} failed: {reason}");
            }
        }
    }
}
