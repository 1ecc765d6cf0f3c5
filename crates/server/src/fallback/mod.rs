//! The offline fallback of notifications (docs/notifications.md "Offline
//! fallback"): a user who has had no connection on any node for `after`
//! gets their pending notifications not sent yet by e-mail or by a signed
//! webhook to the backend, as one digest per user per `period`.
//!
//! How, in three steps:
//!
//! 1. **Seen.** Every tick each node records the users connected to it
//!    ([`Store::seen`]), so "last connected" is known cluster-wide (to
//!    within one tick).
//! 2. **Due.** `POST /api/v1/notify` schedules a check of each user named
//!    at `after` from now ([`Fallback::schedule`], before storing: a check
//!    that finds nothing new just forgets the user). Every tick each node
//!    takes at most [`USERS_PER_TICK`] users due per app.
//! 3. **Check, under a lock.** A user is checked by one node at a time
//!    ([`Store::lock`], a lease longer than a send may take): connected
//!    within `after` → checked again `after` past that; a digest within
//!    `period` → checked again when it ends; else the pending entries not
//!    sent yet go out in one digest, their ids are recorded as sent, and
//!    the user is checked again a `period` later. A failure is counted,
//!    logged, and tried again with a doubling pause ([`FIRST_RETRY`] up
//!    to [`MAX_RETRY`]); nothing is marked sent until it went.
//!
//! A node that stops between a send and its record sends that digest again
//! when the lease ends (at least once); two live nodes never both send it.

pub mod email;
pub mod store;
pub mod template;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chouquette_core::node::Node;
use chouquette_core::notifications::{Entry, PendingOp, acknowledge};
use futures_util::StreamExt;

use self::email::{Mailer, SendError};
use self::store::{MemoryStore, RedisStore, Store, StoreError, millis};
use self::webhook::Webhook;
use crate::broker::redis::RedisBroker;
use crate::config::fallback::DEFAULT_TIMEOUT;
use crate::config::{BrokerKind, Config, FallbackConfig};

/// Users due a check that one node takes per app per tick: the work of a
/// tick is bounded; the others wait for the next ticks.
pub const USERS_PER_TICK: usize = 100;
/// Users checked (digests sent) at once by one node.
pub const AT_ONCE: usize = 8;
/// First pause after a failed send; it doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest pause between two attempts for one user.
pub const MAX_RETRY: Duration = Duration::from_secs(600);
/// Shortest and longest tick: a tenth of the shortest `after`, within these.
const MIN_TICK: Duration = Duration::from_millis(100);
const MAX_TICK: Duration = Duration::from_secs(30);

/// How one app's digests go out.
enum Channel {
    Email(Box<Mailer>),
    Webhook(Webhook),
}

impl Channel {
    async fn send(&self, app: &str, user: &str, entries: &[Entry]) -> Result<(), SendError> {
        match self {
            Channel::Email(m) => m.send(app, user, entries).await,
            Channel::Webhook(w) => w.send(app, user, entries).await,
        }
    }
}

/// One app's fallback.
struct AppFallback {
    after: Duration,
    period: Duration,
    keep_pending: bool,
    lease: Duration,
    channel: Channel,
}

/// The counters (`chouquette_fallback_*`).
#[derive(Debug, Default)]
struct Counters {
    checks: AtomicU64,
    deferred: AtomicU64,
    digests: AtomicU64,
    notifications: AtomicU64,
    failures: AtomicU64,
    undeliverable: AtomicU64,
    unscheduled: AtomicU64,
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut apps: Vec<_> = self.apps.keys().collect();
        apps.sort();
        f.debug_struct("Fallback")
            .field("apps", &apps)
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

/// The offline fallback of this node.
pub struct Fallback {
    node: Arc<Node>,
    store: Store,
    apps: HashMap<String, AppFallback>,
    /// This node's lock token.
    token: String,
    tick: Duration,
    counters: Counters,
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The pause after `attempts` failed sends.
pub fn retry_pause(attempts: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1 << attempts.saturating_sub(1).min(20));
    doubled.min(MAX_RETRY)
}

impl chouquette_core::notifications::Scheduler for Fallback {
    fn schedule<'a>(
        &'a self,
        app: &'a str,
        users: &'a [String],
        kind: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(Fallback::schedule(self, app, users, kind))
    }
}

impl Fallback {
    /// The fallback of the apps that configure one (`None`: no app does).
    /// An app whose mailer cannot be built (its CA file became unreadable
    /// since the config was checked) is logged and left without fallback.
    pub fn new(
        config: &Config,
        node: Arc<Node>,
        redis: Option<Arc<RedisBroker>>,
    ) -> Option<Arc<Fallback>> {
        let mut apps = HashMap::new();
        for app in &config.apps {
            let Some(fallback) = &app.notifications.fallback else {
                continue;
            };
            let secret = app.secrets.first().map(|s| s.as_bytes().to_vec());
            match channel(fallback, secret.unwrap_or_default()) {
                Ok((channel, timeout)) => {
                    apps.insert(
                        app.id.clone(),
                        AppFallback {
                            after: fallback.after,
                            period: fallback.period(),
                            keep_pending: fallback.keep_pending.unwrap_or(true),
                            lease: timeout.saturating_mul(2) + Duration::from_secs(30),
                            channel,
                        },
                    );
                }
                Err(e) => tracing::error!(app = %app.id, error = %e,
                    "notifications fallback not started"),
            }
        }
        let shortest = apps.values().map(|a| a.after).min()?;
        let store = match (config.broker.kind, redis) {
            (BrokerKind::Redis, Some(redis)) => {
                Store::Redis(RedisStore::new(redis, &config.broker.prefix))
            }
            _ => Store::Memory(MemoryStore::default()),
        };
        Some(Arc::new(Fallback {
            token: format!("{}-{}", node.id(), uuid::Uuid::new_v4().simple()),
            node,
            store,
            apps,
            tick: (shortest / 10).clamp(MIN_TICK, MAX_TICK),
            counters: Counters::default(),
        }))
    }

    /// Schedules a check of `users` of `app` for a notification of `kind`
    /// about to be stored: `after` from now, or when its kind's grouping
    /// window is over if that is later. A failure is counted and logged:
    /// the notification is still stored and delivered at connect.
    pub async fn schedule(&self, app: &str, users: &[String], kind: &str) {
        let Some(fallback) = self.apps.get(app) else {
            return;
        };
        let window = self
            .node
            .apps()
            .get(app)
            .and_then(|a| a.notifications.groups.get(kind).copied())
            .unwrap_or_default();
        let at = now_ms().saturating_add(millis(fallback.after.max(window)));
        if let Err(e) = self.store.schedule(app, users, at).await {
            self.counters
                .unscheduled
                .fetch_add(users.len() as u64, Ordering::Relaxed);
            tracing::warn!(%app, error = %e, "notification not scheduled for the offline fallback");
        }
    }

    /// Runs the ticks until the node stops.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.tick().await;
        }
    }

    async fn tick(self: &Arc<Self>) {
        let now = now_ms();
        for (app, fallback) in &self.apps {
            let here = self.node.connections().users_of(app);
            if !here.is_empty() {
                let keep = fallback.after.saturating_mul(2) + self.tick;
                if let Err(e) = self.store.seen(app, &here, now, keep).await {
                    tracing::warn!(%app, error = %e, "offline fallback: connected users not recorded");
                }
            }
            let due = match self.store.due(app, now, USERS_PER_TICK).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(%app, error = %e, "offline fallback: due users not read");
                    continue;
                }
            };
            futures_util::stream::iter(due)
                .for_each_concurrent(AT_ONCE, |user| async move {
                    if let Err(e) = self.check(app, fallback, &user).await {
                        tracing::warn!(%app, error = %e, "offline fallback: user not checked");
                    }
                })
                .await;
        }
    }

    /// Checks `user` under the lock (another node checking them: skipped).
    async fn check(&self, app: &str, fallback: &AppFallback, user: &str) -> Result<(), StoreError> {
        if !self
            .store
            .lock(app, user, &self.token, fallback.lease)
            .await?
        {
            return Ok(());
        }
        self.counters.checks.fetch_add(1, Ordering::Relaxed);
        let result = self.check_locked(app, fallback, user).await;
        self.store.unlock(app, user, &self.token).await?;
        result
    }

    async fn check_locked(
        &self,
        app: &str,
        fallback: &AppFallback,
        user: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let after = millis(fallback.after);
        if !self.node.connections().of_user(app, user).is_empty() {
            self.counters.deferred.fetch_add(1, Ordering::Relaxed);
            return self.store.reschedule(app, user, now + after).await;
        }
        if let Some(seen) = self.store.last_seen(app, user).await?
            && seen.saturating_add(after) > now
        {
            self.counters.deferred.fetch_add(1, Ordering::Relaxed);
            return self.store.reschedule(app, user, seen + after).await;
        }
        let mut state = self.store.state(app, user).await?;
        let next_digest = state.last.saturating_add(millis(fallback.period));
        if state.last > 0 && next_digest > now {
            return self.store.reschedule(app, user, next_digest).await;
        }
        let pending = self.pending(app, user).await?;
        let unsent: Vec<Entry> = pending
            .iter()
            .filter(|e| !state.sent.contains(&e.id))
            .cloned()
            .collect();
        if unsent.is_empty() {
            // Forget the user, then look again: a notification stored
            // meanwhile, whose schedule came before this removal, is
            // seen here and the user is scheduled again.
            self.store.unschedule(app, user).await?;
            let again = self.pending(app, user).await?;
            if again.iter().any(|e| !state.sent.contains(&e.id)) {
                self.store.reschedule(app, user, now).await?;
            }
            return Ok(());
        }
        let count: u64 = unsent.iter().map(Entry::count).sum();
        let outcome = fallback.channel.send(app, user, &unsent).await;
        let keep = self.expire_after(app) + fallback.period;
        match outcome {
            Ok(()) | Err(SendError::Undeliverable(_)) => {
                if let Err(SendError::Undeliverable(why)) = &outcome {
                    self.counters
                        .undeliverable
                        .fetch_add(count, Ordering::Relaxed);
                    tracing::warn!(%app, %why, "offline fallback: undeliverable, not tried again");
                } else {
                    self.counters.digests.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .notifications
                        .fetch_add(count, Ordering::Relaxed);
                    state.last = now;
                }
                let ids: Vec<String> = unsent.into_iter().map(|e| e.id).collect();
                state.sent.retain(|id| pending.iter().any(|e| &e.id == id));
                state.sent.extend(ids.iter().cloned());
                state.attempts = 0;
                self.store.set_state(app, user, &state, keep).await?;
                if !fallback.keep_pending
                    && let Err(e) = acknowledge(&self.node, app, user, ids).await
                {
                    tracing::warn!(%app, error = %e, "offline fallback: sent ones left pending");
                }
                self.store
                    .reschedule(app, user, now + millis(fallback.period))
                    .await
            }
            Err(SendError::Retry(why)) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                state.attempts = state.attempts.saturating_add(1);
                let pause = retry_pause(state.attempts);
                tracing::warn!(%app, %why, attempts = state.attempts, retry_in = ?pause,
                    "offline fallback: digest not sent, tried again later");
                self.store.set_state(app, user, &state, keep).await?;
                self.store.reschedule(app, user, now + millis(pause)).await
            }
        }
    }

    fn expire_after(&self, app: &str) -> Duration {
        self.node
            .apps()
            .get(app)
            .map_or(chouquette_core::notifications::DEFAULT_EXPIRE_AFTER, |a| {
                a.notifications.expire_after
            })
    }

    /// The user's deliverable pending entries, oldest first.
    async fn pending(&self, app: &str, user: &str) -> Result<Vec<Entry>, StoreError> {
        let expire = u64::try_from(self.expire_after(app).as_micros()).unwrap_or(u64::MAX);
        let outcome = self
            .node
            .broker()
            .notifications(
                app,
                user,
                PendingOp::List,
                chouquette_core::notifications::now_micros(),
                expire,
            )
            .await?;
        self.node.notifier().record(&outcome);
        Ok(outcome.deliver)
    }

    /// Appends the Prometheus families.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let c = &self.counters;
        for (name, help, value) in [
            (
                "checks",
                "Users the offline fallback checked (this node took the user's lock).",
                &c.checks,
            ),
            (
                "deferred",
                "Checks put off because the user had a connection within `after`.",
                &c.deferred,
            ),
            (
                "digests",
                "Digests (e-mails or webhook calls) the offline fallback sent.",
                &c.digests,
            ),
            (
                "notifications",
                "Notifications sent in the offline fallback's digests (a group counting its members).",
                &c.notifications,
            ),
            (
                "failures",
                "Digests that failed to go (tried again later, with a doubling pause).",
                &c.failures,
            ),
            (
                "undeliverable",
                "Notifications the offline fallback gave up on (no valid address for the user).",
                &c.undeliverable,
            ),
            (
                "unscheduled",
                "Users of a notification the offline fallback could not schedule (store full or failing).",
                &c.unscheduled,
            ),
        ] {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP chouquette_fallback_{name}_total {help}");
            let _ = writeln!(out, "# TYPE chouquette_fallback_{name}_total counter");
            let _ = writeln!(out, "chouquette_fallback_{name}_total {value}");
        }
    }
}

/// The channel of `config`, and its timeout.
fn channel(config: &FallbackConfig, secret: Vec<u8>) -> Result<(Channel, Duration), String> {
    if let Some(email) = &config.email {
        let timeout = email.timeout.unwrap_or(DEFAULT_TIMEOUT);
        return Ok((Channel::Email(Box::new(Mailer::new(email)?)), timeout));
    }
    match &config.webhook {
        Some(webhook) => Ok((
            Channel::Webhook(Webhook::new(webhook, secret)),
            webhook.timeout.unwrap_or(DEFAULT_TIMEOUT),
        )),
        None => Err("neither email nor webhook".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_pause_doubles_up_to_its_bound() {
        assert_eq!(retry_pause(1), Duration::from_secs(1));
        assert_eq!(retry_pause(2), Duration::from_secs(2));
        assert_eq!(retry_pause(5), Duration::from_secs(16));
        assert_eq!(retry_pause(40), MAX_RETRY);
    }
}
