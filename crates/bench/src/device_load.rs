//! A worker process's share of `--scenario devices`: devices `first ..
//! first + count` of the run's `total`, connected at the worker's share of
//! `--connect-rate`, then publishing on the run-wide schedule (device `i`
//! every `interval`, at phase `i * interval / total`) from the window the
//! parent sends, warmup included, until the window ends.
//!
//! Several processes keep the generator off the critical path (both cores,
//! and each well under the 20,000 files a process may open here; Mosquitto
//! holds as many). Messages keep their run-wide numbers (`seq`, the
//! message's index plus one), so the parent checks every worker's
//! acknowledged messages against the one dashboard. A worker reports on
//! each `report` command: what it sent in the window, how late against the
//! schedule, and which messages Mosquitto acknowledged, as ranges of `seq`
//! (a worker's devices are consecutive, so each round of its schedule is
//! one range).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};

use crate::device::{Counters, Device, Sent};
use crate::histogram::AtomicHistogram;
use crate::wire::{Command, Plan, Report, unix_nanos};
use crate::worker;

/// A regular device's QoS 1 in-flight window: one message every few
/// seconds never needs more, unless the broker stops acknowledging.
pub const REGULAR_WINDOW: u16 = 4;

/// What a device worker needs beyond its [`Plan`] (`first`, `count`,
/// `connect_rate`, `lifetime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Mosquitto's port on 127.0.0.1.
    pub mqtt_port: u16,
    /// Devices in the whole run (the schedule's period is shared by all).
    pub total: usize,
    /// Each device publishes once per interval.
    pub interval: Duration,
    /// The load starts this long before the measured window.
    pub warmup: Duration,
}

/// What a device worker did so far (its answer to `report`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Results {
    /// Devices whose connection Mosquitto accepted.
    pub connected: usize,
    /// Regular messages sent within the window.
    pub sent_in_window: u64,
    /// Messages acknowledged by Mosquitto, warmup included.
    pub acked: u64,
    /// Of those, sent within the window.
    pub acked_in_window: u64,
    /// Every acknowledged `seq`, as sorted ranges `[from, to)`.
    pub acked_seqs: Vec<(u64, u64)>,
    /// Messages not sent (in-flight window full or the client's queue
    /// refused them).
    pub skipped: u64,
    /// Messages lost with a dropped connection.
    pub dropped: u64,
    /// Connection errors.
    pub connection_errors: u64,
    /// How late each message of the window was sent against its schedule,
    /// sparse `(bucket, count)`, µs.
    pub lag: Vec<(usize, u64)>,
    /// The latest send of the run against its schedule, µs.
    pub max_lag_us: u64,
    /// The load is over (the window ended).
    pub done: bool,
}

/// What the load did, shared with the reporting loop.
#[derive(Debug, Default)]
struct Stats {
    sent_in_window: AtomicU64,
    lag: AtomicHistogram,
    max_lag_us: AtomicU64,
    window: (AtomicU64, AtomicU64),
    done: AtomicBool,
}

/// Entry point of a device worker: connects, reports, then loads on
/// `window` and answers `report` until `exit`, the parent's end, or its
/// lifetime.
pub async fn run(plan: Plan, share: Share) -> anyhow::Result<()> {
    let lifetime = sleep(plan.lifetime);
    tokio::pin!(lifetime);
    let counters = Arc::new(Counters::default());
    let devices = Arc::new(connect(&plan, share, &counters).await);
    let connected = counters.connected.load(Ordering::Relaxed);
    worker::send(&Report::Connected {
        connected,
        refused: 0,
        failed: plan.count.saturating_sub(connected),
    })?;
    let stats = Arc::new(Stats::default());
    let mut loading: Option<Aborting> = None;
    let mut commands = worker::commands();
    loop {
        tokio::select! {
            _ = &mut lifetime => return Ok(()),
            command = commands.recv() => match command {
                None | Some(Command::Exit) => return Ok(()),
                Some(Command::Restart { .. }) => worker::send(&Report::Armed)?,
                Some(Command::Window { start_ns, end_ns }) => {
                    if loading.is_none() {
                        stats.window.0.store(start_ns, Ordering::Relaxed);
                        stats.window.1.store(end_ns, Ordering::Relaxed);
                        loading = Some(Aborting(tokio::spawn(load(
                            devices.clone(),
                            share,
                            plan.first,
                            counters.clone(),
                            stats.clone(),
                        ))));
                    }
                }
                Some(Command::Report) => {
                    let results = results(&devices, &counters, &stats);
                    worker::send(&Report::Devices(results))
                        .context("cannot report to the parent")?;
                }
            },
        }
    }
}

/// Aborts the load when the worker ends.
struct Aborting(JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects this worker's devices at its connect rate and waits until the
/// broker accepted them all, or a budget passed.
async fn connect(plan: &Plan, share: Share, counters: &Arc<Counters>) -> Vec<Device> {
    let rate = f64::from(plan.connect_rate.max(1));
    let began = Instant::now();
    let mut devices = Vec::with_capacity(plan.count);
    for i in 0..plan.count {
        sleep_until(began + Duration::from_secs_f64(i as f64 / rate)).await;
        devices.push(Device::connect(
            share.mqtt_port,
            plan.first + i,
            REGULAR_WINDOW,
            counters.clone(),
        ));
    }
    let deadline = began + connect_budget(plan.count, plan.connect_rate);
    while counters.connected.load(Ordering::Relaxed) < plan.count && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    devices
}

/// How long a worker may take to connect `count` devices at `rate`.
pub fn connect_budget(count: usize, rate: u32) -> Duration {
    Duration::from_secs_f64(count as f64 / f64::from(rate.max(1)) * 3.0 + 30.0)
}

/// Sends this worker's regular messages on the run's schedule from the
/// warmup until the window ends (messages still unsent then are not sent).
async fn load(
    devices: Arc<Vec<Device>>,
    share: Share,
    first: usize,
    counters: Arc<Counters>,
    stats: Arc<Stats>,
) {
    let window = (
        stats.window.0.load(Ordering::Relaxed),
        stats.window.1.load(Ordering::Relaxed),
    );
    let load_start_ns = window.0.saturating_sub(nanos(share.warmup));
    let total = share.total as u64;
    'rounds: for round in 0u64.. {
        for (i, device) in devices.iter().enumerate() {
            let m = round * total + (first + i) as u64;
            let due = due_ns(load_start_ns, m, share.total, share.interval);
            // A generator still behind when the window ends stops there:
            // what it did not send is its shortfall, not extra load after.
            if due >= window.1 || unix_nanos() >= window.1 {
                break 'rounds;
            }
            // Sleep only for a message not yet due: tokio's timer counts whole
            // milliseconds, so a sleep per message (even one already due)
            // held the first version of this loop to one message per tick,
            // 800 to 929 a second for 3,800 due, with its thread 90 % idle.
            if due > unix_nanos() {
                sleep_until(instant_at(due)).await;
            } else {
                // Behind schedule: let the devices' connections run between
                // sends, or their queues fill and messages are skipped.
                tokio::task::yield_now().await;
            }
            let at_s = unix_nanos() / 1_000_000_000;
            let Some(sent_ns) = device.try_send(m + 1, at_s, false, &counters) else {
                continue;
            };
            let lag_us = sent_ns.saturating_sub(due) / 1000;
            stats.max_lag_us.fetch_max(lag_us, Ordering::Relaxed);
            if window.0 <= sent_ns && sent_ns < window.1 {
                stats.sent_in_window.fetch_add(1, Ordering::Relaxed);
                stats.lag.record(lag_us);
            }
        }
        if devices.is_empty() {
            break;
        }
    }
    stats.done.store(true, Ordering::Relaxed);
}

/// The worker's figures so far.
fn results(devices: &[Device], counters: &Counters, stats: &Stats) -> Results {
    let window = (
        stats.window.0.load(Ordering::Relaxed),
        stats.window.1.load(Ordering::Relaxed),
    );
    let mut seqs = Vec::new();
    let mut acked_in_window = 0;
    for device in devices {
        device.visit_acked(|acked: &[Sent]| {
            for sent in acked {
                seqs.push(sent.seq);
                acked_in_window += u64::from(window.0 <= sent.sent_ns && sent.sent_ns < window.1);
            }
        });
    }
    seqs.sort_unstable();
    seqs.dedup();
    Results {
        connected: counters.connected.load(Ordering::Relaxed),
        sent_in_window: stats.sent_in_window.load(Ordering::Relaxed),
        acked: seqs.len() as u64,
        acked_in_window,
        acked_seqs: ranges(&seqs),
        skipped: counters.skipped.load(Ordering::Relaxed),
        dropped: counters.dropped.load(Ordering::Relaxed),
        connection_errors: counters.connection_errors.load(Ordering::Relaxed),
        lag: stats.lag.snapshot(),
        max_lag_us: stats.max_lag_us.load(Ordering::Relaxed),
        done: stats.done.load(Ordering::Relaxed),
    }
}

/// Sorted, distinct numbers as ranges `[from, to)`.
pub fn ranges(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &n in sorted {
        match out.last_mut() {
            Some((_, to)) if *to == n => *to = n + 1,
            _ => out.push((n, n + 1)),
        }
    }
    out
}

/// The numbers of ranges `[from, to)`.
pub fn expand(ranges: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    ranges.iter().flat_map(|&(from, to)| from..to)
}

/// When message `m` of the regular load is due: device `m % devices`
/// sends every `interval`, device `i` at phase `i * interval / devices`.
pub fn due_ns(load_start_ns: u64, m: u64, devices: usize, interval: Duration) -> u64 {
    let offset = u128::from(m) * interval.as_nanos() / devices.max(1) as u128;
    load_start_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// How many messages of the regular load are due before `t_ns`: the `m`
/// with [`due_ns`] under it.
pub fn due_before(load_start_ns: u64, t_ns: u64, devices: usize, interval: Duration) -> u64 {
    let elapsed = u128::from(t_ns.saturating_sub(load_start_ns));
    let period = interval.as_nanos().max(1);
    // due_ns(m) < t  <=>  m * period / devices < elapsed  <=>  m * period < elapsed * devices
    // (the division floors), so the count is ceil(elapsed * devices / period).
    let count = (elapsed * devices as u128).div_ceil(period);
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// `d` in ns, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The `Instant` at Unix time `ns` (now if it has passed).
pub fn instant_at(ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.saturating_sub(unix_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn counts_the_messages_due_before_a_time() {
        let interval = Duration::from_secs(5);
        for devices in [1, 3, 4, 7, 19_000] {
            for t in [
                0,
                1,
                1_249_999_999,
                1_250_000_000,
                1_250_000_001,
                61_000_000_007,
            ] {
                let brute = (0..1_000_000u64)
                    .take_while(|&m| due_ns(0, m, devices, interval) < t)
                    .count() as u64;
                assert_eq!(
                    due_before(0, t, devices, interval),
                    brute,
                    "{devices} devices, t {t}"
                );
            }
        }
        // 19,000 devices every 5 s: 3,800 a second.
        let w = due_before(7, 7 + 20_000_000_000, 19_000, interval);
        assert_eq!(w, 76_000);
        assert_eq!(due_before(100, 50, 19_000, interval), 0);
    }

    #[test]
    fn acknowledged_numbers_travel_as_ranges() {
        assert!(ranges(&[]).is_empty());
        let seqs = [1, 2, 3, 7, 9, 10];
        let r = ranges(&seqs);
        assert_eq!(r, vec![(1, 4), (7, 8), (9, 11)]);
        assert_eq!(expand(&r).collect::<Vec<_>>(), seqs);
    }

    #[test]
    fn a_worker_sends_only_its_own_devices_messages_in_order() {
        // Worker of devices 2..4 out of 5: messages 2, 3, 7, 8, 12, 13, ...
        let (first, count, total) = (2usize, 2usize, 5u64);
        let ms: Vec<u64> = (0..3u64)
            .flat_map(|round| (0..count).map(move |i| round * total + (first + i) as u64))
            .collect();
        assert_eq!(ms, vec![2, 3, 7, 8, 12, 13]);
        let dues: Vec<u64> = ms
            .iter()
            .map(|&m| due_ns(0, m, 5, Duration::from_secs(5)))
            .collect();
        assert!(dues.windows(2).all(|w| w[0] < w[1]), "{dues:?}");
    }
}
