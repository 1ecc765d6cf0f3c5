//! Telemetry: every counted event has one named method here, and
//! [`Telemetry::render`] writes them all in the Prometheus text format.
//!
//! Plain atomics rather than a metrics registry: the hot path (one increment
//! per delivery batch) costs a relaxed add, and the set of series is fixed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
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
    /// An operator disconnected the user (`POST /admin/disconnect`).
    Disconnected,
    /// Nothing came from the client, not even a pong, for the idle timeout.
    Idle,
}

impl CloseReason {
    const ALL: [CloseReason; 7] = [
        CloseReason::SlowConsumer,
        CloseReason::Misbehaving,
        CloseReason::TooLarge,
        CloseReason::Shutdown,
        CloseReason::Full,
        CloseReason::Disconnected,
        CloseReason::Idle,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Misbehaving => "misbehaving",
            CloseReason::TooLarge => "too_large",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Full => "full",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Idle => "idle",
        }
    }
}

/// An operator's action through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// A kill switch switched off (put in force).
    SwitchOff,
    /// A kill switch switched back on (lifted).
    SwitchOn,
    /// A user's connections closed.
    Disconnect,
    /// A test publish.
    Publish,
}

impl AdminAction {
    const ALL: [AdminAction; 4] = [
        AdminAction::SwitchOff,
        AdminAction::SwitchOn,
        AdminAction::Disconnect,
        AdminAction::Publish,
    ];

    /// The label (and audit log `action`).
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::SwitchOff => "switch_off",
            AdminAction::SwitchOn => "switch_on",
            AdminAction::Disconnect => "disconnect",
            AdminAction::Publish => "publish",
        }
    }
}

/// One app's gauges.
#[derive(Debug, Default)]
struct AppGauges {
    connections: AtomicI64,
    subscriptions: AtomicI64,
}

/// One app's counts now, for the admin status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppCounts {
    /// Connections holding a subscription or the identity of this app.
    pub connections: i64,
    /// Subscriptions on this app's channels.
    pub subscriptions: i64,
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
    apps: HashMap<Arc<str>, AppGauges>,
    admin_actions: [AtomicU64; AdminAction::ALL.len()],
    admin_denied: AtomicU64,
    disabled_resets: AtomicU64,
    disabled_refusals: AtomicU64,
}

impl Telemetry {
    /// Telemetry with per-app gauges for these apps (built once from the
    /// config; events of other apps only count in the totals).
    pub fn with_apps(apps: impl IntoIterator<Item = Arc<str>>) -> Telemetry {
        Telemetry {
            apps: apps
                .into_iter()
                .map(|id| (id, AppGauges::default()))
                .collect(),
            ..Telemetry::default()
        }
    }

    /// A connection's holding of `app` began (`1`) or ended (`-1`).
    pub fn app_connection(&self, app: &str, delta: i64) {
        if let Some(g) = self.apps.get(app) {
            g.connections.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Every configured app's counts, by id.
    pub fn app_counts(&self) -> BTreeMap<Arc<str>, AppCounts> {
        self.apps
            .iter()
            .map(|(id, g)| {
                let counts = AppCounts {
                    connections: g.connections.load(Ordering::Relaxed),
                    subscriptions: g.subscriptions.load(Ordering::Relaxed),
                };
                (id.clone(), counts)
            })
            .collect()
    }

    /// An operator action went through.
    pub fn admin_action(&self, action: AdminAction) {
        let i = AdminAction::ALL
            .iter()
            .position(|a| *a == action)
            .unwrap_or_default();
        self.admin_actions[i].fetch_add(1, Ordering::Relaxed);
    }

    /// An admin request was refused (no key or a wrong key).
    pub fn admin_denied(&self) {
        self.admin_denied.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscription was ended by a kill switch (`reset` `disabled`).
    pub fn disabled_reset(&self) {
        self.disabled_resets.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscribe was refused by a kill switch (error `disabled`).
    pub fn disabled_refusal(&self) {
        self.disabled_refusals.fetch_add(1, Ordering::Relaxed);
    }

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

    /// A subscription to a channel of `app` went live.
    pub fn subscription_added(&self, app: &str) {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        if let Some(g) = self.apps.get(app) {
            g.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A subscription to a channel of `app` ended.
    pub fn subscription_removed(&self, app: &str) {
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if let Some(g) = self.apps.get(app) {
            g.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
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
        self.render_admin(&mut out);
        out
    }

    fn render_admin(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP chouquette_disabled_resets_total Subscriptions ended by a kill switch.\n# TYPE chouquette_disabled_resets_total counter\nchouquette_disabled_resets_total {}",
            load(&self.disabled_resets)
        );
        let _ = writeln!(
            out,
            "# HELP chouquette_disabled_refusals_total Subscribes refused by a kill switch.\n# TYPE chouquette_disabled_refusals_total counter\nchouquette_disabled_refusals_total {}",
            load(&self.disabled_refusals)
        );
        let _ = writeln!(
            out,
            "# HELP chouquette_admin_denied_total Admin requests refused for a missing or wrong key.\n# TYPE chouquette_admin_denied_total counter\nchouquette_admin_denied_total {}",
            load(&self.admin_denied)
        );
        let _ = writeln!(
            out,
            "# HELP chouquette_admin_actions_total Operator actions through the admin API, by action.\n# TYPE chouquette_admin_actions_total counter"
        );
        for (i, action) in AdminAction::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "chouquette_admin_actions_total{{action=\"{}\"}} {}",
                action.as_str(),
                load(&self.admin_actions[i])
            );
        }
        let counts = self.app_counts();
        for (name, help, pick) in [
            (
                "chouquette_app_connections",
                "Connections holding a subscription or identity of the app.",
                (|c: &AppCounts| c.connections) as fn(&AppCounts) -> i64,
            ),
            (
                "chouquette_app_subscriptions",
                "Active subscriptions on the app's channels.",
                |c: &AppCounts| c.subscriptions,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (app, c) in &counts {
                let _ = writeln!(out, "{name}{{app=\"{app}\"}} {}", pick(c));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let t = Telemetry::with_apps(["a".into()]);
        t.connection_opened();
        t.subscription_added("a");
        t.subscription_added("unknown");
        t.app_connection("a", 1);
        t.admin_action(AdminAction::SwitchOff);
        t.error(ErrorCode::InvalidToken);
        t.closed_by_gateway(CloseReason::SlowConsumer);
        let text = t.render();
        assert!(text.contains("chouquette_connections 1\n"));
        assert!(text.contains("chouquette_errors_total{code=\"invalid_token\"} 1\n"));
        assert!(text.contains("chouquette_closes_total{reason=\"slow_consumer\"} 1\n"));
        assert!(text.contains("chouquette_subscriptions 2\n"));
        assert!(text.contains("chouquette_app_subscriptions{app=\"a\"} 1\n"));
        assert!(text.contains("chouquette_app_connections{app=\"a\"} 1\n"));
        assert!(text.contains("chouquette_admin_actions_total{action=\"switch_off\"} 1\n"));
    }
}
