//! Configuration: parse → validate → build, one loader, fail fast.
//!
//! Precedence: embedded defaults < the TOML file < environment variables
//! `CHOUQUETTE_<SECTION>__<KEY>` (double underscore between levels, array
//! items by index: `CHOUQUETTE_APPS__0__API_KEY`). Unknown keys are errors;
//! every problem names its line in the file (or the variable it came from).
//! A bad config never starts a half-working gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chouquette_core::app::{App, AppLimits, Apps, ChannelPolicy};
use chouquette_core::limits::Rate;
use chouquette_core::node::SessionLimits;
use chouquette_core::publication::valid_name;
use serde::{Deserialize, Deserializer};

use crate::broker::redis::{RedisSettings, Target};
use crate::source::redis_inbox::InboxSettings;

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "CHOUQUETTE_";

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One or more problems in its content.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener addresses.
    pub listen: Listen,
    /// This node.
    pub node: NodeConfig,
    /// Admin API settings.
    pub admin: Admin,
    /// The broker.
    pub broker: BrokerConfig,
    /// Limits on what clients and backends may make the gateway hold.
    pub limits: Limits,
    /// SSE and long-polling.
    pub transports: Transports,
    /// Static files on the public listener.
    #[serde(rename = "static")]
    pub static_files: StaticFiles,
    /// Graceful stop.
    pub shutdown: Shutdown,
    /// Logging.
    pub log: Log,
    /// Apps (tenants).
    pub apps: Vec<AppConfig>,
}

/// `[listen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Clients: `/ws`.
    #[serde(deserialize_with = "socket_addr")]
    pub public: SocketAddr,
    /// Backends and operators: `/api/v1`, `/metrics`, `/healthz`, `/readyz`.
    #[serde(deserialize_with = "socket_addr")]
    pub internal: SocketAddr,
    /// TLS on the public listener; none: plain (e.g. behind a proxy that
    /// terminates TLS). The internal listener is always plain: it belongs
    /// on loopback or a private network, and its clients are our backends.
    pub tls: Option<TlsConfig>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            public: SocketAddr::from(([0, 0, 0, 0], 8080)),
            internal: SocketAddr::from(([127, 0, 0, 1], 8081)),
            tls: None,
        }
    }
}

/// `[listen.tls]`: the public listener's certificate, reloaded on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the certificate, then its intermediates.
    pub cert: std::path::PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// A client that has not finished its handshake by then is dropped.
    #[serde(default = "TlsConfig::default_handshake_timeout")]
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the
    /// kernel's accept queue, so a flood of slow handshakes is bounded.
    #[serde(default = "TlsConfig::default_max_handshakes")]
    pub max_handshakes: usize,
}

impl TlsConfig {
    fn default_handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }

    fn default_max_handshakes() -> usize {
        1024
    }

    /// The listener's settings.
    pub fn settings(&self) -> crate::tls::TlsSettings {
        crate::tls::TlsSettings {
            cert: self.cert.clone(),
            key: self.key.clone(),
            handshake_timeout: self.handshake_timeout,
            max_handshakes: self.max_handshakes,
        }
    }

    /// Problems with the files (missing, unreadable, not PEM, key not the
    /// certificate's) and the bounds, each at its line in `[listen.tls]`.
    fn problems(&self, text: &str, push: &mut impl FnMut(Option<usize>, String)) {
        let line = |key: &str| tls_line(text, key);
        if self.handshake_timeout.is_zero() {
            push(
                line("handshake_timeout"),
                "listen.tls.handshake_timeout must be more than 0s".into(),
            );
        }
        if self.max_handshakes == 0 {
            push(
                line("max_handshakes"),
                "listen.tls.max_handshakes must be at least 1".into(),
            );
        }
        if let Err(e) = crate::tls::load_key_pair(&self.cert, &self.key) {
            let at = if e.is_about_key() { "key" } else { "cert" };
            push(line(at), format!("listen.tls: {e}"));
        }
    }
}

/// The line of `key = ...` inside the `[listen.tls]` table (or of the
/// table's header when the key is not in the file).
fn tls_line(text: &str, key: &str) -> Option<usize> {
    let mut lines = text.lines().enumerate();
    let (header, _) = lines.find(|(_, l)| {
        let l = l.trim();
        l.starts_with('[') && l.trim_matches(['[', ']', ' ']) == "listen.tls"
    })?;
    for (i, l) in lines {
        let l = l.trim();
        if l.starts_with('[') {
            break;
        }
        if l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    Some(header + 1)
}

/// `[node]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The node's id in admin answers and logs; default `hostname-pid`.
    pub id: Option<String>,
}

impl NodeConfig {
    /// The configured id, or `hostname-pid`.
    pub fn id_or_default(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => format!("{}-{}", hostname(), std::process::id()),
        }
    }
}

/// The host's name, as the kernel knows it (or `$HOSTNAME`, or `localhost`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Bearer key for `/admin` routes; without it they answer 404.
    pub key: Option<String>,
    /// Where kill switches are kept across restarts; none: in memory only.
    pub state_file: Option<std::path::PathBuf>,
    /// Where admin actions are appended as JSON lines; none: log only.
    pub audit_file: Option<std::path::PathBuf>,
}

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

    fn problems(&self, push: &mut impl FnMut(Option<&str>, String)) {
        if self.kind != BrokerKind::Redis {
            return;
        }
        let targets = [
            self.url.is_some(),
            self.sentinel.is_some(),
            self.cluster.is_some(),
        ];
        if targets.iter().filter(|t| **t).count() > 1 {
            push(
                Some("[broker."),
                "broker: set one of `url`, `[broker.sentinel]` or `[broker.cluster]`".into(),
            );
        }
        if let Some(c) = &self.cluster
            && c.nodes.is_empty()
        {
            push(
                Some("nodes"),
                "broker.cluster needs at least one node".into(),
            );
        }
        if let Some(url) = &self.url
            && redis::Client::open(url.as_str()).is_err()
        {
            push(
                Some("url"),
                format!("broker.url `{url}` is not a Redis URL"),
            );
        }
        if let Some(s) = &self.sentinel
            && (s.addresses.is_empty() || s.master_name.is_empty())
        {
            push(
                Some("sentinel"),
                "broker.sentinel needs `addresses` and `master_name`".into(),
            );
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            push(
                Some("prefix"),
                "broker.prefix must be non-empty, without `{` or `}`".into(),
            );
        }
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
                push(Some(name), format!("broker.{name} must be more than 0s"));
            }
        }
        if self.dedup_window < self.inbox_claim_after * 2 {
            push(
                Some("dedup_window"),
                "broker.dedup_window must be at least twice inbox_claim_after".into(),
            );
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most open client connections; 0 = derived from the open-file limit.
    pub max_connections: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Frames queued for one connection before it is a slow consumer.
    pub outbox_capacity: usize,
    /// Bad messages tolerated before closing with 1008.
    pub max_bad_messages: u32,
    /// Largest client message handled; larger get `bad_message`.
    pub max_message_bytes: usize,
    /// Largest frame read at all; larger close the connection with 1009.
    pub max_frame_bytes: usize,
    /// A write to a client that takes longer closes it as a slow consumer.
    #[serde(deserialize_with = "duration")]
    pub write_timeout: Duration,
    /// Largest publish request body.
    pub max_publish_bytes: usize,
    /// The gateway pings a WebSocket client this often (`0s`: never).
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    /// A WebSocket client silent this long (no frame, not even a pong) is
    /// closed as dead (`0s`: never); checked at each ping.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Client messages per second per connection (0: no limit); over it,
    /// error `rate_limited`. Overridable per app.
    pub client_messages_per_second: u32,
    /// Client messages a connection may send at once after a quiet period.
    pub client_messages_burst: u32,
    /// Messages refused as `rate_limited` (one forgiven per second) before
    /// the connection is closed with 1008 as abusive.
    pub max_rate_limited_messages: u32,
    /// Connections one user (token `sub`) may hold per app on this node
    /// (0: no limit); over it, error `rate_limited`. Overridable per app.
    pub max_connections_per_user: usize,
    /// New connections per second from one address (IPv6: one /64) (0: no
    /// limit); over it, HTTP 429 before any upgrade.
    pub new_connections_per_address: u32,
    /// New connections one address may open at once.
    pub new_connections_burst: u32,
    /// Addresses tracked by the per-address limit; at the bound, once the
    /// quiet ones are pruned, new addresses are refused (429).
    pub max_tracked_addresses: usize,
    /// Events published per second per app (0: no limit); over it, 429.
    /// Overridable per app.
    pub publishes_per_second: u32,
    /// Events an app may publish at once after a quiet period.
    pub publish_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let session = SessionLimits::default();
        let app = AppLimits::default();
        Limits {
            max_connections: 0,
            max_subscriptions_per_connection: session.max_subscriptions,
            outbox_capacity: session.outbox_capacity,
            max_bad_messages: session.max_bad_messages,
            max_message_bytes: session.max_message_bytes,
            max_frame_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            max_publish_bytes: 4 * 1024 * 1024,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            client_messages_per_second: session.client_messages.per_second,
            client_messages_burst: session.client_messages.burst,
            max_rate_limited_messages: session.max_rate_limited,
            max_connections_per_user: app.max_connections_per_user,
            new_connections_per_address: 100,
            new_connections_burst: 1000,
            max_tracked_addresses: 100_000,
            publishes_per_second: app.publishes.per_second,
            publish_burst: app.publishes.burst,
        }
    }
}

/// `[static]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticFiles {
    /// Folder served at `/` on the public listener (e.g. an app's `public/`).
    pub dir: Option<std::path::PathBuf>,
}

/// `[transports]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transports {
    /// Interval of SSE comment heartbeats.
    #[serde(deserialize_with = "duration")]
    pub sse_heartbeat: Duration,
    /// Longest wait of one long-poll request.
    #[serde(deserialize_with = "duration")]
    pub poll_wait: Duration,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            sse_heartbeat: Duration::from_secs(15),
            poll_wait: Duration::from_secs(25),
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// How long connections get to flush before the process exits.
    #[serde(deserialize_with = "duration")]
    pub grace: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            grace: Duration::from_secs(10),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `chouquette=debug`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[[apps]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app id.
    pub id: String,
    /// Token secrets: any verifies, the first signs.
    pub secrets: Vec<String>,
    /// Bearer key for `/api/v1` on behalf of this app.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Accept subscription tokens without `exp`.
    #[serde(default)]
    pub allow_tokens_without_exp: bool,
    /// Defaults for channels not listed under `channels`.
    #[serde(default)]
    pub channel_defaults: ChannelConfig,
    /// Per-channel settings.
    #[serde(default)]
    pub channels: HashMap<String, ChannelConfig>,
    /// This app's limits; unset keys take `[limits]`.
    #[serde(default)]
    pub limits: AppLimitsConfig,
}

/// `[apps.limits]`: the per-app limits, each over its `[limits]` default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppLimitsConfig {
    /// Client messages per second per connection holding this app.
    pub client_messages_per_second: Option<u32>,
    /// Their burst.
    pub client_messages_burst: Option<u32>,
    /// Connections per user of this app on this node (0: no limit).
    pub max_connections_per_user: Option<usize>,
    /// Subscriptions per connection, checked when subscribing to this app.
    pub max_subscriptions_per_connection: Option<usize>,
    /// Events published per second for this app (0: no limit).
    pub publishes_per_second: Option<u32>,
    /// Their burst.
    pub publish_burst: Option<u32>,
}

impl AppLimitsConfig {
    fn over(&self, base: &Limits) -> AppLimits {
        AppLimits {
            client_messages: Rate::new(
                self.client_messages_per_second
                    .unwrap_or(base.client_messages_per_second),
                self.client_messages_burst
                    .unwrap_or(base.client_messages_burst),
            ),
            max_connections_per_user: self
                .max_connections_per_user
                .unwrap_or(base.max_connections_per_user),
            max_subscriptions: self
                .max_subscriptions_per_connection
                .unwrap_or(base.max_subscriptions_per_connection),
            publishes: Rate::new(
                self.publishes_per_second
                    .unwrap_or(base.publishes_per_second),
                self.publish_burst.unwrap_or(base.publish_burst),
            ),
        }
    }
}

/// Problems of one rate: a limited rate needs a burst of at least 1.
fn rate_problem(scope: &str, rate: &str, burst: &str, r: Rate) -> Option<(String, String)> {
    (r.is_limited() && r.burst == 0).then(|| {
        (
            burst.to_string(),
            format!("{scope}.{burst} must be at least 1 when {scope}.{rate} is set"),
        )
    })
}

/// `[apps.channels.NAME]` and `[apps.channel_defaults]`; unset keys inherit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Events kept for resume.
    pub history: Option<usize>,
    /// Events older than this leave history (`0s`: no age limit).
    #[serde(default, deserialize_with = "opt_duration")]
    pub history_ttl: Option<Duration>,
    /// Keep the last event per key.
    pub keep_state: Option<bool>,
    /// Most keys kept.
    pub max_state_keys: Option<usize>,
}

impl ChannelConfig {
    fn over(&self, base: &ChannelPolicy) -> ChannelPolicy {
        ChannelPolicy {
            history: self.history.unwrap_or(base.history),
            history_ttl: match self.history_ttl {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => base.history_ttl,
            },
            keep_state: self.keep_state.unwrap_or(base.keep_state),
            max_state_keys: self.max_state_keys.unwrap_or(base.max_state_keys),
        }
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!("`{s}` is not an address like 127.0.0.1:8080"))
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a duration like 5s or 1h")))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

/// The first line that contains `needle`, to point validation errors at.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    Problem {
        line: e.span().map(|s| line_at(text, s.start)),
        message: e.message().trim().to_string(),
    }
}

/// Environment overrides: `(variable, path, raw value)`, sorted.
fn env_overrides(
    vars: impl Iterator<Item = (String, String)>,
) -> Vec<(String, Vec<String>, String)> {
    let mut out: Vec<_> = vars
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(ENV_PREFIX)?;
            rest.contains("__").then(|| {
                let path = rest.split("__").map(str::to_lowercase).collect();
                (k.clone(), path, v)
            })
        })
        .collect();
    out.sort();
    out
}

fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets `value` at `path` below `node`, creating tables on the way.
fn apply_override(
    node: &mut toml::Value,
    path: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let Some((key, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    let child = match node {
        toml::Value::Table(t) => t
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        toml::Value::Array(a) => {
            let i: usize = key
                .parse()
                .map_err(|_| format!("`{key}` is not an index"))?;
            a.get_mut(i).ok_or_else(|| format!("no item {i}"))?
        }
        _ => return Err(format!("`{key}` is under a value that is not a table")),
    };
    apply_override(child, rest, value)
}

impl Config {
    /// Reads, overrides from the process environment, and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, std::env::vars())
    }

    /// The embedded defaults, with environment overrides, validated.
    pub fn defaults_with_env() -> Result<Config, ConfigError> {
        Config::from_toml("", std::env::vars())
    }

    /// Parses `text`, applies the given environment, validates.
    pub fn from_toml(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(vec![toml_problem(text, &e)]))?;
        let mut table = toml::Value::Table(table);
        // Deserializing the text itself gives every type error its line.
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(vec![toml_problem(text, &e)]))?;
        let overrides = env_overrides(env);
        if !overrides.is_empty() {
            for (var, path, raw) in &overrides {
                apply_override(&mut table, path, env_value(raw)).map_err(|e| {
                    ConfigError::Invalid(vec![Problem {
                        line: None,
                        message: format!("{var}: {e}"),
                    }])
                })?;
            }
            let names: Vec<&str> = overrides.iter().map(|(v, _, _)| v.as_str()).collect();
            config = Config::deserialize(table).map_err(|e| {
                ConfigError::Invalid(vec![Problem {
                    line: None,
                    message: format!(
                        "with environment overrides {}: {}",
                        names.join(", "),
                        e.message().trim()
                    ),
                }])
            })?;
        }
        let problems = config.problems(text);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every semantic problem (types were checked while parsing).
    pub fn problems(&self, text: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |needle: Option<&str>, message: String| {
            problems.push(Problem {
                line: needle.and_then(|n| line_of(text, n)),
                message,
            });
        };
        self.broker.problems(&mut push);
        let limits = &self.limits;
        for (name, value) in [
            (
                "max_subscriptions_per_connection",
                limits.max_subscriptions_per_connection,
            ),
            ("outbox_capacity", limits.outbox_capacity),
            ("max_message_bytes", limits.max_message_bytes),
            ("max_frame_bytes", limits.max_frame_bytes),
            ("max_publish_bytes", limits.max_publish_bytes),
        ] {
            if value == 0 {
                push(Some(name), format!("limits.{name} must be at least 1"));
            }
        }
        for (rate, burst, r) in [
            (
                "client_messages_per_second",
                "client_messages_burst",
                Rate::new(
                    limits.client_messages_per_second,
                    limits.client_messages_burst,
                ),
            ),
            (
                "new_connections_per_address",
                "new_connections_burst",
                Rate::new(
                    limits.new_connections_per_address,
                    limits.new_connections_burst,
                ),
            ),
            (
                "publishes_per_second",
                "publish_burst",
                Rate::new(limits.publishes_per_second, limits.publish_burst),
            ),
        ] {
            if let Some((needle, message)) = rate_problem("limits", rate, burst, r) {
                push(Some(&needle), message);
            }
        }
        if limits.new_connections_per_address > 0 && limits.max_tracked_addresses == 0 {
            push(
                Some("max_tracked_addresses"),
                "limits.max_tracked_addresses must be at least 1".into(),
            );
        }
        if limits.max_frame_bytes < limits.max_message_bytes {
            push(
                Some("max_frame_bytes"),
                "limits.max_frame_bytes must be at least limits.max_message_bytes".into(),
            );
        }
        if let Some(dir) = &self.static_files.dir
            && !dir.is_dir()
        {
            push(
                Some("dir"),
                format!("static.dir `{}` is not a folder", dir.display()),
            );
        }
        if self.admin.key.as_deref().is_some_and(str::is_empty) {
            push(Some("key"), "admin.key must not be empty".into());
        }
        if let Some(id) = &self.node.id
            && !valid_name(id)
        {
            push(
                Some("id"),
                format!("node.id `{id}` must be letters, digits and `_-.:@/`"),
            );
        }
        for (name, path) in [
            ("state_file", &self.admin.state_file),
            ("audit_file", &self.admin.audit_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                push(Some(name), format!("admin.{name} must not be empty"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for app in &self.apps {
            let at = format!("\"{}\"", app.id);
            let at = Some(at.as_str());
            if !valid_name(&app.id) {
                push(
                    at,
                    format!("app id `{}` must be letters, digits and `_-.:@/`", app.id),
                );
            }
            if !seen.insert(app.id.as_str()) {
                push(at, format!("app `{}` is defined twice", app.id));
            }
            if app.secrets.is_empty() || app.secrets.iter().any(String::is_empty) {
                push(
                    at,
                    format!("app `{}` needs at least one non-empty secret", app.id),
                );
            }
            if app.api_key.as_deref().is_some_and(str::is_empty) {
                push(at, format!("app `{}`: api_key must not be empty", app.id));
            }
            let own = app.limits.over(limits);
            for (rate, burst, r) in [
                (
                    "client_messages_per_second",
                    "client_messages_burst",
                    own.client_messages,
                ),
                ("publishes_per_second", "publish_burst", own.publishes),
            ] {
                if let Some((_, message)) = rate_problem("limits", rate, burst, r) {
                    push(at, format!("app `{}`: apps.{message}", app.id));
                }
            }
            if own.max_subscriptions == 0 {
                push(
                    at,
                    format!(
                        "app `{}`: limits.max_subscriptions_per_connection must be at least 1",
                        app.id
                    ),
                );
            }
            for name in app.channels.keys() {
                if !valid_name(name) {
                    push(
                        Some(name),
                        format!("app `{}`: channel name `{name}` is not valid", app.id),
                    );
                }
            }
        }
        if let Some(tls) = &self.listen.tls {
            tls.problems(text, &mut |line, message| {
                problems.push(Problem { line, message })
            });
        }
        problems
    }

    /// Per-session limits.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_subscriptions: self.limits.max_subscriptions_per_connection,
            outbox_capacity: self.limits.outbox_capacity,
            max_bad_messages: self.limits.max_bad_messages,
            max_message_bytes: self.limits.max_message_bytes,
            client_messages: Rate::new(
                self.limits.client_messages_per_second,
                self.limits.client_messages_burst,
            ),
            max_rate_limited: self.limits.max_rate_limited_messages,
        }
    }

    /// The apps registry.
    pub fn apps(&self) -> Apps {
        Apps::new(self.apps.iter().map(|a| {
            let default_channel = a.channel_defaults.over(&ChannelPolicy::default());
            App {
                id: a.id.as_str().into(),
                secrets: a.secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
                api_key: a.api_key.clone(),
                allow_no_exp: a.allow_tokens_without_exp,
                channels: a
                    .channels
                    .iter()
                    .map(|(name, c)| (name.clone(), c.over(&default_channel)))
                    .collect(),
                default_channel,
                limits: a.limits.over(&self.limits),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[listen]
public = "127.0.0.1:8080"
internal = "127.0.0.1:8081"

[node]
id = "gw-1"

[admin]
key = "admin-key"
state_file = "/var/lib/chouquette/switches.json"
audit_file = "/var/log/chouquette/audit.jsonl"

[broker]
kind = "memory"

[[apps]]
id = "bluelib"
secrets = ["s3cret-current", "s3cret-previous"]
api_key = "pub-key"

[apps.channels.bornes]
history = 1000
keep_state = true
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn problems(text: &str) -> Vec<Problem> {
        match load(text, &[]) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn operating_example_loads() {
        let c = load(EXAMPLE, &[]).expect("valid");
        let apps = c.apps();
        let app = apps.get("bluelib").expect("app");
        assert!(app.channel_policy("bornes").keep_state);
        assert!(!app.channel_policy("other").keep_state);
        assert_eq!(app.secrets.len(), 2);
        assert_eq!(c.node.id_or_default(), "gw-1");
        assert!(c.admin.state_file.is_some());
    }

    #[test]
    fn node_id_defaults_to_host_and_pid() {
        let c = load("", &[]).expect("valid");
        let id = c.node.id_or_default();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        let p = problems("[node]\nid = \"two words\"\n");
        assert_eq!(p[0].line, Some(2), "{p:?}");
    }

    #[test]
    fn unknown_keys_name_their_line() {
        let p = problems("[listen]\npublic = \"127.0.0.1:1\"\nbogus = 1\n");
        assert_eq!(p[0].line, Some(3), "{p:?}");
        assert!(p[0].message.contains("bogus"), "{p:?}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let p = problems("[limits]\nwrite_timeout = \"soon\"\n");
        assert_eq!(p[0].line, Some(2));
        let p = problems("\n[listen]\npublic = \"nowhere\"\n");
        assert_eq!(p[0].line, Some(3));
        let p = problems("[[apps]]\nid = \"a\"\nsecrets = []\n");
        assert_eq!(p[0].line, Some(2));
        assert!(p[0].message.contains("secret"));
    }

    #[test]
    fn app_limits_inherit_and_override_the_defaults() {
        let text = "[limits]\nmax_connections_per_user = 7\npublishes_per_second = 10\n\
                    publish_burst = 20\n\n[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n\n\
                    [apps.limits]\npublishes_per_second = 0\nclient_messages_burst = 9\n\n\
                    [[apps]]\nid = \"b\"\nsecrets = [\"s\"]\n";
        let c = load(text, &[]).expect("valid");
        let apps = c.apps();
        let a = &apps.get("a").expect("a").limits;
        assert_eq!(a.publishes, Rate::new(0, 20));
        assert_eq!(a.client_messages, Rate::new(50, 9));
        assert_eq!(a.max_connections_per_user, 7);
        let b = &apps.get("b").expect("b").limits;
        assert_eq!(b.publishes, Rate::new(10, 20));
        assert_eq!(b.max_subscriptions, 256);
        let c = load(
            text,
            &[("CHOUQUETTE_APPS__1__LIMITS__MAX_CONNECTIONS_PER_USER", "1")],
        )
        .expect("valid");
        let apps = c.apps();
        assert_eq!(apps.get("b").expect("b").limits.max_connections_per_user, 1);
    }

    #[test]
    fn bad_limits_are_problems() {
        let p = problems("[limits]\nnew_connections_per_address = 5\nnew_connections_burst = 0\n");
        assert_eq!(p[0].line, Some(3), "{p:?}");
        assert!(p[0].message.contains("new_connections_burst"), "{p:?}");
        let p =
            problems("[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n[apps.limits]\npublish_burst = 0\n");
        assert!(p[0].message.contains("publish_burst"), "{p:?}");
        assert_eq!(p[0].line, Some(2), "{p:?}");
        let p = problems("[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n[apps.limits]\nbogus = 1\n");
        assert!(p[0].message.contains("bogus"), "{p:?}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load(
            EXAMPLE,
            &[
                ("CHOUQUETTE_LISTEN__PUBLIC", "127.0.0.1:9999"),
                ("CHOUQUETTE_APPS__0__API_KEY", "other"),
                ("CHOUQUETTE_LIMITS__OUTBOX_CAPACITY", "7"),
                ("CHOUQUETTE_SECRET", "not an override"),
            ],
        )
        .expect("valid");
        assert_eq!(c.listen.public.port(), 9999);
        assert_eq!(c.apps[0].api_key.as_deref(), Some("other"));
        assert_eq!(c.limits.outbox_capacity, 7);
        let bad = load(EXAMPLE, &[("CHOUQUETTE_LISTEN__NOPE", "1")]);
        assert!(
            matches!(bad, Err(ConfigError::Invalid(p)) if p[0].message.contains("CHOUQUETTE_LISTEN__NOPE"))
        );
    }
}
