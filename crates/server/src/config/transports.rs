//! `[transports]`: the pacing of the HTTP transports. SSE sends heartbeats
//! so proxies do not close a quiet stream; a long-poll waits at most
//! `poll_wait` so that it answers before a proxy's own timeout.

use std::time::Duration;

use serde::Deserialize;

use super::value::duration;

/// `[transports]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transports {
    /// Interval of SSE comment heartbeats.
    #[serde(deserialize_with = "duration")]
    pub sse_heartbeat: Duration,
    /// Longest wait of one long-poll request.
    #[serde(deserialize_with = "duration")]
    pub poll_wait: Duration,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            sse_heartbeat: Duration::from_secs(15),
            poll_wait: Duration::from_secs(25),
        }
    }
}
