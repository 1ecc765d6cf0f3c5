//! `[broker]`, `[broker.sentinel]` and `[broker.cluster]`: which broker, and
//! for Redis where it is (one URL, Sentinels that know the master, or a
//! Redis Cluster: exactly one of them), its key prefix, timeouts and the
//! inbox. Builds the Redis broker's and the inbox consumer's settings.
//! The Redis keys are only checked with `kind = "redis"`, so a memory node
//! may keep a Redis section around unused.

use std::time::Duration;

use serde::Deserialize;

use super::problem::Problems;
use super::value::duration;
use crate::broker::redis::{RedisSettings, Target};
use crate::source::redis_inbox::InboxSettings;

/// Which broker implementation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// In-process: one node, nothing external.
    #[default]
    Memory,
    /// Redis: several nodes share offsets, history and delivery.
    Redis,
}

/// `[broker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `memory` or `redis`.
    pub kind: BrokerKind,
    /// Redis URL, for `redis` without Sentinel.
    pub url: Option<String>,
    /// Sentinels that know the Redis master, instead of `url`.
    pub sentinel: Option<SentinelConfig>,
    /// A Redis Cluster, instead of `url` or `sentinel`.
    pub cluster: Option<ClusterConfig>,
    /// Most channels tracked (memory broker) or listened on (redis).
    pub max_channels: usize,
    /// Prefix of every Redis key and topic.
    pub prefix: String,
    /// A channel nobody publishes to or joins for this long is forgotten
    /// in Redis (its next events start a new epoch).
    #[serde(deserialize_with = "duration")]
    pub key_ttl: Duration,
    /// Longest wait for a Redis connection.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Longest wait for a Redis answer before the link counts as lost.
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Longest wait between reconnection attempts (backoff cap).
    #[serde(deserialize_with = "duration")]
    pub reconnect_max: Duration,
    /// The Redis inbox stream backends may `XADD` events to (`""`: none).
    pub inbox: String,
    /// The consumer group the gateways share on the inbox.
    pub inbox_group: String,
    /// Inbox entries pending this long on a silent gateway are taken over.
    #[serde(deserialize_with = "duration")]
    pub inbox_claim_after: Duration,
    /// How long an inbox entry id is remembered, so that an entry taken
    /// over is not published twice.
    #[serde(deserialize_with = "duration")]
    pub dedup_window: Duration,
    /// A node whose pub/sub messages arrive later than this after Redis
    /// published them (it is not keeping up) drops and remakes its link.
    #[serde(deserialize_with = "duration")]
    pub max_lag: Duration,
    /// How often a node stops listening on the Redis topics of channels it
    /// no longer has subscribers for.
    #[serde(deserialize_with = "duration")]
    pub topic_sweep: Duration,
    /// A node's users on presence channels are announced `left` this long
    /// (at most a third more) after the node stopped refreshing them (it
    /// died or lost Redis); nodes refresh every third of it.
    #[serde(deserialize_with = "duration")]
    pub presence_timeout: Duration,
}

/// `[broker.sentinel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// Sentinel addresses, `host:port`, tried in order.
    pub addresses: Vec<String>,
    /// The master's name in the Sentinels' configuration.
    pub master_name: String,
    /// Database number.
    #[serde(default)]
    pub db: i64,
}

/// `[broker.cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Seed nodes, `host:port`; the rest of the Cluster is learned from them.
    pub nodes: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            kind: BrokerKind::Memory,
            url: None,
            sentinel: None,
            cluster: None,
            max_channels: 1_000_000,
            prefix: "chq".into(),
            key_ttl: Duration::from_secs(7 * 24 * 3600),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(5),
            inbox: "chq:inbox".into(),
            inbox_group: "chouquette".into(),
            inbox_claim_after: Duration::from_secs(30),
            dedup_window: Duration::from_secs(3600),
            max_lag: Duration::from_secs(30),
            topic_sweep: Duration::from_secs(30),
            presence_timeout: Duration::from_secs(30),
        }
    }
}

impl BrokerConfig {
    /// The Redis broker's settings (for `kind = "redis"`).
    pub fn redis_settings(&self) -> RedisSettings {
        let target = match (&self.sentinel, &self.cluster) {
            (_, Some(c)) => Target::Cluster {
                nodes: c.nodes.clone(),
            },
            (Some(s), None) => Target::Sentinel {
                addresses: s.addresses.clone(),
                master: s.master_name.clone(),
                db: s.db,
            },
            (None, None) => Target::Url(
                self.url
                    .clone()
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            ),
        };
        RedisSettings {
            target,
            prefix: self.prefix.clone(),
            key_ttl: self.key_ttl,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            reconnect_max: self.reconnect_max,
            max_channels: self.max_channels,
            dedup_window: self.dedup_window,
            max_lag: self.max_lag,
            topic_sweep: self.topic_sweep,
            presence_timeout: self.presence_timeout,
        }
    }

    /// The inbox consumer's settings, when an inbox is configured.
    pub fn inbox_settings(&self, node_id: &str) -> Option<InboxSettings> {
        (self.kind == BrokerKind::Redis && !self.inbox.is_empty()).then(|| InboxSettings {
            stream: self.inbox.clone(),
            group: self.inbox_group.clone(),
            consumer: node_id.to_string(),
            batch: 256,
            block: Duration::from_secs(2),
            claim_after: self.inbox_claim_after,
            dead_max_len: 100_000,
        })
    }

    pub(super) fn problems(&self, out: &mut Problems<'_>) {
        if self.kind != BrokerKind::Redis {
            return;
        }
        self.target_problems(out);
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            out.at(
                "prefix",
                "broker.prefix must be non-empty, without `{` or `}`".into(),
            );
        }
        self.timing_problems(out);
    }

    /// Where Redis is: one way to find it, and that way well formed.
    fn target_problems(&self, out: &mut Problems<'_>) {
        let targets = [
            self.url.is_some(),
            self.sentinel.is_some(),
            self.cluster.is_some(),
        ];
        if targets.iter().filter(|t| **t).count() > 1 {
            out.at(
                "[broker.",
                "broker: set one of `url`, `[broker.sentinel]` or `[broker.cluster]`".into(),
            );
        }
        if let Some(c) = &self.cluster
            && c.nodes.is_empty()
        {
            out.at("nodes", "broker.cluster needs at least one node".into());
        }
        if let Some(url) = &self.url
            && redis::Client::open(url.as_str()).is_err()
        {
            out.at("url", format!("broker.url `{url}` is not a Redis URL"));
        }
        if let Some(s) = &self.sentinel
            && (s.addresses.is_empty() || s.master_name.is_empty())
        {
            out.at(
                "sentinel",
                "broker.sentinel needs `addresses` and `master_name`".into(),
            );
        }
    }

    /// Every duration is positive, and an inbox entry id is remembered long
    /// enough to outlive a takeover (`dedup_window` ≥ 2 × `inbox_claim_after`).
    fn timing_problems(&self, out: &mut Problems<'_>) {
        for (name, value) in [
            ("key_ttl", self.key_ttl),
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("reconnect_max", self.reconnect_max),
            ("inbox_claim_after", self.inbox_claim_after),
            ("dedup_window", self.dedup_window),
            ("max_lag", self.max_lag),
            ("topic_sweep", self.topic_sweep),
        ] {
            if value.is_zero() {
                out.at(name, format!("broker.{name} must be more than 0s"));
            }
        }
        if self.presence_timeout < Duration::from_secs(1) {
            out.at(
                "presence_timeout",
                "broker.presence_timeout must be at least 1s (nodes refresh every third of it)"
                    .into(),
            );
        }
        if self.dedup_window < self.inbox_claim_after * 2 {
            out.at(
                "dedup_window",
                "broker.dedup_window must be at least twice inbox_claim_after".into(),
            );
        }
    }
}
