//! Connections held per (app, user) on this node, for
//! `max_connections_per_user`.
//!
//! Bounded by the open connections: an entry lives only while a connection
//! holds it, and a refusal at a zero count leaves no entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An (app, user) pair.
type UserKey = (Arc<str>, Box<str>);

/// Connections held per (app, user) on this node. An entry exists only
/// while a connection holds it, so the map is bounded by the open
/// connections (times the users one connection may present, itself bounded
/// by its subscriptions).
#[derive(Debug, Default)]
pub struct UserConnections {
    held: Mutex<HashMap<UserKey, usize>>,
}

impl UserConnections {
    /// Counts one more connection for `user` of `app`, unless it already
    /// holds `max` (0: no limit); false when refused.
    pub fn acquire(&self, app: &Arc<str>, user: &str, max: usize) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let key = (app.clone(), Box::<str>::from(user));
        let n = held.entry(key).or_insert(0);
        if max > 0 && *n >= max {
            if *n == 0 {
                held.retain(|_, n| *n > 0);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// One connection of `user` of `app` ended.
    pub fn release(&self, app: &Arc<str>, user: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let key = (app.clone(), Box::<str>::from(user));
        if let Some(n) = held.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&key);
            }
        }
    }

    /// Connections `user` of `app` holds now.
    pub fn count(&self, app: &str, user: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.iter()
            .find(|((a, u), _)| &**a == app && &**u == user)
            .map_or(0, |(_, n)| *n)
    }

    /// (app, user) pairs tracked now.
    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no pair is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_connections_count_per_app_and_user() {
        let users = UserConnections::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(users.acquire(&a, "roger", 2));
        assert!(users.acquire(&a, "roger", 2));
        assert!(!users.acquire(&a, "roger", 2));
        assert!(users.acquire(&b, "roger", 2), "another app counts apart");
        assert!(users.acquire(&a, "vb", 2));
        assert_eq!(users.count("a", "roger"), 2);
        users.release(&a, "roger");
        assert!(users.acquire(&a, "roger", 2));
        for _ in 0..2 {
            users.release(&a, "roger");
        }
        users.release(&a, "vb");
        users.release(&b, "roger");
        assert!(users.is_empty(), "released entries leave the map");
        // Zero: no limit; a refusal at a zero count leaves no entry.
        assert!(users.acquire(&a, "x", 0));
        users.release(&a, "x");
        users.release(&a, "x");
        assert!(users.is_empty());
    }
}
