//! `--scenario postgres --pg-backlog N`: how fast the Postgres source
//! catches up, with no writer competing for the CPU.
//!
//! On this 2-core machine a live write load of 20,000 changes/s cannot be
//! generated beside Postgres and the gateway (the writers and Postgres take
//! the cores), so the live scenario measures the writers' ceiling as much
//! as the gateway's. Here the gateway makes its slot and stops; `N`
//! changes are committed meanwhile (the same single-row, or `--pg-tx-rows`,
//! transactions as the live load); then a gateway starts on the same slot
//! with `-n` subscribers and the bench times how long until the source has
//! published all `N` (its `chouquette_postgres_events_total{outcome=
//! "published"}`), with the gateway's and Postgres' CPU over that time.
//! Subscribers join once the gateway is ready, so the first events may be
//! published before they listen: their receipts are reported, not required.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::{Instant, sleep};

use crate::cli::Options;
use crate::gateway::{BrokerSpec, Gateway, LimitsSpec};
use crate::http::Http;
use crate::pg_load::{self, LoadWindow, Plan, Written};
use crate::pg_server::PgServer;
use crate::postgres;
use crate::wire::AppSpec;

/// Longest wait for the source to publish the whole backlog.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(300);

/// The figures of one catch-up.
#[derive(Debug, Serialize)]
struct CatchUp {
    backlog: u64,
    tx_rows: usize,
    write_errors: u64,
    written_s: f64,
    subscribers: usize,
    /// From the gateway's start until the source had published every
    /// committed change (`None`: not within [`CATCH_UP_LIMIT`]).
    caught_up_s: Option<f64>,
    published: u64,
    published_per_s: f64,
    received: u64,
    gateway_cpu_percent: f64,
    postgres_cpu_percent: f64,
}

/// Runs the catch-up and prints its report.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (pg, app, binary) = postgres::prepare(options).await?;
    let extra = postgres::source_toml(&pg.url(), &app, options);
    let limits = LimitsSpec::default();
    let start = || {
        Gateway::start_with(
            &binary,
            &app,
            options.outbox_capacity,
            &limits,
            &BrokerSpec::Memory,
            &extra,
        )
    };
    let first = start().await?;
    postgres::wait_for_slot(&pg).await?;
    first.stop(Duration::from_secs(5)).await;
    eprintln!("writing a backlog of {} changes", options.pg_backlog);
    let began = Instant::now();
    let written = write_backlog(&pg, options).await?;
    let written_s = began.elapsed().as_secs_f64();
    let committed = written.committed.len() as u64;
    eprintln!("{committed} committed in {written_s:.1} s; starting the gateway");
    let pg_before = pg.cpu_seconds()?;
    let began = Instant::now();
    let gw = start().await?;
    let received = Arc::new(AtomicU64::new(0));
    let readers = open_subscribers(&gw, &app, options.connections, &received).await?;
    let caught_up = wait_published(&gw, committed).await?;
    let elapsed = began.elapsed().as_secs_f64();
    let (gw_cpu, pg_cpu) = (gw.cpu_seconds()?, pg.cpu_seconds()? - pg_before);
    sleep(Duration::from_millis(500)).await;
    for reader in readers {
        reader.abort();
    }
    gw.stop(Duration::from_secs(5)).await;
    let summary = CatchUp {
        backlog: options.pg_backlog,
        tx_rows: options.pg_tx_rows.max(1),
        write_errors: written.errors,
        written_s,
        subscribers: options.connections,
        caught_up_s: caught_up.map(|d| d.as_secs_f64()),
        published: committed,
        published_per_s: caught_up.map_or(0.0, |d| committed as f64 / d.as_secs_f64()),
        received: received.load(Ordering::Relaxed),
        gateway_cpu_percent: 100.0 * gw_cpu / elapsed,
        postgres_cpu_percent: 100.0 * pg_cpu / elapsed,
    };
    print(&summary);
    Ok(())
}

/// Commits the backlog with `--writers` writers as fast as they go.
async fn write_backlog(pg: &PgServer, options: &Options) -> anyhow::Result<Written> {
    let window = LoadWindow {
        load_start_ns: 0,
        start_ns: 0,
        end_ns: u64::MAX,
    };
    let next_seq = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for index in 0..options.writers.max(1) {
        let client = pg.client().await?;
        let plan = Plan {
            rate: 0.0,
            tx_rows: options.pg_tx_rows,
            last_seq: options.pg_backlog,
        };
        let next_seq = next_seq.clone();
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        tasks.push(tokio::spawn(pg_load::writer(
            client, index, plan, window, next_seq,
        )));
    }
    let mut all = Written::default();
    for task in tasks {
        let written = task.await.context("a writer panicked")??;
        all.committed.extend(written.committed);
        all.errors += written.errors;
    }
    Ok(all)
}

/// `count` subscribers to everything, each adding the changes it receives
/// to `received`.
async fn open_subscribers(
    gw: &Gateway,
    app: &AppSpec,
    count: usize,
    received: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut readers = Vec::new();
    for index in 0..count {
        let mut ws = postgres::subscribe(gw, app, index).await?;
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if let Ok(text) = message.to_text() {
                    let rows = text.matches("\"t_ns\"").count() as u64;
                    received.fetch_add(rows, Ordering::Relaxed);
                }
            }
        }));
    }
    Ok(readers)
}

/// Polls the gateway's metrics until its Postgres source has published
/// `expected` events; how long that took since the call (`None`: not
/// within [`CATCH_UP_LIMIT`]).
async fn wait_published(gw: &Gateway, expected: u64) -> anyhow::Result<Option<Duration>> {
    let http = Http::default();
    let url = format!("http://{}/metrics", gw.internal);
    let began = Instant::now();
    loop {
        let (status, text) = http.get(&url).await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        if published(&text) >= expected {
            return Ok(Some(began.elapsed()));
        }
        if began.elapsed() > CATCH_UP_LIMIT {
            return Ok(None);
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// The source's published events in a Prometheus text page.
fn published(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("chouquette_postgres_events_total{"))
        .filter(|l| l.contains("outcome=\"published\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn print(s: &CatchUp) {
    println!(
        "backlog {} changes ({} per transaction, {} write errors) written in {:.1} s",
        s.backlog, s.tx_rows, s.write_errors, s.written_s
    );
    match s.caught_up_s {
        Some(t) => println!(
            "caught up in {t:.2} s: {:.0} changes/s published; {} received by {} subscribers",
            s.published_per_s, s.received, s.subscribers
        ),
        None => println!("NOT caught up within {} s", CATCH_UP_LIMIT.as_secs()),
    }
    println!(
        "CPU while catching up: gateway {:.0} %, Postgres {:.0} % (of one core)",
        s.gateway_cpu_percent, s.postgres_cpu_percent
    );
    if let Ok(json) = serde_json::to_string(s) {
        println!("{json}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_published_samples_of_every_slot() {
        let page = "# TYPE chouquette_postgres_events_total counter\n\
            chouquette_postgres_events_total{slot=\"a\",outcome=\"published\"} 120\n\
            chouquette_postgres_events_total{slot=\"a\",outcome=\"duplicate\"} 7\n\
            chouquette_postgres_events_total{slot=\"b\",outcome=\"published\"} 3\n";
        assert_eq!(published(page), 123);
        assert_eq!(published("nothing here"), 0);
    }
}
