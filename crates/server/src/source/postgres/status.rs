//! What a Postgres source tells `/readyz` and `/metrics`: whether it is
//! streaming, why not, and how far behind its slot is.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::source::statuses::Reporting;

/// One source's state, shared by its task and the internal API.
#[derive(Debug, Default)]
pub struct Status {
    slot: String,
    streaming: AtomicBool,
    /// Another gateway holds the slot's lease: this one waits, ready.
    standby: AtomicBool,
    /// Why it is not streaming (the last error), or a warning about the
    /// slot falling behind.
    problem: Mutex<Option<String>>,
    behind: AtomicBool,
    lag_bytes: AtomicU64,
    lag_millis: AtomicU64,
    published: AtomicU64,
    duplicates: AtomicU64,
    refused: AtomicU64,
    reconnects: AtomicU64,
}

impl Status {
    pub(super) fn new(slot: &str) -> Status {
        Status {
            slot: slot.to_string(),
            ..Status::default()
        }
    }

    pub(super) fn standby(&self) {
        self.streaming.store(false, Ordering::Relaxed);
        self.standby.store(true, Ordering::Relaxed);
        self.set_problem(None);
    }

    pub(super) fn streaming(&self) {
        self.standby.store(false, Ordering::Relaxed);
        self.streaming.store(true, Ordering::Relaxed);
        self.set_problem(None);
    }

    pub(super) fn failed(&self, why: String) {
        self.streaming.store(false, Ordering::Relaxed);
        self.standby.store(false, Ordering::Relaxed);
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        self.set_problem(Some(why));
    }

    fn set_problem(&self, why: Option<String>) {
        if let Ok(mut problem) = self.problem.lock() {
            *problem = why;
        }
    }

    pub(super) fn lag(&self, bytes: u64, behind: bool) {
        self.lag_bytes.store(bytes, Ordering::Relaxed);
        self.behind.store(behind, Ordering::Relaxed);
    }

    pub(super) fn lag_seconds(&self, seconds: f64) {
        let millis = (seconds.max(0.0) * 1000.0) as u64;
        self.lag_millis.store(millis, Ordering::Relaxed);
    }

    pub(super) fn counted(&self, published: u64, duplicates: u64, refused: u64) {
        self.published.fetch_add(published, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.refused.fetch_add(refused, Ordering::Relaxed);
    }

    /// `None` when streaming, else why not.
    fn problem(&self) -> Option<String> {
        if self.streaming.load(Ordering::Relaxed) || self.standby.load(Ordering::Relaxed) {
            return None;
        }
        let why = self.problem.lock().ok().and_then(|p| p.clone());
        Some(format!(
            "postgres source `{}`: {}",
            self.slot,
            why.unwrap_or_else(|| "connecting".into())
        ))
    }

    /// Its samples of metric family `family`: labels and value.
    fn samples(&self, family: &str) -> Vec<(String, String)> {
        let slot = format!("slot=\"{}\"", self.slot);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let flag = |a: &AtomicBool| u8::from(a.load(Ordering::Relaxed)).to_string();
        match family {
            "up" => vec![(slot, flag(&self.streaming))],
            "standby" => vec![(slot, flag(&self.standby))],
            "behind" => vec![(slot, flag(&self.behind))],
            "lag_bytes" => vec![(slot, load(&self.lag_bytes))],
            "lag_seconds" => {
                let seconds = self.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0;
                vec![(slot, seconds.to_string())]
            }
            "events_total" => [
                ("published", &self.published),
                ("duplicate", &self.duplicates),
                ("refused", &self.refused),
            ]
            .into_iter()
            .map(|(outcome, n)| (format!("{slot},outcome=\"{outcome}\""), load(n)))
            .collect(),
            "reconnects_total" => vec![(slot, load(&self.reconnects))],
            _ => Vec::new(),
        }
    }
}

/// Every Postgres source of the gateway.
pub type Statuses = crate::source::statuses::Statuses<Status>;

impl Reporting for Status {
    const METRIC_PREFIX: &'static str = "chouquette_postgres_";
    const FAMILIES: &'static [(&'static str, &'static str)] = &[
        ("up", "gauge"),
        ("standby", "gauge"),
        ("behind", "gauge"),
        ("lag_bytes", "gauge"),
        ("lag_seconds", "gauge"),
        ("events_total", "counter"),
        ("reconnects_total", "counter"),
    ];

    fn problem(&self) -> Option<String> {
        Status::problem(self)
    }

    fn samples(&self, family: &str) -> Vec<(String, String)> {
        Status::samples(self, family)
    }
}
