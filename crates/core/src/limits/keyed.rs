//! One token bucket per key (a client address) in a map that outside input
//! cannot grow without bound.
//!
//! A key whose bucket has refilled is indistinguishable from a new one, so
//! it is pruned; when the map is at `max_keys` and nothing can be pruned,
//! **new keys are refused as limited** (fail closed: known keys keep their
//! own budget). A key closed as abusive is put in debt by a whole burst.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Limited, Rate, TokenBucket};

/// Pruning scans the whole map: at most this often, so a flood of new keys
/// at the bound costs one scan per interval, not one per key.
const PRUNE_EVERY: Duration = Duration::from_millis(100);

/// One token bucket per key, at most `max_keys` keys (see the module doc).
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    inner: Mutex<Keyed<K>>,
}

#[derive(Debug)]
struct Keyed<K> {
    buckets: HashMap<K, TokenBucket>,
    last_prune: Option<Instant>,
}

impl<K: Hash + Eq> KeyedLimiter<K> {
    /// A limiter of `rate` per key, tracking at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> KeyedLimiter<K> {
        KeyedLimiter {
            rate,
            max_keys: max_keys.max(1),
            inner: Mutex::new(Keyed {
                buckets: HashMap::new(),
                last_prune: None,
            }),
        }
    }

    /// Whether this limiter limits anything.
    pub fn is_limited(&self) -> bool {
        self.rate.is_limited()
    }

    /// Takes one token for `key` at `now`.
    pub fn check(&self, key: K, now: Instant) -> Result<(), Limited> {
        if !self.rate.is_limited() {
            return Ok(());
        }
        // Every update is one small step: a poisoned lock holds a usable map.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = inner.buckets.get_mut(&key) {
            return bucket.try_take(self.rate, now, 1);
        }
        if inner.buckets.len() >= self.max_keys {
            let due = inner
                .last_prune
                .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY);
            if due {
                let rate = self.rate;
                inner.buckets.retain(|_, b| !b.is_full(rate, now));
                inner.last_prune = Some(now);
            }
            if inner.buckets.len() >= self.max_keys {
                return Err(Limited {
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        let mut bucket = TokenBucket::full(self.rate, now);
        let taken = bucket.try_take(self.rate, now, 1);
        inner.buckets.insert(key, bucket);
        taken
    }

    /// Puts `key` in debt by a whole burst: its next token comes back after
    /// `(burst + 1) / per_second` (a connection from it was closed as
    /// abusive, so its reconnections are refused cheaply for a while). A
    /// key that does not fit in the map is left alone.
    pub fn penalize(&self, key: K, now: Instant) {
        if !self.rate.is_limited() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.buckets.contains_key(&key) && inner.buckets.len() >= self.max_keys {
            return;
        }
        let rate = self.rate;
        let bucket = inner
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(rate, now));
        bucket.owe_burst(rate, now);
    }

    /// Whether `key` is serving a penalty (in debt after
    /// [`KeyedLimiter::penalize`]) at `now`; takes no token. Cheap enough to
    /// ask for every accepted socket, before any byte is read.
    pub fn penalized(&self, key: &K, now: Instant) -> bool {
        if !self.rate.is_limited() {
            return false;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.buckets.get_mut(key) {
            Some(bucket) => bucket.in_debt(self.rate, now),
            None => false,
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .buckets
            .len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key a client address is limited under: IPv4 as is (and IPv4-mapped
/// IPv6 as IPv4); IPv6 by its /64 prefix, since one host usually holds a
/// whole /64 and could otherwise take a new key per connection.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unlimited_never_refuses() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(Rate::UNLIMITED, t0);
        for _ in 0..10_000 {
            assert!(b.try_take(Rate::UNLIMITED, t0, 1_000).is_ok());
        }
        let keyed = KeyedLimiter::new(Rate::UNLIMITED, 1);
        for i in 0..1000u32 {
            assert!(keyed.check(i, t0).is_ok());
        }
        assert!(keyed.is_empty(), "an unlimited limiter keeps no state");
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let t0 = Instant::now();
        let keyed = KeyedLimiter::new(Rate::new(1, 2), 100);
        assert!(keyed.check("a", t0).is_ok());
        assert!(keyed.check("a", t0).is_ok());
        assert!(keyed.check("a", t0).is_err());
        assert!(keyed.check("b", t0).is_ok());
        assert!(keyed.check("a", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_map_is_bounded_and_refilled_keys_are_pruned() {
        let t0 = Instant::now();
        let keyed = KeyedLimiter::new(Rate::new(10, 10), 3);
        for k in 0..3u32 {
            assert!(keyed.check(k, t0).is_ok());
        }
        // At the bound, nothing refilled yet: a new key is refused as limited,
        // known keys keep their budget.
        let refused = keyed.check(99, t0).expect_err("map full");
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert!(keyed.check(0, t0).is_ok());
        assert_eq!(keyed.len(), 3);
        // Once buckets have refilled they are pruned and new keys get in.
        let later = t0 + Duration::from_secs(1);
        assert!(keyed.check(99, later).is_ok());
        assert_eq!(keyed.len(), 1);
    }

    #[test]
    fn pruning_is_rate_limited_under_key_churn() {
        let t0 = Instant::now();
        let keyed = KeyedLimiter::new(Rate::new(1, 1), 2);
        assert!(keyed.check(1u32, t0).is_ok());
        assert!(keyed.check(2u32, t0).is_ok());
        // A scan at t0 frees nothing; a key arriving after they refilled but
        // within PRUNE_EVERY of that scan waits for the next one.
        assert!(keyed.check(3u32, t0).is_err());
        let refilled = t0 + Duration::from_secs(1);
        assert!(keyed.check(4u32, refilled).is_ok());
        assert!(keyed.check(5u32, refilled).is_ok());
        assert!(keyed.check(6u32, refilled + ms(10)).is_err());
        let next = refilled + Duration::from_secs(2);
        assert!(keyed.check(6u32, next).is_ok());
    }

    #[test]
    fn a_penalized_key_waits_a_whole_burst() {
        let t0 = Instant::now();
        let keyed = KeyedLimiter::new(Rate::new(10, 5), 2);
        keyed.penalize("a", t0);
        let refused = keyed.check("a", t0).expect_err("penalized");
        assert_eq!(refused.retry_after, Duration::from_millis(600));
        assert!(keyed.check("a", t0 + ms(600)).is_ok());
        assert!(keyed.check("b", t0).is_ok(), "others keep their budget");
        keyed.penalize("c", t0);
        assert_eq!(keyed.len(), 2, "a full map takes no new key");
    }

    #[test]
    fn a_penalty_is_seen_without_taking_a_token() {
        let t0 = Instant::now();
        let keyed = KeyedLimiter::new(Rate::new(10, 5), 8);
        assert!(!keyed.penalized(&"a", t0), "unknown key");
        keyed.check("b", t0).expect("fresh");
        assert!(!keyed.penalized(&"b", t0), "spending is no penalty");
        keyed.penalize("a", t0);
        assert!(keyed.penalized(&"a", t0 + ms(300)));
        assert!(!keyed.penalized(&"a", t0 + ms(700)), "paid back");
        assert!(keyed.check("a", t0 + ms(700)).is_ok());
        let open = KeyedLimiter::<&str>::new(Rate::new(0, 0), 8);
        open.penalize("a", t0);
        assert!(!open.penalized(&"a", t0), "no limit, no penalty");
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:bbbb::7"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(address_key(mapped), IpAddr::from([192, 0, 2, 7]));
        let v4 = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(address_key(v4), v4);
    }
}
