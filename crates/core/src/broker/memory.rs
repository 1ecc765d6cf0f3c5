//! The in-memory broker: one node, no external service.
//!
//! Each channel's log sits behind its own mutex, held while an event gets
//! its offset *and* is handed to the hub: that is what keeps delivery in
//! offset order. The hub never blocks (outboxes only queue), so the lock is
//! held for the fan-out's CPU time only. Epochs are random per process, so a
//! restarted node tells resuming clients `history_gap`, which is the truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{BoxFuture, Broker, BrokerError, PublishFailure, UserGrants};
use crate::app::ChannelPolicy;
use crate::history::{Appended, ChannelLog, Recovered};
use crate::hub::Hub;
use crate::lattice::{Bounds, Lattice};
use crate::lattice_feed::{self, MAX_NAMESPACES_PER_APP, MAX_USERS_PER_NAMESPACE, NamespaceValues};
use crate::presence::LocalChange;
use crate::publication::{ChannelId, NewEvent, Position};
use crate::user_calls::CallReply;
use crate::user_mail::{MAX_GRANT_USERS, MAX_GRANTS_PER_USER, UserMessage};

/// Backend subscriptions by (app, user), then channel.
type Grants = HashMap<(Box<str>, Box<str>), BTreeMap<String, serde_json::Value>>;

/// Lattice namespaces by app, then namespace: at most
/// [`MAX_NAMESPACES_PER_APP`] per app, each with at most
/// [`MAX_USERS_PER_NAMESPACE`] users (apps are the configured ones).
type Lattices = HashMap<Box<str>, HashMap<Box<str>, NamespaceValues>>;

/// The default broker.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: Arc<Hub>,
    channels: Mutex<HashMap<ChannelId, Arc<Mutex<ChannelLog>>>>,
    max_channels: usize,
    /// Always up: nothing external to lose.
    link: tokio::sync::watch::Sender<bool>,
    /// Backend subscriptions, at most [`MAX_GRANT_USERS`] users of
    /// [`MAX_GRANTS_PER_USER`] channels each; lost with the process, as the
    /// history is.
    grants: Mutex<Grants>,
    /// Lattice values; lost with the process, as the history is.
    lattices: Mutex<Lattices>,
    /// Users present per presence channel: on one node, a local transition
    /// is a cluster-wide one. Bounded like the hub's presence (one entry
    /// per user with a subscription); a channel with none is removed.
    present: Mutex<HashMap<ChannelId, BTreeSet<Box<str>>>>,
    /// Pending notifications and idempotency ids (bounded, see
    /// [`crate::notifications::memory`]).
    notifications: crate::notifications::memory::MemoryStore,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A log is updated by single appends that leave it consistent even if a
    // panic interrupted the holder, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryBroker {
    /// A broker delivering to `hub`, tracking at most `max_channels` channels.
    pub fn new(hub: Arc<Hub>, max_channels: usize) -> MemoryBroker {
        MemoryBroker {
            hub,
            channels: Mutex::new(HashMap::new()),
            max_channels,
            link: tokio::sync::watch::Sender::new(true),
            grants: Mutex::new(HashMap::new()),
            lattices: Mutex::new(HashMap::new()),
            present: Mutex::new(HashMap::new()),
            notifications: Default::default(),
        }
    }

    fn presence_now(&self, changes: &[LocalChange]) {
        let mut present = lock(&self.present);
        for change in changes {
            let users = present.entry(change.channel.clone()).or_default();
            let changed = if change.here {
                users.insert(change.user.clone())
            } else {
                users.remove(&change.user)
            };
            if users.is_empty() {
                present.remove(&change.channel);
            }
            if !changed {
                continue;
            }
            let user = [&*change.user];
            let (joined, left): (&[&str], &[&str]) = if change.here {
                (&user, &[])
            } else {
                (&[], &user)
            };
            self.hub.presence().announce(&change.channel, joined, left);
        }
    }

    fn merge_lattices_now(
        &self,
        app: &str,
        namespace: &str,
        update: &NamespaceValues,
        bounds: &Bounds,
    ) -> Result<NamespaceValues, BrokerError> {
        let mut lattices = lock(&self.lattices);
        let namespaces = lattices.entry(app.into()).or_default();
        if !namespaces.contains_key(namespace) && namespaces.len() >= MAX_NAMESPACES_PER_APP {
            return Err(BrokerError::TooManyNamespaces(MAX_NAMESPACES_PER_APP));
        }
        let held = namespaces.entry(namespace.into()).or_default();
        let merged = lattice_feed::merge(&held.shared, &held.users, update, bounds)
            .map_err(BrokerError::from)
            .and_then(|merged| {
                let fresh = merged
                    .users
                    .keys()
                    .filter(|u| !held.users.contains_key(*u))
                    .count();
                if fresh > 0 && held.users.len() + fresh > MAX_USERS_PER_NAMESPACE {
                    return Err(BrokerError::TooManyLatticeUsers(MAX_USERS_PER_NAMESPACE));
                }
                Ok(merged)
            });
        let merged = match merged {
            Ok(merged) => merged,
            Err(e) => {
                // A refused first update leaves no namespace behind.
                if held.is_empty() {
                    namespaces.remove(namespace);
                }
                return Err(e);
            }
        };
        if let Some(shared) = merged.shared {
            held.shared = shared;
        }
        held.users.extend(merged.users);
        Ok(merged.change)
    }

    fn set_grant_now(
        &self,
        app: &str,
        user: &str,
        channel: &str,
        filters: Option<&serde_json::Value>,
    ) -> Result<(), BrokerError> {
        let mut grants = lock(&self.grants);
        let key = (app.into(), user.into());
        let Some(filters) = filters else {
            if let Some(held) = grants.get_mut(&key) {
                held.remove(channel);
                if held.is_empty() {
                    grants.remove(&key);
                }
            }
            return Ok(());
        };
        if !grants.contains_key(&key) && grants.len() >= MAX_GRANT_USERS {
            return Err(BrokerError::TooManyGrants(MAX_GRANT_USERS));
        }
        let held = grants.entry(key).or_default();
        if !held.contains_key(channel) && held.len() >= MAX_GRANTS_PER_USER {
            return Err(BrokerError::TooManyGrants(MAX_GRANTS_PER_USER));
        }
        held.insert(channel.to_string(), filters.clone());
        Ok(())
    }

    fn log(&self, channel: &ChannelId) -> Result<Arc<Mutex<ChannelLog>>, BrokerError> {
        let mut channels = lock(&self.channels);
        if let Some(log) = channels.get(channel) {
            return Ok(log.clone());
        }
        if channels.len() >= self.max_channels {
            return Err(BrokerError::TooManyChannels(self.max_channels));
        }
        let epoch: Arc<str> = super::new_epoch().into();
        let log = Arc::new(Mutex::new(ChannelLog::new(channel.clone(), epoch)));
        channels.insert(channel.clone(), log.clone());
        Ok(log)
    }

    fn publish_now(
        &self,
        channel: &ChannelId,
        policy: &ChannelPolicy,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Position>, PublishFailure> {
        let log = self.log(channel)?;
        let mut log = lock(&log);
        let now = Instant::now();
        let mut positions = Vec::with_capacity(events.len());
        let mut events = events.into_iter();
        while let Some(event) = events.next() {
            let appended = match log.append(event, policy, now) {
                Ok(appended) => appended,
                Err(e) => {
                    return Err(PublishFailure {
                        published: positions,
                        error: e.into(),
                        rest: events.collect(),
                    });
                }
            };
            let (offset, duplicate) = match appended {
                Appended::New(publication) => {
                    self.hub.deliver(&publication);
                    if let Some(alarm) = log.take_alarm() {
                        self.hub.deliver(&alarm);
                    }
                    (publication.offset, false)
                }
                Appended::Duplicate(offset) => (offset, true),
            };
            positions.push(Position {
                epoch: log.epoch().clone(),
                offset,
                duplicate,
            });
        }
        Ok(positions)
    }
}

impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn connected(&self) -> bool {
        true
    }

    fn link(&self) -> tokio::sync::watch::Receiver<bool> {
        self.link.subscribe()
    }

    fn publish<'a>(
        &'a self,
        channel: &'a ChannelId,
        policy: &'a ChannelPolicy,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Vec<Position>, PublishFailure>> {
        let result = self.publish_now(channel, policy, events);
        Box::pin(async move { result })
    }

    fn recover<'a>(
        &'a self,
        channel: &'a ChannelId,
        policy: &'a ChannelPolicy,
        since: Option<(&'a str, u64)>,
        snapshot: bool,
    ) -> BoxFuture<'a, Result<Recovered, BrokerError>> {
        let result = self
            .log(channel)
            .map(|log| lock(&log).recover(since, snapshot, policy, Instant::now()));
        Box::pin(async move { result })
    }

    fn to_user<'a>(&'a self, message: &'a UserMessage) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.hub.deliver_to_user(message);
        Box::pin(async { Ok(()) })
    }

    fn to_user_counted<'a>(
        &'a self,
        message: &'a UserMessage,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        let reached = self.hub.deliver_to_user(message);
        if let Some((_, reply)) = crate::user_calls::reached(message, reached) {
            self.hub.calls().deliver(reply);
        }
        Box::pin(async { Ok(1) })
    }

    /// One node: every reply is this node's.
    fn reply_address(&self) -> &str {
        "local"
    }

    fn to_node<'a>(
        &'a self,
        _address: &'a str,
        reply: &'a CallReply,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.hub.calls().deliver(reply.clone());
        Box::pin(async { Ok(()) })
    }

    fn set_grant<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
        channel: &'a str,
        filters: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let result = self.set_grant_now(app, user, channel, filters);
        Box::pin(async move { result })
    }

    fn grants<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<UserGrants, BrokerError>> {
        let key = (app.into(), user.into());
        let held = lock(&self.grants)
            .get(&key)
            .map(|g| g.iter().map(|(c, f)| (c.clone(), f.clone())).collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(held) })
    }

    fn merge_lattices<'a>(
        &'a self,
        app: &'a str,
        namespace: &'a str,
        update: &'a NamespaceValues,
        bounds: &'a Bounds,
    ) -> BoxFuture<'a, Result<NamespaceValues, BrokerError>> {
        let result = self.merge_lattices_now(app, namespace, update, bounds);
        Box::pin(async move { result })
    }

    fn lattices<'a>(
        &'a self,
        app: &'a str,
        namespace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(Lattice, Lattice), BrokerError>> {
        let lattices = lock(&self.lattices);
        let held = lattices.get(app).and_then(|n| n.get(namespace));
        let values = held.map_or_else(Default::default, |h| {
            let user = h.users.get(user).cloned().unwrap_or_default();
            (h.shared.clone(), user)
        });
        Box::pin(async move { Ok(values) })
    }

    fn presence_changed<'a>(
        &'a self,
        changes: &'a [LocalChange],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.presence_now(changes);
        Box::pin(async { Ok(()) })
    }

    fn present<'a>(
        &'a self,
        channel: &'a ChannelId,
    ) -> BoxFuture<'a, Result<Vec<Box<str>>, BrokerError>> {
        let users = lock(&self.present)
            .get(channel)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(users) })
    }

    fn notifications<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
        op: crate::notifications::PendingOp,
        now: u64,
        expire_after: u64,
    ) -> BoxFuture<'a, Result<crate::notifications::Outcome, BrokerError>> {
        let outcome = self.notifications.apply(app, user, op, now, expire_after);
        Box::pin(async move { outcome })
    }

    fn notification_id<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        claim: Option<&'a str>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        let id = self.notifications.id(app, key, claim, ttl);
        Box::pin(async move { Ok(id) })
    }
}
