//! One token bucket per key (a client address) in a map that outside input
//! cannot grow without bound.
//!
//! A key whose bucket has refilled is indistinguishable from a new one, so
//! it is pruned; when the map is at `max_keys` and nothing can be pruned,
//! **new keys are refused as limited** (fail closed: known keys keep their
//! own budget).
//!
//! A connection closed as abusive costs its key a tenth of the burst
//! ([`KeyedLimiter::penalize`]), not the whole of it: one key is often many
//! clients (a NAT, a proxy), so one abuser among them must not lock the
//! others out. The cost is proportionate: an address absorbs
//! `per_second / cost` abusive closes per second (one at the defaults) with
//! no effect on its other clients; only an address that keeps being closed
//! faster than that runs out of budget, then into debt, and while in debt
//! ([`KeyedLimiter::penalized`]) its new sockets are refused as cheaply as
//! possible.

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

    /// Charges `key` for one of its connections closed as abusive:
    /// [`abuse_cost`] tokens, taken whatever is left, so the bucket may go
    /// into debt (never deeper than a whole burst). One close leaves the
    /// rest of the burst to the key's other clients; a key whose clients
    /// keep being closed in a loop is slowed to about `per_second / cost`
    /// connections a second, and refused outright while in debt. A key that
    /// does not fit in the map is left alone.
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
        bucket.charge(rate, now, abuse_cost(rate));
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

/// Tokens one connection closed as abusive costs its key: a tenth of the
/// burst (rounded up, at least one). At the defaults (100/s, burst 1,000)
/// that is 100 tokens, one second of refill.
pub fn abuse_cost(rate: Rate) -> u32 {
    rate.burst.div_ceil(10).max(1)
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
    fn one_abusive_close_costs_a_tenth_of_the_burst() {
        let t0 = Instant::now();
        let keyed = KeyedLimiter::new(Rate::new(10, 50), 2);
        keyed.check("a", t0).expect("fresh");
        keyed.penalize("a", t0);
        // 50 - 1 - 5 = 44 left: the address's other clients connect at once.
        assert!(!keyed.penalized(&"a", t0));
        for _ in 0..44 {
            assert!(keyed.check("a", t0).is_ok());
        }
        assert!(keyed.check("a", t0).is_err());
        assert!(keyed.check("b", t0).is_ok(), "others keep their budget");
        keyed.penalize("c", t0);
        assert_eq!(keyed.len(), 2, "a full map takes no new key");
    }

    #[test]
    fn a_key_abusing_in_a_loop_is_slowed_then_refused() {
        let t0 = Instant::now();
        let rate = Rate::new(10, 50);
        let keyed = KeyedLimiter::new(rate, 8);
        // Connect, get closed as abusive, again, as fast as it can.
        let mut cycles = 0;
        while keyed.check("a", t0).is_ok() {
            keyed.penalize("a", t0);
            cycles += 1;
        }
        // 50 tokens at 1 + 5 a cycle: 9 cycles, then in debt.
        assert_eq!(cycles, 9);
        assert!(keyed.penalized(&"a", t0));
        // The debt is bounded by a burst: 50 tokens at most to pay back.
        for _ in 0..100 {
            keyed.penalize("a", t0);
        }
        assert!(keyed.penalized(&"a", t0 + ms(4_900)));
        assert!(!keyed.penalized(&"a", t0 + ms(5_000)));
        assert_eq!(abuse_cost(rate), 5);
        assert_eq!(abuse_cost(Rate::new(100, 1000)), 100);
        assert_eq!(abuse_cost(Rate::new(1, 1)), 1);
    }

    #[test]
    fn a_penalty_is_seen_without_taking_a_token() {
        let t0 = Instant::now();
        let keyed = KeyedLimiter::new(Rate::new(10, 5), 8);
        assert!(!keyed.penalized(&"a", t0), "unknown key");
        keyed.check("b", t0).expect("fresh");
        assert!(!keyed.penalized(&"b", t0), "spending is no penalty");
        // Rate 10/s, burst 5: a close costs 1 token; 6 of them leave "a"
        // one in debt, paid back in 100 ms.
        for _ in 0..6 {
            keyed.penalize("a", t0);
        }
        assert!(keyed.penalized(&"a", t0 + ms(50)));
        assert!(!keyed.penalized(&"a", t0 + ms(100)), "paid back");
        assert!(keyed.check("a", t0 + ms(200)).is_ok());
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
