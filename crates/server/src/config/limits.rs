//! `[limits]`: what clients and backends may make the gateway hold, and how
//! fast. Defaults come from the core's own defaults, so both agree. Builds
//! the per-session limits; the per-app ones start from here (`apps.rs`).
//! A limited rate needs a burst of at least one, or nothing would pass;
//! `max_frame_bytes` has the WebSocket layer's minimum, or every upgrade
//! would fail.

use std::time::Duration;

use chouquette_core::app::AppLimits;
use chouquette_core::limits::Rate;
use chouquette_core::node::SessionLimits;
use serde::Deserialize;

use super::problem::Problems;
use super::value::duration;
use crate::transport::ws::MIN_FRAME_BYTES;

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most open client connections; 0 = derived from the open-file limit.
    pub max_connections: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Frames queued for one connection before it is a slow consumer.
    pub outbox_capacity: usize,
    /// Bad messages tolerated before closing with 1008.
    pub max_bad_messages: u32,
    /// Largest client message handled; larger get `bad_message`.
    pub max_message_bytes: usize,
    /// Largest frame read at all; larger close the connection with 1009.
    /// At least [`MIN_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    /// A write to a client that takes longer closes it as a slow consumer.
    #[serde(deserialize_with = "duration")]
    pub write_timeout: Duration,
    /// Largest publish request body.
    pub max_publish_bytes: usize,
    /// The gateway pings a WebSocket client this often (`0s`: never).
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    /// A WebSocket client silent this long (no frame, not even a pong) is
    /// closed as dead (`0s`: never); checked at each ping.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A connection holding no subscription and no identity this long
    /// (since it opened, or since it last held one) is closed with 1008
    /// (`0s`: never).
    #[serde(deserialize_with = "duration")]
    pub subscribe_timeout: Duration,
    /// Client messages per second per connection (0: no limit); over it,
    /// error `rate_limited`. Overridable per app.
    pub client_messages_per_second: u32,
    /// Client messages a connection may send at once after a quiet period.
    pub client_messages_burst: u32,
    /// Messages refused as `rate_limited` (one forgiven per second) before
    /// the connection is closed with 1008 as abusive.
    pub max_rate_limited_messages: u32,
    /// Connections one user (token `sub`) may hold per app on this node
    /// (0: no limit); over it, error `rate_limited`. Overridable per app.
    pub max_connections_per_user: usize,
    /// New connections per second from one address (IPv6: one /64) (0: no
    /// limit); over it, HTTP 429 before any upgrade.
    pub new_connections_per_address: u32,
    /// New connections one address may open at once.
    pub new_connections_burst: u32,
    /// Addresses tracked by the per-address limit; at the bound, once the
    /// quiet ones are pruned, new addresses are refused (429).
    pub max_tracked_addresses: usize,
    /// Sockets one address (IPv6: one /64) may hold open at once on the
    /// public listener (0: no limit); over it, the socket is closed at
    /// accept (HTTP 429 for a client named by `X-Forwarded-For`).
    pub max_connections_per_address: usize,
    /// A connection that has not sent a complete request head this long
    /// after accept (after the TLS handshake), or after its previous
    /// response, is closed. More than 0s.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// Events published per second per app (0: no limit); over it, 429.
    /// Overridable per app.
    pub publishes_per_second: u32,
    /// Events an app may publish at once after a quiet period.
    pub publish_burst: u32,
    /// Client calls per second per app to its RPC routes (0: no limit);
    /// over it, error `rate_limited` with the call's id. Overridable per app.
    pub calls_per_second: u32,
    /// Calls an app's clients may make at once after a quiet period.
    pub calls_burst: u32,
    /// Calls one connection may have waiting on backends; one more is
    /// answered `rate_limited` with its id.
    pub max_calls_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let session = SessionLimits::default();
        let app = AppLimits::default();
        Limits {
            max_connections: 0,
            max_subscriptions_per_connection: session.max_subscriptions,
            outbox_capacity: session.outbox_capacity,
            max_bad_messages: session.max_bad_messages,
            max_message_bytes: session.max_message_bytes,
            max_frame_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            max_publish_bytes: 4 * 1024 * 1024,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            subscribe_timeout: Duration::from_secs(30),
            client_messages_per_second: session.client_messages.per_second,
            client_messages_burst: session.client_messages.burst,
            max_rate_limited_messages: session.max_rate_limited,
            max_connections_per_user: app.max_connections_per_user,
            new_connections_per_address: 100,
            new_connections_burst: 1000,
            max_tracked_addresses: 100_000,
            max_connections_per_address: 10_000,
            header_read_timeout: Duration::from_secs(10),
            publishes_per_second: app.publishes.per_second,
            publish_burst: app.publishes.burst,
            calls_per_second: 10_000,
            calls_burst: 20_000,
            max_calls_in_flight: session.max_calls_in_flight,
        }
    }
}

impl Limits {
    /// Per-session limits.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_subscriptions: self.max_subscriptions_per_connection,
            outbox_capacity: self.outbox_capacity,
            max_bad_messages: self.max_bad_messages,
            max_message_bytes: self.max_message_bytes,
            client_messages: Rate::new(self.client_messages_per_second, self.client_messages_burst),
            max_rate_limited: self.max_rate_limited_messages,
            max_calls_in_flight: self.max_calls_in_flight,
            ..SessionLimits::default()
        }
    }

    pub(super) fn problems(&self, out: &mut Problems<'_>) {
        for (name, value) in [
            (
                "max_subscriptions_per_connection",
                self.max_subscriptions_per_connection,
            ),
            ("outbox_capacity", self.outbox_capacity),
            ("max_message_bytes", self.max_message_bytes),
            ("max_frame_bytes", self.max_frame_bytes),
            ("max_publish_bytes", self.max_publish_bytes),
            ("max_calls_in_flight", self.max_calls_in_flight),
        ] {
            if value == 0 {
                out.at(name, format!("limits.{name} must be at least 1"));
            }
        }
        self.rate_problems(out);
        if self.header_read_timeout.is_zero() {
            out.at(
                "header_read_timeout",
                "limits.header_read_timeout must be more than 0s: without it a client \
                 may hold a socket open without ever sending a request"
                    .into(),
            );
        }
        if self.new_connections_per_address > 0 && self.max_tracked_addresses == 0 {
            out.at(
                "max_tracked_addresses",
                "limits.max_tracked_addresses must be at least 1".into(),
            );
        }
        if self.max_frame_bytes < MIN_FRAME_BYTES {
            out.at(
                "max_frame_bytes",
                format!(
                    "limits.max_frame_bytes must be at least {MIN_FRAME_BYTES}: \
                     a subscribe with its token may not fit in a smaller frame"
                ),
            );
        }
        if self.max_frame_bytes < self.max_message_bytes {
            out.at(
                "max_frame_bytes",
                "limits.max_frame_bytes must be at least limits.max_message_bytes".into(),
            );
        }
    }

    fn rate_problems(&self, out: &mut Problems<'_>) {
        for (rate, burst, r) in [
            (
                "client_messages_per_second",
                "client_messages_burst",
                Rate::new(self.client_messages_per_second, self.client_messages_burst),
            ),
            (
                "new_connections_per_address",
                "new_connections_burst",
                Rate::new(self.new_connections_per_address, self.new_connections_burst),
            ),
            (
                "publishes_per_second",
                "publish_burst",
                Rate::new(self.publishes_per_second, self.publish_burst),
            ),
            (
                "calls_per_second",
                "calls_burst",
                Rate::new(self.calls_per_second, self.calls_burst),
            ),
        ] {
            if let Some((needle, message)) = rate_problem("limits", rate, burst, r) {
                out.at(&needle, message);
            }
        }
    }
}

/// Problems of one rate: a limited rate needs a burst of at least 1.
pub(super) fn rate_problem(
    scope: &str,
    rate: &str,
    burst: &str,
    r: Rate,
) -> Option<(String, String)> {
    (r.is_limited() && r.burst == 0).then(|| {
        (
            burst.to_string(),
            format!("{scope}.{burst} must be at least 1 when {scope}.{rate} is set"),
        )
    })
}
