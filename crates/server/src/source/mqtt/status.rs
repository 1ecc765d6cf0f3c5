//! What an MQTT source tells `/readyz` and `/metrics`: whether it is
//! connected and subscribed, why not, and what became of its messages.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::source::statuses::Reporting;

/// Why a message was not published; each is a `reason` label of
/// `chouquette_mqtt_invalid_total` (a fixed set: bounded series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invalid {
    /// The payload is not JSON (`format = "json"`).
    NotJson,
    /// The payload is not a valid SenML pack.
    Senml,
    /// A template reads a topic level the topic does not have (or an empty one).
    MissingLevel,
    /// The topic matches none of the filters (a broker's mistake).
    NoFilter,
    /// The ingest pipeline refused the event (a bound, an unknown app).
    Refused,
    /// A retained copy replayed at subscribe time: published when first sent.
    Retained,
    /// The JSON payload's `time_field` is not a time.
    BadTime,
}

impl Invalid {
    pub const ALL: [Invalid; 7] = [
        Invalid::NotJson,
        Invalid::Senml,
        Invalid::MissingLevel,
        Invalid::NoFilter,
        Invalid::Refused,
        Invalid::Retained,
        Invalid::BadTime,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Invalid::NotJson => "not_json",
            Invalid::Senml => "senml",
            Invalid::MissingLevel => "missing_level",
            Invalid::NoFilter => "no_filter",
            Invalid::Refused => "refused",
            Invalid::Retained => "retained",
            Invalid::BadTime => "bad_time",
        }
    }
}

/// One source's state, shared by its task and the internal API.
#[derive(Debug, Default)]
pub struct Status {
    name: String,
    up: AtomicBool,
    problem: Mutex<Option<String>>,
    messages: AtomicU64,
    published: AtomicU64,
    duplicates: AtomicU64,
    invalid: Mutex<BTreeMap<Invalid, u64>>,
    reconnects: AtomicU64,
}

impl Status {
    pub(super) fn new(name: &str) -> Status {
        Status {
            name: name.to_string(),
            ..Status::default()
        }
    }

    /// Connected and every filter subscribed.
    pub(super) fn subscribed(&self) {
        self.up.store(true, Ordering::Relaxed);
        self.set_problem(None);
    }

    /// Whether connected and every filter subscribed.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Not subscribed, for `why`.
    pub(super) fn down(&self, why: String) {
        self.up.store(false, Ordering::Relaxed);
        self.set_problem(Some(why));
    }

    pub(super) fn reconnecting(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    fn set_problem(&self, why: Option<String>) {
        if let Ok(mut problem) = self.problem.lock() {
            *problem = why;
        }
    }

    pub(super) fn message(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn published(&self, duplicate: bool) {
        let counter = if duplicate {
            &self.duplicates
        } else {
            &self.published
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn invalid(&self, reason: Invalid) {
        if let Ok(mut counts) = self.invalid.lock() {
            *counts.entry(reason).or_default() += 1;
        }
    }

    /// `None` when subscribed, else why not.
    fn problem(&self) -> Option<String> {
        if self.up.load(Ordering::Relaxed) {
            return None;
        }
        let why = self.problem.lock().ok().and_then(|p| p.clone());
        Some(format!(
            "mqtt source `{}`: {}",
            self.name,
            why.unwrap_or_else(|| "connecting".into())
        ))
    }

    fn samples(&self, family: &str) -> Vec<(String, String)> {
        let source = format!("source=\"{}\"", self.name.replace(['"', '\\', '\n'], "_"));
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        match family {
            "up" => vec![(
                source,
                u8::from(self.up.load(Ordering::Relaxed)).to_string(),
            )],
            "messages_total" => vec![(source, load(&self.messages))],
            "published_total" => [
                ("published", &self.published),
                ("duplicate", &self.duplicates),
            ]
            .into_iter()
            .map(|(outcome, n)| (format!("{source},outcome=\"{outcome}\""), load(n)))
            .collect(),
            "invalid_total" => {
                let counts = self.invalid.lock().map(|c| c.clone()).unwrap_or_default();
                Invalid::ALL
                    .iter()
                    .map(|reason| {
                        let n = counts.get(reason).copied().unwrap_or(0);
                        (
                            format!("{source},reason=\"{}\"", reason.label()),
                            n.to_string(),
                        )
                    })
                    .collect()
            }
            "reconnects_total" => vec![(source, load(&self.reconnects))],
            _ => Vec::new(),
        }
    }
}

/// Every MQTT source of the gateway.
pub type Statuses = crate::source::statuses::Statuses<Status>;

impl Reporting for Status {
    const METRIC_PREFIX: &'static str = "chouquette_mqtt_";
    const FAMILIES: &'static [(&'static str, &'static str)] = &[
        ("up", "gauge"),
        ("messages_total", "counter"),
        ("published_total", "counter"),
        ("invalid_total", "counter"),
        ("reconnects_total", "counter"),
    ];

    fn problem(&self) -> Option<String> {
        Status::problem(self)
    }

    fn samples(&self, family: &str) -> Vec<(String, String)> {
        Status::samples(self, family)
    }
}
