//! The parent's side of the workers: start them (this binary, `worker`),
//! send commands, collect their reports. Each is killed when dropped.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Process};
use tokio::time::{Instant, timeout_at};

use crate::procfs;
use crate::wire::{AbuseResults, Command, HeldResults, PLAN_VAR, Plan, Report, Results};

/// Totals of the workers' [`Report::Connected`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Connected {
    /// Subscribed connections.
    pub connected: usize,
    /// Refused by the gateway with 503.
    pub refused: usize,
    /// Failed after retries.
    pub failed: usize,
}

struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
}

/// Running workers.
pub struct Pool {
    workers: Vec<Worker>,
}

/// Splits `plan` (covering every connection) into `k` worker plans.
pub fn split(plan: &Plan, k: usize) -> Vec<Plan> {
    let k = k.max(1);
    let mut first = plan.first;
    (0..k)
        .map(|i| {
            let count = plan.count / k + usize::from(i < plan.count % k);
            let part = Plan {
                first,
                count,
                connect_rate: (plan.connect_rate / k as u32).max(1),
                ..plan.clone()
            };
            first += count;
            part
        })
        .collect()
}

impl Pool {
    /// Starts one worker per plan.
    pub fn spawn(plans: &[Plan]) -> anyhow::Result<Pool> {
        Pool::spawn_nice(plans, 0)
    }

    /// Starts one worker per plan, at niceness `nice` (through `nice(1)`).
    pub fn spawn_nice(plans: &[Plan], nice: i32) -> anyhow::Result<Pool> {
        let me = std::env::current_exe().context("cannot locate this executable")?;
        let mut workers = Vec::new();
        for plan in plans {
            let mut command = if nice == 0 {
                Process::new(&me)
            } else {
                let mut c = Process::new("nice");
                c.arg("-n").arg(nice.to_string()).arg(&me);
                c
            };
            let mut child = command
                .arg("worker")
                .env(PLAN_VAR, serde_json::to_string(plan)?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker")?;
            let pid = child.id().context("worker exited at once")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            workers.push(Worker {
                child,
                pid,
                stdin,
                reports: BufReader::new(stdout).lines(),
            });
        }
        Ok(Pool { workers })
    }

    /// Waits until every worker has tried all its connections.
    pub async fn wait_connected(&mut self, within: Duration) -> anyhow::Result<Connected> {
        let deadline = Instant::now() + within;
        let mut total = Connected::default();
        for worker in &mut self.workers {
            match next_report(worker, deadline).await? {
                Report::Connected {
                    connected,
                    refused,
                    failed,
                } => {
                    total.connected += connected;
                    total.refused += refused;
                    total.failed += failed;
                }
                other => bail!("worker {}: expected `connected`, got {other:?}", worker.pid),
            }
        }
        Ok(total)
    }

    /// Sends a command to every worker.
    pub async fn broadcast(&mut self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        for worker in &mut self.workers {
            worker
                .stdin
                .write_all(&line)
                .await
                .with_context(|| format!("worker {} is gone", worker.pid))?;
            worker.stdin.flush().await?;
        }
        Ok(())
    }

    /// Asks every worker for its results.
    pub async fn results(&mut self, within: Duration) -> anyhow::Result<Vec<Results>> {
        self.broadcast(&Command::Report).await?;
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        for worker in &mut self.workers {
            match next_report(worker, deadline).await? {
                Report::Result(results) => all.push(results),
                other => bail!("worker {}: expected `result`, got {other:?}", worker.pid),
            }
        }
        Ok(all)
    }

    /// Asks every (abusive) worker for its counters.
    pub async fn abuse_results(&mut self, within: Duration) -> anyhow::Result<Vec<AbuseResults>> {
        self.broadcast(&Command::Report).await?;
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        for worker in &mut self.workers {
            match next_report(worker, deadline).await? {
                Report::Abuse(results) => all.push(results),
                other => bail!("worker {}: expected `abuse`, got {other:?}", worker.pid),
            }
        }
        Ok(all)
    }

    /// Asks every (holding) worker what its held sockets saw.
    pub async fn held_results(&mut self, within: Duration) -> anyhow::Result<Vec<HeldResults>> {
        self.broadcast(&Command::Report).await?;
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        for worker in &mut self.workers {
            match next_report(worker, deadline).await? {
                Report::Held(results) => all.push(results),
                other => bail!("worker {}: expected `held`, got {other:?}", worker.pid),
            }
        }
        Ok(all)
    }

    /// Asks every (device) worker what its devices did so far.
    pub async fn device_results(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<Vec<crate::device_load::Results>> {
        self.broadcast(&Command::Report).await?;
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        for worker in &mut self.workers {
            match next_report(worker, deadline).await? {
                Report::Devices(results) => all.push(results),
                other => bail!("worker {}: expected `devices`, got {other:?}", worker.pid),
            }
        }
        Ok(all)
    }

    /// `storm`: sends [`Command::Restart`] and waits until every worker
    /// has taken it.
    pub async fn restart(&mut self, offsets: Vec<u64>, within: Duration) -> anyhow::Result<()> {
        self.broadcast(&Command::Restart { offsets }).await?;
        let deadline = Instant::now() + within;
        for worker in &mut self.workers {
            match next_report(worker, deadline).await? {
                Report::Armed => {}
                other => bail!("worker {}: expected `armed`, got {other:?}", worker.pid),
            }
        }
        Ok(())
    }

    /// `storm`: what every worker's clients did so far.
    pub async fn storm_results(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<Vec<crate::storm_client::Results>> {
        self.broadcast(&Command::Report).await?;
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        for worker in &mut self.workers {
            match next_report(worker, deadline).await? {
                Report::Storm(results) => all.push(results),
                other => bail!("worker {}: expected `storm`, got {other:?}", worker.pid),
            }
        }
        Ok(all)
    }

    /// CPU time used by all workers so far, seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.workers
            .iter()
            .filter_map(|w| procfs::cpu_seconds(w.pid).ok())
            .sum()
    }

    /// Tells the workers to exit, then makes sure they did.
    pub async fn exit(mut self) {
        let _ = self.broadcast(&Command::Exit).await;
        for worker in &mut self.workers {
            let deadline = Instant::now() + Duration::from_secs(5);
            if timeout_at(deadline, worker.child.wait()).await.is_err() {
                let _ = worker.child.start_kill();
                let _ = worker.child.wait().await;
            }
        }
    }
}

async fn next_report(worker: &mut Worker, deadline: Instant) -> anyhow::Result<Report> {
    let line = timeout_at(deadline, worker.reports.next_line())
        .await
        .with_context(|| format!("worker {} did not report in time", worker.pid))?
        .with_context(|| format!("cannot read worker {}", worker.pid))?
        .with_context(|| format!("worker {} exited", worker.pid))?;
    serde_json::from_str(&line)
        .with_context(|| format!("bad report from worker {}: {line}", worker.pid))
}
