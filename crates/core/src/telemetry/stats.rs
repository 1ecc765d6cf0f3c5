//! The console's JSON snapshot (`GET /admin/stats`): every counter and
//! histogram read at one moment. The console computes rates from the
//! difference between two snapshots, so counters here are totals, never
//! rates, and their names match the Prometheus series they mirror.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BrokerOp, ChannelCounts, CloseReason, DropReason, HistogramSnapshot, Telemetry};

/// One app's counts and rates' counters, for the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppStats {
    /// Connections holding a subscription or the identity of this app.
    pub connections: i64,
    /// Subscriptions on this app's channels.
    pub subscriptions: i64,
    /// Events published on this app's channels.
    pub published: u64,
    /// Event frames queued to subscribers of this app's channels.
    pub delivered: u64,
}

/// Every counter and histogram now (`GET /admin/stats`): the console
/// computes rates from the difference between two of these.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Open client connections.
    pub connections: i64,
    /// Connections accepted.
    pub connections_total: u64,
    /// Active subscriptions.
    pub subscriptions: i64,
    /// Events accepted and given an offset.
    pub publications_total: u64,
    /// Publish requests refused.
    pub publish_rejected_total: u64,
    /// Event frames queued to connections.
    pub deliveries_queued_total: u64,
    /// Messages written to clients.
    pub messages_out_total: u64,
    /// Of the event frames, those the fan-out wrote straight into an idle
    /// WebSocket (no queue, no wake-up of the connection's task).
    pub deliveries_direct_total: u64,
    /// Frames not written, by reason.
    pub drops: BTreeMap<&'static str, u64>,
    /// Connections closed by the gateway, by reason.
    pub closes: BTreeMap<&'static str, u64>,
    /// From a publication's arrival to the write of its frame.
    pub publish_to_write_seconds: HistogramSnapshot,
    /// Frames waiting in an outbox when its connection drained it.
    pub outbox_depth: HistogramSnapshot,
    /// Broker round trips, by operation.
    pub broker_roundtrip_seconds: BTreeMap<&'static str, HistogramSnapshot>,
    /// Per configured app.
    pub apps: BTreeMap<Arc<str>, AppStats>,
    /// The labelled channels, then each app's `_other`, by app and name.
    pub channels: Vec<ChannelCounts>,
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Telemetry {
    /// Every counter and histogram now, for the admin console.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.connections(),
            connections_total: load(&self.connections_total),
            subscriptions: self.subscriptions(),
            publications_total: load(&self.publications),
            publish_rejected_total: load(&self.publish_rejected),
            deliveries_queued_total: load(&self.queued),
            messages_out_total: load(&self.messages_out),
            deliveries_direct_total: load(&self.direct),
            drops: DropReason::ALL
                .iter()
                .zip(&self.drops)
                .map(|(r, n)| (r.as_str(), load(n)))
                .collect(),
            closes: CloseReason::ALL
                .iter()
                .zip(&self.closes)
                .map(|(r, n)| (r.as_str(), load(n)))
                .collect(),
            publish_to_write_seconds: self.publish_to_write.snapshot(),
            outbox_depth: self.outbox_depth.snapshot(),
            broker_roundtrip_seconds: BrokerOp::ALL
                .iter()
                .zip(&self.broker)
                .map(|(op, h)| (op.as_str(), h.snapshot()))
                .collect(),
            apps: self.app_stats(),
            channels: self.channel_counts(),
        }
    }

    fn app_stats(&self) -> BTreeMap<Arc<str>, AppStats> {
        self.apps
            .iter()
            .map(|(id, g)| {
                let counts = g.counts();
                let stats = AppStats {
                    connections: counts.connections,
                    subscriptions: counts.subscriptions,
                    published: load(&g.published),
                    delivered: load(&g.delivered),
                };
                (id.clone(), stats)
            })
            .collect()
    }
}
