//! Telemetry: every counted event has one named method here, and
//! [`Telemetry::render`] writes them all in the Prometheus text format.
//!
//! Plain atomics rather than a metrics registry: the hot path (one increment
//! per delivery batch) costs a relaxed add, and the set of series is fixed.
//! Histograms are fixed-bucket arrays of atomics (no registry, no lock); a
//! write batch is counted into a local array first, then added with one
//! relaxed add per bucket it touched. Per-channel series are bounded: the
//! first [`MAX_CHANNEL_SERIES`] channels seen get their own labels, the rest
//! of each app is summed under `channel="_other"`, so a node with millions
//! of channels does not export millions of series.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chouquette_protocol::ErrorCode;

use crate::publication::ChannelId;

/// Channels with their own `chouquette_channel_*` series; further channels
/// are summed per app under `channel="_other"`. First come, first labelled:
/// a counter's series must never vanish or restart, so the set is not re-ranked.
pub const MAX_CHANNEL_SERIES: usize = 100;

/// The `channel` label of the channels beyond [`MAX_CHANNEL_SERIES`].
pub const OTHER_CHANNELS: &str = "_other";

/// Why an event frame meant for a client was not written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Discarded when the connection's outbox overflowed (the frames queued
    /// then, and the one that did not fit); the client resumes with `since`.
    SlowConsumer,
    /// Refused by an outbox that had already overflowed or was closing.
    Closed,
    /// Queued for a subscription that ended (unsubscribe, kill switch, token
    /// expiry) before it was written.
    Ended,
    /// Already sent by recovery (history replay raced the live copy): not a
    /// loss, the client has it.
    Duplicate,
    /// Taken from the outbox, but the write failed or missed its deadline.
    WriteFailed,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::SlowConsumer,
        DropReason::Closed,
        DropReason::Ended,
        DropReason::Duplicate,
        DropReason::WriteFailed,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::Closed => "closed",
            DropReason::Ended => "ended",
            DropReason::Duplicate => "duplicate",
            DropReason::WriteFailed => "write_failed",
        }
    }
}

/// A call to the broker whose round trip is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerOp {
    /// Publishing a run of events of one channel (with the memory broker,
    /// this includes handing them to the hub).
    Publish,
    /// Reading history or last state for a subscribe.
    Recover,
}

impl BrokerOp {
    const ALL: [BrokerOp; 2] = [BrokerOp::Publish, BrokerOp::Recover];

    /// The `op` label.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerOp::Publish => "publish",
            BrokerOp::Recover => "recover",
        }
    }
}

/// The most bucket bounds a histogram has (the `+Inf` bucket comes on top).
const MAX_BOUNDS: usize = 16;

/// A histogram's bucket layout: upper bounds in an integer unit, and how to
/// show them.
pub trait Buckets {
    /// Inclusive upper bounds, increasing, at most 16, in the integer unit.
    const BOUNDS: &'static [u64];
    /// Integer units per exported unit (1e9 for nanoseconds shown as seconds).
    const PER_UNIT: f64;
}

/// Durations in nanoseconds, exported in seconds: 100 µs to 10 s.
#[derive(Debug)]
pub struct Nanos;

impl Buckets for Nanos {
    const BOUNDS: &'static [u64] = &[
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        10_000_000_000,
    ];
    const PER_UNIT: f64 = 1e9;
}

/// Queue lengths in frames: 1 to 8192, by powers of two.
#[derive(Debug)]
pub struct Frames;

impl Buckets for Frames {
    const BOUNDS: &'static [u64] = &[
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192,
    ];
    const PER_UNIT: f64 = 1.0;
}

/// A fixed-bucket histogram of relaxed atomics: observing costs one
/// comparison search and two adds, and never locks.
#[derive(Debug)]
pub struct Histogram<B: Buckets> {
    /// Per bucket (not cumulative); index `BOUNDS.len()` is `+Inf`.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    /// Sum of observations, in the integer unit.
    sum: AtomicU64,
    unit: PhantomData<B>,
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            buckets: Default::default(),
            sum: AtomicU64::new(0),
            unit: PhantomData,
        }
    }
}

/// A histogram as read at one moment, for the admin console.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets, in the exported unit (`+Inf` left out).
    pub bounds: Vec<f64>,
    /// Observations per bucket, not cumulative: one more than `bounds`, the
    /// last being the `+Inf` bucket.
    pub counts: Vec<u64>,
    /// Observations in all.
    pub count: u64,
    /// Sum of observations, in the exported unit.
    pub sum: f64,
}

impl<B: Buckets> Histogram<B> {
    fn bucket(value: u64) -> usize {
        B::BOUNDS.partition_point(|&bound| bound < value)
    }

    /// Records one observation, in the integer unit.
    pub fn observe(&self, value: u64) {
        self.buckets[Self::bucket(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records many observations: counted locally, then one add per bucket
    /// touched (a write batch costs a few adds, not a few per frame).
    pub fn observe_all(&self, values: impl Iterator<Item = u64>) {
        let mut local = [0u64; MAX_BOUNDS + 1];
        let mut sum: u64 = 0;
        for value in values {
            local[Self::bucket(value)] += 1;
            sum = sum.saturating_add(value);
        }
        for (bucket, n) in self.buckets.iter().zip(local) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
        if sum > 0 {
            self.sum.fetch_add(sum, Ordering::Relaxed);
        }
    }

    /// The buckets now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.buckets[..=B::BOUNDS.len()]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            bounds: B::BOUNDS.iter().map(|&b| b as f64 / B::PER_UNIT).collect(),
            count: counts.iter().sum(),
            counts,
            sum: self.sum.load(Ordering::Relaxed) as f64 / B::PER_UNIT,
        }
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines; `labels` is empty or
    /// `name="value",` pairs ending with a comma.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let snap = self.snapshot();
        let mut cumulative = 0;
        for (i, n) in snap.counts.iter().enumerate() {
            cumulative += n;
            match snap.bounds.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", snap.sum);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// One channel's counters (or an app's channels beyond the labelled ones).
#[derive(Debug, Default)]
struct ChannelRates {
    published: AtomicU64,
    delivered: AtomicU64,
}

/// One channel's (or an app's `_other` channels') counts, for the console.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelCounts {
    /// The app.
    pub app: Arc<str>,
    /// The channel, or `_other` for the channels beyond the labelled ones.
    pub channel: Arc<str>,
    /// Events published on it.
    pub published: u64,
    /// Event frames queued to its subscribers.
    pub delivered: u64,
}

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

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Every update under this lock is one insert: a poisoned map is whole.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// A duration in whole nanoseconds, saturating (584 years).
fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A label value with `\`, `"` and newlines escaped (app ids come from the
/// config; channel names cannot hold these, but the format must stay valid).
fn label(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

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

/// One app's gauges and counters.
#[derive(Debug, Default)]
struct AppGauges {
    connections: AtomicI64,
    subscriptions: AtomicI64,
    published: AtomicU64,
    delivered: AtomicU64,
    /// The app's channels beyond [`MAX_CHANNEL_SERIES`].
    other: ChannelRates,
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
    drops: [AtomicU64; DropReason::ALL.len()],
    publish_to_write: Histogram<Nanos>,
    outbox_depth: Histogram<Frames>,
    broker: [Histogram<Nanos>; BrokerOp::ALL.len()],
    /// The labelled channels (at most [`MAX_CHANNEL_SERIES`]), of configured apps.
    channels: RwLock<HashMap<ChannelId, ChannelRates>>,
    /// The broker link and the sources riding on it.
    pub link: crate::broker::LinkTelemetry,
    /// TLS on the public listener.
    pub tls: TlsTelemetry,
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
        {
            let channels = read(&self.channels);
            if let Some(r) = channels.get(channel) {
                rate(r).fetch_add(n, Ordering::Relaxed);
                return;
            }
            if channels.len() >= MAX_CHANNEL_SERIES {
                rate(&app.other).fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let mut channels = write(&self.channels);
        if channels.len() >= MAX_CHANNEL_SERIES && !channels.contains_key(channel) {
            rate(&app.other).fetch_add(n, Ordering::Relaxed);
            return;
        }
        rate(channels.entry(channel.clone()).or_default()).fetch_add(n, Ordering::Relaxed);
    }

    /// `n` event frames were not written, for `reason`.
    pub fn dropped(&self, reason: DropReason, n: usize) {
        if n == 0 {
            return;
        }
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.drops[i].fetch_add(n as u64, Ordering::Relaxed);
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
        let i = BrokerOp::ALL
            .iter()
            .position(|o| *o == op)
            .unwrap_or_default();
        self.broker[i].observe(duration_nanos(elapsed));
    }

    /// Every counter and histogram now, for the admin console.
    pub fn stats(&self) -> Stats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let apps = self
            .apps
            .iter()
            .map(|(id, g)| {
                let stats = AppStats {
                    connections: g.connections.load(Ordering::Relaxed),
                    subscriptions: g.subscriptions.load(Ordering::Relaxed),
                    published: load(&g.published),
                    delivered: load(&g.delivered),
                };
                (id.clone(), stats)
            })
            .collect();
        Stats {
            connections: self.connections(),
            connections_total: load(&self.connections_total),
            subscriptions: self.subscriptions(),
            publications_total: load(&self.publications),
            publish_rejected_total: load(&self.publish_rejected),
            deliveries_queued_total: load(&self.queued),
            messages_out_total: load(&self.messages_out),
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
            apps,
            channels: self.channel_counts(),
        }
    }

    /// The labelled channels by app and name, then each app's `_other`
    /// (only when it counted something).
    fn channel_counts(&self) -> Vec<ChannelCounts> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counts: Vec<ChannelCounts> = read(&self.channels)
            .iter()
            .map(|(id, r)| ChannelCounts {
                app: id.app.clone(),
                channel: id.name.clone(),
                published: load(&r.published),
                delivered: load(&r.delivered),
            })
            .collect();
        counts.sort_by(|a, b| (&a.app, &a.channel).cmp(&(&b.app, &b.channel)));
        let mut others: Vec<ChannelCounts> = self
            .apps
            .iter()
            .filter(|(_, g)| load(&g.other.published) + load(&g.other.delivered) > 0)
            .map(|(id, g)| ChannelCounts {
                app: id.clone(),
                channel: OTHER_CHANNELS.into(),
                published: load(&g.other.published),
                delivered: load(&g.other.delivered),
            })
            .collect();
        others.sort_by(|a, b| a.app.cmp(&b.app));
        counts.append(&mut others);
        counts
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
        self.render_flow(&mut out);
        self.link.render(&mut out);
        self.tls.render(&mut out);
        out
    }

    /// Drops, histograms and the per-app and per-channel counters.
    fn render_flow(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP chouquette_drops_total Event frames not written to a client, by reason.\n# TYPE chouquette_drops_total counter"
        );
        for (reason, n) in DropReason::ALL.iter().zip(&self.drops) {
            let _ = writeln!(
                out,
                "chouquette_drops_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                load(n)
            );
        }
        let name = "chouquette_publish_to_write_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a publication's arrival on this node to the write of its frame to a client.\n# TYPE {name} histogram"
        );
        self.publish_to_write.render_series(out, name, "");
        let name = "chouquette_outbox_depth";
        let _ = writeln!(
            out,
            "# HELP {name} Frames waiting in a connection's outbox when it was drained.\n# TYPE {name} histogram"
        );
        self.outbox_depth.render_series(out, name, "");
        let name = "chouquette_broker_roundtrip_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Broker calls, by operation.\n# TYPE {name} histogram"
        );
        for (op, h) in BrokerOp::ALL.iter().zip(&self.broker) {
            h.render_series(out, name, &format!("op=\"{}\",", op.as_str()));
        }
        let mut apps: Vec<(&Arc<str>, &AppGauges)> = self.apps.iter().collect();
        apps.sort_by(|a, b| a.0.cmp(b.0));
        for (name, help, pick) in [
            (
                "chouquette_app_published_total",
                "Events published on the app's channels.",
                (|g: &AppGauges| &g.published) as fn(&AppGauges) -> &AtomicU64,
            ),
            (
                "chouquette_app_delivered_total",
                "Event frames queued to subscribers of the app's channels.",
                |g: &AppGauges| &g.delivered,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (app, g) in &apps {
                let _ = writeln!(out, "{name}{{app=\"{}\"}} {}", label(app), load(pick(g)));
            }
        }
        let channels = self.channel_counts();
        for (name, help, pick) in [
            (
                "chouquette_channel_published_total",
                "Events published on the channel (the first 100 channels seen; the others of each app under channel=\"_other\").",
                (|c: &ChannelCounts| c.published) as fn(&ChannelCounts) -> u64,
            ),
            (
                "chouquette_channel_delivered_total",
                "Event frames queued to the channel's subscribers (the first 100 channels seen; the others of each app under channel=\"_other\").",
                |c: &ChannelCounts| c.delivered,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for c in &channels {
                let _ = writeln!(
                    out,
                    "{name}{{app=\"{}\",channel=\"{}\"}} {}",
                    label(&c.app),
                    label(&c.channel),
                    pick(c)
                );
            }
        }
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

/// TLS on the public listener: certificate reloads (SIGHUP) and handshakes
/// that never became a connection. Kept apart from the hot-path counters:
/// these move once per reload or per failed client, never per delivery.
#[derive(Debug, Default)]
pub struct TlsTelemetry {
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    handshakes_failed: AtomicU64,
    handshakes_timed_out: AtomicU64,
}

impl TlsTelemetry {
    /// A certificate reload finished: `ok`, or refused (the old one stays).
    pub fn reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads so far that succeeded (`ok`) or were refused.
    pub fn reloads(&self, ok: bool) -> u64 {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.load(Ordering::Relaxed)
    }

    /// A client's handshake failed, or did not finish in time (`timed_out`).
    pub fn handshake_failed(&self, timed_out: bool) {
        let counter = if timed_out {
            &self.handshakes_timed_out
        } else {
            &self.handshakes_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let name = "chouquette_tls_reloads_total";
        let _ = writeln!(
            out,
            "# HELP {name} Certificate reloads of the public listener (SIGHUP), by result.\n# TYPE {name} counter\n{name}{{result=\"ok\"}} {}\n{name}{{result=\"error\"}} {}",
            load(&self.reloads_ok),
            load(&self.reloads_error)
        );
        let name = "chouquette_tls_handshake_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} TLS handshakes on the public listener that did not become a connection, by reason.\n# TYPE {name} counter\n{name}{{reason=\"error\"}} {}\n{name}{{reason=\"timeout\"}} {}",
            load(&self.handshakes_failed),
            load(&self.handshakes_timed_out)
        );
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
