//! The Redis inbox source: backends that would rather not call HTTP `XADD`
//! events to one stream; every gateway reads it as a member of one consumer
//! group.
//!
//! An entry holds one event as JSON in its field `event`, or several (one
//! group, published in order with consecutive offsets when they share a
//! channel) as a JSON array in `events`; the JSON is what `/api/v1/publish`
//! takes. Each entry goes to the ingest pipeline as one group. Or it holds
//! a notification to users in its field `notification`, the body of
//! `POST /api/v1/notify`, checked and stored as that route does
//! (`notification`), after the round's events, in the stream's order. An
//! entry is acknowledged only once all its events are published (its
//! notification stored) or it was moved to the dead-letter stream
//! `<stream>:dead` with the reason (an unknown app, a malformed event or
//! notification, a full state): nothing accepted is lost silently.
//!
//! The app's `publishes_per_second` applies as backpressure, not refusal:
//! an entry over it is not dead-lettered; the inbox waits until the app's
//! tokens are back and tries it again, with the entries after it, in order.
//! They stay pending meanwhile. While Redis refuses to publish, entries stay
//! pending too and are read again. Entries pending on a gateway that went
//! silent for `claim_after` are claimed by another. Each event is published
//! under an idempotency id (see `entry`), which the publish script skips
//! when it was published within the dedup window: an entry taken over after
//! its first gateway published it but died before acknowledging is not
//! published twice. A notification likewise: its idempotency id (its own
//! `id`, else derived from the entry) is recorded once it is stored, and
//! a repeat answers the first one without storing anything.

mod config;
mod entry;
mod notification;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chouquette_core::broker::BrokerError;
use chouquette_core::ingest::{self, Caller, Outcome, Refusal, Skipped};
use chouquette_core::node::Node;
use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};

pub use config::InboxSettings;
use entry::{Content, Entry};

use super::Source;
use crate::broker::redis::{Commands, RedisBroker, backoff};
use crate::shutdown::Shutdown;

/// The inbox consumer of one gateway.
#[derive(Debug)]
pub struct RedisInbox {
    broker: Arc<RedisBroker>,
    settings: InboxSettings,
}

impl RedisInbox {
    /// A consumer of the inbox `settings` name, on `broker`'s Redis.
    pub fn new(broker: Arc<RedisBroker>, settings: InboxSettings) -> RedisInbox {
        RedisInbox { broker, settings }
    }

    /// Consumes until the task ends; pauses with a backoff after a failure.
    async fn consume_forever(&self, node: &Arc<Node>) {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            if let Err(e) = self.consume(node).await {
                if started.elapsed() > Duration::from_secs(10) {
                    failures = 0;
                }
                if failures == 0 {
                    tracing::warn!(error = %e, stream = %self.settings.stream, "inbox paused; retrying");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures, Duration::from_secs(5))).await;
            }
        }
    }

    async fn consume(&self, node: &Arc<Node>) -> Result<(), InboxError> {
        let settings = &self.settings;
        let mut con = self.broker.dedicated().await?;
        let created: Result<(), _> = con
            .xgroup_create_mkstream(&settings.stream, &settings.group, "0")
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e.into());
        }
        // What this consumer had taken before a restart, first.
        loop {
            let entries = read(&mut con, settings, "0", None).await?;
            if entries.is_empty() {
                break;
            }
            handle(node, &mut con, settings, &entries).await?;
        }
        let mut last_claim: Option<Instant> = None;
        loop {
            if last_claim.is_none_or(|at| at.elapsed() >= settings.claim_after / 2) {
                claim(node, &mut con, settings).await?;
                last_claim = Some(Instant::now());
            }
            let entries = read(&mut con, settings, ">", Some(settings.block)).await?;
            handle(node, &mut con, settings, &entries).await?;
        }
    }
}

impl Source for RedisInbox {
    async fn run(self, node: Arc<Node>, mut shutdown: Shutdown) {
        tokio::select! {
            () = shutdown.stopped() => {}
            () = self.consume_forever(&node) => {}
        }
    }
}

/// Why consuming stopped (it restarts after a backoff).
#[derive(Debug, thiserror::Error)]
enum InboxError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Broker(#[from] BrokerError),
}

async fn read(
    con: &mut Commands,
    settings: &InboxSettings,
    from: &str,
    block: Option<Duration>,
) -> Result<Vec<StreamId>, InboxError> {
    let mut options = StreamReadOptions::default()
        .group(&settings.group, &settings.consumer)
        .count(settings.batch);
    if let Some(block) = block {
        options = options.block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
    }
    let reply: Option<StreamReadReply> = con
        .xread_options(&[&settings.stream], &[from], &options)
        .await?;
    Ok(reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default())
}

/// Takes over entries pending too long on other consumers.
async fn claim(
    node: &Arc<Node>,
    con: &mut Commands,
    settings: &InboxSettings,
) -> Result<(), InboxError> {
    let idle = u64::try_from(settings.claim_after.as_millis()).unwrap_or(u64::MAX);
    let mut cursor = "0-0".to_string();
    // Bounded: at most this many batches per claim round.
    for _ in 0..100 {
        let reply: StreamAutoClaimReply = con
            .xautoclaim_options(
                &settings.stream,
                &settings.group,
                &settings.consumer,
                idle,
                &cursor,
                StreamAutoClaimOptions::default().count(settings.batch),
            )
            .await?;
        if !reply.claimed.is_empty() {
            node.telemetry().link.inbox_claimed(reply.claimed.len());
            tracing::info!(
                entries = reply.claimed.len(),
                "took over inbox entries of a silent gateway"
            );
            handle(node, con, settings, &reply.claimed).await?;
        }
        if reply.next_stream_id == "0-0" {
            break;
        }
        cursor = reply.next_stream_id;
    }
    Ok(())
}

/// Publishes a batch of entries, dead-letters the refused ones and
/// acknowledges both. Entries held back by an app's publish rate are tried
/// again once its tokens are back (pending until then). A broker failure
/// returns before acknowledging anything of the round.
async fn handle(
    node: &Arc<Node>,
    con: &mut Commands,
    settings: &InboxSettings,
    entries: &[StreamId],
) -> Result<(), InboxError> {
    let mut pending: Vec<&StreamId> = entries.iter().collect();
    while !pending.is_empty() {
        let round = publish(node, &pending).await?;
        settle(con, settings, &round).await?;
        node.telemetry()
            .link
            .inbox(round.published, round.duplicates, round.dead.len());
        let Some(wait) = round.wait else {
            break;
        };
        tokio::time::sleep(wait).await;
        pending = round
            .held
            .iter()
            .filter_map(|&i| pending.get(i).copied())
            .collect();
    }
    Ok(())
}

/// What one pass over entries did, by index into them.
#[derive(Default)]
struct Round {
    entries: Vec<Entry>,
    /// Refused entries, in order, with the reason.
    dead: Vec<(usize, String)>,
    /// Entries to try again after `wait`: rate limited or held back by one.
    held: Vec<usize>,
    wait: Option<Duration>,
    published: usize,
    duplicates: usize,
}

/// Submits every readable entry's events as one group and sorts the
/// outcomes; then stores the notifications, in the stream's order.
async fn publish(node: &Arc<Node>, entries: &[&StreamId]) -> Result<Round, BrokerError> {
    let max_data = node.max_data_bytes();
    let mut round = Round {
        entries: entries.iter().map(|e| entry::parse(e, max_data)).collect(),
        ..Round::default()
    };
    let mut owners = Vec::with_capacity(round.entries.len());
    let mut groups = Vec::with_capacity(round.entries.len());
    let mut notifications = Vec::new();
    for (i, entry) in round.entries.iter_mut().enumerate() {
        match std::mem::replace(&mut entry.content, Ok(Content::Events(Vec::new()))) {
            Ok(Content::Events(events)) => {
                owners.push(i);
                groups.push(events);
            }
            Ok(Content::Notification(notification)) => notifications.push((i, notification)),
            Err(reason) => round.dead.push((i, reason)),
        }
    }
    let report = ingest::submit(node, Caller::Source, groups).await;
    if let Some(error) = report.unavailable {
        return Err(error);
    }
    for (outcomes, owner) in report.groups.iter().zip(owners) {
        round.sort(owner, outcomes);
    }
    for (i, notification) in notifications {
        let (app, request) = *notification;
        if let Some(reason) = notification::store(node, &app, request).await? {
            round.dead.push((i, reason));
        }
    }
    round.dead.sort_unstable_by_key(|(i, _)| *i);
    Ok(round)
}

impl Round {
    /// Files entry `owner` by its events' outcomes.
    fn sort(&mut self, owner: usize, outcomes: &[Outcome]) {
        for outcome in outcomes {
            if let Outcome::Published(p) = outcome {
                if p.duplicate {
                    self.duplicates += 1;
                } else {
                    self.published += 1;
                }
            }
        }
        let refused = outcomes.iter().enumerate().find_map(|(i, o)| match o {
            Outcome::Refused(refusal) => Some((i, refusal)),
            _ => None,
        });
        match refused {
            Some((_, Refusal::RateLimited { limited, .. })) => {
                self.held.push(owner);
                self.wait = Some(limited.retry_after);
            }
            Some((_, refusal)) if refusal.by_broker() => {
                self.dead.push((owner, refusal.to_string()));
            }
            Some((index, refusal)) => self.dead.push((owner, format!("event {index}: {refusal}"))),
            None if outcomes.contains(&Outcome::NotAttempted(Skipped::HeldBack)) => {
                self.held.push(owner);
            }
            None => {}
        }
    }
}

/// Moves the round's refused entries to the dead letters, then acknowledges
/// every entry but those held.
async fn settle(
    con: &mut Commands,
    settings: &InboxSettings,
    round: &Round,
) -> Result<(), InboxError> {
    for (i, reason) in &round.dead {
        let Some(entry) = round.entries.get(*i) else {
            continue;
        };
        tracing::warn!(id = %entry.id, reason = %reason, "inbox entry refused; moved to the dead-letter stream");
        let _: String = con
            .xadd_maxlen(
                settings.dead(),
                redis::streams::StreamMaxlen::Approx(settings.dead_max_len),
                "*",
                &[
                    ("id", entry.id.as_str()),
                    ("error", reason.as_str()),
                    ("entry", entry.raw.as_str()),
                ],
            )
            .await?;
    }
    let done: Vec<&str> = round
        .entries
        .iter()
        .enumerate()
        .filter(|(i, _)| !round.held.contains(i))
        .map(|(_, e)| e.id.as_str())
        .collect();
    if !done.is_empty() {
        let _: usize = con.xack(&settings.stream, &settings.group, &done).await?;
    }
    Ok(())
}
