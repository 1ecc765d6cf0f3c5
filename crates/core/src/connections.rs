//! This node's open connections, as operators see them: who holds each
//! (token `sub` and `groups` per subscription, the `connect` identity), what
//! it subscribes to, and a way to signal it.
//!
//! The session's subscription registry owns its subscriptions; a
//! [`Connection`] shares each one's [`Holder`] with it, the little the admin
//! API needs to find connections (kill switches, disconnects, listings)
//! without touching the session. Operators' actions are rare, so
//! finding the affected connections scans them all ([`Registry::snapshot`]);
//! the hot paths (delivery) never look here. The affected connection is
//! then signalled through its outbox and acts in its own task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::outbox::{Outbox, SIGNAL_DISCONNECT, SIGNAL_SWITCHES};
use crate::publication::ChannelId;
use crate::session::publish::PublishGrant;
use crate::switches::{Subject, Switch};
use crate::telemetry::Telemetry;

/// The identity given by a `connect` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The app.
    pub app: Arc<str>,
    /// The user or device id.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// When the identity expires.
    pub exp: Option<u64>,
    /// What it may publish (the token's `publish` claim); none: nothing.
    pub publish: Option<PublishGrant>,
}

/// A connection's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket (`/ws`).
    Ws,
    /// Server-Sent Events (`/sse`).
    Sse,
    /// One long-poll request (`/poll`).
    Poll,
}

impl Transport {
    /// `ws`, `sse` or `poll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// Who holds one subscription. Shared (one allocation) between the
/// session's subscription registry and its [`Connection`].
#[derive(Debug, Clone)]
pub struct Holder {
    /// The session's slot.
    pub slot: u32,
    /// The channel.
    pub channel: ChannelId,
    /// The token's `sub`.
    pub user: Option<Box<str>>,
    /// The token's `groups`.
    pub groups: Box<[String]>,
}

impl Holder {
    /// What a kill switch is checked against: the token's `sub` and
    /// `groups`, and the connection's `identity` when it is of the same app.
    pub fn subject<'a>(&'a self, identity: Option<&'a Identity>) -> Subject<'a> {
        let identity = identity.filter(|i| *i.app == *self.channel.app);
        Subject {
            app: &self.channel.app,
            channel: &self.channel.name,
            users: [self.user.as_deref(), identity.map(|i| i.user.as_str())],
            groups: [&self.groups, identity.map_or(&[], |i| i.groups.as_slice())],
        }
    }
}

#[derive(Debug, Default)]
struct Info {
    identity: Option<Arc<Identity>>,
    holders: Vec<Arc<Holder>>,
    /// Per app, how many subscriptions (and the identity) hold it.
    apps: Vec<(Arc<str>, u32)>,
    disconnect: Option<Box<str>>,
}

impl Info {
    fn subject<'a>(&'a self, h: &'a Holder) -> Subject<'a> {
        h.subject(self.identity.as_deref())
    }

    fn hold(&mut self, app: &Arc<str>, telemetry: &Telemetry) {
        match self.apps.iter_mut().find(|(a, _)| a == app) {
            Some((_, n)) => *n += 1,
            None => {
                self.apps.push((app.clone(), 1));
                telemetry.app_connection(app, 1);
            }
        }
    }

    fn release(&mut self, app: &str, telemetry: &Telemetry) {
        if let Some(i) = self.apps.iter().position(|(a, _)| &**a == app) {
            self.apps[i].1 -= 1;
            if self.apps[i].1 == 0 {
                self.apps.swap_remove(i);
                telemetry.app_connection(app, -1);
            }
        }
    }
}

/// What an operator sees of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Node-wide connection id.
    pub id: u64,
    /// Its transport.
    pub transport: Transport,
    /// When it was opened.
    pub since: SystemTime,
    /// Its subscriptions' channels (of the app asked about).
    pub channels: Vec<String>,
}

/// One open connection, shared between its session and the registry.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    transport: Transport,
    since: SystemTime,
    outbox: Arc<Outbox>,
    telemetry: Arc<Telemetry>,
    info: Mutex<Info>,
}

impl Connection {
    fn info(&self) -> std::sync::MutexGuard<'_, Info> {
        // Every update is small and cannot be left half done.
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Node-wide id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The queue of its live frames and signals.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Records a subscription's holder.
    pub fn add(&self, holder: impl Into<Arc<Holder>>) {
        let holder = holder.into();
        let mut info = self.info();
        info.hold(&holder.channel.app, &self.telemetry);
        info.holders.push(holder);
    }

    /// Forgets the holder of `slot`.
    pub fn remove(&self, slot: u32) {
        let mut info = self.info();
        if let Some(i) = info.holders.iter().position(|h| h.slot == slot) {
            let holder = info.holders.swap_remove(i);
            info.release(&holder.channel.app, &self.telemetry);
        }
    }

    /// Sets (or clears) the `connect` identity.
    pub fn set_identity(&self, identity: Option<Arc<Identity>>) {
        let mut info = self.info();
        if let Some(old) = info.identity.take() {
            info.release(&old.app, &self.telemetry);
        }
        if let Some(new) = &identity {
            info.hold(&new.app, &self.telemetry);
        }
        info.identity = identity;
    }

    /// Calls `f` with the switch subject of the subscription in `slot`.
    pub fn with_subject<R>(&self, slot: u32, f: impl FnOnce(&Subject<'_>) -> R) -> Option<R> {
        let info = self.info();
        let holder = info.holders.iter().find(|h| h.slot == slot)?;
        Some(f(&info.subject(holder)))
    }

    /// Whether `switch` covers any of its subscriptions.
    pub fn affected_by(&self, switch: &Switch) -> bool {
        let info = self.info();
        info.holders.iter().any(|h| switch.covers(&info.subject(h)))
    }

    /// Whether `user` of `app` holds it: its identity, or any subscription's `sub`.
    pub fn held_by(&self, app: &str, user: &str) -> bool {
        let info = self.info();
        let by_identity = info
            .identity
            .as_ref()
            .is_some_and(|i| *i.app == *app && i.user == user);
        by_identity
            || info
                .holders
                .iter()
                .any(|h| *h.channel.app == *app && h.user.as_deref() == Some(user))
    }

    /// What an operator sees of it; channels of `app` only.
    pub fn summary(&self, app: &str) -> Summary {
        let info = self.info();
        let mut channels: Vec<String> = info
            .holders
            .iter()
            .filter(|h| *h.channel.app == *app)
            .map(|h| h.channel.name.to_string())
            .collect();
        channels.sort();
        Summary {
            id: self.id,
            transport: self.transport,
            since: self.since,
            channels,
        }
    }

    /// Asks its session to re-check its subscriptions against the switches.
    pub fn recheck_switches(&self) {
        self.outbox.signal(SIGNAL_SWITCHES);
    }

    /// Raises outbox signals for its session (broker link changes).
    pub fn signal(&self, signals: crate::outbox::Signals) {
        self.outbox.signal(signals);
    }

    /// Asks its session to close the connection, telling the client `reason`.
    pub fn disconnect(&self, reason: &str) {
        self.info().disconnect = Some(reason.into());
        self.outbox.signal(SIGNAL_DISCONNECT);
    }

    /// The reason given to [`Connection::disconnect`].
    pub fn disconnect_reason(&self) -> Box<str> {
        self.info().disconnect.clone().unwrap_or_default()
    }

    fn clear(&self) {
        let mut info = self.info();
        let held = std::mem::take(&mut info.apps);
        for (app, _) in held {
            self.telemetry.app_connection(&app, -1);
        }
        info.holders = Vec::new();
        info.identity = None;
    }
}

/// Every open connection on this node.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection.
    pub fn open(
        &self,
        transport: Transport,
        outbox: Arc<Outbox>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Connection> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connection = Arc::new(Connection {
            id,
            transport,
            since: SystemTime::now(),
            outbox,
            telemetry,
            info: Mutex::new(Info::default()),
        });
        self.map().insert(id, connection.clone());
        connection
    }

    /// Forgets a connection (idempotent) and releases its per-app counts.
    pub fn close(&self, connection: &Connection) {
        connection.clear();
        self.map().remove(&connection.id);
    }

    /// Every open connection now, for a scan outside the registry's lock.
    pub fn snapshot(&self) -> Vec<Arc<Connection>> {
        self.map().values().cloned().collect()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switches::SwitchSpec;

    fn holder(slot: u32, app: &str, channel: &str, user: Option<&str>) -> Holder {
        Holder {
            slot,
            channel: ChannelId::new(app, channel),
            user: user.map(Into::into),
            groups: Box::new([]),
        }
    }

    #[test]
    fn counts_apps_once_per_connection() {
        let telemetry = Arc::new(Telemetry::with_apps(["a".into(), "b".into()]));
        let registry = Registry::default();
        let c = registry.open(Transport::Ws, Arc::new(Outbox::new(4)), telemetry.clone());
        c.add(holder(0, "a", "x", Some("u")));
        c.add(holder(1, "a", "y", None));
        c.set_identity(Some(Arc::new(Identity {
            app: "b".into(),
            user: "v".into(),
            groups: vec!["g".into()],
            exp: None,
            publish: None,
        })));
        let counts = telemetry.app_counts();
        assert_eq!(counts["a"].connections, 1);
        assert_eq!(counts["b"].connections, 1);
        assert!(c.held_by("a", "u") && c.held_by("b", "v") && !c.held_by("a", "v"));
        assert_eq!(c.summary("a").channels, vec!["x", "y"]);
        c.remove(0);
        assert_eq!(telemetry.app_counts()["a"].connections, 1);
        c.remove(1);
        assert_eq!(telemetry.app_counts()["a"].connections, 0);
        registry.close(&c);
        registry.close(&c);
        assert_eq!(telemetry.app_counts()["b"].connections, 0);
        assert!(registry.is_empty());
    }

    #[test]
    fn identity_counts_for_switches_of_its_app_only() {
        let registry = Registry::default();
        let c = registry.open(
            Transport::Sse,
            Arc::new(Outbox::new(4)),
            Arc::new(Telemetry::default()),
        );
        c.add(holder(0, "a", "x", None));
        c.add(holder(1, "b", "x", None));
        c.set_identity(Some(Arc::new(Identity {
            app: "a".into(),
            user: "u".into(),
            groups: Vec::new(),
            exp: None,
            publish: None,
        })));
        let user = Switch::parse(&SwitchSpec {
            scope: "user",
            user: Some("u"),
            ..SwitchSpec::default()
        })
        .expect("valid");
        assert!(c.affected_by(&user));
        assert_eq!(c.with_subject(0, |s| user.covers(s)), Some(true));
        assert_eq!(c.with_subject(1, |s| user.covers(s)), Some(false));
        assert_eq!(c.with_subject(2, |s| user.covers(s)), None);
    }
}
