//! `--scenario idle-abuse`: broadcast subscribers measured in two phases,
//! `none` (no abuse), then `idle-abuse`, during which worker processes
//! hold `--half-open` half-open TCP sockets and `--never-subscribe`
//! WebSockets that never subscribe (see `holders.rs`). The second phase
//! lasts long enough for every socket to be opened and to reach both
//! deadlines, so a socket still open at its end was not closed in time.
//!
//! The gateway is given `limits.header_read_timeout` and
//! `limits.subscribe_timeout` (`--header-read-timeout`,
//! `--subscribe-timeout`; `off` leaves a key out, for a gateway that
//! predates it), and no per-address connection rate, since the held sockets
//! are opened thousands per second.

use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::cli::Options;
use crate::fleet::Fleet;
use crate::histogram::Histogram;
use crate::holders::Hold;
use crate::pool::{self, Pool};
use crate::report::{Held, Phase};
use crate::scenario::{DRAIN, Tally, open_window, start_publishing, stop_publishing};
use crate::wire::{AppSpec, HeldResults, Plan};

/// Time left after the later deadline for the gateway to close everything.
const MARGIN: Duration = Duration::from_secs(5);

/// Held sockets per worker process: well under the 20,000 open files of a
/// process.
const PER_WORKER: usize = 9000;

/// The `[limits]` lines of the scenario's gateway config.
pub fn limits(options: &Options) -> String {
    let mut lines = String::new();
    for (key, value) in [
        ("header_read_timeout", options.header_read_timeout.0),
        ("subscribe_timeout", options.subscribe_timeout.0),
    ] {
        if let Some(d) = value {
            lines.push_str(&format!("{key} = \"{}ms\"\n", d.as_millis()));
        }
    }
    lines
}

/// How long the held sockets are watched: time to open them all at the
/// connect rate, the later deadline, and a margin; at least `--duration`.
pub fn held_window(options: &Options) -> Duration {
    let count = (options.half_open + options.never_subscribe) as f64;
    let opening = Duration::from_secs_f64(count / f64::from(options.connect_rate.max(1)));
    let deadline = [options.header_read_timeout.0, options.subscribe_timeout.0]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
    (opening + deadline + MARGIN).max(options.duration)
}

/// The workers' lifetime beyond a single-window scenario's.
pub fn extra_lifetime(options: &Options) -> Duration {
    match options.scenario {
        crate::cli::Scenario::IdleAbuse => options.duration + held_window(options),
        _ => Duration::ZERO,
    }
}

/// Runs both phases; returns them, and what became of each kind of socket.
pub async fn phases(
    options: &Options,
    app: &AppSpec,
    gateway: &Fleet,
    pool: &mut Pool,
    plan: &Plan,
) -> anyhow::Result<(Vec<Phase>, Vec<Held>)> {
    let (stop, publishing) = start_publishing(options, app, gateway).await;
    let mut tally = Tally::default();
    eprintln!("phase `none`: measuring for {:?}", options.duration);
    let (quiet, ()) = measured("none", options.duration, gateway, pool, &mut tally, async {
        sleep(options.duration).await;
        Ok(())
    })
    .await?;
    let window = held_window(options);
    eprintln!(
        "phase `idle-abuse`: {} half-open, {} never-subscribing, watched for {window:?}",
        options.half_open, options.never_subscribe
    );
    let holding = hold(options, plan, window);
    let (abused, results) =
        measured("idle-abuse", window, gateway, pool, &mut tally, holding).await?;
    stop_publishing(stop, publishing).await?;
    let held = [
        (
            Hold::HalfOpen,
            options.half_open,
            options.header_read_timeout.0,
        ),
        (
            Hold::NeverSubscribe,
            options.never_subscribe,
            options.subscribe_timeout.0,
        ),
    ]
    .into_iter()
    .map(|(kind, planned, deadline)| summarize(kind, planned, deadline, window, &results))
    .collect();
    Ok((vec![quiet, abused], held))
}

/// One phase: opens a window of `length`, runs `during` in it, then reads
/// the subscribers' deliveries and latency over the phase.
async fn measured<T>(
    name: &str,
    length: Duration,
    gateway: &Fleet,
    pool: &mut Pool,
    tally: &mut Tally,
    during: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Phase, T)> {
    open_window(pool, length).await?;
    let cpu0 = gateway.cpu_seconds()?;
    let out = during.await?;
    let cpu1 = gateway.cpu_seconds()?;
    sleep(DRAIN).await;
    let (deliveries, latency) = tally.phase(pool).await?;
    let phase = Phase {
        abuse: name.into(),
        deliveries,
        latency,
        gateway_cpu_percent: (cpu1 - cpu0) * 100.0 / length.as_secs_f64(),
        abuser_cpu_percent: None,
        abuser: None,
    };
    Ok((phase, out))
}

/// Opens the held sockets in their own workers, watches them for `window`
/// (counted from now), and returns what they saw.
async fn hold(
    options: &Options,
    plan: &Plan,
    window: Duration,
) -> anyhow::Result<Vec<HeldResults>> {
    let started = Instant::now();
    let total = (options.half_open + options.never_subscribe).max(1);
    let mut plans = Vec::new();
    for (kind, count) in [
        (Hold::HalfOpen, options.half_open),
        (Hold::NeverSubscribe, options.never_subscribe),
    ] {
        if count == 0 {
            continue;
        }
        let share = (u64::from(options.connect_rate) * count as u64 / total as u64).max(1);
        let kind_plan = Plan {
            hold: Some(kind),
            first: 0,
            count,
            connect_rate: u32::try_from(share).unwrap_or(u32::MAX),
            lifetime: window + Duration::from_secs(60),
            ..plan.clone()
        };
        plans.extend(pool::split(&kind_plan, count.div_ceil(PER_WORKER)));
    }
    let mut holders = Pool::spawn(&plans)?;
    let opened = holders.wait_connected(window).await?;
    eprintln!(
        "held sockets: {} opened, {} failed in {:.1} s",
        opened.connected,
        opened.failed,
        started.elapsed().as_secs_f64()
    );
    sleep(window.saturating_sub(started.elapsed())).await;
    let results = holders.held_results(Duration::from_secs(30)).await?;
    holders.exit().await;
    Ok(results)
}

/// What became of the sockets of `kind`, against their `deadline`.
fn summarize(
    kind: Hold,
    planned: usize,
    deadline: Option<Duration>,
    window: Duration,
    results: &[HeldResults],
) -> Held {
    let mut histogram = Histogram::default();
    let (mut opened, mut failed, mut closed, mut closed_1008) = (0, 0, 0, 0);
    for r in results.iter().filter(|r| r.hold == kind) {
        histogram.merge(&r.histogram);
        opened += r.opened;
        failed += r.failed;
        closed += r.closed;
        closed_1008 += r.closed_1008;
    }
    let seconds = |q: f64| histogram.quantile(q).map(|us| (us / 1e4).round() / 100.0);
    Held {
        kind: kind.name().into(),
        planned,
        opened,
        failed,
        closed,
        closed_1008,
        still_open: opened.saturating_sub(closed),
        deadline_s: deadline.map(|d| d.as_secs_f64()),
        watched_s: window.as_secs_f64(),
        close_p50_s: seconds(0.5),
        close_max_s: seconds(1.0),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn options(args: &[&str]) -> Options {
        let mut all = vec!["chouquette-bench", "--scenario", "idle-abuse"];
        all.extend_from_slice(args);
        Cli::parse_from(all).options
    }

    #[test]
    fn the_config_carries_both_deadlines_unless_off() {
        let both = options(&[]);
        assert_eq!(
            limits(&both),
            "header_read_timeout = \"5000ms\"\nsubscribe_timeout = \"5000ms\"\n"
        );
        let one = options(&["--header-read-timeout", "off", "--subscribe-timeout", "2s"]);
        assert_eq!(limits(&one), "subscribe_timeout = \"2000ms\"\n");
    }

    #[test]
    fn the_watch_covers_opening_and_the_later_deadline() {
        // 7,000 sockets at 2,000/s: 3.5 s, + 5 s + 5 s; below --duration 20s.
        assert_eq!(held_window(&options(&[])), Duration::from_secs(20));
        let long = options(&["--duration", "1s", "--subscribe-timeout", "30s"]);
        assert_eq!(held_window(&long), Duration::from_millis(38_500));
    }
}
