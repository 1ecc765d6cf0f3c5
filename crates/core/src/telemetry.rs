//! Telemetry: every counted event has one named method here, and
//! [`Telemetry::render`] writes them all in the Prometheus text format.
//!
//! Plain atomics rather than a metrics registry: the hot path (one increment
//! per delivery batch) costs a relaxed add, and the set of series is fixed.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chouquette_protocol::ErrorCode;

/// Why a connection was closed by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client could not keep up (outbox overflow or write timeout).
    SlowConsumer,
    /// Too many bad messages.
    Misbehaving,
    /// A frame over the hard size limit.
    TooLarge,
    /// The gateway is shutting down.
    Shutdown,
    /// Refused at upgrade: the node is at its connection limit.
    Full,
}

impl CloseReason {
    const ALL: [CloseReason; 5] = [
        CloseReason::SlowConsumer,
        CloseReason::Misbehaving,
        CloseReason::TooLarge,
        CloseReason::Shutdown,
        CloseReason::Full,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Misbehaving => "misbehaving",
            CloseReason::TooLarge => "too_large",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Full => "full",
        }
    }
}

/// The node's counters and gauges.
#[derive(Debug, Default)]
pub struct Telemetry {
    connections: AtomicI64,
    connections_total: AtomicU64,
    subscriptions: AtomicI64,
    publications: AtomicU64,
    queued: AtomicU64,
    messages_out: AtomicU64,
    slow_consumers: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    closes: [AtomicU64; CloseReason::ALL.len()],
    publish_rejected: AtomicU64,
}

impl Telemetry {
    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections now.
    pub fn connections(&self) -> i64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// A subscription went live.
    pub fn subscription_added(&self) {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscription ended.
    pub fn subscription_removed(&self) {
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Active subscriptions now.
    pub fn subscriptions(&self) -> i64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Events accepted and given an offset.
    pub fn published(&self, n: usize) {
        self.publications.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A publish request refused (bad input, auth, limits, broker down).
    pub fn publish_rejected(&self) {
        self.publish_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames queued to connections by the hub.
    pub fn queued(&self, n: usize) {
        self.queued.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Messages written to clients (any class).
    pub fn messages_out(&self, n: usize) {
        self.messages_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A connection's outbox overflowed.
    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    /// An error message was sent.
    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The gateway closed a connection.
    pub fn closed_by_gateway(&self, reason: CloseReason) {
        let i = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.closes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every series in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let g = |out: &mut String, name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        g(
            &mut out,
            "chouquette_connections",
            "Open client connections.",
            "gauge",
            self.connections().to_string(),
        );
        g(
            &mut out,
            "chouquette_connections_total",
            "Client connections accepted.",
            "counter",
            load(&self.connections_total),
        );
        g(
            &mut out,
            "chouquette_subscriptions",
            "Active subscriptions.",
            "gauge",
            self.subscriptions().to_string(),
        );
        g(
            &mut out,
            "chouquette_publications_total",
            "Events accepted and given an offset.",
            "counter",
            load(&self.publications),
        );
        g(
            &mut out,
            "chouquette_publish_rejected_total",
            "Publish requests refused.",
            "counter",
            load(&self.publish_rejected),
        );
        g(
            &mut out,
            "chouquette_deliveries_queued_total",
            "Event frames queued to connections.",
            "counter",
            load(&self.queued),
        );
        g(
            &mut out,
            "chouquette_messages_out_total",
            "Messages written to clients.",
            "counter",
            load(&self.messages_out),
        );
        g(
            &mut out,
            "chouquette_slow_consumer_drops_total",
            "Outbox overflows: the connection was closed and must resume.",
            "counter",
            load(&self.slow_consumers),
        );
        let _ = writeln!(
            out,
            "# HELP chouquette_errors_total Error messages sent to clients, by code.\n# TYPE chouquette_errors_total counter"
        );
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "chouquette_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                load(&self.errors[code.index()])
            );
        }
        let _ = writeln!(
            out,
            "# HELP chouquette_closes_total Connections closed by the gateway, by reason.\n# TYPE chouquette_closes_total counter"
        );
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "chouquette_closes_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                load(&self.closes[i])
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let t = Telemetry::default();
        t.connection_opened();
        t.error(ErrorCode::InvalidToken);
        t.closed_by_gateway(CloseReason::SlowConsumer);
        let text = t.render();
        assert!(text.contains("chouquette_connections 1\n"));
        assert!(text.contains("chouquette_errors_total{code=\"invalid_token\"} 1\n"));
        assert!(text.contains("chouquette_closes_total{reason=\"slow_consumer\"} 1\n"));
    }
}
