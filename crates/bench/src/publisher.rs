//! The publisher: POSTs batches to `/api/v1/publish` at a target event rate,
//! each event stamped with its send time (Unix ns) so workers can time it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// When given, the highest offset acknowledged so far per channel
    /// (read from the answers; `storm` only, events cycling over channels
    /// by number).
    pub offsets: Option<Arc<Vec<AtomicU64>>>,
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
            Ok((200, answer)) => {
                published.batches.push((sent, count));
                if let Some(offsets) = &plan.offsets {
                    note_offsets(offsets, &answer, seq - count, plan.channels);
                }
            }
            Ok((status, text)) => fail(&mut published, format!("{status}: {}", text.trim())),
            Err(e) => fail(&mut published, e.to_string()),
        }
    }
    published
}

/// Raises each channel's highest offset to those of a batch's answer (an
/// array of `{"epoch", "offset"}`, event `first + i` on channel
/// `(first + i) % channels`).
fn note_offsets(offsets: &[AtomicU64], answer: &str, first: u64, channels: usize) {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(answer) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let channel = (first as usize + i) % channels.max(1);
        if let (Some(offset), Some(slot)) = (item["offset"].as_u64(), offsets.get(channel)) {
            slot.fetch_max(offset, Ordering::Relaxed);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_the_highest_offset_of_each_channel() {
        let offsets: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
        // Events 3, 4, 5: channels 1, 0, 1.
        let answer =
            r#"[{"epoch":"e","offset":7},{"epoch":"e","offset":4},{"epoch":"e","offset":8}]"#;
        note_offsets(&offsets, answer, 3, 2);
        assert_eq!(offsets[0].load(Ordering::Relaxed), 4);
        assert_eq!(offsets[1].load(Ordering::Relaxed), 8);
        // An older answer never lowers them; a refusal's body is ignored.
        note_offsets(&offsets, r#"[{"epoch":"e","offset":2}]"#, 0, 2);
        note_offsets(&offsets, r#"{"error":"rate_limited"}"#, 0, 2);
        assert_eq!(offsets[0].load(Ordering::Relaxed), 4);
    }
}
