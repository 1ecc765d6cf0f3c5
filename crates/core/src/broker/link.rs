//! The health of a broker's link to its backing service, as counted and
//! as announced to the node.
//!
//! A broker that can lose its service (Redis) flips [`LinkTelemetry`]'s
//! gauge and bumps its counters; the node watches [`Broker::link`] to tell
//! every client `reset` `broker_unavailable`, then `broker_restored`.
//!
//! [`Broker::link`]: super::Broker::link

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::telemetry::prometheus::Family;

const UP: Family = Family::gauge(
    "chouquette_broker_up",
    "1 while the broker link is up (always 1 for the memory broker).",
);
const LOSSES: Family = Family::counter(
    "chouquette_broker_losses_total",
    "Times the broker link was lost.",
);
const CONNECT_FAILURES: Family = Family::counter(
    "chouquette_broker_connect_failures_total",
    "Failed attempts to (re)connect to the broker.",
);
const LAG_DROPS: Family = Family::counter(
    "chouquette_broker_lag_drops_total",
    "Times the broker link was dropped because this node fell behind by more than broker.max_lag.",
);
const RESETS: Family = Family::counter(
    "chouquette_broker_resets_total",
    "reset broker_unavailable / broker_restored messages sent.",
);
const INBOX_PUBLISHED: Family = Family::counter(
    "chouquette_inbox_published_total",
    "Redis inbox entries published.",
);
const INBOX_DUPLICATES: Family = Family::counter(
    "chouquette_inbox_duplicates_total",
    "Redis inbox entries skipped because they were already published.",
);
const INBOX_DEAD: Family = Family::counter(
    "chouquette_inbox_dead_total",
    "Redis inbox entries refused and moved to the dead-letter stream.",
);
const INBOX_CLAIMED: Family = Family::counter(
    "chouquette_inbox_claimed_total",
    "Redis inbox entries taken over from a silent consumer.",
);

/// Counters of the broker link and of the sources that ride on it.
#[derive(Debug, Default)]
pub struct LinkTelemetry {
    up: AtomicI64,
    losses: AtomicU64,
    connect_failures: AtomicU64,
    resets_sent: AtomicU64,
    inbox_published: AtomicU64,
    inbox_duplicates: AtomicU64,
    inbox_dead: AtomicU64,
    inbox_claimed: AtomicU64,
    lagged: AtomicU64,
}

impl LinkTelemetry {
    /// The link came up (`true`) or went down.
    pub fn link_up(&self, up: bool) {
        self.up.store(i64::from(up), Ordering::Relaxed);
        if !up {
            self.losses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection attempt to the broker's service failed.
    pub fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A session told its client `broker_unavailable` or `broker_restored`.
    pub fn reset_sent(&self) {
        self.resets_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Inbox entries published (`published`), skipped as already published
    /// (`duplicates`), or refused and moved to the dead-letter stream.
    pub fn inbox(&self, published: usize, duplicates: usize, dead: usize) {
        self.inbox_published
            .fetch_add(published as u64, Ordering::Relaxed);
        self.inbox_duplicates
            .fetch_add(duplicates as u64, Ordering::Relaxed);
        self.inbox_dead.fetch_add(dead as u64, Ordering::Relaxed);
    }

    /// The link was dropped because this node fell behind its messages.
    pub fn lagged(&self) {
        self.lagged.fetch_add(1, Ordering::Relaxed);
    }

    /// Inbox entries taken over from a consumer that stopped acknowledging.
    pub fn inbox_claimed(&self, n: usize) {
        self.inbox_claimed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Appends the link's and the inbox's families.
    pub fn render(&self, out: &mut String) {
        UP.render_value(out, self.up.load(Ordering::Relaxed));
        let counters = [
            (LOSSES, &self.losses),
            (CONNECT_FAILURES, &self.connect_failures),
            (LAG_DROPS, &self.lagged),
            (RESETS, &self.resets_sent),
            (INBOX_PUBLISHED, &self.inbox_published),
            (INBOX_DUPLICATES, &self.inbox_duplicates),
            (INBOX_DEAD, &self.inbox_dead),
            (INBOX_CLAIMED, &self.inbox_claimed),
        ];
        for (family, counter) in counters {
            family.render_value(out, counter.load(Ordering::Relaxed));
        }
    }
}
