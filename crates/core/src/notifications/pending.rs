//! One user's pending notifications, as a pure value: the memory broker
//! keeps one per user behind its lock, the Redis broker reads it, applies
//! the same operation and writes it back with a compare-and-set, so the
//! rules (bound, expiry, grouping, acknowledgement) are written once.
//!
//! Grouping (docs/notifications.md): for a kind with a window, the first
//! notification of a quiet period is delivered at once and opens the
//! window; the ones arriving while it is open gather in one *group* entry,
//! delivered when the window closes ([`PendingOp::CloseGroup`], sent by the
//! node that opened it, or at the user's next connect once the window is
//! over). A group never grows once closed, so a client acknowledging it has
//! seen every id it removes. A group holds at most [`MAX_GROUP_IDS`] ids:
//! a full group is closed and delivered at once, and the next arrival
//! starts another.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Ids one group entry holds before it is closed and delivered.
pub const MAX_GROUP_IDS: usize = 1_000;

/// Ids one acknowledgement may name (a WebSocket `notification_ack`, a
/// `POST /notifications/ack`): more is a bad message.
pub const MAX_ACK_IDS: usize = 1_000;

/// One stored notification (or group of them), oldest first in [`Pending`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its id (`n-...`); a group's is its first member's.
    pub id: String,
    /// The backend's kind, e.g. `comment`.
    pub kind: String,
    /// Short text.
    pub title: String,
    /// Longer text.
    pub body: String,
    /// Where the client may go, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The backend's `data`, as JSON text, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// When it was accepted, microseconds since the Unix epoch.
    pub created: u64,
    /// Set on a group entry: its members. The entry's texts are its last
    /// member's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
    /// The sending user of a user-to-user message (see
    /// [`crate::messages`]); none for a backend's notification. A group's
    /// is its last member's, like its texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The members of a group entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Notifications in it (equal to `ids.len()`).
    pub count: u64,
    /// Their ids, in arrival order.
    pub ids: Vec<String>,
    /// When the first arrived (µs).
    pub first: u64,
    /// When the last arrived (µs).
    pub last: u64,
    /// Whether it is closed: delivered (or deliverable), never to grow.
    pub closed: bool,
}

impl Entry {
    /// How many notifications this entry stands for.
    pub fn count(&self) -> u64 {
        self.group.as_ref().map_or(1, |g| g.count)
    }

    /// Whether a client may be sent it now (an open group is not: it is
    /// still growing).
    pub fn deliverable(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.closed)
    }

    fn newest(&self) -> u64 {
        self.group.as_ref().map_or(self.created, |g| g.last)
    }

    fn named_by(&self, ids: &[String]) -> bool {
        ids.contains(&self.id)
            || self
                .group
                .as_ref()
                .is_some_and(|g| g.ids.iter().any(|id| ids.contains(id)))
    }
}

/// What to do to a user's pending list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingOp {
    /// Store a new notification.
    Add {
        /// It (boxed: the other operations are small).
        entry: Box<Entry>,
        /// Its kind's grouping window (µs), when grouped.
        window: Option<u64>,
        /// Entries kept; past it the oldest is dropped.
        max_pending: usize,
    },
    /// Remove these ids (an entry or any member of a group removes it all).
    Ack(Vec<String>),
    /// Close the open group of `kind` whose window ended.
    CloseGroup(String),
    /// Read what a connecting client is sent.
    List,
}

/// What an operation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Entries to deliver now to the user's connections, oldest first.
    pub deliver: Vec<Entry>,
    /// A window opened (or a group started) whose group the caller closes
    /// at this time (µs): `(kind, closes_at)`.
    pub schedule: Option<(String, u64)>,
    /// Notifications dropped because the list was full.
    pub dropped: u64,
    /// Notifications dropped because they expired.
    pub expired: u64,
    /// Notifications removed by an acknowledgement, and the entry ids
    /// removed.
    pub acked: u64,
    /// The entry ids an acknowledgement removed.
    pub acked_ids: Vec<String>,
    /// Whether the list changed (and must be written back).
    pub changed: bool,
}

/// One user's pending notifications (what the broker stores).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Oldest first.
    pub entries: VecDeque<Entry>,
    /// Grouped kinds with an open window → when it closes (µs). At most
    /// one per configured grouped kind.
    #[serde(default)]
    pub windows: BTreeMap<String, u64>,
    /// Notifications dropped from this list because it was full, ever
    /// (the docs' `dropped` count; reset when the list is emptied).
    #[serde(default)]
    pub dropped: u64,
}

impl Pending {
    /// Whether nothing is kept (the broker may forget the user).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.windows.is_empty()
    }

    /// Applies `op` at `now` (µs); entries last touched more than
    /// `expire_after` (µs) ago are dropped first.
    pub fn apply(&mut self, op: PendingOp, now: u64, expire_after: u64) -> Outcome {
        let mut out = Outcome::default();
        let before = self.entries.len();
        self.entries.retain(|e| {
            let keep = e.newest().saturating_add(expire_after) > now;
            if !keep {
                out.expired += e.count();
            }
            keep
        });
        let windows = self.windows.len();
        self.windows.retain(|_, closes| *closes > now);
        out.changed = before != self.entries.len() || windows != self.windows.len();
        match op {
            PendingOp::Add {
                entry,
                window,
                max_pending,
            } => self.add(*entry, window, max_pending, now, &mut out),
            PendingOp::Ack(ids) => {
                let mut acked = 0;
                let mut acked_ids = Vec::new();
                self.entries.retain(|e| {
                    let named = e.named_by(&ids);
                    if named {
                        acked += e.count();
                        acked_ids.push(e.id.clone());
                    }
                    !named
                });
                out.changed |= acked > 0;
                out.acked = acked;
                out.acked_ids = acked_ids;
            }
            PendingOp::CloseGroup(kind) => {
                if let Some(entry) = self.open_group(&kind) {
                    if let Some(g) = entry.group.as_mut() {
                        g.closed = true;
                    }
                    out.deliver.push(entry.clone());
                    out.changed = true;
                }
            }
            PendingOp::List => {
                // A group whose window is over but whose closing was never
                // sent (its node stopped) is closed here, then delivered.
                for e in &mut self.entries {
                    if let Some(g) = e.group.as_mut()
                        && !g.closed
                        && !self.windows.contains_key(&e.kind)
                    {
                        g.closed = true;
                        out.changed = true;
                    }
                }
                out.deliver = self
                    .entries
                    .iter()
                    .filter(|e| e.deliverable())
                    .cloned()
                    .collect();
            }
        }
        if self.entries.is_empty() {
            out.changed |= self.dropped != 0;
            self.dropped = 0;
        }
        out
    }

    fn open_group(&mut self, kind: &str) -> Option<&mut Entry> {
        self.entries
            .iter_mut()
            .rev()
            .find(|e| e.kind == kind && e.group.as_ref().is_some_and(|g| !g.closed))
    }

    fn add(
        &mut self,
        entry: Entry,
        window: Option<u64>,
        max_pending: usize,
        now: u64,
        out: &mut Outcome,
    ) {
        out.changed = true;
        match window {
            Some(_) if self.windows.contains_key(&entry.kind) => {
                let closes = self.windows[&entry.kind];
                match self.open_group(&entry.kind) {
                    Some(open) => {
                        let mut full = false;
                        if let Some(g) = open.group.as_mut() {
                            g.count += 1;
                            g.ids.push(entry.id.clone());
                            g.last = entry.created;
                            full = g.ids.len() >= MAX_GROUP_IDS;
                            g.closed = full;
                        }
                        open.title = entry.title;
                        open.body = entry.body;
                        open.link = entry.link;
                        open.data = entry.data;
                        open.from = entry.from;
                        if full {
                            out.deliver.push(open.clone());
                        }
                    }
                    None => {
                        let mut group = entry.clone();
                        group.group = Some(Group {
                            count: 1,
                            ids: vec![entry.id.clone()],
                            first: entry.created,
                            last: entry.created,
                            closed: false,
                        });
                        self.push(group, max_pending, out);
                        out.schedule = Some((entry.kind.clone(), closes));
                    }
                }
            }
            Some(window) => {
                // A group of an earlier window whose closing never came
                // (its node stopped) is closed now rather than reopened.
                if let Some(stale) = self.open_group(&entry.kind) {
                    if let Some(g) = stale.group.as_mut() {
                        g.closed = true;
                    }
                    out.deliver.push(stale.clone());
                }
                self.windows
                    .insert(entry.kind.clone(), now.saturating_add(window.max(1)));
                out.deliver.push(entry.clone());
                self.push(entry, max_pending, out);
            }
            None => {
                out.deliver.push(entry.clone());
                self.push(entry, max_pending, out);
            }
        }
    }

    fn push(&mut self, entry: Entry, max_pending: usize, out: &mut Outcome) {
        self.entries.push_back(entry);
        while self.entries.len() > max_pending.max(1) {
            if let Some(old) = self.entries.pop_front() {
                out.dropped += old.count();
                self.dropped += old.count();
                out.deliver.retain(|d| d.id != old.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(id: usize, kind: &str, at: u64) -> Entry {
        Entry {
            id: format!("n-{id}"),
            kind: kind.into(),
            title: format!("t{id}"),
            body: String::new(),
            link: None,
            data: None,
            created: at,
            group: None,
            from: None,
        }
    }

    const DAY: u64 = 86_400_000_000;

    #[test]
    fn full_list_drops_the_oldest_and_counts_it() {
        let mut p = Pending::default();
        for i in 0..5 {
            let op = PendingOp::Add {
                entry: Box::new(entry(i, "x", i as u64)),
                window: None,
                max_pending: 3,
            };
            p.apply(op, i as u64, DAY);
        }
        let ids: Vec<_> = p.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["n-2", "n-3", "n-4"]);
        assert_eq!(p.dropped, 2);
    }

    #[test]
    fn expired_ones_go_and_acked_ones_never_come_back() {
        let mut p = Pending::default();
        for i in 0..3 {
            let op = PendingOp::Add {
                entry: Box::new(entry(i, "x", i as u64 * 10)),
                window: None,
                max_pending: 10,
            };
            p.apply(op, i as u64 * 10, 100);
        }
        let out = p.apply(PendingOp::Ack(vec!["n-1".into()]), 20, 100);
        assert_eq!(out.acked, 1);
        let out = p.apply(PendingOp::List, 105, 100);
        assert_eq!(out.expired, 1, "n-0, created at 0, expired at 100");
        let ids: Vec<_> = out.deliver.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["n-2"]);
    }

    /// Everything delivered, by entry id → the ids it stands for.
    fn delivered_ids(out: &Outcome, seen: &mut BTreeMap<String, Vec<String>>) {
        for e in &out.deliver {
            let ids = e
                .group
                .as_ref()
                .map_or_else(|| vec![e.id.clone()], |g| g.ids.clone());
            assert_eq!(e.count(), ids.len() as u64, "count matches the ids");
            seen.insert(e.id.clone(), ids);
        }
    }

    proptest! {
        /// Whatever the arrival times and windows: every notification is
        /// delivered exactly once (alone or in one group), counts are
        /// exact, and acknowledging what was delivered empties the list.
        #[test]
        fn grouping_loses_nothing_and_counts_are_exact(
            gaps in proptest::collection::vec((0u64..50, 0usize..3), 1..300),
            window in 1u64..120,
        ) {
            let kinds = ["comment", "like", "plain"];
            let mut p = Pending::default();
            let mut now = 0;
            let mut seen = BTreeMap::new();
            let mut timers: Vec<(String, u64)> = Vec::new();
            for (i, (gap, kind)) in gaps.iter().enumerate() {
                now += gap;
                // Timers due by now fire first, as the node's would.
                timers.sort_by_key(|t| t.1);
                while timers.first().is_some_and(|t| t.1 <= now) {
                    let (kind, at) = timers.remove(0);
                    let out = p.apply(PendingOp::CloseGroup(kind), at, DAY);
                    delivered_ids(&out, &mut seen);
                }
                let kind = kinds[*kind];
                let op = PendingOp::Add {
                    entry: Box::new(entry(i, kind, now)),
                    window: (kind != "plain").then_some(window),
                    max_pending: 10_000,
                };
                let out = p.apply(op, now, DAY);
                prop_assert_eq!(out.dropped, 0);
                delivered_ids(&out, &mut seen);
                timers.extend(out.schedule);
            }
            for (kind, at) in std::mem::take(&mut timers) {
                let out = p.apply(PendingOp::CloseGroup(kind), at.max(now), DAY);
                delivered_ids(&out, &mut seen);
            }
            let mut all: Vec<String> = seen.values().flatten().cloned().collect();
            all.sort();
            let mut expected: Vec<String> = (0..gaps.len()).map(|i| format!("n-{i}")).collect();
            expected.sort();
            prop_assert_eq!(all, expected, "each id delivered exactly once");
            let listed = p.apply(PendingOp::List, now, DAY);
            prop_assert_eq!(listed.deliver.len(), p.entries.len());
            let out = p.apply(PendingOp::Ack(seen.keys().cloned().collect()), now, DAY);
            prop_assert_eq!(out.acked, gaps.len() as u64);
            prop_assert!(p.entries.is_empty());
        }
    }
}
