//! What the federation tells `/readyz`, `/metrics` and the admin status:
//! whether the XMPP link and the mailboxes work, the mailboxes' sizes and
//! ages (read by the housekeeping job), and counters of what each job did.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};

use super::store::Gauges;
use crate::source::statuses::Reporting;

/// Counters, each a `chouquette_xmpp_<name>_total` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Events copied into the outbox.
    Filled,
    /// Messages written to the XMPP stream (first sends and retries).
    Sent,
    /// Messages written again (no receipt in time).
    Retried,
    /// Receipts that removed an outbox entry.
    Delivered,
    /// Messages received and stored as pending.
    Received,
    /// Messages received again (already stored): acknowledged, not stored.
    Repeats,
    /// Messages refused: unknown sender, malformed SenML, refused event.
    Refused,
    /// Inbox entries published.
    Published,
    /// Error stanzas from the server (e.g. the remote component is away).
    Bounced,
    /// Incoming messages neither stored nor acknowledged (inbox full).
    InboxFull,
    /// Events lost before the fill job read them (history gone).
    Gaps,
    /// Failed job runs (Postgres down, the link broken).
    Failures,
}

impl Count {
    const ALL: [Count; 12] = [
        Count::Filled,
        Count::Sent,
        Count::Retried,
        Count::Delivered,
        Count::Received,
        Count::Repeats,
        Count::Refused,
        Count::Published,
        Count::Bounced,
        Count::InboxFull,
        Count::Gaps,
        Count::Failures,
    ];

    fn name(self) -> &'static str {
        match self {
            Count::Filled => "filled_total",
            Count::Sent => "sent_total",
            Count::Retried => "retried_total",
            Count::Delivered => "delivered_total",
            Count::Received => "received_total",
            Count::Repeats => "repeats_total",
            Count::Refused => "refused_total",
            Count::Published => "published_total",
            Count::Bounced => "bounced_total",
            Count::InboxFull => "inbox_full_total",
            Count::Gaps => "gaps_total",
            Count::Failures => "failures_total",
        }
    }
}

/// One component's state, shared by its jobs and the internal API.
#[derive(Debug)]
pub struct Status {
    component: String,
    link_up: AtomicBool,
    store_up: AtomicBool,
    /// What is wrong with the link, and with the mailboxes.
    problems: Mutex<[Option<String>; 2]>,
    gauges: Mutex<Gauges>,
    counts: [AtomicU64; 12],
}

impl Status {
    pub fn new(component: &str) -> Status {
        Status {
            component: component.to_string(),
            link_up: AtomicBool::new(false),
            store_up: AtomicBool::new(false),
            problems: Mutex::new([
                Some("not connected yet".into()),
                Some("not connected yet".into()),
            ]),
            gauges: Mutex::new(Gauges::default()),
            counts: Default::default(),
        }
    }

    pub fn add(&self, count: Count, n: u64) {
        if let Some(i) = Count::ALL.iter().position(|c| *c == count) {
            self.counts[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn count(&self, count: Count) -> u64 {
        Count::ALL
            .iter()
            .position(|c| *c == count)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// The XMPP link is up, or down for `why`.
    pub fn set_link(&self, why: Option<String>) {
        self.link_up.store(why.is_none(), Ordering::Relaxed);
        if let Ok(mut p) = self.problems.lock() {
            p[0] = why;
        }
    }

    /// The mailboxes' database answers, or not for `why`.
    pub fn set_store(&self, why: Option<String>) {
        self.store_up.store(why.is_none(), Ordering::Relaxed);
        if let Ok(mut p) = self.problems.lock() {
            p[1] = why;
        }
    }

    pub fn set_gauges(&self, gauges: Gauges) {
        if let Ok(mut g) = self.gauges.lock() {
            *g = gauges;
        }
    }

    pub fn gauges(&self) -> Gauges {
        self.gauges.lock().map(|g| *g).unwrap_or_default()
    }

    /// Whether both the link and the mailboxes work.
    pub fn up(&self) -> bool {
        self.link_up.load(Ordering::Relaxed) && self.store_up.load(Ordering::Relaxed)
    }

    /// The admin status's view.
    pub fn json(&self) -> Value {
        let g = self.gauges();
        let mut counts = serde_json::Map::new();
        for c in Count::ALL {
            counts.insert(
                c.name().trim_end_matches("_total").into(),
                json!(self.count(c)),
            );
        }
        json!({
            "component": self.component,
            "link_up": self.link_up.load(Ordering::Relaxed),
            "mailboxes_up": self.store_up.load(Ordering::Relaxed),
            "problem": Reporting::problem(self),
            "outbox": g.outbox,
            "outbox_oldest_seconds": g.outbox_oldest_seconds,
            "inbox_pending": g.inbox_pending,
            "inbox_oldest_seconds": g.inbox_oldest_seconds,
            "inbox_failed": g.inbox_failed,
            "counts": counts,
        })
    }
}

const FAMILIES: &[(&str, &str)] = &[
    ("up", "gauge"),
    ("outbox_entries", "gauge"),
    ("outbox_oldest_seconds", "gauge"),
    ("inbox_pending", "gauge"),
    ("inbox_oldest_seconds", "gauge"),
    ("inbox_failed", "gauge"),
    ("filled_total", "counter"),
    ("sent_total", "counter"),
    ("retried_total", "counter"),
    ("delivered_total", "counter"),
    ("received_total", "counter"),
    ("repeats_total", "counter"),
    ("refused_total", "counter"),
    ("published_total", "counter"),
    ("bounced_total", "counter"),
    ("inbox_full_total", "counter"),
    ("gaps_total", "counter"),
    ("failures_total", "counter"),
];

impl Reporting for Status {
    const METRIC_PREFIX: &'static str = "chouquette_xmpp_";
    const FAMILIES: &'static [(&'static str, &'static str)] = FAMILIES;

    fn problem(&self) -> Option<String> {
        if self.up() {
            return None;
        }
        let why = self
            .problems
            .lock()
            .map(|p| p.iter().flatten().cloned().collect::<Vec<_>>().join("; "))
            .unwrap_or_else(|_| "down".into());
        Some(format!("xmpp {}: {why}", self.component))
    }

    fn samples(&self, family: &str) -> Vec<(String, String)> {
        let labels = format!("component=\"{}\"", self.component);
        let g = self.gauges();
        let value = match family {
            "up" => u8::from(self.up()).to_string(),
            "outbox_entries" => g.outbox.to_string(),
            "outbox_oldest_seconds" => format!("{:.3}", g.outbox_oldest_seconds),
            "inbox_pending" => g.inbox_pending.to_string(),
            "inbox_oldest_seconds" => format!("{:.3}", g.inbox_oldest_seconds),
            "inbox_failed" => g.inbox_failed.to_string(),
            name => match Count::ALL.iter().find(|c| c.name() == name) {
                Some(c) => self.count(*c).to_string(),
                None => return Vec::new(),
            },
        };
        vec![(labels, value)]
    }
}

/// Every XMPP component of the node.
pub type Statuses = crate::source::statuses::Statuses<Status>;

impl crate::source::statuses::Statuses<Status> {
    /// Every component's status, for the admin status.
    pub fn json(&self) -> Vec<Value> {
        self.each().map(|s| s.json()).collect()
    }
}
