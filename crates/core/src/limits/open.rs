//! Connections held open at once per client address: a count per key, taken
//! at accept and given back when the connection's [`OpenGuard`] drops.
//!
//! The map only holds keys with at least one open connection (an entry is
//! removed when its count returns to zero), so it never holds more entries
//! than there are open sockets, which the process's file limit bounds.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Open connections per key, at most `max` each (0: no limit).
#[derive(Debug)]
pub struct OpenPerKey<K: Hash + Eq> {
    max: usize,
    open: Mutex<HashMap<K, usize>>,
}

/// One open connection of a key; dropping it gives the place back.
#[derive(Debug)]
pub struct OpenGuard<K: Hash + Eq + Clone> {
    owner: Arc<OpenPerKey<K>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> OpenPerKey<K> {
    /// A counter allowing `max` open connections per key (0: no limit, and
    /// nothing is tracked).
    pub fn new(max: usize) -> Arc<OpenPerKey<K>> {
        Arc::new(OpenPerKey {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for `key`; `None` when it already holds `max`.
    pub fn open(self: &Arc<Self>, key: K) -> Option<OpenGuard<K>> {
        if self.max == 0 {
            return Some(OpenGuard {
                owner: self.clone(),
                key: None,
            });
        }
        // Each update is one small step: a poisoned lock holds a usable map.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(OpenGuard {
            owner: self.clone(),
            key: Some(key),
        })
    }

    /// Connections open now for `key`.
    pub fn count(&self, key: &K) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one open connection.
    pub fn keys(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn close(&self, key: &K) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> OpenGuard<K> {
    /// The key this guard counts against (none when nothing is limited).
    pub fn key(&self) -> Option<&K> {
        self.key.as_ref()
    }
}

impl<K: Hash + Eq + Clone> Drop for OpenGuard<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.owner.close(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_bound_and_forgets_keys_at_zero() {
        let open = OpenPerKey::new(2);
        let a1 = open.open("a").expect("first");
        let a2 = open.open("a").expect("second");
        assert!(open.open("a").is_none());
        let b = open.open("b").expect("another key");
        assert_eq!(open.keys(), 2);
        drop(a1);
        let a3 = open.open("a").expect("a place was given back");
        drop((a2, a3, b));
        assert_eq!(open.keys(), 0);
        assert_eq!(open.count(&"a"), 0);
    }

    #[test]
    fn zero_means_no_limit_and_no_tracking() {
        let open = OpenPerKey::new(0);
        let guards: Vec<_> = (0..100).map(|_| open.open(1u8)).collect();
        assert!(guards.iter().all(Option::is_some));
        assert_eq!(open.keys(), 0);
    }
}
