//! Presence: who is subscribed to a channel configured with `presence =
//! true` (PROTOCOL.md section 10 "Presence").
//!
//! A subscription to such a channel takes a [`Seat`] here: its connection
//! becomes a *listener* of the channel's presence frames and, when the
//! subscription names a user, counts for that user on this node. The seat
//! lives in the subscription's slot, so whatever ends the subscription
//! (unsubscribe, token expiry, kill switch, disconnect, close) drops it and
//! the user leaves when their last seat on this node goes.
//!
//! Three steps, each in one place:
//!
//! 1. **Local transitions** (a user's first seat on this node, or last one
//!    gone) are queued here, a join and a leave of the same user within one
//!    tick cancelling out, and handed to the broker every [`TICK`] by
//!    [`run`] ([`Broker::presence_changed`]).
//! 2. **The broker decides the cluster-wide transitions** (a user's first
//!    node, or last node gone) and announces them to every node's hub
//!    ([`Presence::announce`]): the memory broker at once, the Redis broker
//!    over one pub/sub topic, with an expiry that every node refreshes
//!    ([`Broker::presence_refresh`]) so a dead node's users leave too.
//! 3. **Announcements are coalesced per channel** until the next tick and
//!    written as one `presence` frame per channel, serialized once and
//!    shared by every listener ([`Presence::flush`]): a reconnect storm is
//!    at most one frame per channel per tick, and a user who left and came
//!    back within the tick is not announced at all.
//!
//! Presence frames are no events: no offset, no history. They go through
//! the connection's outbox like events (so a slow consumer is closed the
//! same way), tagged with the subscription's slot (a frame queued for an
//! ended subscription is dropped) and with [`PRESENCE`] as offset, which
//! the session admits without touching its event cursor.
//!
//! Bounds: one listener per subscription and one count per (channel, user)
//! with a subscription on this node, so both are bounded by the connection
//! and subscription limits; the announcements waiting for a tick hold at
//! most one entry per user per channel, and at most [`MAX_PRESENT`] (past
//! it, a change is not announced and is counted as dropped); a `present`
//! list names at most [`MAX_PRESENT`] users.
//!
//! [`Broker::presence_changed`]: crate::broker::Broker::presence_changed
//! [`Broker::presence_refresh`]: crate::broker::Broker::presence_refresh

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chouquette_protocol::server;

use crate::era::Era;
use crate::node::Node;
use crate::outbox::{Outbound, Outbox, Pushed};
use crate::publication::ChannelId;
use crate::telemetry::prometheus::Family;
use crate::telemetry::{DropReason, Telemetry};

/// Most users a `present` list names, and most changes one channel holds
/// between two ticks. Past it the list is cut (users sorted by name, the
/// first ones kept) and further changes of that tick are not announced
/// (counted in `chouquette_presence_dropped_total`): presence is meant for
/// rooms and dashboards, not for a channel with a crowd.
pub const MAX_PRESENT: usize = 10_000;

/// `offset` of a presence frame in the outbox: no event has it (offsets are
/// counted from 1 and never reach it), and the session admits it as is.
pub const PRESENCE: u64 = u64::MAX;

/// How long transitions are gathered before they are handed on, and
/// announcements before they are written: short enough to feel live, long
/// enough that a reconnect storm costs one frame per channel.
pub const TICK: Duration = Duration::from_millis(100);

const USERS: Family = Family::gauge(
    "chouquette_presence_users",
    "Users present on this node: (channel, user) pairs with at least one subscription here.",
);
const FRAMES: Family = Family::counter(
    "chouquette_presence_frames_total",
    "presence joined/left frames built (each shared by every subscriber of its channel on this node).",
);
const DROPPED: Family = Family::counter(
    "chouquette_presence_dropped_total",
    "Presence changes not announced because a channel had more than 10000 in one tick.",
);

/// Presence counters (see the families above).
#[derive(Debug, Default)]
pub struct PresenceTelemetry {
    users: AtomicI64,
    frames: AtomicU64,
    dropped: AtomicU64,
}

impl PresenceTelemetry {
    /// Appends the presence families.
    pub fn render(&self, out: &mut String) {
        USERS.render_value(out, self.users.load(Ordering::Relaxed));
        FRAMES.render_value(out, self.frames.load(Ordering::Relaxed));
        DROPPED.render_value(out, self.dropped.load(Ordering::Relaxed));
    }
}

/// A user's first subscription on this node to a presence channel
/// (`here`), or their last one gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChange {
    /// The channel.
    pub channel: ChannelId,
    /// The user.
    pub user: Box<str>,
    /// Whether the user is now on the channel here.
    pub here: bool,
}

/// Where a subscriber's presence frames go.
#[derive(Debug)]
struct Listener {
    outbox: Arc<Outbox>,
    slot: u32,
}

/// One presence channel with subscribers on this node.
#[derive(Debug, Default)]
struct Channel {
    /// Users with subscriptions here → how many.
    users: HashMap<Box<str>, usize>,
    listeners: HashMap<u64, Listener>,
    /// Announced changes waiting for the tick: user → joined (or left).
    pending: HashMap<Box<str>, bool>,
}

#[derive(Debug, Default)]
struct Inner {
    channels: HashMap<ChannelId, Channel>,
    /// Local transitions waiting for the tick: (channel, user) → here.
    outgoing: HashMap<(ChannelId, Box<str>), bool>,
    next_id: u64,
}

/// This node's presence listeners and users (see the module docs).
#[derive(Debug)]
pub struct Presence {
    inner: Mutex<Inner>,
    /// The node's, for slow consumers; presence's own counters are in
    /// its `presence` part.
    telemetry: Arc<Telemetry>,
}

/// Records `value` for `key`, or cancels the opposite change waiting there:
/// transitions of one key alternate, so two in one tick are none.
fn toggle<K: Eq + std::hash::Hash>(map: &mut HashMap<K, bool>, key: K, value: bool) {
    match map.get(&key) {
        Some(v) if *v != value => {
            map.remove(&key);
        }
        _ => {
            map.insert(key, value);
        }
    }
}

impl Presence {
    /// No presence yet; counts into `telemetry`.
    pub fn new(telemetry: Arc<Telemetry>) -> Presence {
        Presence {
            inner: Mutex::new(Inner::default()),
            telemetry,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update below leaves the maps consistent between statements
        // that can panic, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the subscription tagged `slot` of the connection of `outbox`
    /// a listener of `channel`'s presence, present as `user` if it names
    /// one; the returned seat undoes both when dropped.
    pub fn enter(
        self: &Arc<Self>,
        channel: &ChannelId,
        user: Option<&str>,
        outbox: Arc<Outbox>,
        slot: u32,
    ) -> Seat {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let state = inner.channels.entry(channel.clone()).or_default();
        state.listeners.insert(id, Listener { outbox, slot });
        let mut first = false;
        if let Some(user) = user {
            let count = state.users.entry(user.into()).or_insert(0);
            *count += 1;
            first = *count == 1;
        }
        if let (true, Some(user)) = (first, user) {
            self.telemetry
                .presence
                .users
                .fetch_add(1, Ordering::Relaxed);
            toggle(&mut inner.outgoing, (channel.clone(), user.into()), true);
        }
        Seat {
            presence: self.clone(),
            channel: channel.clone(),
            user: user.map(Into::into),
            id,
        }
    }

    fn leave(&self, seat: &Seat) {
        let mut inner = self.lock();
        let Some(state) = inner.channels.get_mut(&seat.channel) else {
            return;
        };
        state.listeners.remove(&seat.id);
        let mut last = false;
        if let Some(user) = &seat.user
            && let Some(count) = state.users.get_mut(user)
        {
            *count -= 1;
            if *count == 0 {
                state.users.remove(user);
                last = true;
            }
        }
        if state.listeners.is_empty() {
            inner.channels.remove(&seat.channel);
        }
        if let (true, Some(user)) = (last, &seat.user) {
            self.telemetry
                .presence
                .users
                .fetch_sub(1, Ordering::Relaxed);
            toggle(
                &mut inner.outgoing,
                (seat.channel.clone(), user.clone()),
                false,
            );
        }
    }

    /// Counts a frame that overflowed an outbox as the hub does: the
    /// connection closes as a slow consumer.
    fn count(&self, outbox: &Outbox, pushed: Pushed) {
        match pushed {
            // Presence frames are always queued (never written by the
            // pusher, never deduplicated).
            Pushed::Queued | Pushed::Written | Pushed::Duplicate => {}
            Pushed::Overflowed => {
                self.telemetry.slow_consumer();
                let lost = outbox.capacity() + 1;
                self.telemetry.dropped(DropReason::SlowConsumer, lost);
            }
            Pushed::Refused => self.telemetry.dropped(DropReason::Closed, 1),
        }
    }

    /// The local transitions since the last call, for the broker.
    pub fn take_outgoing(&self) -> Vec<LocalChange> {
        let outgoing = std::mem::take(&mut self.lock().outgoing);
        outgoing
            .into_iter()
            .map(|((channel, user), here)| LocalChange {
                channel,
                user,
                here,
            })
            .collect()
    }

    /// Every presence channel with subscribers here, with the users it
    /// has here (maybe none), for the broker's periodic refresh.
    pub fn local(&self) -> Vec<(ChannelId, Vec<Box<str>>)> {
        self.lock()
            .channels
            .iter()
            .map(|(c, s)| (c.clone(), s.users.keys().cloned().collect()))
            .collect()
    }

    /// The broker says these users `left` then these `joined` `channel`
    /// (cluster-wide transitions); written at the next [`Presence::flush`].
    /// A channel without subscribers here ignores it.
    pub fn announce<S: AsRef<str>>(&self, channel: &ChannelId, joined: &[S], left: &[S]) {
        let mut inner = self.lock();
        let Some(state) = inner.channels.get_mut(channel) else {
            return;
        };
        let changes = left
            .iter()
            .map(|u| (u, false))
            .chain(joined.iter().map(|u| (u, true)));
        for (user, joined) in changes {
            let user = user.as_ref();
            if state.pending.len() >= MAX_PRESENT && !state.pending.contains_key(user) {
                self.telemetry
                    .presence
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            toggle(&mut state.pending, user.into(), joined);
        }
    }

    /// Writes one frame per channel with announcements waiting, shared by
    /// every listener there, in broker era `era`; returns how many frames.
    /// Never waits for a client: a full outbox overflows (the connection
    /// closes as a slow consumer, and the client subscribes again to get a
    /// fresh `present`).
    pub fn flush(&self, era: Era) -> usize {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut frames = 0;
        for (channel, state) in inner.channels.iter_mut() {
            if state.pending.is_empty() {
                continue;
            }
            let pending = std::mem::take(&mut state.pending);
            let (mut joined, mut left) = (Vec::new(), Vec::new());
            for (user, j) in pending {
                if j { &mut joined } else { &mut left }.push(user);
            }
            joined.sort_unstable();
            left.sort_unstable();
            let frame = server::presence_change(&channel.name, &joined, &left);
            for listener in state.listeners.values() {
                let pushed = listener.outbox.push(Outbound {
                    frame: frame.clone(),
                    slot: listener.slot,
                    era,
                    offset: PRESENCE,
                    received: now,
                });
                self.count(&listener.outbox, pushed);
            }
            frames += 1;
        }
        self.telemetry
            .presence
            .frames
            .fetch_add(frames as u64, Ordering::Relaxed);
        frames
    }
}

impl Presence {
    /// Writes `frame` (a fresh `present` list) to every listener of
    /// `channel`, in place of the announcements waiting: after the broker
    /// link came back, those missed meanwhile are not known.
    pub fn send_list(&self, channel: &ChannelId, frame: &bytes::Bytes, era: Era) {
        let mut inner = self.lock();
        let Some(state) = inner.channels.get_mut(channel) else {
            return;
        };
        state.pending.clear();
        let now = Instant::now();
        for listener in state.listeners.values() {
            let pushed = listener.outbox.push(Outbound {
                frame: frame.clone(),
                slot: listener.slot,
                era,
                offset: PRESENCE,
                received: now,
            });
            self.count(&listener.outbox, pushed);
        }
    }
}

/// A subscription's place in its channel's presence: dropping it ends it.
#[derive(Debug)]
pub struct Seat {
    presence: Arc<Presence>,
    channel: ChannelId,
    user: Option<Box<str>>,
    id: u64,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.presence.leave(self);
    }
}

/// The `present` list a new subscriber gets: sorted, at most
/// [`MAX_PRESENT`] names.
pub fn present_frame(channel: &str, mut users: Vec<Box<str>>) -> bytes::Bytes {
    users.sort_unstable();
    users.dedup();
    users.truncate(MAX_PRESENT);
    server::presence_list(channel, &users)
}

/// Every [`TICK`]: hands local transitions to the broker, then writes the
/// announcements gathered; every `refresh`, tells the broker which users
/// are still here (a shared broker pushes their expiry back and clears
/// dead nodes' users). One task per node, so transitions and refreshes
/// reach the broker in the order they happened. When the broker link came
/// back (a new era), every listener gets a fresh `present` list, as the
/// changes of the outage were missed. Runs until aborted.
pub async fn run(node: Arc<Node>, refresh: Duration) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refreshed = Instant::now();
    let presence = node.hub().presence().clone();
    let hub = node.hub();
    let mut era = hub.era();
    loop {
        tick.tick().await;
        let broker = node.broker();
        let changes = presence.take_outgoing();
        if !changes.is_empty()
            && let Err(e) = broker.presence_changed(&changes).await
        {
            // Joins come back with the next refresh; a lost leave expires.
            tracing::warn!(error = %e, "presence changes not recorded");
        }
        let restored = hub.era() != era && broker.connected();
        // After an outage this node's entries may have expired: refresh
        // before reading the lists again.
        if restored || refreshed.elapsed() >= refresh {
            refreshed = Instant::now();
            if let Err(e) = broker.presence_refresh(&presence.local()).await {
                tracing::warn!(error = %e, "presence not refreshed");
            }
        }
        if restored {
            era = hub.era();
            for (channel, _) in presence.local() {
                match broker.present(&channel).await {
                    Ok(users) => {
                        let frame = present_frame(&channel.name, users);
                        presence.send_list(&channel, &frame, era);
                    }
                    Err(e) => tracing::warn!(%channel, error = %e, "presence not read again"),
                }
            }
        }
        presence.flush(hub.era());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &Outbox) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        outbox.drain(100, |o| {
            assert_eq!(o.offset, PRESENCE);
            frames.push(serde_json::from_slice(&o.frame).expect("json"));
        });
        frames
    }

    #[test]
    fn a_user_is_here_from_the_first_seat_to_the_last() {
        let presence = Arc::new(Presence::new(Arc::default()));
        let chat = ChannelId::new("a", "chat");
        let outbox = Arc::new(Outbox::new(8));
        let one = presence.enter(&chat, Some("roger"), outbox.clone(), 1);
        let two = presence.enter(&chat, Some("roger"), outbox.clone(), 2);
        let anonymous = presence.enter(&chat, None, outbox.clone(), 3);
        let joined = presence.take_outgoing();
        assert_eq!(joined.len(), 1, "{joined:?}");
        assert!(joined[0].here && &*joined[0].user == "roger");
        drop(one);
        assert!(presence.take_outgoing().is_empty(), "a second tab stays");
        drop(two);
        let left = presence.take_outgoing();
        assert_eq!(left.len(), 1);
        assert!(!left[0].here);
        assert_eq!(presence.local(), vec![(chat.clone(), Vec::new())]);
        drop(anonymous);
        assert!(presence.local().is_empty(), "the channel is forgotten");
    }

    #[test]
    fn a_leave_and_a_return_within_a_tick_cancel_out() {
        let presence = Arc::new(Presence::new(Arc::default()));
        let chat = ChannelId::new("a", "chat");
        let outbox = Arc::new(Outbox::new(8));
        let stays = presence.enter(&chat, Some("vb"), outbox.clone(), 1);
        let _ = presence.take_outgoing();
        drop(stays);
        let _back = presence.enter(&chat, Some("vb"), outbox.clone(), 2);
        assert!(presence.take_outgoing().is_empty());
        // The same for announcements: one frame per channel per tick.
        presence.announce(&chat, &["ana"], &["vb"]);
        presence.announce(&chat, &["vb", "zoe"], &["ana"]);
        assert_eq!(presence.flush(Era::default()), 1);
        let frames = drain(&outbox);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["joined"], serde_json::json!(["zoe"]));
        assert!(frames[0].get("left").is_none());
        assert_eq!(presence.flush(Era::default()), 0, "nothing new");
    }

    #[test]
    fn announcements_for_a_channel_without_listeners_are_ignored() {
        let presence = Arc::new(Presence::new(Arc::default()));
        presence.announce(&ChannelId::new("a", "chat"), &["ana"], &[]);
        assert_eq!(presence.flush(Era::default()), 0);
    }
}
