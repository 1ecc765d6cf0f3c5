//! Limits: what a client, an address, a user or an app may do, and the
//! bounded state behind them. Pure logic: the time is always passed in.
//!
//! - [`TokenBucket`] and [`Rate`] (`bucket.rs`): the one rate rule.
//! - [`KeyedLimiter`] (`keyed.rs`): one bucket per key, in a bounded map
//!   that fails closed when full; [`address_key`] for client addresses;
//!   the proportionate penalty of an address whose client was closed as
//!   abusive ([`abuse_cost`]).
//! - [`UserConnections`] (`users.rs`): connections per (app, user).
//! - [`MessageGate`] (`gate.rs`): a connection's message rate and its
//!   tolerance before closing as abusive.
//! - [`OpenPerKey`] (`open.rs`): connections open at once per address.
//! - [`Limit`] and [`LimitCounters`] (`refusals.rs`): every refusal, counted
//!   by limit for `chouquette_limited_total{limit=...}`.
//! - Here: an app's resolved [`AppLimits`], and the node's [`Limiters`].
//!
//! Hand-written rather than `governor`: small types, no new dependencies,
//! and the bound on keyed state is ours to choose and document.

mod bucket;
mod gate;
mod keyed;
mod open;
mod refusals;
mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use bucket::{Limited, Rate, TokenBucket};
pub use gate::{ABUSE_CLOSE_REASON, Gate, MessageGate};
pub use keyed::{KeyedLimiter, abuse_cost, address_key};
pub use open::{OpenGuard, OpenPerKey};
pub use refusals::{Limit, LimitCounters};
pub use users::UserConnections;

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
    /// Events one user (a `connect` identity) may publish per second as a
    /// client, on top of the app's `publishes`.
    pub client_publishes: Rate,
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            client_messages: Rate::new(50, 100),
            max_connections_per_user: 100,
            max_subscriptions: 256,
            publishes: Rate::new(50_000, 100_000),
            client_publishes: Rate::new(10, 20),
        }
    }
}

/// Users tracked per app by the client publish limit. Only identities from
/// tokens the app's backend signed reach it, so the bound is generous; at
/// it, once users with a full bucket are pruned, a new user's publishes are
/// refused as `rate_limited` (fail closed: known users keep their budget).
pub const MAX_TRACKED_PUBLISHERS: usize = 100_000;

/// The node's limiter state: new connections per address, connections per
/// user, publishes per app, client publishes per (app, user).
#[derive(Debug)]
pub struct Limiters {
    /// New connections per client address (see [`address_key`]).
    pub addresses: KeyedLimiter<IpAddr>,
    /// Connections per (app, user).
    pub users: UserConnections,
    /// Refusals by limit.
    pub counters: LimitCounters,
    publishes: HashMap<Arc<str>, (Rate, Mutex<TokenBucket>)>,
    client_publishes: HashMap<Arc<str>, KeyedLimiter<Box<str>>>,
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
            client_publishes: HashMap::new(),
        }
    }

    /// These limiters with each app's client publish rate per user (at
    /// most [`MAX_TRACKED_PUBLISHERS`] users per app).
    pub fn with_client_publishes(
        mut self,
        rates: impl IntoIterator<Item = (Arc<str>, Rate)>,
    ) -> Limiters {
        self.client_publishes = rates
            .into_iter()
            .map(|(app, rate)| (app, KeyedLimiter::new(rate, MAX_TRACKED_PUBLISHERS)))
            .collect();
        self
    }

    /// Takes one client publish token of `user` of `app` (apps without a
    /// limiter are not limited).
    pub fn client_publish(&self, app: &str, user: &str, now: Instant) -> Result<(), Limited> {
        match self.client_publishes.get(app) {
            Some(limiter) => limiter.check(user.into(), now),
            None => Ok(()),
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
    fn client_publishes_bucket_per_user_of_each_app() {
        let t0 = Instant::now();
        let l = Limiters::new(Rate::UNLIMITED, 1, [], t0)
            .with_client_publishes([("a".into(), Rate::new(1, 2))]);
        assert!(l.client_publish("a", "u", t0).is_ok());
        assert!(l.client_publish("a", "u", t0).is_ok());
        assert!(l.client_publish("a", "u", t0).is_err());
        assert!(l.client_publish("a", "v", t0).is_ok());
        assert!(l.client_publish("b", "u", t0).is_ok());
    }
}
