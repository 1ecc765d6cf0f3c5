//! Rate limits and the bounded per-key state behind them: pure logic, the
//! time is always passed in, so every rule is unit-tested without sleeping.
//!
//! - [`TokenBucket`]: `burst` tokens, refilled at `per_second`; one per
//!   message, connection or published event.
//! - [`KeyedLimiter`]: one bucket per key (a client address) in a map that
//!   outside input cannot grow without bound. A key whose bucket has
//!   refilled is indistinguishable from a new one, so it is pruned; when the
//!   map is at `max_keys` and nothing can be pruned, **new keys are refused
//!   as limited** (fail closed: known keys keep their own budget).
//! - [`UserConnections`]: connections held per (app, user); bounded by the
//!   open connections, since an entry lives only while a connection holds it.
//! - [`Limit`] and [`LimitCounters`]: every refusal, counted by limit for
//!   `chouquette_limited_total{limit=...}`.
//!
//! Hand-written rather than `governor`: three small types, no new
//! dependencies, and the bound on keyed state is ours to choose and document.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::telemetry::prometheus::Family;

/// A rate: `per_second` sustained, up to `burst` at once. `per_second == 0`
/// means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second (0: unlimited).
    pub per_second: u32,
    /// Most tokens held: what may be spent at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    /// `per_second` sustained, `burst` at once.
    pub const fn new(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    /// Whether this rate limits anything.
    pub fn is_limited(self) -> bool {
        self.per_second > 0
    }

    /// At least one token of burst, so a limited rate can ever pass.
    fn capacity(self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// An app's limits, each already resolved against the `[limits]` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLimits {
    /// Client messages per connection once it holds this app.
    pub client_messages: Rate,
    /// Connections one user (token `sub`) may hold on this node (0: no limit).
    pub max_connections_per_user: usize,
    /// Subscriptions a connection may hold when subscribing to this app.
    pub max_subscriptions: usize,
    /// Events published per second through the API (batches count each event).
    pub publishes: Rate,
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            client_messages: Rate::new(50, 100),
            max_connections_per_user: 100,
            max_subscriptions: 256,
            publishes: Rate::new(50_000, 100_000),
        }
    }
}

/// A connection's client-message budget: `rate` with its burst, and
/// `strikes` refusals tolerated (one back per second) before the connection
/// counts as abusive and is closed.
#[derive(Debug, Clone, Copy)]
pub struct MessageGate {
    rate: Rate,
    bucket: TokenBucket,
    strikes: Rate,
    strikes_left: TokenBucket,
}

/// The close reason of a connection closed for sustained abuse of its
/// message rate (close code 1008); transports penalize its address.
pub const ABUSE_CLOSE_REASON: &str = "rate_limited";

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Handle it.
    Pass,
    /// Answer `rate_limited`, keep the connection.
    Refuse,
    /// Sustained abuse: close the connection.
    Close,
}

impl MessageGate {
    /// A gate at `rate`, closing after `max_refused` refusals not yet
    /// forgiven (one is forgiven per second).
    pub fn new(rate: Rate, max_refused: u32, now: Instant) -> MessageGate {
        let strikes = Rate::new(1, max_refused.max(1));
        MessageGate {
            rate,
            bucket: TokenBucket::full(rate, now),
            strikes,
            strikes_left: TokenBucket::full(strikes, now),
        }
    }

    /// Changes the rate (the connection's app became known); the tokens
    /// already held stay, capped by the new burst on the next refill.
    pub fn set_rate(&mut self, rate: Rate) {
        self.rate = rate;
    }

    /// Decides on one message at `now`.
    pub fn admit(&mut self, now: Instant) -> Gate {
        if self.bucket.try_take(self.rate, now, 1).is_ok() {
            Gate::Pass
        } else if self.strikes_left.try_take(self.strikes, now, 1).is_ok() {
            Gate::Refuse
        } else {
            Gate::Close
        }
    }
}

/// Refused by a limit; try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When enough tokens will be there again.
    pub retry_after: Duration,
}

impl Limited {
    /// `retry_after` in whole seconds, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// A token bucket. Starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` at `now`.
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.capacity(),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate.per_second)).min(rate.capacity());
        self.last = self.last.max(now);
    }

    /// Takes `n` tokens, or says how long until it could. A batch larger
    /// than the burst passes on a full bucket and leaves it in debt (the
    /// tokens go negative), so big batches cost what they weigh and cannot
    /// be refused forever.
    pub fn try_take(&mut self, rate: Rate, now: Instant, n: u32) -> Result<(), Limited> {
        if !rate.is_limited() {
            return Ok(());
        }
        self.refill(rate, now);
        let need = f64::from(n).min(rate.capacity());
        if self.tokens >= need {
            self.tokens -= f64::from(n);
            Ok(())
        } else {
            let wait = (need - self.tokens) / f64::from(rate.per_second);
            Err(Limited {
                retry_after: Duration::from_secs_f64(wait),
            })
        }
    }

    /// Whether the bucket is back to full at `now` (then it carries no state).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= rate.capacity()
    }
}

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
        bucket.refill(rate, now);
        bucket.tokens = -rate.capacity();
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
            Some(bucket) => {
                bucket.refill(self.rate, now);
                bucket.tokens < 0.0
            }
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

/// Which limit refused something (the `limit` label of
/// `chouquette_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A client message over its connection's rate (error `rate_limited`).
    ClientMessages,
    /// A connection over the user's connection limit (error `rate_limited`).
    ConnectionsPerUser,
    /// A new connection over its address's rate (HTTP 429 at upgrade).
    ConnectionsPerAddress,
    /// A subscription over the connection's limit (`too_many_subscriptions`).
    Subscriptions,
    /// A publish over the app's rate (HTTP 429).
    Publishes,
    /// A client message over `max_message_bytes` (`bad_message`).
    MessageSize,
    /// A frame over `max_frame_bytes` (close 1009).
    FrameSize,
}

impl Limit {
    /// Every limit, in a stable order.
    pub const ALL: [Limit; 7] = [
        Limit::ClientMessages,
        Limit::ConnectionsPerUser,
        Limit::ConnectionsPerAddress,
        Limit::Subscriptions,
        Limit::Publishes,
        Limit::MessageSize,
        Limit::FrameSize,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ClientMessages => "client_messages",
            Limit::ConnectionsPerUser => "connections_per_user",
            Limit::ConnectionsPerAddress => "connections_per_address",
            Limit::Subscriptions => "subscriptions",
            Limit::Publishes => "publishes",
            Limit::MessageSize => "message_size",
            Limit::FrameSize => "frame_size",
        }
    }

    fn index(self) -> usize {
        Limit::ALL
            .iter()
            .position(|l| *l == self)
            .unwrap_or_default()
    }
}

const LIMITED: Family = Family::counter(
    "chouquette_limited_total",
    "Requests, messages and connections refused by a limit.",
);

/// Refusals counted by limit.
#[derive(Debug, Default)]
pub struct LimitCounters {
    counts: [AtomicU64; Limit::ALL.len()],
}

impl LimitCounters {
    /// One refusal by `limit`.
    pub fn hit(&self, limit: Limit) {
        self.counts[limit.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals by `limit` so far.
    pub fn get(&self, limit: Limit) -> u64 {
        self.counts[limit.index()].load(Ordering::Relaxed)
    }

    /// `chouquette_limited_total{limit=...}` in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let mut samples = LIMITED.render(out);
        for limit in Limit::ALL {
            samples.sample(&[("limit", limit.as_str())], self.get(limit));
        }
    }
}

/// The node's limiter state: new connections per address, connections per
/// user, publishes per app.
#[derive(Debug)]
pub struct Limiters {
    /// New connections per client address (see [`address_key`]).
    pub addresses: KeyedLimiter<IpAddr>,
    /// Connections per (app, user).
    pub users: UserConnections,
    /// Refusals by limit.
    pub counters: LimitCounters,
    publishes: HashMap<Arc<str>, (Rate, Mutex<TokenBucket>)>,
}

impl Limiters {
    /// Limiters for `addresses` (rate per address, most addresses tracked)
    /// and each app's publish rate.
    pub fn new(
        addresses: Rate,
        max_addresses: usize,
        publishes: impl IntoIterator<Item = (Arc<str>, Rate)>,
        now: Instant,
    ) -> Limiters {
        Limiters {
            addresses: KeyedLimiter::new(addresses, max_addresses),
            users: UserConnections::default(),
            counters: LimitCounters::default(),
            publishes: publishes
                .into_iter()
                .map(|(app, rate)| (app, (rate, Mutex::new(TokenBucket::full(rate, now)))))
                .collect(),
        }
    }

    /// Takes `events` publish tokens of `app` (apps without a bucket are
    /// not limited).
    pub fn publish(&self, app: &str, events: u32, now: Instant) -> Result<(), Limited> {
        match self.publishes.get(app) {
            Some((rate, bucket)) => bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_take(*rate, now, events),
            None => Ok(()),
        }
    }
}

impl Default for Limiters {
    fn default() -> Self {
        Limiters::new(Rate::UNLIMITED, 1, [], Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let rate = Rate::new(10, 5);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        for _ in 0..5 {
            assert!(b.try_take(rate, t0, 1).is_ok());
        }
        let refused = b.try_take(rate, t0, 1).expect_err("burst spent");
        assert_eq!(refused.retry_after, ms(100));
        assert_eq!(refused.retry_after_secs(), 1);
        // 100 ms later, one token is back, and only one.
        assert!(b.try_take(rate, t0 + ms(100), 1).is_ok());
        assert!(b.try_take(rate, t0 + ms(100), 1).is_err());
        // Long idle refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(b.is_full(rate, later));
        for _ in 0..5 {
            assert!(b.try_take(rate, later, 1).is_ok());
        }
        assert!(b.try_take(rate, later, 1).is_err());
    }

    #[test]
    fn a_batch_over_the_burst_passes_on_a_full_bucket_and_leaves_debt() {
        let rate = Rate::new(10, 5);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.try_take(rate, t0, 20).is_ok());
        // 15 tokens in debt, 5 needed: 2 s at 10/s.
        let refused = b.try_take(rate, t0, 1).expect_err("in debt");
        assert_eq!(refused.retry_after, Duration::from_millis(1600));
        assert!(b.try_take(rate, t0 + ms(1600), 1).is_ok());
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let rate = Rate::new(1, 1);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.try_take(rate, t0, 1).is_ok());
        assert!(b.try_take(rate, t0 - Duration::from_secs(5), 1).is_err());
        assert!(b.try_take(rate, t0, 1).is_err());
        assert!(b.try_take(rate, t0 + Duration::from_secs(1), 1).is_ok());
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

    #[test]
    fn publish_buckets_per_app() {
        let t0 = Instant::now();
        let l = Limiters::new(
            Rate::UNLIMITED,
            1,
            [
                ("a".into(), Rate::new(10, 10)),
                ("b".into(), Rate::UNLIMITED),
            ],
            t0,
        );
        assert!(l.publish("a", 10, t0).is_ok());
        assert!(l.publish("a", 1, t0).is_err());
        assert!(l.publish("b", 1_000_000, t0).is_ok());
        assert!(l.publish("unknown", 1, t0).is_ok());
    }

    #[test]
    fn message_gate_refuses_then_closes_on_sustained_abuse() {
        let t0 = Instant::now();
        let mut gate = MessageGate::new(Rate::new(10, 2), 3, t0);
        assert_eq!(gate.admit(t0), Gate::Pass);
        assert_eq!(gate.admit(t0), Gate::Pass);
        for _ in 0..3 {
            assert_eq!(gate.admit(t0), Gate::Refuse);
        }
        assert_eq!(gate.admit(t0), Gate::Close);
        // A client that slows down is forgiven: one strike back per second.
        let mut gate = MessageGate::new(Rate::new(10, 1), 2, t0);
        assert_eq!(gate.admit(t0), Gate::Pass);
        assert_eq!(gate.admit(t0), Gate::Refuse);
        assert_eq!(gate.admit(t0), Gate::Refuse);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(gate.admit(later), Gate::Pass);
        assert_eq!(gate.admit(later), Gate::Refuse);
        // A new rate applies at once.
        gate.set_rate(Rate::UNLIMITED);
        assert_eq!(gate.admit(later), Gate::Pass);
    }

    #[test]
    fn counters_render_every_limit() {
        let c = LimitCounters::default();
        c.hit(Limit::Publishes);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("chouquette_limited_total{limit=\"publishes\"} 1\n"));
        assert!(out.contains("chouquette_limited_total{limit=\"frame_size\"} 0\n"));
    }
}
