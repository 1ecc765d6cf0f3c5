//! What the offline fallback keeps, in memory (one node) or in Redis
//! (shared by every node): when each user was last seen connected, which
//! users are due a check, who is checking one now, and what was sent.
//!
//! Redis keys (`<prefix>` is `broker.prefix`):
//!
//! - `<prefix>:{app|user}:seen`: unix ms when a node last saw the user
//!   connected, expiring `2 × after` later (absent: offline that long);
//! - `<prefix>:{app}:fallback-due`: sorted set, user → unix ms when the user
//!   is checked next (`ZADD LT`: Redis 6.2 or later);
//! - `<prefix>:{app|user}:fallback-lock`: the node checking the user now
//!   (`SET NX PX`), so two nodes never send the same digest;
//! - `<prefix>:{app|user}:fallback`: [`UserState`] as JSON (when the last
//!   digest went, the ids it held, failed attempts since).
//!
//! Times are unix milliseconds throughout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chouquette_core::broker::BrokerError;
use redis::{RedisError, Script};
use serde::{Deserialize, Serialize};

use crate::broker::redis::{Commands, RedisBroker};

/// Users the memory store schedules at once (all apps): past it a new one
/// is refused ([`StoreError::Full`], counted, logged): their notifications
/// stay pending and are delivered at their next connect, but get no digest.
pub const MAX_SCHEDULED: usize = 100_000;

/// Users whose last sight the memory store keeps: past it the oldest are
/// forgotten (read as offline for long).
pub const MAX_SEEN: usize = 200_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered an error or was unreachable.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// No connection to Redis could be opened.
    #[error("{0}")]
    Broker(#[from] BrokerError),
    /// The memory store holds [`MAX_SCHEDULED`] users.
    #[error("offline fallback: {0} users scheduled already")]
    Full(usize),
}

/// What was sent to one user (kept `expire_after` + `period`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// When the last digest went (0: never).
    #[serde(default)]
    pub last: u64,
    /// Ids of the pending entries sent already (only those still pending
    /// are kept: bounded by `max_pending`).
    #[serde(default)]
    pub sent: Vec<String>,
    /// Failed attempts since the last digest that went.
    #[serde(default)]
    pub attempts: u32,
}

/// The store of this node.
pub enum Store {
    /// One node: maps behind locks.
    Memory(MemoryStore),
    /// Every node: Redis.
    Redis(RedisStore),
}

impl Store {
    /// Schedules a check of each of `users` at `at`, unless one is due
    /// earlier.
    pub async fn schedule(&self, app: &str, users: &[String], at: u64) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => users
                .iter()
                .try_for_each(|user| m.schedule(app, user, at, true)),
            Store::Redis(r) => r.schedule(app, users, at, true).await,
        }
    }

    /// Moves the check of `user` to `at` (earlier or later).
    pub async fn reschedule(&self, app: &str, user: &str, at: u64) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => m.schedule(app, user, at, false),
            Store::Redis(r) => r.schedule(app, &[user.to_string()], at, false).await,
        }
    }

    /// Forgets the check of `user`.
    pub async fn unschedule(&self, app: &str, user: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.due_map().remove(&key(app, user));
                Ok(())
            }
            Store::Redis(r) => r.unschedule(app, user).await,
        }
    }

    /// Users of `app` due by `now`, at most `limit`, earliest first.
    pub async fn due(&self, app: &str, now: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.due(app, now, limit)),
            Store::Redis(r) => r.due(app, now, limit).await,
        }
    }

    /// Takes the lock on `user` as `token` for `lease`: whether it was free.
    pub async fn lock(
        &self,
        app: &str,
        user: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.lock(app, user, token, lease)),
            Store::Redis(r) => r.lock(app, user, token, lease).await,
        }
    }

    /// Releases the lock on `user` if `token` still holds it.
    pub async fn unlock(&self, app: &str, user: &str, token: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut locks = lock(&m.locks);
                if locks.get(&key(app, user)).is_some_and(|(t, _)| t == token) {
                    locks.remove(&key(app, user));
                }
                Ok(())
            }
            Store::Redis(r) => r.unlock(app, user, token).await,
        }
    }

    /// Records `users` of `app` as seen connected at `now`, kept `keep`.
    pub async fn seen(
        &self,
        app: &str,
        users: &[Box<str>],
        now: u64,
        keep: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.seen(app, users, now, keep);
                Ok(())
            }
            Store::Redis(r) => r.seen(app, users, now, keep).await,
        }
    }

    /// When `user` was last seen connected (`None`: not for long).
    pub async fn last_seen(&self, app: &str, user: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Memory(m) => Ok(lock(&m.seen).get(&key(app, user)).copied()),
            Store::Redis(r) => r.last_seen(app, user).await,
        }
    }

    /// What was sent to `user`.
    pub async fn state(&self, app: &str, user: &str) -> Result<UserState, StoreError> {
        match self {
            Store::Memory(m) => Ok(lock(&m.states)
                .get(&key(app, user))
                .map(|(s, _)| s.clone())
                .unwrap_or_default()),
            Store::Redis(r) => r.state(app, user).await,
        }
    }

    /// Records what was sent to `user`, kept `keep`.
    pub async fn set_state(
        &self,
        app: &str,
        user: &str,
        state: &UserState,
        keep: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.set_state(app, user, state, keep);
                Ok(())
            }
            Store::Redis(r) => r.set_state(app, user, state, keep).await,
        }
    }
}

type Key = (String, String);

fn key(app: &str, user: &str) -> Key {
    (app.to_string(), user.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update leaves the maps consistent: poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The memory store: bounded by [`MAX_SCHEDULED`] and [`MAX_SEEN`]; locks
/// and states go with their users.
#[derive(Debug, Default)]
pub struct MemoryStore {
    due: Mutex<HashMap<Key, u64>>,
    locks: Mutex<HashMap<Key, (String, Instant)>>,
    seen: Mutex<HashMap<Key, u64>>,
    states: Mutex<HashMap<Key, (UserState, Instant)>>,
}

impl MemoryStore {
    fn due_map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        lock(&self.due)
    }

    fn schedule(
        &self,
        app: &str,
        user: &str,
        at: u64,
        keep_earlier: bool,
    ) -> Result<(), StoreError> {
        let mut due = self.due_map();
        let k = key(app, user);
        let full = due.len() >= MAX_SCHEDULED;
        match due.get_mut(&k) {
            Some(held) if keep_earlier => *held = (*held).min(at),
            Some(held) => *held = at,
            None if full => return Err(StoreError::Full(MAX_SCHEDULED)),
            None => {
                due.insert(k, at);
            }
        }
        Ok(())
    }

    fn due(&self, app: &str, now: u64, limit: usize) -> Vec<String> {
        let due = self.due_map();
        let mut found: Vec<(u64, &String)> = due
            .iter()
            .filter(|((a, _), at)| a == app && **at <= now)
            .map(|((_, user), at)| (*at, user))
            .collect();
        found.sort();
        found
            .into_iter()
            .take(limit)
            .map(|(_, u)| u.clone())
            .collect()
    }

    fn lock(&self, app: &str, user: &str, token: &str, lease: Duration) -> bool {
        let mut locks = lock(&self.locks);
        let now = Instant::now();
        locks.retain(|_, (_, until)| *until > now);
        let k = key(app, user);
        if locks.contains_key(&k) {
            return false;
        }
        locks.insert(k, (token.to_string(), now + lease));
        true
    }

    fn seen(&self, app: &str, users: &[Box<str>], now: u64, keep: Duration) {
        let mut seen = lock(&self.seen);
        let oldest = now.saturating_sub(millis(keep));
        if seen.len() + users.len() > MAX_SEEN {
            seen.retain(|_, at| *at > oldest);
        }
        for user in users {
            if seen.len() >= MAX_SEEN {
                break;
            }
            seen.insert(key(app, user), now);
        }
    }

    fn set_state(&self, app: &str, user: &str, state: &UserState, keep: Duration) {
        let mut states = lock(&self.states);
        let now = Instant::now();
        if states.len() >= MAX_SCHEDULED {
            states.retain(|_, (_, until)| *until > now);
        }
        states.insert(key(app, user), (state.clone(), now + keep));
    }
}

/// Milliseconds of `d`.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Compare and delete: the lock goes only if it is still ours.
const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Users whose sight one pipeline records.
const SEEN_AT_ONCE: usize = 500;

/// The Redis store, on a connection of its own (opened again after a
/// failure).
pub struct RedisStore {
    broker: Arc<RedisBroker>,
    prefix: String,
    commands: Mutex<Option<Commands>>,
}

impl RedisStore {
    /// On `broker`'s Redis, under `prefix`.
    pub fn new(broker: Arc<RedisBroker>, prefix: &str) -> RedisStore {
        RedisStore {
            broker,
            prefix: prefix.to_string(),
            commands: Mutex::new(None),
        }
    }

    fn user_key(&self, app: &str, user: &str, what: &str) -> String {
        format!("{}:{{{app}|{user}}}:{what}", self.prefix)
    }

    fn due_key(&self, app: &str) -> String {
        format!("{}:{{{app}}}:fallback-due", self.prefix)
    }

    async fn con(&self) -> Result<Commands, StoreError> {
        if let Some(c) = lock(&self.commands).clone() {
            return Ok(c);
        }
        let c = self.broker.dedicated().await?;
        *lock(&self.commands) = Some(c.clone());
        Ok(c)
    }

    /// Runs `cmd`; a failure drops the connection (the next call opens one).
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut con = self.con().await?;
        cmd.query_async(&mut con).await.map_err(|e| {
            *lock(&self.commands) = None;
            StoreError::Redis(e)
        })
    }

    async fn schedule(
        &self,
        app: &str,
        users: &[String],
        at: u64,
        keep_earlier: bool,
    ) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.due_key(app));
        if keep_earlier {
            cmd.arg("LT");
        }
        for user in users {
            cmd.arg(at).arg(user);
        }
        self.run::<i64>(&cmd).await.map(drop)
    }

    async fn unschedule(&self, app: &str, user: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(self.due_key(app)).arg(user);
        self.run::<i64>(&cmd).await.map(drop)
    }

    async fn due(&self, app: &str, now: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.due_key(app))
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        self.run(&cmd).await
    }

    async fn lock(
        &self,
        app: &str,
        user: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.user_key(app, user, "fallback-lock"))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(millis(lease).max(1));
        let set: Option<String> = self.run(&cmd).await?;
        Ok(set.is_some())
    }

    async fn unlock(&self, app: &str, user: &str, token: &str) -> Result<(), StoreError> {
        let mut con = self.con().await?;
        let done: Result<i64, _> = Script::new(UNLOCK_LUA)
            .key(self.user_key(app, user, "fallback-lock"))
            .arg(token)
            .invoke_async(&mut con)
            .await;
        done.map(drop).map_err(|e| {
            *lock(&self.commands) = None;
            StoreError::Redis(e)
        })
    }

    async fn seen(
        &self,
        app: &str,
        users: &[Box<str>],
        now: u64,
        keep: Duration,
    ) -> Result<(), StoreError> {
        for chunk in users.chunks(SEEN_AT_ONCE) {
            let mut pipe = redis::pipe();
            for user in chunk {
                pipe.cmd("SET")
                    .arg(self.user_key(app, user, "seen"))
                    .arg(now)
                    .arg("PX")
                    .arg(millis(keep).max(1))
                    .ignore();
            }
            let mut con = self.con().await?;
            pipe.query_async::<()>(&mut con).await.map_err(|e| {
                *lock(&self.commands) = None;
                StoreError::Redis(e)
            })?;
        }
        Ok(())
    }

    async fn last_seen(&self, app: &str, user: &str) -> Result<Option<u64>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.user_key(app, user, "seen"));
        self.run(&cmd).await
    }

    async fn state(&self, app: &str, user: &str) -> Result<UserState, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.user_key(app, user, "fallback"));
        let text: Option<String> = self.run(&cmd).await?;
        Ok(text
            .and_then(|t| {
                serde_json::from_str(&t)
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "unreadable fallback state, read as none"),
                    )
                    .ok()
            })
            .unwrap_or_default())
    }

    async fn set_state(
        &self,
        app: &str,
        user: &str,
        state: &UserState,
        keep: Duration,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).unwrap_or_default();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.user_key(app, user, "fallback"))
            .arg(text)
            .arg("PX")
            .arg(millis(keep).max(1));
        self.run::<()>(&cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_keeps_the_earlier_check_and_one_lock() {
        let m = MemoryStore::default();
        m.schedule("a", "roger", 50, true).expect("room");
        m.schedule("a", "roger", 80, true).expect("room");
        assert_eq!(m.due("a", 60, 10), ["roger"]);
        m.schedule("a", "roger", 80, false).expect("room");
        assert!(m.due("a", 60, 10).is_empty());
        assert!(m.due("b", 100, 10).is_empty());
        assert!(m.lock("a", "roger", "n1", Duration::from_secs(60)));
        assert!(!m.lock("a", "roger", "n2", Duration::from_secs(60)));
    }
}
