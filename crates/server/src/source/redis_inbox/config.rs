//! The inbox's settings: where the stream is and how it is consumed (built
//! from `[broker]` by the config loader).

use std::time::Duration;

/// Where the inbox is and how it is consumed.
#[derive(Debug, Clone)]
pub struct InboxSettings {
    /// The stream backends append to.
    pub stream: String,
    /// The consumer group all gateways share.
    pub group: String,
    /// This gateway's name in the group (its node id).
    pub consumer: String,
    /// Entries read at once.
    pub batch: usize,
    /// Longest wait of one blocking read.
    pub block: Duration,
    /// Entries pending this long on a silent gateway are taken over.
    pub claim_after: Duration,
    /// Most entries kept in the dead-letter stream (approximately).
    pub dead_max_len: usize,
}

impl InboxSettings {
    /// The dead-letter stream.
    pub(super) fn dead(&self) -> String {
        format!("{}:dead", self.stream)
    }
}
