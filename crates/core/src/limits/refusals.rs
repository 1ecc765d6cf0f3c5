//! Every refusal by a limit, counted by which limit refused it, and
//! exported as `chouquette_limited_total{limit=...}`: one relaxed add per
//! refusal, one series per [`Limit`], all rendered (zero or not).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::telemetry::prometheus::Family;

/// Which limit refused something (the `limit` label of
/// `chouquette_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A client message over its connection's rate (error `rate_limited`).
    ClientMessages,
    /// A connection over the user's connection limit (error `rate_limited`).
    ConnectionsPerUser,
    /// A new connection over its address's rate (HTTP 429 at upgrade).
    ConnectionsPerAddress,
    /// A subscription over the connection's limit (`too_many_subscriptions`).
    Subscriptions,
    /// A publish over the app's rate (HTTP 429).
    Publishes,
    /// A client message over `max_message_bytes` (`bad_message`).
    MessageSize,
    /// A frame over `max_frame_bytes` (close 1009).
    FrameSize,
    /// A connection holding no subscription and no identity for
    /// `subscribe_timeout` (close 1008).
    SubscribeTimeout,
    /// A connection over its address's `max_connections_per_address`
    /// (closed at accept, or HTTP 429 for an address from `X-Forwarded-For`).
    OpenConnectionsPerAddress,
    /// A client `publish` over its user's `client_publishes_per_second`
    /// (error `rate_limited`).
    ClientPublishes,
}

impl Limit {
    /// Every limit, in a stable order.
    pub const ALL: [Limit; 10] = [
        Limit::ClientMessages,
        Limit::ConnectionsPerUser,
        Limit::ConnectionsPerAddress,
        Limit::Subscriptions,
        Limit::Publishes,
        Limit::MessageSize,
        Limit::FrameSize,
        Limit::SubscribeTimeout,
        Limit::OpenConnectionsPerAddress,
        Limit::ClientPublishes,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ClientMessages => "client_messages",
            Limit::ConnectionsPerUser => "connections_per_user",
            Limit::ConnectionsPerAddress => "connections_per_address",
            Limit::Subscriptions => "subscriptions",
            Limit::Publishes => "publishes",
            Limit::MessageSize => "message_size",
            Limit::FrameSize => "frame_size",
            Limit::SubscribeTimeout => "subscribe_timeout",
            Limit::OpenConnectionsPerAddress => "open_connections_per_address",
            Limit::ClientPublishes => "client_publishes",
        }
    }

    fn index(self) -> usize {
        Limit::ALL
            .iter()
            .position(|l| *l == self)
            .unwrap_or_default()
    }
}

const LIMITED: Family = Family::counter(
    "chouquette_limited_total",
    "Requests, messages and connections refused by a limit.",
);

/// Refusals counted by limit.
#[derive(Debug, Default)]
pub struct LimitCounters {
    counts: [AtomicU64; Limit::ALL.len()],
}

impl LimitCounters {
    /// One refusal by `limit`.
    pub fn hit(&self, limit: Limit) {
        self.counts[limit.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals by `limit` so far.
    pub fn get(&self, limit: Limit) -> u64 {
        self.counts[limit.index()].load(Ordering::Relaxed)
    }

    /// `chouquette_limited_total{limit=...}` in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let mut samples = LIMITED.render(out);
        for limit in Limit::ALL {
            samples.sample(&[("limit", limit.as_str())], self.get(limit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_every_limit() {
        let c = LimitCounters::default();
        c.hit(Limit::Publishes);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("chouquette_limited_total{limit=\"publishes\"} 1\n"));
        assert!(out.contains("chouquette_limited_total{limit=\"frame_size\"} 0\n"));
    }
}
