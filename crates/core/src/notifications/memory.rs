//! The memory broker's pending notifications and idempotency ids: one
//! node, lost with the process (as its history is), bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::pending::{Outcome, Pending, PendingOp};
use crate::broker::BrokerError;

/// Users with pending notifications the memory broker keeps (all apps
/// together). Past it, a user whose every entry expired is forgotten
/// first; if none did, a notification for a further user is refused
/// (`507`).
pub const MAX_NOTIFIED_USERS: usize = 100_000;

/// Idempotency ids the memory broker remembers (all apps together), each
/// for its notification's `expire_after`. Past it, expired ones are
/// forgotten first, then the oldest: a repeat of a forgotten id is
/// notified again.
pub const MAX_IDEMPOTENCY_IDS: usize = 100_000;

/// An (app, user) or (app, idempotency id) pair.
type Key = (Box<str>, Box<str>);

/// Pending lists and idempotency ids.
#[derive(Debug, Default)]
pub struct MemoryStore {
    users: Mutex<HashMap<Key, Pending>>,
    ids: Mutex<HashMap<Key, (String, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update leaves the maps consistent: poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    /// Applies `op` to the list of `user` of `app`.
    pub fn apply(
        &self,
        app: &str,
        user: &str,
        op: PendingOp,
        now: u64,
        expire_after: u64,
    ) -> Result<Outcome, BrokerError> {
        let mut users = lock(&self.users);
        let key: (Box<str>, Box<str>) = (app.into(), user.into());
        if !users.contains_key(&key) {
            if !matches!(op, PendingOp::Add { .. }) {
                return Ok(Pending::default().apply(op, now, expire_after));
            }
            if users.len() >= MAX_NOTIFIED_USERS {
                users.retain(|_, p| {
                    p.apply(PendingOp::List, now, expire_after);
                    !p.is_empty()
                });
            }
            if users.len() >= MAX_NOTIFIED_USERS {
                return Err(BrokerError::TooManyNotifiedUsers(MAX_NOTIFIED_USERS));
            }
        }
        let pending = users.entry(key.clone()).or_default();
        let outcome = pending.apply(op, now, expire_after);
        if pending.is_empty() {
            users.remove(&key);
        }
        Ok(outcome)
    }

    /// See [`crate::broker::Broker::notification_id`].
    pub fn id(&self, app: &str, key: &str, claim: Option<&str>, ttl: Duration) -> Option<String> {
        let mut ids = lock(&self.ids);
        let now = Instant::now();
        let k: (Box<str>, Box<str>) = (app.into(), key.into());
        if let Some((id, until)) = ids.get(&k) {
            if *until > now {
                return (claim != Some(id.as_str())).then(|| id.clone());
            }
            ids.remove(&k);
        }
        let id = claim?;
        if ids.len() >= MAX_IDEMPOTENCY_IDS {
            ids.retain(|_, (_, until)| *until > now);
        }
        if ids.len() >= MAX_IDEMPOTENCY_IDS
            && let Some(oldest) = ids
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| k.clone())
        {
            ids.remove(&oldest);
        }
        ids.insert(k, (id.to_string(), now + ttl));
        None
    }
}
