//! The hub: this node's channel → subscription index and local fan-out.
//!
//! `deliver` is called once per publication, in offset order per channel (the
//! broker guarantees it). It finds candidate subscriptions through the
//! keyword index, checks their full filter, and pushes the publication's
//! shared bytes to each matching connection's outbox without waiting. A full
//! outbox is reported by the outbox itself; the hub never blocks on a client.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::era::{Era, EraClock};
use chouquette_protocol::{ResetReason, server};

use crate::connections::Registry;
use crate::filter::Filter;
use crate::index::{Candidate, FilterIndex};
use crate::lattice_feed::LatticeFeed;
use crate::outbox::{Outbound, Outbox, Pushed};
use crate::presence::Presence;
use crate::publication::{ChannelId, Publication};
use crate::telemetry::{DropReason, Telemetry};
use crate::user_calls::CallTable;
use crate::user_mail::{UserCommand, UserMessage};

/// A hub-wide subscription id.
pub type SubId = u64;

/// One subscription as the hub sees it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Where its frames go.
    pub outbox: Arc<Outbox>,
    /// The session's slot for this subscription (dedup on the connection side).
    pub slot: u32,
    /// What it may see.
    pub filter: Arc<Filter>,
    /// Its channel is notify-only: it gets frames without `data`.
    pub notify_only: bool,
}

#[derive(Debug, Default)]
struct ChannelSubs {
    subscribers: HashMap<SubId, Subscriber>,
    index: FilterIndex<SubId>,
    /// The epoch of the channel's last live publication (shared brokers):
    /// a publication of another epoch means the channel was numbered anew
    /// under its subscribers (see [`Hub::deliver_in_epoch`]).
    epoch: Mutex<Option<Arc<str>>>,
}

/// `offset` of a frame telling a subscription that its channel was
/// numbered anew ([`Hub::deliver_in_epoch`]): events have offsets from 1.
pub const RENUMBERED: u64 = 0;

/// This node's subscriptions, by channel.
#[derive(Debug)]
pub struct Hub {
    channels: RwLock<HashMap<ChannelId, Arc<RwLock<ChannelSubs>>>>,
    next_id: AtomicU64,
    era: EraClock,
    telemetry: Arc<Telemetry>,
    /// This node's connections: brokers deliver messages addressed to a
    /// user here too (see [`Hub::deliver_to_user`]).
    connections: Registry,
    /// This node's backend calls waiting for clients: brokers deliver the
    /// replies about them here (see [`crate::user_calls`]).
    calls: CallTable,
    /// This node's lattice subscribers: lattice changes, which travel as
    /// user messages, are queued from here (see [`crate::lattice_feed`]).
    lattices: LatticeFeed,
    /// Who is subscribed to presence channels here; brokers announce
    /// joins and leaves to it (see [`crate::presence`]).
    presence: Arc<Presence>,
}

thread_local! {
    static CANDIDATES: RefCell<Vec<Candidate<SubId>>> = const { RefCell::new(Vec::new()) };
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Every update under these locks is a single insert or remove that cannot
    // leave the maps half-changed, so a poisoned lock is still consistent.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// An empty hub.
    pub fn new(telemetry: Arc<Telemetry>) -> Hub {
        Hub {
            channels: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            era: EraClock::default(),
            presence: Arc::new(Presence::new(telemetry.clone())),
            telemetry,
            connections: Registry::default(),
            calls: CallTable::default(),
            lattices: LatticeFeed::default(),
        }
    }

    /// Who is subscribed to presence channels on this node.
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// This node's open connections.
    pub fn connections(&self) -> &Registry {
        &self.connections
    }

    /// This node's backend calls waiting for clients.
    pub fn calls(&self) -> &CallTable {
        &self.calls
    }

    /// This node's lattice subscribers.
    pub fn lattices(&self) -> &LatticeFeed {
        &self.lattices
    }

    /// Posts a message addressed to a user to each of that user's
    /// connections on this node; returns how many. Called by the broker on
    /// every node, like [`Hub::deliver`]; never waits for a client.
    pub fn deliver_to_user(&self, message: &UserMessage) -> usize {
        if let UserCommand::Lattice { namespace, frame } = &*message.command {
            return self
                .lattices
                .deliver(&message.app, namespace, &message.user, frame);
        }
        self.connections
            .post_to_user(&message.app, &message.user, &message.command)
    }

    /// The broker era frames are delivered in now (see [`crate::era`]).
    pub fn era(&self) -> Era {
        self.era.now()
    }

    /// Starts a new broker era; called by a broker before it delivers again
    /// after its link was restored.
    pub fn next_era(&self) -> Era {
        self.era.advance()
    }

    /// Channels with at least one subscriber on this node.
    pub fn channels(&self) -> Vec<ChannelId> {
        read(&self.channels).keys().cloned().collect()
    }

    /// Registers a subscriber; from now on it receives matching publications.
    pub fn subscribe(&self, channel: &ChannelId, subscriber: Subscriber) -> SubId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The channel entry is locked before the map is released, in the same
        // order as `unsubscribe`: a last subscriber leaving at this moment
        // cannot remove the entry this one is being added to.
        let mut channels = write(&self.channels);
        let subs = channels.entry(channel.clone()).or_default().clone();
        let mut subs = write(&subs);
        drop(channels);
        subs.index.insert(id, &subscriber.filter);
        subs.subscribers.insert(id, subscriber);
        self.telemetry.subscription_added(&channel.app);
        id
    }

    /// Removes a subscriber; a channel with none left is forgotten.
    pub fn unsubscribe(&self, channel: &ChannelId, id: SubId) {
        let mut channels = write(&self.channels);
        let Some(subs) = channels.get(channel).cloned() else {
            return;
        };
        let mut guard = write(&subs);
        if let Some(sub) = guard.subscribers.remove(&id) {
            guard.index.remove(id, &sub.filter);
            self.telemetry.subscription_removed(&channel.app);
        }
        if guard.subscribers.is_empty() {
            channels.remove(channel);
        }
    }

    /// Subscribers on `channel` on this node.
    pub fn subscriber_count(&self, channel: &ChannelId) -> usize {
        read(&self.channels)
            .get(channel)
            .map_or(0, |s| read(s).subscribers.len())
    }

    /// The epoch the channel's live publications last came in, if any.
    pub fn channel_epoch(&self, channel: &ChannelId) -> Option<Arc<str>> {
        let subs = read(&self.channels).get(channel).cloned()?;
        let subs = read(&subs);
        lock(&subs.epoch).clone()
    }

    /// Like [`Hub::deliver`], for a broker shared by several nodes, whose
    /// channels can be numbered anew under their subscribers (their keys
    /// expired, were evicted or deleted): offsets start again at 1 in a new
    /// `epoch`. A subscription must not take those for events it has seen,
    /// so before the first publication of a new epoch every subscriber gets
    /// a [`RENUMBERED`] frame, the `reset` `history_gap` naming the channel,
    /// built once; its session restarts its cursor there.
    pub fn deliver_in_epoch(&self, publication: &Arc<Publication>, epoch: &Arc<str>) -> usize {
        let Some(subs) = read(&self.channels).get(&publication.channel).cloned() else {
            return 0;
        };
        let subs = read(&subs);
        let previous = lock(&subs.epoch).replace(epoch.clone());
        if previous.is_some_and(|p| p != *epoch) {
            self.tell_renumbered(&subs, &publication.channel);
        }
        self.fan_out(&subs, publication)
    }

    fn tell_renumbered(&self, subs: &ChannelSubs, channel: &ChannelId) {
        let reset = server::reset(Some(&channel.name), ResetReason::HistoryGap);
        let era = self.era();
        let now = std::time::Instant::now();
        for sub in subs.subscribers.values() {
            let pushed = sub.outbox.push(Outbound {
                frame: reset.clone(),
                slot: sub.slot,
                era,
                offset: RENUMBERED,
                received: now,
            });
            self.count(sub, pushed, now);
        }
    }

    /// Counts what became of a frame pushed to `sub`; true if queued or
    /// written.
    fn count(&self, sub: &Subscriber, pushed: Pushed, received: std::time::Instant) -> bool {
        match pushed {
            Pushed::Queued => return true,
            Pushed::Written => {
                let now = std::time::Instant::now();
                self.telemetry.written_direct(now, received);
                return true;
            }
            Pushed::Duplicate => self.telemetry.dropped(DropReason::Duplicate, 1),
            Pushed::Overflowed => {
                self.telemetry.slow_consumer();
                // The queue held exactly its capacity: all of it and this one are gone.
                self.telemetry
                    .dropped(DropReason::SlowConsumer, sub.outbox.capacity() + 1);
            }
            Pushed::Refused => self.telemetry.dropped(DropReason::Closed, 1),
        }
        false
    }

    /// Hands `publication` to every matching subscriber; returns how many.
    pub fn deliver(&self, publication: &Arc<Publication>) -> usize {
        let Some(subs) = read(&self.channels).get(&publication.channel).cloned() else {
            return 0;
        };
        let subs = read(&subs);
        self.fan_out(&subs, publication)
    }

    fn fan_out(&self, subs: &ChannelSubs, publication: &Arc<Publication>) -> usize {
        let era = self.era();
        CANDIDATES.with_borrow_mut(|candidates| {
            candidates.clear();
            subs.index
                .candidates(&publication.event_kind, &publication.keywords, candidates);
            let mut delivered = 0;
            for candidate in candidates.iter() {
                let Some(sub) = subs.subscribers.get(&candidate.id) else {
                    continue;
                };
                if candidate.unsure
                    && !sub
                        .filter
                        .matches(&publication.event_kind, &publication.keywords)
                {
                    continue;
                }
                let pushed = sub.outbox.push(Outbound {
                    frame: publication.frame_for(sub.notify_only).clone(),
                    slot: sub.slot,
                    era,
                    offset: publication.offset,
                    received: publication.received,
                });
                if self.count(sub, pushed, publication.received) {
                    delivered += 1;
                }
            }
            self.telemetry.delivered_on(&publication.channel, delivered);
            delivered
        })
    }
}
