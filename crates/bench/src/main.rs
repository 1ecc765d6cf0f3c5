//! `chouquette-bench`: runs the gateway as a child process, loads it from
//! worker processes (this binary re-executed) and reports memory, delivery
//! rate, latency and the gateway's CPU cost per delivered message.

mod abuse;
mod cli;
mod client;
mod dashboard;
mod device;
mod device_load;
mod devices;
mod fleet;
mod floor;
mod gateway;
mod histogram;
mod holders;
mod http;
mod idle_abuse;
mod mqtt_server;
mod notifications;
mod notify_bytes;
mod pace;
mod pg_catchup;
mod pg_load;
mod pg_server;
mod plan;
mod pool;
mod postgres;
mod procfs;
mod publisher;
mod redis_server;
mod report;
mod rpc;
mod scenario;
mod sequence;
mod storm;
mod storm_client;
mod wire;
mod worker;
mod workload;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use crate::cli::{Cli, Command, Options};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Worker) => worker::main(),
        Some(Command::Floor { public, internal }) => floor::main(public, internal),
        None => bench(&cli.options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chouquette-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(options: &Options) -> anyhow::Result<()> {
    rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-file limit")?;
    pin(options)?;
    if options.scenario == cli::Scenario::Postgres {
        return postgres_bench(options);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    if options.scenario == cli::Scenario::Devices {
        return runtime.block_on(async {
            tokio::select! {
                done = devices::run(options) => done,
                signal = interrupted() => {
                    signal?;
                    bail!("interrupted");
                }
            }
        });
    }
    if options.scenario == cli::Scenario::NotifyBytes {
        return runtime.block_on(notify_bytes::run(options));
    }
    if matches!(
        options.scenario,
        cli::Scenario::Rpc | cli::Scenario::Notifications | cli::Scenario::Storm
    ) {
        return runtime.block_on(async {
            tokio::select! {
                done = async {
                    match options.scenario {
                        cli::Scenario::Rpc => rpc::run(options).await,
                        cli::Scenario::Storm => storm::run(options).await,
                        _ => notifications::run(options).await,
                    }
                } => done,
                signal = interrupted() => {
                    signal?;
                    bail!("interrupted");
                }
            }
        });
    }
    let summary = runtime.block_on(async {
        tokio::select! {
            summary = scenario::run(options) => summary,
            signal = interrupted() => {
                signal?;
                bail!("interrupted");
            }
        }
    })?;
    report::print(&summary);
    Ok(())
}

/// `--scenario postgres` on two threads: the writers and the subscribers
/// share this process, and one thread would make it the bottleneck.
fn postgres_bench(options: &Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        tokio::select! {
            done = postgres::run(options) => done,
            signal = interrupted() => {
                signal?;
                bail!("interrupted");
            }
        }
    })
}

/// `--server-cpus` and `--loadgen-cpus`: this process (still one thread,
/// so `taskset -a` covers it) and the workers it starts go to the load
/// generator's cores; servers are started under `taskset -c` on theirs.
fn pin(options: &Options) -> anyhow::Result<()> {
    let Some(server) = &options.server_cpus else {
        if options.loadgen_cpus.is_some() {
            bail!("--loadgen-cpus needs --server-cpus");
        }
        return Ok(());
    };
    let loadgen = match &options.loadgen_cpus {
        Some(cpus) => cpus.clone(),
        None => other_cpus(server)?,
    };
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &loadgen, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run taskset")?;
    if !status.success() {
        bail!("taskset -c {loadgen} failed on the bench");
    }
    gateway::pin_servers(server);
    eprintln!("server pinned to cores {server}, load generator to {loadgen}");
    Ok(())
}

/// The cores of this machine outside `list` (a `taskset -c` list of
/// numbers and ranges).
fn other_cpus(list: &str) -> anyhow::Result<String> {
    let mut taken = std::collections::BTreeSet::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
        taken.extend(a..=b);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let rest: Vec<String> = (0..cores)
        .filter(|c| !taken.contains(c))
        .map(|c| c.to_string())
        .collect();
    if rest.is_empty() {
        bail!("no core left for the load generator outside {list}");
    }
    Ok(rest.join(","))
}

/// Resolves on SIGINT or SIGTERM, so children are killed on the way out.
async fn interrupted() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
