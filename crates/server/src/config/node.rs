//! `[node]`: this gateway process's identity. Its id names it in admin
//! answers, logs and as the Redis inbox consumer, so it must be a valid
//! name; unset, it is `hostname-pid`, unique on one host.

use chouquette_core::publication::valid_name;
use serde::Deserialize;

use super::problem::Problems;

/// `[node]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The node's id in admin answers and logs; default `hostname-pid`.
    pub id: Option<String>,
}

impl NodeConfig {
    /// The configured id, or `hostname-pid`.
    pub fn id_or_default(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => format!("{}-{}", hostname(), std::process::id()),
        }
    }

    pub(super) fn problems(&self, out: &mut Problems<'_>) {
        if let Some(id) = &self.id
            && !valid_name(id)
        {
            out.at(
                "id",
                format!("node.id `{id}` must be letters, digits and `_-.:@/`"),
            );
        }
    }
}

/// The host's name, as the kernel knows it (or `$HOSTNAME`, or `localhost`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
