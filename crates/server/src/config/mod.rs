//! Configuration: parse → validate → build, one loader, fail fast.
//!
//! Precedence: embedded defaults < the TOML file < environment variables
//! `CHOUQUETTE_<SECTION>__<KEY>` (double underscore between levels, array
//! items by index: `CHOUQUETTE_APPS__0__API_KEY`). Unknown keys are errors;
//! every problem names its line in the file (or the variable it came from).
//! A bad config never starts a half-working gateway.
//!
//! This module only loads, merges and validates. Each section is a module
//! of its own that owns its keys and defaults, checks itself and builds its
//! component's settings: [`listen`] (with TLS), [`node`], [`admin`],
//! [`broker`] (Redis, Sentinel, Cluster, inbox), [`limits`],
//! [`transports`], [`tokens`], [`static_files`], [`proxy`], [`shutdown`],
//! [`log`], [`apps`], [`sources`].

use std::path::Path;

use chouquette_core::app::Apps;
use chouquette_core::node::SessionLimits;
use serde::Deserialize;

mod admin;
mod apps;
mod broker;
mod connect_auth;
mod devices;
mod env;
pub mod fallback;
mod limits;
mod listen;
mod log;
mod messages;
mod mqtt;
mod mqtt_commands;
mod node;
mod notifications;
mod problem;
mod proxy;
mod rpc;
mod sections;
mod shutdown;
mod sources;
mod static_files;
mod tokens;
mod transports;
mod value;
mod xmpp;

pub use admin::Admin;
pub use apps::{AppConfig, AppLimitsConfig, ChannelConfig};
pub use broker::{BrokerConfig, BrokerKind, ClusterConfig, SentinelConfig};
pub use connect_auth::ConnectAuthConfig;
pub use devices::{DevicesConfig, WebhookConfig};
pub use env::ENV_PREFIX;
pub use fallback::{EmailConfig, FallbackConfig, SmtpTls, WebhookConfig as FallbackWebhookConfig};
pub use limits::Limits;
pub use listen::{Listen, TlsConfig};
pub use log::{Log, LogFormat};
pub use mqtt::{MqttConfig, MqttTopicConfig};
pub use mqtt_commands::MqttCommandConfig;
pub use node::NodeConfig;
pub use problem::{ConfigError, Problem};
pub use proxy::ProxyRoute;
pub use rpc::RpcRoute;
pub use shutdown::Shutdown;
pub use sources::{EventKinds, PostgresConfig, SourcesConfig, TableConfig};
pub use static_files::StaticFiles;
pub use tokens::Tokens;
pub use transports::Transports;

use problem::Problems;

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
    /// Token checks beyond the signature (clock-skew leeway).
    pub tokens: Tokens,
    /// Static files on the public listener.
    #[serde(rename = "static")]
    pub static_files: StaticFiles,
    /// Reverse-proxy routes on the public listener.
    pub proxy: Vec<ProxyRoute>,
    /// Graceful stop.
    pub shutdown: Shutdown,
    /// Logging.
    pub log: Log,
    /// Apps (tenants).
    pub apps: Vec<AppConfig>,
    /// Sources the gateway reads itself (Postgres).
    pub sources: SourcesConfig,
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
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::toml(text, &e))?;
        // Section by section from the text itself: every section's type
        // error, each at its line, plus what the sections that did parse
        // find wrong semantically.
        let (mut config, mut problems) = sections::read(text);
        if !problems.is_empty() {
            problems.extend(config.problems(text));
            return Err(ConfigError::Invalid(problems));
        }
        let overrides = env::overrides(env);
        if !overrides.is_empty() {
            let mut table = toml::Value::Table(table);
            env::apply(&mut table, &overrides)?;
            config = Config::deserialize(table).map_err(|e| {
                ConfigError::unplaced(format!(
                    "with environment overrides {}: {}",
                    env::names(&overrides).join(", "),
                    e.message().trim()
                ))
            })?;
        }
        let problems = config.problems(text);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every semantic problem (types were checked while parsing), section
    /// by section, each at its line in `text`.
    pub fn problems(&self, text: &str) -> Vec<Problem> {
        let mut out = Problems::new(text);
        self.broker.problems(&mut out);
        self.limits.problems(&mut out);
        self.static_files.problems(&mut out);
        proxy::problems(&self.proxy, &mut out);
        self.admin.problems(&mut out);
        self.node.problems(&mut out);
        apps::problems(&self.apps, &self.limits, &mut out);
        self.listen.problems(&mut out);
        self.log.problems(&mut out);
        self.tokens.problems(&mut out);
        self.sources.problems(&self.apps, &mut out);
        out.into_vec()
    }

    /// Per-session limits.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            token_leeway: self.tokens.leeway_secs(),
            ..self.limits.session_limits()
        }
    }

    /// The apps registry.
    pub fn apps(&self) -> Apps {
        apps::registry(&self.apps, &self.limits)
    }

    /// Every app's `[apps.devices]`, for the node.
    pub fn device_settings(
        &self,
    ) -> Vec<(
        std::sync::Arc<str>,
        chouquette_core::devices::DeviceSettings,
    )> {
        devices::settings(&self.apps)
    }

    /// Every app's RPC routes and call rate.
    pub fn rpc_routes(&self) -> Vec<(std::sync::Arc<str>, chouquette_core::rpc::AppRoutes)> {
        apps::rpc_routes(&self.apps, &self.limits)
    }
}

#[cfg(test)]
mod tests;
