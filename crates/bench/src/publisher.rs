//! The publisher: POSTs batches to `/api/v1/publish` at a target event rate,
//! each event stamped with its send time (Unix ns) so workers can time it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior, interval};

use crate::cli::Scenario;
use crate::http::Http;
use crate::wire::{AppSpec, unix_nanos};
use crate::workload;

/// What to publish.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The gateway's internal listener.
    pub internal: SocketAddr,
    /// App and API key.
    pub app: AppSpec,
    /// Decides the events' keywords.
    pub scenario: Scenario,
    /// Subscribers (filtered events cycle over them).
    pub connections: usize,
    /// Events per second.
    pub rate: f64,
    /// Batch period.
    pub every: Duration,
    /// Channels the events cycle over.
    pub channels: usize,
}

/// What was published.
#[derive(Debug, Default)]
pub struct Published {
    /// `(send time in Unix ns, events)` per accepted batch.
    batches: Vec<(u64, u64)>,
    /// Batches refused or failed.
    pub errors: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

impl Published {
    /// Events accepted with a send time in `[start, end)`.
    pub fn in_window(&self, start: u64, end: u64) -> u64 {
        self.batches
            .iter()
            .filter(|(t, _)| (start..end).contains(t))
            .map(|(_, n)| n)
            .sum()
    }

    /// Events accepted in all.
    pub fn total(&self) -> u64 {
        self.batches.iter().map(|(_, n)| n).sum()
    }
}

/// Publishes until `stop` is set.
pub async fn run(plan: Plan, stop: Arc<AtomicBool>) -> Published {
    let http = Http::default();
    let url = format!("http://{}/api/v1/publish", plan.internal);
    let mut published = Published::default();
    let start = Instant::now();
    let mut seq: u64 = 0;
    let mut ticks = interval(plan.every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let most_per_batch = plan.rate.ceil().max(1.0) as u64;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let due = (plan.rate * start.elapsed().as_secs_f64()) as u64;
        let count = due.saturating_sub(seq).min(most_per_batch);
        if count == 0 {
            continue;
        }
        let sent = unix_nanos();
        let body = batch(&plan, seq, count, sent);
        seq += count;
        match http.post_json(&url, &plan.app.api_key, body).await {
            Ok((200, _)) => published.batches.push((sent, count)),
            Ok((status, text)) => fail(&mut published, format!("{status}: {}", text.trim())),
            Err(e) => fail(&mut published, e.to_string()),
        }
    }
    published
}

fn fail(published: &mut Published, reason: String) {
    published.errors += 1;
    published.last_error = Some(reason);
}

fn batch(plan: &Plan, first: u64, count: u64, sent: u64) -> Vec<u8> {
    let events: Vec<Value> = (first..first + count)
        .map(|seq| {
            workload::event_on(
                &plan.app,
                plan.scenario,
                seq,
                plan.connections,
                sent,
                plan.channels,
            )
        })
        .collect();
    serde_json::to_vec(&events).unwrap_or_default()
}
