//! Per-app and per-channel counters, with a bounded set of channel series.
//!
//! The first [`MAX_CHANNEL_SERIES`] channels seen (of configured apps) get
//! their own `channel` label; the rest of each app is summed under
//! `channel="_other"`, so a node with millions of channels does not export
//! millions of series. First come, first labelled: a counter's series must
//! never vanish or restart, so the set is never re-ranked or pruned.
//!
//! The hot path takes the read lock of the labelled map (one lookup, one
//! relaxed add); the write lock only while the map is still filling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::publication::ChannelId;

/// Channels with their own `chouquette_channel_*` series; further channels
/// are summed per app under `channel="_other"`. First come, first labelled:
/// a counter's series must never vanish or restart, so the set is not re-ranked.
pub const MAX_CHANNEL_SERIES: usize = 100;

/// The `channel` label of the channels beyond [`MAX_CHANNEL_SERIES`].
pub const OTHER_CHANNELS: &str = "_other";

/// One channel's counters (or an app's channels beyond the labelled ones).
#[derive(Debug, Default)]
pub(super) struct ChannelRates {
    pub(super) published: AtomicU64,
    pub(super) delivered: AtomicU64,
}

/// One app's gauges and counters.
#[derive(Debug, Default)]
pub(super) struct AppGauges {
    pub(super) connections: AtomicI64,
    pub(super) subscriptions: AtomicI64,
    pub(super) published: AtomicU64,
    pub(super) delivered: AtomicU64,
    /// The app's channels beyond [`MAX_CHANNEL_SERIES`].
    pub(super) other: ChannelRates,
}

/// One app's counts now, for the admin status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppCounts {
    /// Connections holding a subscription or the identity of this app.
    pub connections: i64,
    /// Subscriptions on this app's channels.
    pub subscriptions: i64,
}

impl AppGauges {
    pub(super) fn counts(&self) -> AppCounts {
        AppCounts {
            connections: self.connections.load(Ordering::Relaxed),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
        }
    }
}

/// One channel's (or an app's `_other` channels') counts, for the console.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelCounts {
    /// The app.
    pub app: Arc<str>,
    /// The channel, or `_other` for the channels beyond the labelled ones.
    pub channel: Arc<str>,
    /// Events published on it.
    pub published: u64,
    /// Event frames queued to its subscribers.
    pub delivered: u64,
}

/// The labelled channels (at most [`MAX_CHANNEL_SERIES`]), of configured apps.
#[derive(Debug, Default)]
pub(super) struct ChannelSeries {
    labelled: RwLock<HashMap<ChannelId, ChannelRates>>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Every update under this lock is one insert: a poisoned map is whole.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl ChannelSeries {
    /// Adds `n` to one counter of `channel`: its own series while fewer
    /// than [`MAX_CHANNEL_SERIES`] are labelled, else `other` (its app's).
    #[inline]
    pub(super) fn count(
        &self,
        channel: &ChannelId,
        other: &ChannelRates,
        rate: fn(&ChannelRates) -> &AtomicU64,
        n: u64,
    ) {
        {
            let labelled = read(&self.labelled);
            if let Some(r) = labelled.get(channel) {
                rate(r).fetch_add(n, Ordering::Relaxed);
                return;
            }
            if labelled.len() >= MAX_CHANNEL_SERIES {
                rate(other).fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let mut labelled = write(&self.labelled);
        if labelled.len() >= MAX_CHANNEL_SERIES && !labelled.contains_key(channel) {
            rate(other).fetch_add(n, Ordering::Relaxed);
            return;
        }
        rate(labelled.entry(channel.clone()).or_default()).fetch_add(n, Ordering::Relaxed);
    }

    /// The labelled channels by app and name, then each app's `_other`
    /// (only when it counted something), by app.
    pub(super) fn counts(&self, apps: &HashMap<Arc<str>, AppGauges>) -> Vec<ChannelCounts> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counts: Vec<ChannelCounts> = read(&self.labelled)
            .iter()
            .map(|(id, r)| ChannelCounts {
                app: id.app.clone(),
                channel: id.name.clone(),
                published: load(&r.published),
                delivered: load(&r.delivered),
            })
            .collect();
        counts.sort_by(|a, b| (&a.app, &a.channel).cmp(&(&b.app, &b.channel)));
        let mut others: Vec<ChannelCounts> = apps
            .iter()
            .filter(|(_, g)| load(&g.other.published) + load(&g.other.delivered) > 0)
            .map(|(id, g)| ChannelCounts {
                app: id.clone(),
                channel: OTHER_CHANNELS.into(),
                published: load(&g.other.published),
                delivered: load(&g.other.delivered),
            })
            .collect();
        others.sort_by(|a, b| a.app.cmp(&b.app));
        counts.append(&mut others);
        counts
    }
}
