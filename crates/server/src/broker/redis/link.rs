//! The link to Redis: connecting (directly or through Sentinel), listening
//! on this node's topics, noticing a loss, reconnecting with backoff.
//!
//! One task owns the link. It connects a multiplexed command connection and
//! a pub/sub connection, listens again on every watched topic in batches of
//! [`SUBSCRIBE_BATCH`] (a reconnect costs a handful of commands, not one per
//! channel or client), starts a new hub era and announces the link up. It
//! then hands each message to the hub in arrival order (which is offset
//! order per channel), pings Redis every second, and every
//! `topic_sweep` (30 s by default) stops listening on topics this node no
//! longer needs.
//! A closed stream, a failed ping or a caller's report ends the link: it is
//! announced down and the task retries after a capped, jittered backoff.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::RedisError;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::time::{MissedTickBehavior, interval, sleep, timeout};

use super::commands::{self, Commands, ConnectError};
use super::{Control, Shared, wire};

/// Topics per SUBSCRIBE or UNSUBSCRIBE command.
const SUBSCRIBE_BATCH: usize = 1000;
/// How often the link is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(1);

/// A live link: what callers use to send commands and to listen.
#[derive(Clone)]
pub(super) struct Link {
    /// Distinguishes links, so a subscription confirmed on an old one is
    /// made again on the new one.
    pub id: u64,
    pub commands: Commands,
    pub subscriptions: PubSubSink,
}

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

async fn connect(shared: &Shared) -> Result<(Link, PubSubStream), ConnectError> {
    let settings = &shared.settings;
    let (commands, listen_on) = commands::open(settings, Some(settings.command_timeout)).await?;
    let pubsub = commands::pubsub(settings, &listen_on).await?;
    let (mut sink, stream) = pubsub.split();
    let id = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
    let mut watched = shared.watched.lock().await;
    let mut topics: Vec<Arc<str>> = watched.keys().cloned().collect();
    topics.push(shared.control_topic().into());
    topics.push(shared.users_topic().into());
    topics.push(shared.replies_topic().into());
    topics.push(shared.presence_topic().into());
    for batch in topics.chunks(SUBSCRIBE_BATCH) {
        let names: Vec<&str> = batch.iter().map(|t| &**t).collect();
        commands::within(settings.command_timeout, sink.subscribe(&names)).await?;
    }
    for (_, confirmed) in watched.values_mut() {
        *confirmed = id;
    }
    // A new era before the first message of this link reaches the hub:
    // sessions restart their cursors, offsets may have restarted.
    shared.hub.next_era();
    let link = Link {
        id,
        commands,
        subscriptions: sink,
    };
    *shared.link.write().unwrap_or_else(|p| p.into_inner()) = Some(link.clone());
    drop(watched);
    Ok((link, stream))
}

/// Runs the link until the broker is dropped.
pub(super) async fn supervise(shared: Weak<Shared>) {
    let mut failures: u32 = 0;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        match connect(&strong).await {
            Ok((link, stream)) => {
                failures = 0;
                announce(&strong, true);
                strong.on_control(Control::Connected);
                let reconnect_max = strong.settings.reconnect_max;
                drop(strong);
                listen(&shared, link, stream).await;
                let Some(strong) = shared.upgrade() else {
                    return;
                };
                *strong.link.write().unwrap_or_else(|p| p.into_inner()) = None;
                announce(&strong, false);
                sleep(backoff(0, reconnect_max)).await;
                continue;
            }
            Err(e) => {
                strong.telemetry.link.connect_failed();
                if failures == 0 {
                    tracing::warn!(error = %e, "cannot connect to Redis; retrying");
                } else {
                    tracing::debug!(error = %e, failures, "cannot connect to Redis");
                }
                failures = failures.saturating_add(1);
                let wait = backoff(failures, strong.settings.reconnect_max);
                drop(strong);
                sleep(wait).await;
            }
        }
    }
}

fn announce(shared: &Shared, up: bool) {
    shared.telemetry.link.link_up(up);
    if up {
        tracing::info!("connected to Redis");
    } else {
        tracing::warn!("lost the link to Redis; clients are told `broker_unavailable`");
    }
    shared.status.send_replace(up);
}

/// Delivers messages until the link breaks or the broker is dropped.
async fn listen(shared: &Weak<Shared>, link: Link, mut stream: PubSubStream) {
    let mut ping = interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let Some((broken, (control, users, replies, presence), sweep_every, key_ttl)) =
        shared.upgrade().map(|s| {
            let settings = &s.settings;
            (
                s.broken_signal(),
                (
                    s.control_topic(),
                    s.users_topic(),
                    s.replies_topic(),
                    s.presence_topic(),
                ),
                settings.topic_sweep,
                settings.key_ttl,
            )
        })
    else {
        return;
    };
    let mut sweep = ticker(sweep_every);
    // A third of `key_ttl`, so that two refreshes may fail before a key expires.
    let mut keep = ticker((key_ttl / 3).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return };
                let Some(shared) = shared.upgrade() else { return };
                if message.get_channel_name() == control {
                    shared.on_control(Control::Message(message.get_payload_bytes()));
                } else if message.get_channel_name() == users {
                    shared.on_user_message(message.get_payload_bytes());
                } else if message.get_channel_name() == replies {
                    shared.on_reply(message.get_payload_bytes());
                } else if message.get_channel_name() == presence {
                    shared.on_presence_message(message.get_payload_bytes());
                } else if let Err(lag) = deliver(&shared, message.get_payload_bytes()) {
                    shared.telemetry.link.lagged();
                    tracing::warn!(lag_ms = lag.as_millis() as u64,
                        "this node fell behind Redis by more than broker.max_lag; reconnecting");
                    return;
                }
            }
            _ = ping.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                let mut sink = link.subscriptions.clone();
                let answered = timeout(shared.settings.command_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
            }
            _ = sweep.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                if drop_unneeded(&shared, &link).await.is_err() {
                    return;
                }
            }
            _ = keep.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                tokio::spawn(keep_alive(shared, link.commands.clone()));
            }
            _ = broken.notified() => return,
        }
    }
}

/// A periodic timer whose first tick is one period away, and which does not
/// catch up on ticks missed while the link was busy.
fn ticker(every: Duration) -> tokio::time::Interval {
    let mut ticker = interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.reset();
    ticker
}

/// Pushes back the expiry of the keys of every channel this node has
/// subscribers on. `key_ttl` forgets quiet channels, but one whose keys
/// expired under its subscribers is numbered anew: they would be told
/// `reset`, and lose what was published meanwhile. A failure is logged,
/// not fatal: the link's own checks notice a lost Redis.
async fn keep_alive(shared: Arc<Shared>, mut commands: Commands) {
    let ttl = i64::try_from(shared.settings.key_ttl.as_millis()).unwrap_or(i64::MAX);
    for channel in shared.hub.channels() {
        let keys = shared.keys(&channel);
        // One hash tag per channel: one pipeline reaches one shard.
        let mut pipe = redis::pipe();
        for key in [
            &keys.meta,
            &keys.hist,
            &keys.state,
            &keys.seen,
            &keys.seenoff,
            &keys.devstate,
        ] {
            pipe.pexpire(key, ttl).ignore();
        }
        let done = timeout(
            shared.settings.command_timeout,
            pipe.query_async::<()>(&mut commands),
        );
        if !matches!(done.await, Ok(Ok(()))) {
            tracing::debug!(%channel, "could not keep a channel's keys alive");
            return;
        }
    }
}

impl Shared {
    /// A handle on `broken` that outlives a borrow of the whole state.
    fn broken_signal(self: &Arc<Self>) -> BrokenSignal {
        BrokenSignal(Arc::downgrade(self))
    }
}

/// Waits for [`Shared::broken`] without keeping the broker alive.
struct BrokenSignal(Weak<Shared>);

impl BrokenSignal {
    async fn notified(&self) {
        match self.0.upgrade() {
            Some(shared) => shared.broken.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// Hands one message to the hub. `Err` when it comes later than
/// `max_lag` after Redis published it: this node is not keeping up, and the
/// messages waiting in the pub/sub buffer (which redis-rs does not bound)
/// must not pile up; the link is dropped, its buffer with it, and clients
/// are told `broker_unavailable`, then `broker_restored`.
fn deliver(shared: &Shared, payload: &[u8]) -> Result<(), Duration> {
    match wire::decode_message(payload) {
        Ok(message) => {
            let lag = Duration::from_millis(unix_ms().saturating_sub(message.sent_ms));
            if lag > shared.settings.max_lag {
                return Err(lag);
            }
            shared
                .hub
                .deliver_in_epoch(&Arc::new(message.publication), &message.epoch);
        }
        Err(e) => tracing::warn!(error = %e, "unreadable message on a Chouquette topic"),
    }
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Stops listening on topics of channels without subscribers on this node.
async fn drop_unneeded(shared: &Shared, link: &Link) -> Result<(), RedisError> {
    let mut watched = shared.watched.lock().await;
    let idle: Vec<Arc<str>> = watched
        .iter()
        .filter(|(_, (channel, _))| shared.hub.subscriber_count(channel) == 0)
        .map(|(topic, _)| topic.clone())
        .collect();
    for topic in &idle {
        watched.remove(topic);
    }
    let mut sink = link.subscriptions.clone();
    for batch in idle.chunks(SUBSCRIBE_BATCH) {
        let names: Vec<&str> = batch.iter().map(|t| &**t).collect();
        match timeout(shared.settings.command_timeout, sink.unsubscribe(&names)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )));
            }
        }
    }
    Ok(())
}

/// 100 ms doubled per failure, capped at `max`, then jittered down to
/// between half and all of it, so that nodes do not reconnect in step.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << failures.min(16));
    let capped = base.min(max);
    let random = RandomState::new().build_hasher().finish();
    let fraction = (random % 1000) as f64 / 2000.0;
    capped / 2 + capped.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(5);
        for failures in 0..40 {
            let wait = backoff(failures, max);
            let base = Duration::from_millis(100)
                .saturating_mul(1 << failures.min(16))
                .min(max);
            assert!(wait >= base / 2 && wait <= base, "{failures}: {wait:?}");
        }
        let waits: std::collections::HashSet<_> = (0..20).map(|_| backoff(10, max)).collect();
        assert!(waits.len() > 1, "jitter");
    }
}
