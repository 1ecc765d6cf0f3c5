//! Transports: thin adapters between a socket and a [`Session`]. WebSocket,
//! SSE and long-polling share the session; only framing differs.
//!
//! [`Session`]: chouquette_core::session::Session

pub mod poll;
pub mod sse;
pub mod url;
pub mod ws;

use std::time::Duration;

use chouquette_core::session::unix_now;
use tokio::time::Instant;

/// Settings the transports need, derived from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most open connections (WebSocket, SSE and waiting polls together).
    pub max_connections: usize,
    /// Largest WebSocket frame read.
    pub max_frame_bytes: usize,
    /// Deadline of one write batch.
    pub write_timeout: Duration,
    /// WebSocket ping period (zero: no pings).
    pub ping_interval: Duration,
    /// WebSocket silence after which the client is closed (zero: never).
    pub idle_timeout: Duration,
    /// Interval of SSE comment heartbeats.
    pub sse_heartbeat: Duration,
    /// Longest wait of one long-poll request.
    pub poll_wait: Duration,
}

/// The instant a Unix time (seconds) is reached.
pub(crate) fn deadline(unix: u64) -> Instant {
    let wait = unix.saturating_sub(unix_now());
    Instant::now() + Duration::from_secs(wait.min(365 * 24 * 3600))
}
