//! Telemetry: every counted event of the node has one named recording
//! method on [`Telemetry`]; each component that counts something of its own
//! ([`TlsTelemetry`], the broker link, the limiters) owns its counters and
//! renders them through the one family renderer, [`prometheus::Family`].
//!
//! - `mod.rs`: [`Telemetry`] and its recording methods (the hot path).
//! - `histogram.rs`: fixed-bucket histograms of atomics.
//! - `labels.rs`: the closed label sets (drop and close reasons, …).
//! - `channels.rs`: per-app and bounded per-channel counters.
//! - [`prometheus`]: declaring and rendering a metric family.
//! - `render.rs`: the node's own families, in `/metrics` order.
//! - `stats.rs`: the console's JSON snapshot ([`Stats`]).
//! - `tls.rs`: TLS counters of the public listener.
//!
//! Plain atomics rather than a metrics registry: the hot path (one increment
//! per delivery batch) costs a relaxed add, and the set of series is fixed.
//! Per-channel series are bounded: the first [`MAX_CHANNEL_SERIES`] channels
//! seen get their own labels, the rest of each app is summed under
//! `channel="_other"`.

mod channels;
pub mod clock_skew;
mod histogram;
mod labels;
pub mod prometheus;
mod render;
mod stats;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chouquette_protocol::ErrorCode;

use crate::publication::ChannelId;
use channels::{AppGauges, ChannelRates, ChannelSeries};
use histogram::duration_nanos;

pub use channels::{AppCounts, ChannelCounts, MAX_CHANNEL_SERIES, OTHER_CHANNELS};
pub use histogram::{Buckets, Frames, Histogram, HistogramSnapshot, Nanos};
pub use labels::{AdminAction, BrokerOp, CloseReason, DropReason};
pub use stats::{AppStats, Stats};
pub use tls::TlsTelemetry;

/// The node's counters and gauges.
#[derive(Debug, Default)]
pub struct Telemetry {
    connections: AtomicI64,
    connections_total: AtomicU64,
    subscriptions: AtomicI64,
    publications: AtomicU64,
    queued: AtomicU64,
    messages_out: AtomicU64,
    direct: AtomicU64,
    slow_consumers: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    closes: [AtomicU64; CloseReason::ALL.len()],
    publish_rejected: AtomicU64,
    apps: HashMap<Arc<str>, AppGauges>,
    admin_actions: [AtomicU64; AdminAction::ALL.len()],
    admin_denied: AtomicU64,
    disabled_resets: AtomicU64,
    disabled_refusals: AtomicU64,
    /// Commands addressed to a user posted to a connection's mailbox, and
    /// mailboxes that overflowed (see [`crate::user_mail`]).
    user_commands: [AtomicU64; 2],
    drops: [AtomicU64; DropReason::ALL.len()],
    publish_to_write: Histogram<Nanos>,
    outbox_depth: Histogram<Frames>,
    broker: [Histogram<Nanos>; BrokerOp::ALL.len()],
    /// The labelled channels, of configured apps.
    channels: ChannelSeries,
    /// The broker link and the sources riding on it.
    pub link: crate::broker::LinkTelemetry,
    /// TLS on the public listener.
    pub tls: TlsTelemetry,
    /// Presence (shared with the hub's [`crate::presence::Presence`]).
    pub presence: crate::presence::PresenceTelemetry,
    /// Device clock skews (bounded, see [`clock_skew`]).
    pub clock_skew: clock_skew::ClockSkews,
}

impl Telemetry {
    /// Telemetry with per-app gauges for these apps (built once from the
    /// config; events of other apps only count in the totals).
    pub fn with_apps(apps: impl IntoIterator<Item = Arc<str>>) -> Telemetry {
        let apps: Vec<Arc<str>> = apps.into_iter().collect();
        Telemetry {
            clock_skew: clock_skew::ClockSkews::for_apps(apps.iter().cloned()),
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
            .map(|(id, g)| (id.clone(), g.counts()))
            .collect()
    }

    /// An operator action went through.
    pub fn admin_action(&self, action: AdminAction) {
        self.admin_actions[action.index()].fetch_add(1, Ordering::Relaxed);
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

    /// A command addressed to a user reached one of its connections
    /// (`overflowed`: its mailbox was full, and the connection closes).
    pub fn user_command(&self, overflowed: bool) {
        self.user_commands[usize::from(overflowed)].fetch_add(1, Ordering::Relaxed);
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

    /// An event frame was written by the fan-out straight into a socket,
    /// at `now`; its publication reached the node at `received`.
    pub fn written_direct(&self, now: Instant, received: Instant) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.direct.fetch_add(1, Ordering::Relaxed);
        self.written(now, std::slice::from_ref(&received));
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
        self.closes[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// `n` events of `channel` were accepted and given an offset: the
    /// total, the app's and the channel's counters.
    pub fn published_on(&self, channel: &ChannelId, n: usize) {
        self.published(n);
        if n > 0 {
            self.count_channel(channel, |r| &r.published, |g| &g.published, n);
        }
    }

    /// The hub queued `n` frames of one publication of `channel` to its
    /// subscribers: the total, the app's and the channel's counters.
    pub fn delivered_on(&self, channel: &ChannelId, n: usize) {
        self.queued(n);
        if n > 0 {
            self.count_channel(channel, |r| &r.delivered, |g| &g.delivered, n);
        }
    }

    /// Adds `n` to one counter of the app and of the channel (its own series
    /// while fewer than [`MAX_CHANNEL_SERIES`] are labelled, else the app's
    /// `_other`). Apps that are not configured count in the totals only.
    fn count_channel(
        &self,
        channel: &ChannelId,
        rate: fn(&ChannelRates) -> &AtomicU64,
        app_total: fn(&AppGauges) -> &AtomicU64,
        n: usize,
    ) {
        let Some(app) = self.apps.get(&channel.app) else {
            return;
        };
        let n = n as u64;
        app_total(app).fetch_add(n, Ordering::Relaxed);
        self.channels.count(channel, &app.other, rate, n);
    }

    /// `n` event frames were not written, for `reason`.
    pub fn dropped(&self, reason: DropReason, n: usize) {
        if n == 0 {
            return;
        }
        self.drops[reason.index()].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Live event frames were written at `now`; `received` holds when each
    /// one's publication reached this node. One clock read per write batch.
    pub fn written(&self, now: Instant, received: &[Instant]) {
        if received.is_empty() {
            return;
        }
        self.publish_to_write.observe_all(
            received
                .iter()
                .map(|r| duration_nanos(now.saturating_duration_since(*r))),
        );
    }

    /// A connection drained its outbox and found `depth` frames waiting.
    pub fn outbox_depth(&self, depth: usize) {
        self.outbox_depth.observe(depth as u64);
    }

    /// One broker call took `elapsed`.
    pub fn broker_call(&self, op: BrokerOp, elapsed: Duration) {
        self.broker[op.index()].observe(duration_nanos(elapsed));
    }

    /// The labelled channels by app and name, then each app's `_other`
    /// (only when it counted something).
    fn channel_counts(&self) -> Vec<ChannelCounts> {
        self.channels.counts(&self.apps)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let t = Telemetry::default();
        let now = Instant::now();
        let earlier = now.checked_sub(Duration::from_millis(3)).unwrap_or(now);
        t.written(now, &[now, earlier, earlier]);
        t.outbox_depth(3);
        t.broker_call(BrokerOp::Recover, Duration::from_micros(50));
        let text = t.render();
        assert!(text.contains("# TYPE chouquette_publish_to_write_seconds histogram\n"));
        assert!(text.contains("chouquette_publish_to_write_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("chouquette_publish_to_write_seconds_bucket{le=\"0.005\"} 3\n"));
        assert!(text.contains("chouquette_publish_to_write_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("chouquette_publish_to_write_seconds_count 3\n"));
        assert!(text.contains("chouquette_outbox_depth_bucket{le=\"2\"} 0\n"));
        assert!(text.contains("chouquette_outbox_depth_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("chouquette_outbox_depth_sum 3\n"));
        assert!(text.contains(
            "chouquette_broker_roundtrip_seconds_bucket{op=\"recover\",le=\"0.0001\"} 1\n"
        ));
        assert!(text.contains("chouquette_broker_roundtrip_seconds_count{op=\"publish\"} 0\n"));
        let stats = t.stats();
        assert_eq!(stats.publish_to_write_seconds.count, 3);
        assert_eq!(stats.publish_to_write_seconds.counts.len(), 17);
        assert_eq!(stats.outbox_depth.bounds.len(), 14);
    }

    #[test]
    fn an_overflow_counts_every_discarded_frame() {
        use crate::filter::Filter;
        use crate::hub::{Hub, Subscriber};
        use crate::outbox::Outbox;
        use crate::publication::{NewEvent, Publication};

        let telemetry = Arc::new(Telemetry::with_apps(["a".into()]));
        let hub = Hub::new(telemetry.clone());
        let channel = ChannelId::new("a", "c");
        let outbox = Arc::new(Outbox::new(2));
        let filter = Filter::parse(&serde_json::json!({"*": {}})).expect("filter");
        hub.subscribe(
            &channel,
            Subscriber {
                outbox,
                slot: 0,
                filter: Arc::new(filter),
                notify_only: false,
            },
        );
        for offset in 1..=4 {
            let event: NewEvent =
                serde_json::from_str(r#"{"app_id":"a","channel":"c","event_kind":"k"}"#)
                    .expect("event");
            hub.deliver(&Arc::new(Publication::new(channel.clone(), offset, event)));
        }
        // Two queued, the third overflows (the two and itself are gone), the
        // fourth finds the outbox closed.
        let stats = telemetry.stats();
        assert_eq!(stats.drops["slow_consumer"], 3);
        assert_eq!(stats.drops["closed"], 1);
        assert_eq!(stats.deliveries_queued_total, 2);
        assert_eq!(stats.apps["a"].delivered, 2);
    }

    #[test]
    fn channel_series_are_bounded() {
        let t = Telemetry::with_apps(["a".into()]);
        for i in 0..MAX_CHANNEL_SERIES + 5 {
            let channel = ChannelId::new("a", &format!("c{i}"));
            t.published_on(&channel, 1);
            t.delivered_on(&channel, 2);
        }
        // An app that is not configured counts in the totals only.
        t.published_on(&ChannelId::new("zz", "c"), 1);
        let stats = t.stats();
        assert_eq!(stats.publications_total, MAX_CHANNEL_SERIES as u64 + 6);
        assert_eq!(stats.apps["a"].published, MAX_CHANNEL_SERIES as u64 + 5);
        assert_eq!(
            stats.apps["a"].delivered,
            2 * (MAX_CHANNEL_SERIES as u64 + 5)
        );
        assert_eq!(stats.channels.len(), MAX_CHANNEL_SERIES + 1);
        let other = stats.channels.last().expect("_other");
        assert_eq!(
            (&*other.channel, other.published, other.delivered),
            ("_other", 5, 10)
        );
        let text = t.render();
        assert!(text.contains("chouquette_channel_published_total{app=\"a\",channel=\"c0\"} 1\n"));
        assert!(
            text.contains("chouquette_channel_delivered_total{app=\"a\",channel=\"_other\"} 10\n")
        );
        assert!(text.contains("chouquette_app_published_total{app=\"a\"} 105\n"));
        assert!(!text.contains("app=\"zz\""));
        t.dropped(DropReason::Ended, 2);
        assert!(
            t.render()
                .contains("chouquette_drops_total{reason=\"ended\"} 2\n")
        );
    }

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
