//! Devices: connections and MQTT clients that stand for a device, and
//! their liveness (docs/devices.md, "Liveness").
//!
//! A connection is a device when its app has `[apps.devices]` and its
//! `connect` token carries a `publish` claim: the claim is what makes a
//! client a device in PROTOCOL.md section 8 (it pins the keywords the
//! device publishes about itself), and a browser user has no reason to
//! hold one. Its `sub` is the device id. MQTT devices are named by their
//! topic (`device = "{1}"` on a topic mapping).
//!
//! Sessions and sources report signs of life here, synchronously and
//! cheaply ([`Devices::connected`], [`Devices::disconnected`],
//! [`Devices::seen`], [`Devices::status`]); each app's [`Tracker`] turns
//! them into changes, queued until the node's liveness task takes them
//! ([`Devices::take_changes`]), settles them with the [`Ledger`] and
//! publishes them. Other code asks [`Devices::liveness`],
//! [`Devices::last_seen`] and [`Devices::is_online`].
//!
//! Bounds: `max_devices` tracked per app (see [`tracker`]); at most
//! [`MAX_QUEUED`] changes wait for the task, past which a change is not
//! announced and is counted in `chouquette_devices_changes_dropped_total`
//! (the device's state is still right here and in the next refresh).

pub mod ledger;
pub mod tracker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::connections::{Identity, Transport};
use crate::telemetry::prometheus::Family;
pub use ledger::{Hold, HoldChange, Holding, Ledger, LedgerError, MemoryLedger, Renewal, Sighting};
pub use tracker::{Change, Liveness, Reason, Sign, State, Tracker};

/// Most changes waiting for the liveness task (it runs every
/// [`TICK`]): far above what a reconnect storm of a large fleet makes.
pub const MAX_QUEUED: usize = 100_000;

/// How often the liveness task takes the changes and checks silences.
pub const TICK: Duration = Duration::from_millis(250);

/// One app's `[apps.devices]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    /// The channel liveness events are published on.
    pub channel: String,
    /// Silence after which an online device is announced silent.
    pub silent_after: Duration,
    /// Most devices tracked for the app.
    pub max_devices: usize,
}

#[derive(Debug, Default)]
struct Inner {
    trackers: HashMap<Arc<str>, Tracker>,
    queued: VecDeque<(Arc<str>, Change)>,
}

/// One change per app and state announced, and the changes dropped.
#[derive(Debug, Default)]
struct Counters {
    announced: Mutex<HashMap<(Arc<str>, &'static str), u64>>,
    webhooks: Mutex<HashMap<(Arc<str>, &'static str), u64>>,
    dropped: AtomicU64,
}

/// This node's devices, per app (see the module docs).
#[derive(Debug, Default)]
pub struct Devices {
    settings: HashMap<Arc<str>, DeviceSettings>,
    inner: Mutex<Inner>,
    counters: Counters,
}

/// One app's (online, silent, tracked) counts and untracked total.
type Row = (Arc<str>, (usize, usize, usize), u64);

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

const ONLINE: Family = Family::gauge(
    "chouquette_devices_online",
    "Devices online on this node (connected, or seen within silent_after).",
);
const SILENT: Family = Family::gauge(
    "chouquette_devices_silent",
    "Devices held by this node that sent nothing for silent_after.",
);
const TRACKED: Family = Family::gauge(
    "chouquette_devices_tracked",
    "Devices tracked by this node (online, silent or offline), at most max_devices per app.",
);
const UNTRACKED: Family = Family::counter(
    "chouquette_devices_untracked_total",
    "New devices not tracked because max_devices devices with a connection were tracked.",
);
const TRANSITIONS: Family = Family::counter(
    "chouquette_devices_transitions_total",
    "Liveness events published by this node, by state.",
);
const WEBHOOKS: Family = Family::counter(
    "chouquette_devices_webhooks_total",
    "Liveness webhook POSTs by outcome: delivered, failed (after 3 tries) or dropped (1024 waiting).",
);
const DROPPED: Family = Family::counter(
    "chouquette_devices_changes_dropped_total",
    "Liveness changes not announced: 100000 were already waiting, or the broker refused the event.",
);

impl Devices {
    /// Devices of the apps configured with `[apps.devices]`.
    pub fn new(settings: impl IntoIterator<Item = (Arc<str>, DeviceSettings)>) -> Devices {
        let settings: HashMap<_, _> = settings.into_iter().collect();
        let trackers = settings
            .iter()
            .map(|(app, s)| (app.clone(), Tracker::new(s.silent_after, s.max_devices)))
            .collect();
        Devices {
            settings,
            inner: Mutex::new(Inner {
                trackers,
                queued: VecDeque::new(),
            }),
            counters: Counters::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is small and cannot be left half done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings of `app`, when it has devices.
    pub fn settings(&self, app: &str) -> Option<&DeviceSettings> {
        self.settings.get(app)
    }

    /// The apps with devices.
    pub fn apps(&self) -> impl Iterator<Item = (&Arc<str>, &DeviceSettings)> {
        self.settings.iter()
    }

    /// Whether a connection with `identity` is a device (module docs).
    pub fn is_device(&self, identity: &Identity) -> bool {
        identity.publish.is_some() && self.settings.contains_key(&*identity.app)
    }

    /// Runs `f` on `app`'s tracker and queues the change it makes.
    fn apply(&self, app: &str, f: impl FnOnce(&mut Tracker) -> Option<Change>) {
        let Some(app) = self.settings.get_key_value(app).map(|(k, _)| k.clone()) else {
            return;
        };
        let mut inner = self.inner();
        let Some(tracker) = inner.trackers.get_mut(&app) else {
            return;
        };
        if let Some(change) = f(tracker) {
            Self::queue(&mut inner.queued, &self.counters, app, change);
        }
    }

    fn queue(
        queued: &mut VecDeque<(Arc<str>, Change)>,
        counters: &Counters,
        app: Arc<str>,
        change: Change,
    ) {
        if queued.len() >= MAX_QUEUED {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queued.push_back((app, change));
    }

    /// A connection identified as `identity` over `transport` opened (or
    /// took that identity). A long-poll request lasts one poll: it is a
    /// sign of life, not a connection (else a polling device would go
    /// offline between its polls).
    pub fn connected(&self, identity: &Identity, transport: Transport) {
        if !self.is_device(identity) {
            return;
        }
        let now = now_ms();
        let sign = match transport {
            Transport::Poll => Sign::Message(Reason::Message),
            Transport::Ws | Transport::Sse => Sign::Connection,
        };
        self.apply(&identity.app, |t| {
            t.alive(&identity.user, sign, transport.as_str(), now)
        });
    }

    /// A connection identified as `identity` over `transport` closed (or
    /// lost the identity).
    pub fn disconnected(&self, identity: &Identity, transport: Transport) {
        if transport != Transport::Poll && self.is_device(identity) {
            let now = now_ms();
            self.apply(&identity.app, |t| t.disconnected(&identity.user, now));
        }
    }

    /// A message from `device` of `app` through `transport`.
    pub fn seen(&self, app: &str, device: &str, transport: &'static str) {
        let now = now_ms();
        self.apply(app, |t| {
            t.alive(device, Sign::Message(Reason::Message), transport, now)
        });
    }

    /// `device`'s MQTT status: `online` or `offline` (its Last Will).
    pub fn status(&self, app: &str, device: &str, online: bool) {
        let now = now_ms();
        self.apply(app, |t| {
            if online {
                t.alive(device, Sign::Message(Reason::Status), "mqtt", now)
            } else {
                t.status_offline(device, now)
            }
        });
    }

    /// `devices` of `app` are held by no node any more (their node is
    /// gone): the changes to announce, tracked here or not.
    pub fn node_lost(&self, app: &str, devices: &[Box<str>]) -> Vec<Change> {
        let now = now_ms();
        let mut inner = self.inner();
        let Some(tracker) = inner.trackers.get_mut(app) else {
            return Vec::new();
        };
        devices
            .iter()
            .map(|device| {
                tracker.node_lost(device, now).unwrap_or_else(|| Change {
                    device: device.clone(),
                    liveness: Liveness {
                        state: State::Offline,
                        since: now,
                        last_seen: tracker.get(device).map_or(0, |l| l.last_seen),
                        transport: tracker.get(device).map_or("", |l| l.transport),
                    },
                    was: State::Online,
                    reason: Reason::NodeLost,
                })
            })
            .collect()
    }

    /// `devices` of `app` that every live node holding them finds silent,
    /// now that the node that last heard them is gone: the changes to
    /// announce (silent, `node_lost`), as this node knows them.
    pub fn node_quieted(&self, app: &str, devices: &[Box<str>]) -> Vec<Change> {
        let now = now_ms();
        let inner = self.inner();
        let Some(tracker) = inner.trackers.get(app) else {
            return Vec::new();
        };
        devices
            .iter()
            .map(|device| {
                let known = tracker.get(device);
                Change {
                    device: device.clone(),
                    liveness: Liveness {
                        state: State::Silent,
                        since: now,
                        last_seen: known.map_or(0, |l| l.last_seen),
                        transport: known.map_or("", |l| l.transport),
                    },
                    was: State::Online,
                    reason: Reason::NodeLost,
                }
            })
            .collect()
    }

    /// `devices` of `app` whose lease this node got back: their liveness
    /// here, to announce again (those no longer held here are skipped).
    pub fn renewed(&self, app: &str, devices: &[Box<str>]) -> Vec<Change> {
        let inner = self.inner();
        let Some(tracker) = inner.trackers.get(app) else {
            return Vec::new();
        };
        devices
            .iter()
            .filter_map(|device| {
                let liveness = tracker.get(device)?;
                (liveness.state != State::Offline).then(|| Change {
                    device: device.clone(),
                    liveness,
                    was: State::Offline,
                    reason: Reason::Renewed,
                })
            })
            .collect()
    }

    /// Checks silences at `now`, then takes every queued change.
    pub fn take_changes(&self, now: u64) -> Vec<(Arc<str>, Change)> {
        let mut inner = self.inner();
        let Inner { trackers, queued } = &mut *inner;
        for (app, tracker) in trackers.iter_mut() {
            for change in tracker.tick(now) {
                Self::queue(queued, &self.counters, app.clone(), change);
            }
        }
        queued.drain(..).collect()
    }

    /// The devices this node holds (online or silent), per app.
    pub fn held(&self) -> Vec<(Arc<str>, Vec<Holding>)> {
        self.inner()
            .trackers
            .iter()
            .map(|(app, t)| (app.clone(), t.holdings()))
            .collect()
    }

    /// `device`'s liveness as this node knows it.
    pub fn liveness(&self, app: &str, device: &str) -> Option<Liveness> {
        self.inner().trackers.get(app)?.get(device)
    }

    /// When this node last saw `device` (Unix milliseconds).
    pub fn last_seen(&self, app: &str, device: &str) -> Option<u64> {
        self.liveness(app, device).map(|l| l.last_seen)
    }

    /// Whether `device` is online on this node (connected or seen within
    /// `silent_after`).
    pub fn is_online(&self, app: &str, device: &str) -> bool {
        self.liveness(app, device)
            .is_some_and(|l| l.state == State::Online)
    }

    /// Counts one published liveness event.
    pub fn announced(&self, app: &Arc<str>, state: State) {
        let mut announced = self
            .counters
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *announced.entry((app.clone(), state.as_str())).or_insert(0) += 1;
    }

    /// Counts a change that could not be published (the broker refused
    /// it): in `chouquette_devices_changes_dropped_total`, with a log line.
    pub fn not_announced(&self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one webhook POST's `outcome` (`delivered`, `failed` or
    /// `dropped`).
    pub fn webhook(&self, app: &Arc<str>, outcome: &'static str) {
        let mut webhooks = self
            .counters
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *webhooks.entry((app.clone(), outcome)).or_insert(0) += 1;
    }

    /// Appends the device families.
    pub fn render(&self, out: &mut String) {
        if self.settings.is_empty() {
            return;
        }
        let mut rows: Vec<Row> = self
            .inner()
            .trackers
            .iter()
            .map(|(app, t)| (app.clone(), t.counts(), t.untracked()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (family, pick) in [(ONLINE, 0usize), (SILENT, 1), (TRACKED, 2), (UNTRACKED, 3)] {
            let mut samples = family.render(out);
            for (app, (online, silent, tracked), untracked) in &rows {
                let v = match pick {
                    0 => *online as u64,
                    1 => *silent as u64,
                    2 => *tracked as u64,
                    _ => *untracked,
                };
                samples.sample(&[("app", app)], v);
            }
        }
        let mut announced: Vec<_> = self
            .counters
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((app, state), n)| (app.clone(), *state, *n))
            .collect();
        announced.sort();
        let mut samples = TRANSITIONS.render(out);
        for (app, state, n) in &announced {
            samples.sample(&[("app", app), ("state", state)], n);
        }
        let mut webhooks: Vec<_> = self
            .counters
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((app, outcome), n)| (app.clone(), *outcome, *n))
            .collect();
        webhooks.sort();
        let mut samples = WEBHOOKS.render(out);
        for (app, outcome, n) in &webhooks {
            samples.sample(&[("app", app), ("outcome", outcome)], n);
        }
        DROPPED.render_value(out, self.counters.dropped.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> Devices {
        Devices::new([(
            Arc::from("bluelib"),
            DeviceSettings {
                channel: "liveness".into(),
                silent_after: Duration::from_secs(60),
                max_devices: 10,
            },
        )])
    }

    fn identity(publish: bool) -> Identity {
        Identity {
            app: "bluelib".into(),
            user: "D1".into(),
            groups: Vec::new(),
            exp: None,
            publish: publish.then(|| {
                crate::session::publish::PublishGrant::parse(
                    &serde_json::json!({"devices": ["device:D1"]}),
                )
                .expect("claim")
            }),
            messages: Default::default(),
        }
    }

    #[test]
    fn only_identities_with_a_publish_claim_are_devices() {
        let d = devices();
        d.connected(&identity(false), Transport::Ws);
        assert!(d.take_changes(now_ms()).is_empty());
        assert!(!d.is_online("bluelib", "D1"));
        d.connected(&identity(true), Transport::Ws);
        assert!(d.is_online("bluelib", "D1"));
        d.disconnected(&identity(true), Transport::Ws);
        d.connected(&identity(true), Transport::Poll);
        d.disconnected(&identity(true), Transport::Poll);
        let changes = d.take_changes(now_ms());
        let states: Vec<_> = changes.iter().map(|(_, c)| c.liveness.state).collect();
        assert_eq!(
            states,
            [State::Online, State::Offline, State::Online],
            "a poll is a sign of life"
        );
        assert!(d.last_seen("bluelib", "D1").is_some());
        assert!(d.liveness("other", "D1").is_none());
    }

    #[test]
    fn metrics_name_each_app() {
        let d = devices();
        d.seen("bluelib", "M1", "mqtt");
        d.announced(&Arc::from("bluelib"), State::Online);
        let mut out = String::new();
        d.render(&mut out);
        assert!(
            out.contains("chouquette_devices_online{app=\"bluelib\"} 1"),
            "{out}"
        );
        assert!(
            out.contains(
                "chouquette_devices_transitions_total{app=\"bluelib\",state=\"online\"} 1"
            ),
            "{out}"
        );
    }
}
