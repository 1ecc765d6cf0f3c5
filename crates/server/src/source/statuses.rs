//! What a source the gateway reads itself (Postgres, MQTT) shows operators:
//! a line in `/readyz` while it is not working, and Prometheus families
//! with one sample set per configured source. Each source's status says
//! its own problem and samples; this renders every source's, family by
//! family, so each family's `# TYPE` line is written once.

use std::fmt::Write as _;
use std::sync::Arc;

/// One source's live status, as `/readyz` and `/metrics` read it.
pub trait Reporting: Send + Sync + 'static {
    /// The metric names' prefix, e.g. `chouquette_mqtt_`.
    const METRIC_PREFIX: &'static str;
    /// Its families (name after the prefix) and their Prometheus types.
    const FAMILIES: &'static [(&'static str, &'static str)];

    /// `None` while it works, else what is wrong (said in `/readyz`).
    fn problem(&self) -> Option<String>;

    /// The samples of `family`: (labels, value) pairs.
    fn samples(&self, family: &str) -> Vec<(String, String)>;
}

/// Every source of one kind (none when its config section is absent).
#[derive(Debug)]
pub struct Statuses<S>(Vec<Arc<S>>);

impl<S> Default for Statuses<S> {
    fn default() -> Self {
        Statuses(Vec::new())
    }
}

impl<S> Clone for Statuses<S> {
    fn clone(&self) -> Self {
        Statuses(self.0.clone())
    }
}

impl<S: Reporting> Statuses<S> {
    pub(crate) fn push(&mut self, status: Arc<S>) {
        self.0.push(status);
    }

    /// What is wrong with each source that is not working, for `/readyz`.
    pub fn problems(&self) -> Vec<String> {
        self.0.iter().filter_map(|s| s.problem()).collect()
    }

    /// Each source's status, in config order.
    pub fn each(&self) -> impl Iterator<Item = &Arc<S>> {
        self.0.iter()
    }

    /// Appends their metrics (Prometheus text), family by family.
    pub fn render(&self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        let prefix = S::METRIC_PREFIX;
        for (family, kind) in S::FAMILIES {
            let _ = writeln!(out, "# TYPE {prefix}{family} {kind}");
            for status in &self.0 {
                for (labels, value) in status.samples(family) {
                    let _ = writeln!(out, "{prefix}{family}{{{labels}}} {value}");
                }
            }
        }
    }
}
