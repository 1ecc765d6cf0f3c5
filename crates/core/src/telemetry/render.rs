//! The node's own families in the Prometheus text format, declared once
//! each and rendered in a fixed order that dashboards and tests rely on:
//! totals, errors and closes, admin, flow (drops, histograms), per app,
//! per channel; then the broker link and TLS, which own their families.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chouquette_protocol::ErrorCode;

use super::channels::AppGauges;
use super::prometheus::Family;
use super::{AdminAction, BrokerOp, ChannelCounts, CloseReason, DropReason, Telemetry};

const CONNECTIONS: Family = Family::gauge("chouquette_connections", "Open client connections.");
const CONNECTIONS_TOTAL: Family = Family::counter(
    "chouquette_connections_total",
    "Client connections accepted.",
);
const SUBSCRIPTIONS: Family = Family::gauge("chouquette_subscriptions", "Active subscriptions.");
const PUBLICATIONS: Family = Family::counter(
    "chouquette_publications_total",
    "Events accepted and given an offset.",
);
const PUBLISH_REJECTED: Family = Family::counter(
    "chouquette_publish_rejected_total",
    "Publish requests refused.",
);
const QUEUED: Family = Family::counter(
    "chouquette_deliveries_queued_total",
    "Event frames queued to connections.",
);
const MESSAGES_OUT: Family = Family::counter(
    "chouquette_messages_out_total",
    "Messages written to clients.",
);
const DIRECT: Family = Family::counter(
    "chouquette_deliveries_direct_total",
    "Event frames the fan-out wrote straight into an idle WebSocket.",
);
const SLOW_CONSUMERS: Family = Family::counter(
    "chouquette_slow_consumer_drops_total",
    "Outbox overflows: the connection was closed and must resume.",
);
const ERRORS: Family = Family::counter(
    "chouquette_errors_total",
    "Error messages sent to clients, by code.",
);
const CLOSES: Family = Family::counter(
    "chouquette_closes_total",
    "Connections closed by the gateway, by reason.",
);
const DISABLED_RESETS: Family = Family::counter(
    "chouquette_disabled_resets_total",
    "Subscriptions ended by a kill switch.",
);
const DISABLED_REFUSALS: Family = Family::counter(
    "chouquette_disabled_refusals_total",
    "Subscribes refused by a kill switch.",
);
const USER_COMMANDS: Family = Family::counter(
    "chouquette_user_commands_total",
    "Commands addressed to a user, per connection reached: posted, or overflowed (the connection closes as a slow consumer).",
);
const ADMIN_DENIED: Family = Family::counter(
    "chouquette_admin_denied_total",
    "Admin requests refused for a missing or wrong key.",
);
const ADMIN_ACTIONS: Family = Family::counter(
    "chouquette_admin_actions_total",
    "Operator actions through the admin API, by action.",
);
const APP_CONNECTIONS: Family = Family::gauge(
    "chouquette_app_connections",
    "Connections holding a subscription or identity of the app.",
);
const APP_SUBSCRIPTIONS: Family = Family::gauge(
    "chouquette_app_subscriptions",
    "Active subscriptions on the app's channels.",
);
const DROPS: Family = Family::counter(
    "chouquette_drops_total",
    "Event frames not written to a client, by reason.",
);
const PUBLISH_TO_WRITE: Family = Family::histogram(
    "chouquette_publish_to_write_seconds",
    "From a publication's arrival on this node to the write of its frame to a client.",
);
const OUTBOX_DEPTH: Family = Family::histogram(
    "chouquette_outbox_depth",
    "Frames waiting in a connection's outbox when it was drained.",
);
const BROKER_ROUNDTRIP: Family = Family::histogram(
    "chouquette_broker_roundtrip_seconds",
    "Broker calls, by operation.",
);
const APP_PUBLISHED: Family = Family::counter(
    "chouquette_app_published_total",
    "Events published on the app's channels.",
);
const APP_DELIVERED: Family = Family::counter(
    "chouquette_app_delivered_total",
    "Event frames queued to subscribers of the app's channels.",
);
const CHANNEL_PUBLISHED: Family = Family::counter(
    "chouquette_channel_published_total",
    "Events published on the channel (the first 100 channels seen; the others of each app under channel=\"_other\").",
);
const CHANNEL_DELIVERED: Family = Family::counter(
    "chouquette_channel_delivered_total",
    "Event frames queued to the channel's subscribers (the first 100 channels seen; the others of each app under channel=\"_other\").",
);

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Telemetry {
    /// Renders every series of the node (its own, the broker link's and
    /// TLS's) in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.render_totals(&mut out);
        self.render_admin(&mut out);
        self.render_flow(&mut out);
        self.render_apps(&mut out);
        self.render_channels(&mut out);
        self.link.render(&mut out);
        self.tls.render(&mut out);
        self.presence.render(&mut out);
        self.clock_skew.render(&mut out);
        out
    }

    /// Connections, subscriptions, publications, deliveries; errors and closes.
    fn render_totals(&self, out: &mut String) {
        CONNECTIONS.render_value(out, self.connections());
        CONNECTIONS_TOTAL.render_value(out, load(&self.connections_total));
        SUBSCRIPTIONS.render_value(out, self.subscriptions());
        PUBLICATIONS.render_value(out, load(&self.publications));
        PUBLISH_REJECTED.render_value(out, load(&self.publish_rejected));
        QUEUED.render_value(out, load(&self.queued));
        MESSAGES_OUT.render_value(out, load(&self.messages_out));
        DIRECT.render_value(out, load(&self.direct));
        SLOW_CONSUMERS.render_value(out, load(&self.slow_consumers));
        let mut errors = ERRORS.render(out);
        for code in ErrorCode::ALL {
            errors.sample(&[("code", code.as_str())], load(&self.errors[code.index()]));
        }
        let mut closes = CLOSES.render(out);
        for reason in CloseReason::ALL {
            closes.sample(
                &[("reason", reason.as_str())],
                load(&self.closes[reason.index()]),
            );
        }
    }

    /// Kill switches, the admin API, and per-app gauges.
    fn render_admin(&self, out: &mut String) {
        DISABLED_RESETS.render_value(out, load(&self.disabled_resets));
        DISABLED_REFUSALS.render_value(out, load(&self.disabled_refusals));
        let mut commands = USER_COMMANDS.render(out);
        for (i, outcome) in ["posted", "overflowed"].into_iter().enumerate() {
            commands.sample(&[("outcome", outcome)], load(&self.user_commands[i]));
        }
        ADMIN_DENIED.render_value(out, load(&self.admin_denied));
        let mut actions = ADMIN_ACTIONS.render(out);
        for action in AdminAction::ALL {
            let n = load(&self.admin_actions[action.index()]);
            actions.sample(&[("action", action.as_str())], n);
        }
        let counts = self.app_counts();
        per_app(out, APP_CONNECTIONS, &counts, |c| c.connections);
        per_app(out, APP_SUBSCRIPTIONS, &counts, |c| c.subscriptions);
    }

    /// Drops and the latency and depth histograms.
    fn render_flow(&self, out: &mut String) {
        let mut drops = DROPS.render(out);
        for reason in DropReason::ALL {
            drops.sample(
                &[("reason", reason.as_str())],
                load(&self.drops[reason.index()]),
            );
        }
        PUBLISH_TO_WRITE
            .render(out)
            .histogram(&[], &self.publish_to_write.snapshot());
        OUTBOX_DEPTH
            .render(out)
            .histogram(&[], &self.outbox_depth.snapshot());
        let mut broker = BROKER_ROUNDTRIP.render(out);
        for op in BrokerOp::ALL {
            let snap = self.broker[op.index()].snapshot();
            broker.histogram(&[("op", op.as_str())], &snap);
        }
    }

    /// Events published and delivered per configured app, by app id.
    fn render_apps(&self, out: &mut String) {
        let apps: BTreeMap<&Arc<str>, &AppGauges> = self.apps.iter().collect();
        per_app(out, APP_PUBLISHED, &apps, |g| load(&g.published));
        per_app(out, APP_DELIVERED, &apps, |g| load(&g.delivered));
    }

    /// Events published and delivered per labelled channel, then `_other`.
    fn render_channels(&self, out: &mut String) {
        let channels = self.channel_counts();
        per_channel(out, CHANNEL_PUBLISHED, &channels, |c| c.published);
        per_channel(out, CHANNEL_DELIVERED, &channels, |c| c.delivered);
    }
}

/// One family with a series per app, in app id order.
fn per_app<K: AsRef<str>, T, V: Display>(
    out: &mut String,
    family: Family,
    apps: &BTreeMap<K, T>,
    pick: impl Fn(&T) -> V,
) {
    let mut samples = family.render(out);
    for (app, value) in apps {
        samples.sample(&[("app", app.as_ref())], pick(value));
    }
}

/// One family with a series per labelled channel, in the given order.
fn per_channel(
    out: &mut String,
    family: Family,
    channels: &[ChannelCounts],
    pick: impl Fn(&ChannelCounts) -> u64,
) {
    let mut samples = family.render(out);
    for c in channels {
        samples.sample(&[("app", &c.app), ("channel", &c.channel)], pick(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dashboards and alerts name these families: their names, types and
    /// order are a contract, whatever moves in the code behind them.
    #[test]
    fn families_keep_their_names_types_and_order() {
        let expected = [
            ("chouquette_connections", "gauge"),
            ("chouquette_connections_total", "counter"),
            ("chouquette_subscriptions", "gauge"),
            ("chouquette_publications_total", "counter"),
            ("chouquette_publish_rejected_total", "counter"),
            ("chouquette_deliveries_queued_total", "counter"),
            ("chouquette_messages_out_total", "counter"),
            ("chouquette_deliveries_direct_total", "counter"),
            ("chouquette_slow_consumer_drops_total", "counter"),
            ("chouquette_errors_total", "counter"),
            ("chouquette_closes_total", "counter"),
            ("chouquette_disabled_resets_total", "counter"),
            ("chouquette_disabled_refusals_total", "counter"),
            ("chouquette_user_commands_total", "counter"),
            ("chouquette_admin_denied_total", "counter"),
            ("chouquette_admin_actions_total", "counter"),
            ("chouquette_app_connections", "gauge"),
            ("chouquette_app_subscriptions", "gauge"),
            ("chouquette_drops_total", "counter"),
            ("chouquette_publish_to_write_seconds", "histogram"),
            ("chouquette_outbox_depth", "histogram"),
            ("chouquette_broker_roundtrip_seconds", "histogram"),
            ("chouquette_app_published_total", "counter"),
            ("chouquette_app_delivered_total", "counter"),
            ("chouquette_channel_published_total", "counter"),
            ("chouquette_channel_delivered_total", "counter"),
            ("chouquette_broker_up", "gauge"),
            ("chouquette_broker_losses_total", "counter"),
            ("chouquette_broker_connect_failures_total", "counter"),
            ("chouquette_broker_lag_drops_total", "counter"),
            ("chouquette_broker_resets_total", "counter"),
            ("chouquette_inbox_published_total", "counter"),
            ("chouquette_inbox_duplicates_total", "counter"),
            ("chouquette_inbox_dead_total", "counter"),
            ("chouquette_inbox_claimed_total", "counter"),
            ("chouquette_tls_reloads_total", "counter"),
            ("chouquette_tls_handshake_failures_total", "counter"),
            ("chouquette_presence_users", "gauge"),
            ("chouquette_presence_frames_total", "counter"),
            ("chouquette_presence_dropped_total", "counter"),
            ("chouquette_device_clock_skew_seconds", "histogram"),
            ("chouquette_device_clock_skew_devices", "gauge"),
            ("chouquette_device_clock_skew_untracked_total", "counter"),
        ];
        let text = Telemetry::default().render();
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        assert_eq!(families, expected);
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(helps, expected.len(), "one HELP line per family");
    }
}
