//! Where a run's connections go, checked before anything connects: which
//! source addresses and ports they use, how many sockets each worker
//! process and each gateway process will hold, against the open-file
//! limit every process here has (20,000 on this machine). A run of
//! 100,000 connections over six gateways only works if none of these is
//! over, and a plan that cannot work is refused with the option to change.

use anyhow::bail;

use crate::cli::Options;
use crate::wire::{FIRST_SOURCE_HOST, FIRST_SOURCE_PORT, LAST_SOURCE_HOST, MAX_PER_SOURCE};

/// Files a worker keeps beyond its sockets (pipes, runtime, stdio).
const WORKER_RESERVE: usize = 64;
/// Files a gateway keeps beyond client sockets (`serve.rs` refuses
/// connections past its limit minus 128 with 503).
const GATEWAY_RESERVE: usize = 128;

/// The sockets of a run, per process and per source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Sockets of each worker process, in order (`pool::split`).
    pub per_worker: Vec<usize>,
    /// Sockets of each gateway holding subscribers (worker `i` connects to
    /// node `i % nodes`).
    pub per_node: Vec<usize>,
    /// Source addresses used, from 127.0.0.2.
    pub sources: usize,
    /// Ports used on each, from [`FIRST_SOURCE_PORT`].
    pub ports: usize,
}

/// The layout of `connections` over `workers` processes and `nodes`
/// gateways, `per_source` sockets per source address.
pub fn layout(connections: usize, per_source: usize, workers: usize, nodes: usize) -> Layout {
    let workers = workers.max(1);
    let per_worker: Vec<usize> = (0..workers)
        .map(|i| connections / workers + usize::from(i < connections % workers))
        .collect();
    let nodes = nodes.max(1);
    let mut per_node = vec![0; nodes];
    for (i, count) in per_worker.iter().enumerate() {
        per_node[i % nodes] += count;
    }
    let per_source = per_source.max(1);
    Layout {
        per_worker,
        per_node,
        sources: connections.div_ceil(per_source),
        ports: per_source.min(connections),
    }
}

/// Why `layout` cannot hold under `open_files` per process, if it cannot.
pub fn verify(layout: &Layout, per_source: usize, open_files: u64) -> Result<(), String> {
    let limit = usize::try_from(open_files).unwrap_or(usize::MAX);
    if per_source > MAX_PER_SOURCE {
        return Err(format!(
            "--per-source {per_source} is over {MAX_PER_SOURCE} (ports from {FIRST_SOURCE_PORT})"
        ));
    }
    let hosts = LAST_SOURCE_HOST - FIRST_SOURCE_HOST + 1;
    if layout.sources > hosts {
        return Err(format!(
            "{} source addresses needed, 127.0.0.{FIRST_SOURCE_HOST}-{LAST_SOURCE_HOST} has {hosts}: raise --per-source",
            layout.sources
        ));
    }
    let most = layout.per_worker.iter().max().copied().unwrap_or(0);
    if most + WORKER_RESERVE > limit {
        return Err(format!(
            "a worker would hold {most} sockets, over its {limit} open files: more --workers"
        ));
    }
    let most = layout.per_node.iter().max().copied().unwrap_or(0);
    if most + GATEWAY_RESERVE > limit {
        return Err(format!(
            "a gateway would hold {most} sockets, over its {limit} open files (less {GATEWAY_RESERVE} kept): more --nodes"
        ));
    }
    Ok(())
}

/// The layout of `options`, refused when it cannot hold here; printed to
/// stderr.
pub fn check(options: &Options) -> anyhow::Result<Layout> {
    let layout = layout(
        options.connections,
        options.per_source,
        options.worker_count(),
        options.subscriber_nodes(),
    );
    let limit = crate::procfs::open_files_limit(std::process::id())?;
    if let Err(reason) = verify(&layout, options.per_source, limit) {
        bail!("this run cannot hold its connections: {reason}");
    }
    let range = |v: &[usize]| {
        let (lo, hi) = (v.iter().min(), v.iter().max());
        format!("{}-{}", lo.unwrap_or(&0), hi.unwrap_or(&0))
    };
    eprintln!(
        "plan: {} connections from {} source address(es) x {} ports; {} workers of {} sockets; {} gateway(s) of {} (open files: {limit} per process)",
        options.connections,
        layout.sources,
        layout.ports,
        layout.per_worker.len(),
        range(&layout.per_worker),
        layout.per_node.len(),
        range(&layout.per_node),
    );
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn options(args: &[&str]) -> Options {
        let mut all = vec!["chouquette-bench"];
        all.extend_from_slice(args);
        Cli::parse_from(all).options
    }

    #[test]
    fn a_hundred_thousand_over_six_gateways_fit() {
        let o = options(&[
            "--scenario",
            "broadcast",
            "-n",
            "100000",
            "--broker",
            "redis",
            "--nodes",
            "7",
        ]);
        assert_eq!(o.subscriber_nodes(), 6);
        assert_eq!(o.worker_count(), 12, "two workers per gateway");
        let l = layout(o.connections, o.per_source, o.worker_count(), 6);
        assert_eq!(l.sources, 10, "127.0.0.2 to .11");
        assert_eq!(l.ports, 10_000);
        assert_eq!(l.per_worker.iter().sum::<usize>(), 100_000);
        assert!(l.per_worker.iter().all(|&w| (8_333..=8_334).contains(&w)));
        assert!(l.per_node.iter().all(|&n| (16_666..=16_667).contains(&n)));
        assert_eq!(verify(&l, o.per_source, 20_000), Ok(()));
        // The smoke run: 12,000 over six gateways, one worker each.
        let o = options(&["-n", "12000", "--broker", "redis", "--nodes", "7"]);
        let l = layout(o.connections, o.per_source, o.worker_count(), 6);
        assert_eq!(l.per_node, vec![2_000; 6]);
    }

    #[test]
    fn refuses_plans_that_cannot_hold() {
        // Three workers of 33,334 sockets each.
        let l = layout(100_000, 10_000, 3, 6);
        assert!(verify(&l, 10_000, 20_000).is_err_and(|e| e.contains("--workers")));
        // Twelve workers on two gateways: 50,000 each.
        let l = layout(100_000, 10_000, 12, 2);
        assert!(verify(&l, 10_000, 20_000).is_err_and(|e| e.contains("--nodes")));
        // One socket per source address: 100,000 addresses.
        let l = layout(100_000, 1, 12, 6);
        assert!(verify(&l, 1, 20_000).is_err_and(|e| e.contains("--per-source")));
        assert!(verify(&layout(10, 30_000, 1, 1), 30_000, 20_000).is_err());
    }

    #[test]
    fn storm_defaults_to_two_nodes_on_redis() {
        let o = options(&["--scenario", "storm"]);
        assert_eq!(o.connections, 19_000);
        assert_eq!(o.nodes, 2);
        assert_eq!(o.broker, crate::cli::BrokerChoice::Redis);
        assert_eq!(o.worker_count(), 3);
        let l = layout(
            o.connections,
            o.per_source,
            o.worker_count(),
            o.subscriber_nodes(),
        );
        assert_eq!(l.per_node, vec![19_000]);
        assert_eq!(verify(&l, o.per_source, 20_000), Ok(()));
    }
}
