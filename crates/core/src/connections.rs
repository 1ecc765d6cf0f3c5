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
//!
//! Messages addressed to a user (see [`crate::user_mail`]) are not rare, so
//! the registry also indexes connections by their `connect` identity (app,
//! user). The index changes only through [`Registry::set_identity`] and
//! [`Registry::close`]; an entry lives as long as one of its connections
//! does, so it is bounded by the open connections.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use smallvec::SmallVec;

use crate::outbox::{Outbox, SIGNAL_DISCONNECT, SIGNAL_SWITCHES, SIGNAL_USER};
use crate::publication::ChannelId;
use crate::session::publish::PublishGrant;
use crate::switches::{Subject, Switch};
use crate::telemetry::Telemetry;
use crate::user_mail::{MAILBOX_CAPACITY, UserCommand};

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
    /// Whom it may send messages to (the token's `message` claim); none:
    /// nobody.
    pub messages: Option<crate::messages::MessageGrant>,
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
    /// Inline while it holds one subscription, as most connections do: no
    /// allocation of its own.
    holders: SmallVec<[Arc<Holder>; 1]>,
    /// Per app, how many subscriptions (and the identity) hold it.
    apps: SmallVec<[(Arc<str>, u32); 1]>,
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

/// Commands addressed to the connection's user, waiting for its session.
#[derive(Debug, Default)]
struct Mailbox {
    queue: VecDeque<Arc<UserCommand>>,
    /// More than [`MAILBOX_CAPACITY`] waited: the connection must close.
    overflowed: bool,
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
    mail: Mutex<Mailbox>,
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

    /// Its transport.
    pub fn transport(&self) -> Transport {
        self.transport
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

    /// Sets (or clears) the `connect` identity; returns the one it had.
    /// Private: [`Registry::set_identity`] keeps the user index in step.
    fn swap_identity(&self, identity: Option<Arc<Identity>>) -> Option<Arc<Identity>> {
        let mut info = self.info();
        let old = info.identity.take();
        if let Some(old) = &old {
            info.release(&old.app, &self.telemetry);
        }
        if let Some(new) = &identity {
            info.hold(&new.app, &self.telemetry);
        }
        info.identity = identity;
        old
    }

    fn mail(&self) -> std::sync::MutexGuard<'_, Mailbox> {
        // Single pushes and pops: a panic cannot leave it half changed.
        self.mail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a command for the session and wakes it, without waiting.
    /// Past [`MAILBOX_CAPACITY`] the mailbox is emptied and marked
    /// overflowed (the session closes the connection as a slow consumer);
    /// returns whether the command was queued.
    pub fn post(&self, command: Arc<UserCommand>) -> bool {
        let mut mail = self.mail();
        if mail.overflowed {
            return false;
        }
        if mail.queue.len() >= MAILBOX_CAPACITY {
            mail.overflowed = true;
            mail.queue = VecDeque::new();
        } else {
            mail.queue.push_back(command);
        }
        let queued = !mail.overflowed;
        drop(mail);
        self.telemetry.user_command(!queued);
        self.outbox.signal(SIGNAL_USER);
        queued
    }

    /// The oldest waiting command.
    pub fn take_mail(&self) -> Option<Arc<UserCommand>> {
        self.mail().queue.pop_front()
    }

    /// Whether commands wait.
    pub fn has_mail(&self) -> bool {
        !self.mail().queue.is_empty()
    }

    /// Whether the mailbox overflowed (see [`Connection::post`]).
    pub fn mail_overflowed(&self) -> bool {
        self.mail().overflowed
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
        *self.mail() = Mailbox::default();
        let mut info = self.info();
        let held = std::mem::take(&mut info.apps);
        for (app, _) in held {
            self.telemetry.app_connection(&app, -1);
        }
        info.holders = SmallVec::new();
        info.identity = None;
    }
}

/// A user of an app, as the index keys it.
type UserKey = (Arc<str>, Box<str>);

/// Every open connection on this node.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Connections by `connect` identity.
    users: Mutex<HashMap<UserKey, Vec<Arc<Connection>>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserKey, Vec<Arc<Connection>>>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or clears) `connection`'s `connect` identity, and indexes it
    /// under its user: the one way an identity changes, so the index never
    /// disagrees with the connections.
    pub fn set_identity(&self, connection: &Arc<Connection>, identity: Option<Arc<Identity>>) {
        let new = identity
            .as_ref()
            .map(|i| (i.app.clone(), i.user.as_str().into()));
        let old = connection.swap_identity(identity);
        let old = old.map(|i| (i.app.clone(), i.user.as_str().into()));
        if old == new {
            return;
        }
        let mut users = self.users();
        if let Some(old) = old {
            unindex(&mut users, &old, connection.id);
        }
        if let Some(new) = new {
            users.entry(new).or_default().push(connection.clone());
        }
    }

    /// This node's connections whose identity is `user` of `app`.
    pub fn of_user(&self, app: &str, user: &str) -> Vec<Arc<Connection>> {
        let key: UserKey = (app.into(), user.into());
        self.users().get(&key).cloned().unwrap_or_default()
    }

    /// The users of `app` with a `connect` identity on this node, each
    /// once (the offline notification fallback records them as seen).
    pub fn users_of(&self, app: &str) -> Vec<Box<str>> {
        self.users()
            .keys()
            .filter(|(a, _)| **a == *app)
            .map(|(_, user)| user.clone())
            .collect()
    }

    /// Posts `command` to every connection whose identity is `user` of
    /// `app` (see [`Connection::post`]); returns how many.
    /// A backend's call goes to WebSocket connections only: SSE and
    /// long-poll clients cannot answer it.
    pub fn post_to_user(&self, app: &str, user: &str, command: &Arc<UserCommand>) -> usize {
        let found = self.of_user(app, user);
        let answerable = |c: &Connection| c.transport == Transport::Ws;
        let mut posted = 0;
        for connection in &found {
            if matches!(**command, UserCommand::Call(_)) && !answerable(connection) {
                continue;
            }
            connection.post(command.clone());
            posted += 1;
        }
        posted
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
            mail: Mutex::new(Mailbox::default()),
        });
        self.map().insert(id, connection.clone());
        connection
    }

    /// Forgets a connection (idempotent) and releases its per-app counts.
    pub fn close(&self, connection: &Connection) {
        let identity = connection.info().identity.clone();
        if let Some(i) = identity {
            let key: UserKey = (i.app.clone(), i.user.as_str().into());
            unindex(&mut self.users(), &key, connection.id);
        }
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

/// Takes connection `id` out of `key`'s entry, and the entry with its last.
fn unindex(users: &mut HashMap<UserKey, Vec<Arc<Connection>>>, key: &UserKey, id: u64) {
    if let Some(list) = users.get_mut(key) {
        list.retain(|c| c.id != id);
        if list.is_empty() {
            users.remove(key);
        }
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
        registry.set_identity(
            &c,
            Some(Arc::new(Identity {
                app: "b".into(),
                user: "v".into(),
                groups: vec!["g".into()],
                exp: None,
                publish: None,
                messages: None,
            })),
        );
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
        registry.set_identity(
            &c,
            Some(Arc::new(Identity {
                app: "a".into(),
                user: "u".into(),
                groups: Vec::new(),
                exp: None,
                publish: None,
                messages: None,
            })),
        );
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

    fn identity(app: &str, user: &str) -> Option<Arc<Identity>> {
        Some(Arc::new(Identity {
            app: app.into(),
            user: user.into(),
            groups: Vec::new(),
            exp: None,
            publish: None,
            messages: None,
        }))
    }

    #[test]
    fn the_user_index_follows_identities_and_forgets_the_last_connection() {
        let registry = Registry::default();
        let telemetry = Arc::new(Telemetry::default());
        let open = || registry.open(Transport::Ws, Arc::new(Outbox::new(4)), telemetry.clone());
        let (c1, c2) = (open(), open());
        registry.set_identity(&c1, identity("a", "u"));
        registry.set_identity(&c2, identity("a", "u"));
        assert_eq!(registry.of_user("a", "u").len(), 2);
        assert!(registry.of_user("b", "u").is_empty());
        registry.set_identity(&c1, identity("a", "v"));
        assert_eq!(registry.of_user("a", "u").len(), 1);
        registry.set_identity(&c2, None);
        registry.close(&c1);
        assert!(registry.users().is_empty());
    }

    #[test]
    fn a_full_mailbox_overflows_once_and_signals() {
        let registry = Registry::default();
        let c = registry.open(
            Transport::Ws,
            Arc::new(Outbox::new(4)),
            Arc::new(Telemetry::default()),
        );
        registry.set_identity(&c, identity("a", "u"));
        let command = Arc::new(UserCommand::LoadGrants);
        for _ in 0..MAILBOX_CAPACITY {
            assert_eq!(registry.post_to_user("a", "u", &command), 1);
        }
        assert!(!c.mail_overflowed());
        assert!(!c.post(command.clone()));
        assert!(c.mail_overflowed() && !c.has_mail());
        assert_eq!(c.outbox().take_signals(), SIGNAL_USER);
    }

    #[test]
    fn calls_go_to_websocket_connections_only() {
        let registry = Registry::default();
        let telemetry = Arc::new(Telemetry::default());
        let open = |t| registry.open(t, Arc::new(Outbox::new(4)), telemetry.clone());
        let (ws, sse) = (open(Transport::Ws), open(Transport::Sse));
        registry.set_identity(&ws, identity("a", "u"));
        registry.set_identity(&sse, identity("a", "u"));
        let call = Arc::new(UserCommand::Call(crate::user_calls::ClientCall {
            id: "1-x".into(),
            reply_to: "local".into(),
            timeout: std::time::Duration::from_secs(1),
            frame: bytes::Bytes::new(),
        }));
        assert_eq!(registry.post_to_user("a", "u", &call), 1);
        assert!(ws.has_mail() && !sse.has_mail());
        let frame = Arc::new(UserCommand::Frame(bytes::Bytes::new()));
        assert_eq!(registry.post_to_user("a", "u", &frame), 2);
    }
}
