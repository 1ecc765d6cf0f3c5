//! The Redis inbox: backends that would rather not call HTTP `XADD` events
//! to one stream; every gateway reads it as a member of one consumer group.
//!
//! An entry holds one event as JSON in its field `event`, or several (one
//! batch, published in order with consecutive offsets when they share a
//! channel) as a JSON array in `events`; the JSON is what `/api/v1/publish`
//! takes. Each entry is acknowledged only once all its events are published
//! or it was moved to the dead-letter stream `<stream>:dead` with the reason
//! (an unknown app, a malformed event, a full state): nothing accepted is
//! lost silently. While Redis refuses to publish, entries stay pending and
//! are read again. Entries pending on a gateway that went silent for
//! `claim_after` are claimed by another. Each event carries its entry id to
//! the publish script, which skips ids already published within the dedup
//! window: an entry taken over after its first gateway published it but
//! died before acknowledging is not published twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::redis::Commands;
use chouquette_core::broker::BrokerError;
use chouquette_core::node::Node;
use chouquette_core::publication::{ChannelId, NewEvent, channel_runs};
use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};

use crate::broker::redis::{RedisBroker, backoff};

/// Where the inbox is and how it is consumed.
#[derive(Debug, Clone)]
pub struct InboxSettings {
    /// The stream backends append to.
    pub stream: String,
    /// The consumer group all gateways share.
    pub group: String,
    /// This gateway's name in the group (its node id).
    pub consumer: String,
    /// Entries read at once.
    pub batch: usize,
    /// Longest wait of one blocking read.
    pub block: Duration,
    /// Entries pending this long on a silent gateway are taken over.
    pub claim_after: Duration,
    /// Most entries kept in the dead-letter stream (approximately).
    pub dead_max_len: usize,
}

impl InboxSettings {
    fn dead(&self) -> String {
        format!("{}:dead", self.stream)
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

/// Consumes the inbox until the task is aborted.
pub async fn run(node: Arc<Node>, broker: Arc<RedisBroker>, settings: InboxSettings) {
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        if let Err(e) = consume(&node, &broker, &settings).await {
            if started.elapsed() > Duration::from_secs(10) {
                failures = 0;
            }
            if failures == 0 {
                tracing::warn!(error = %e, stream = %settings.stream, "inbox paused; retrying");
            }
            failures = failures.saturating_add(1);
            tokio::time::sleep(backoff(failures, Duration::from_secs(5))).await;
        }
    }
}

async fn consume(
    node: &Node,
    broker: &RedisBroker,
    settings: &InboxSettings,
) -> Result<(), InboxError> {
    let mut con = broker.dedicated().await?;
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
        handle(node, broker, &mut con, settings, entries).await?;
    }
    let mut last_claim: Option<Instant> = None;
    loop {
        if last_claim.is_none_or(|at| at.elapsed() >= settings.claim_after / 2) {
            claim(node, broker, &mut con, settings).await?;
            last_claim = Some(Instant::now());
        }
        let entries = read(&mut con, settings, ">", Some(settings.block)).await?;
        handle(node, broker, &mut con, settings, entries).await?;
    }
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
    node: &Node,
    broker: &RedisBroker,
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
            node.telemetry.link.inbox_claimed(reply.claimed.len());
            tracing::info!(
                entries = reply.claimed.len(),
                "took over inbox entries of a silent gateway"
            );
            handle(node, broker, con, settings, reply.claimed).await?;
        }
        if reply.next_stream_id == "0-0" {
            break;
        }
        cursor = reply.next_stream_id;
    }
    Ok(())
}

/// One entry, read: its events with their dedup ids, or why it is refused.
struct Entry {
    id: String,
    events: Result<Vec<(String, NewEvent)>, String>,
    raw: String,
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    entry
        .map
        .get(name)
        .and_then(|v| <String as redis::FromRedisValue>::from_redis_value_ref(v).ok())
}

/// The id an event is published once under: the backend's own `id` when it
/// set one (shared with HTTP publishes), else one derived from the entry.
fn dedup_id(event: &NewEvent, entry: &str) -> String {
    match &event.id {
        Some(id) => id.clone(),
        None => format!("inbox:{entry}"),
    }
}

fn parse(node: &Node, entry: &StreamId) -> Entry {
    let (raw, events) = if let Some(one) = field(entry, "event") {
        let events = serde_json::from_str::<NewEvent>(&one)
            .map(|e| vec![(dedup_id(&e, &entry.id), e)])
            .map_err(|e| format!("field `event`: {e}"));
        (one, events)
    } else if let Some(many) = field(entry, "events") {
        let events = serde_json::from_str::<Vec<NewEvent>>(&many)
            .map(|events| {
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| (dedup_id(&e, &format!("{}/{i}", entry.id)), e))
                    .collect()
            })
            .map_err(|e| format!("field `events`: {e}"));
        (many, events)
    } else {
        (String::new(), Err("no `event` or `events` field".into()))
    };
    let events = events.and_then(|events| {
        for (index, (_, event)) in events.iter().enumerate() {
            node.check(index, event).map_err(|e| e.to_string())?;
        }
        Ok(events)
    });
    Entry {
        id: entry.id.clone(),
        events,
        raw,
    }
}

/// Publishes a batch of entries, dead-letters the refused ones, then
/// acknowledges them all. A broker failure returns before acknowledging.
async fn handle(
    node: &Node,
    broker: &RedisBroker,
    con: &mut Commands,
    settings: &InboxSettings,
    entries: Vec<StreamId>,
) -> Result<(), InboxError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut parsed: Vec<Entry> = entries.iter().map(|e| parse(node, e)).collect();
    let mut dead: BTreeMap<usize, String> = BTreeMap::new();
    let flat: Vec<(usize, (String, NewEvent))> = parsed
        .iter_mut()
        .enumerate()
        .filter_map(|(i, e)| match &mut e.events {
            Ok(events) => Some(std::mem::take(events).into_iter().map(move |ev| (i, ev))),
            Err(_) => None,
        })
        .flatten()
        .collect();
    // Consecutive events of one channel, across entries, go out together.
    for (channel, items) in channel_runs(flat, |(_, (_, e))| e) {
        let (owners, run): (Vec<usize>, Vec<(String, NewEvent)>) = items.into_iter().unzip();
        publish_run(node, broker, &channel, &run, &owners, &mut dead).await?;
    }
    for (i, entry) in parsed.iter().enumerate() {
        if let Err(reason) = &entry.events {
            dead.insert(i, reason.clone());
        }
    }
    for (i, reason) in &dead {
        let entry = &parsed[*i];
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
    node.telemetry.link.inbox(0, 0, dead.len());
    let ids: Vec<&str> = parsed.iter().map(|e| e.id.as_str()).collect();
    let _: usize = con.xack(&settings.stream, &settings.group, &ids).await?;
    Ok(())
}

/// Publishes one channel's run; an event the channel refuses sends its
/// entry to the dead letters (its earlier events stay published) and the
/// run goes on after that entry.
async fn publish_run(
    node: &Node,
    broker: &RedisBroker,
    channel: &ChannelId,
    run: &[(String, NewEvent)],
    owners: &[usize],
    dead: &mut BTreeMap<usize, String>,
) -> Result<(), InboxError> {
    let Some(app) = node.apps.get(&channel.app) else {
        return Ok(()); // checked while parsing
    };
    let policy = app.channel_policy(&channel.name);
    let mut start = 0;
    while start < run.len() {
        let outcome = broker.publish_once(channel, policy, &run[start..]).await?;
        let duplicates = outcome.positions.iter().filter(|p| p.duplicate).count();
        let published = outcome.positions.len() - duplicates;
        node.telemetry.published_on(channel, published);
        node.telemetry.link.inbox(published, duplicates, 0);
        start += outcome.positions.len();
        if let Some(refused) = outcome.refused {
            let Some(&owner) = owners.get(start) else {
                break;
            };
            dead.insert(owner, refused.to_string());
            while owners.get(start) == Some(&owner) {
                start += 1;
            }
        }
    }
    Ok(())
}
