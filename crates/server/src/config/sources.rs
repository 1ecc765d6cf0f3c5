//! `[sources]`: sources the gateway reads itself, beyond HTTP and the Redis
//! inbox. Today `[[sources.postgres]]` (with its `[[sources.postgres.tables]]`):
//! a logical replication slot whose row changes become events. Checks
//! everything that can be checked without connecting (names, templates,
//! apps); what needs the database (the table exists, `wal_level`, the
//! role's rights) is checked when the source connects, and reported by
//! `/readyz` and the logs.

use std::collections::HashSet;
use std::time::Duration;

use chouquette_core::publication::valid_name;
use serde::Deserialize;

use super::apps::AppConfig;
use super::mqtt::MqttConfig;
use super::problem::Problems;
use super::value::duration;
use crate::source::mqtt::MqttSettings;
use crate::source::postgres::{PostgresSettings, TableSettings, Template};

/// `[sources]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Postgres slots read.
    pub postgres: Vec<PostgresConfig>,
    /// MQTT brokers read (`config/mqtt.rs`).
    pub mqtt: Vec<MqttConfig>,
    /// XMPP federation components (`config/xmpp.rs`, docs/federation.md).
    pub xmpp: Vec<super::xmpp::XmppConfig>,
}

/// `[[sources.postgres]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection string; the role needs REPLICATION.
    pub url: String,
    /// Publication (created if missing, for the tables listed).
    #[serde(default = "default_name")]
    pub publication: String,
    /// Logical replication slot (created if missing).
    #[serde(default = "default_name")]
    pub slot: String,
    /// Unused since the slot is streamed; accepted so configs still load.
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Most row changes handed to the publish pipeline at once.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// WAL retained for the slot beyond this is reported as falling behind.
    #[serde(default = "default_max_lag_bytes")]
    pub max_lag_bytes: u64,
    /// Longest pause between reconnection attempts.
    #[serde(default = "default_reconnect", deserialize_with = "duration")]
    pub reconnect_max: Duration,
    /// With a Redis broker, one gateway reads the slot: another takes it
    /// over this long after the reader stopped renewing its lease.
    #[serde(default = "default_lease_ttl", deserialize_with = "duration")]
    pub lease_ttl: Duration,
    /// Tables turned into events.
    pub tables: Vec<TableConfig>,
}

/// `[[sources.postgres.tables]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `schema.table` (`public` when no schema is given).
    pub table: String,
    pub app: String,
    pub channel: String,
    /// Kind of every operation's events, unless `event_kinds` names one.
    #[serde(default)]
    pub event_kind: Option<String>,
    #[serde(default)]
    pub event_kinds: Option<EventKinds>,
    /// Keyword templates (`borne:{uid}`).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// State key template.
    #[serde(default)]
    pub key: Option<String>,
    /// Columns put in `new` and `old` (all when absent).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

/// `event_kinds = { insert = ..., update = ..., delete = ..., truncate = ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventKinds {
    pub insert: Option<String>,
    pub update: Option<String>,
    pub delete: Option<String>,
    /// Optional: without it (and without `event_kind`), a TRUNCATE of the
    /// table is not published.
    pub truncate: Option<String>,
}

fn default_name() -> String {
    "chouquette".into()
}
fn default_poll() -> Duration {
    Duration::from_millis(100)
}
fn default_batch() -> usize {
    1000
}
fn default_max_lag_bytes() -> u64 {
    1 << 30
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect() -> Duration {
    Duration::from_secs(5)
}

/// A Postgres identifier the gateway writes into SQL unquoted-safe:
/// letters, digits and `_`, not starting with a digit, at most 63 bytes.
fn identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `schema.table` split, `public` by default.
fn split_table(table: &str) -> Option<(&str, &str)> {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    (identifier(schema) && identifier(name)).then_some((schema, name))
}

impl TableConfig {
    /// The kinds of insert, update, delete, when each has one.
    fn kinds(&self) -> Option<[String; 3]> {
        let own = self.event_kinds.clone().unwrap_or_default();
        let pick = |k: Option<String>| k.or_else(|| self.event_kind.clone());
        Some([pick(own.insert)?, pick(own.update)?, pick(own.delete)?])
    }

    /// The kind of a TRUNCATE's event, when it is published.
    fn truncate_kind(&self) -> Option<String> {
        let own = self.event_kinds.as_ref().and_then(|k| k.truncate.clone());
        own.or_else(|| self.event_kind.clone())
    }

    fn problems(&self, apps: &[AppConfig], out: &mut Problems<'_>) {
        let at = format!("\"{}\"", self.table);
        let table = &self.table;
        if split_table(table).is_none() {
            out.at(&at, format!("postgres table `{table}` must be `schema.table` or `table`, letters, digits and `_`"));
        }
        if !apps.iter().any(|a| a.id == self.app) {
            out.at(
                &at,
                format!("postgres table `{table}`: unknown app `{}`", self.app),
            );
        }
        if !valid_name(&self.channel) {
            out.at(
                &at,
                format!(
                    "postgres table `{table}`: invalid channel name `{}`",
                    self.channel
                ),
            );
        }
        match self.kinds() {
            None => out.at(&at, format!("postgres table `{table}` needs `event_kind`, or `event_kinds` for insert, update and delete")),
            Some(kinds) => {
                let truncate = self.truncate_kind();
                for kind in kinds.iter().chain(&truncate).filter(|k| !valid_name(k) || *k == "*") {
                    out.at(&at, format!("postgres table `{table}`: invalid event kind `{kind}`"));
                }
            }
        }
        for keyword in &self.keywords {
            let named = keyword
                .split_once(':')
                .is_some_and(|(name, _)| valid_name(name));
            if let Err(e) = Template::parse(keyword) {
                out.at(
                    &format!("\"{keyword}\""),
                    format!("postgres keyword template `{keyword}`: {e}"),
                );
            } else if !named {
                out.at(
                    &format!("\"{keyword}\""),
                    format!("postgres keyword template `{keyword}` must be `name:value`"),
                );
            }
        }
        if let Some(key) = &self.key
            && let Err(e) = Template::parse(key)
        {
            out.at(
                &format!("\"{key}\""),
                format!("postgres key template `{key}`: {e}"),
            );
        }
        if self
            .columns
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.iter().any(String::is_empty))
        {
            out.at(
                &at,
                format!("postgres table `{table}`: `columns` must list column names"),
            );
        }
    }

    fn build(&self) -> TableSettings {
        let (schema, name) = split_table(&self.table).unwrap_or(("public", &self.table));
        let parse = |t: &String| Template::parse(t).ok();
        TableSettings {
            schema: schema.to_string(),
            name: name.to_string(),
            app: self.app.clone(),
            channel: self.channel.clone(),
            kinds: self.kinds().unwrap_or_default(),
            truncate_kind: self.truncate_kind(),
            keywords: self.keywords.iter().filter_map(parse).collect(),
            key: self.key.as_ref().and_then(parse),
            columns: self.columns.clone(),
        }
    }
}

impl SourcesConfig {
    /// Every problem of `[sources]`, at its line.
    pub(super) fn problems(&self, apps: &[AppConfig], out: &mut Problems<'_>) {
        for mqtt in &self.mqtt {
            mqtt.problems(apps, out);
        }
        super::mqtt_commands::problems(&self.mqtt, apps, out);
        for xmpp in &self.xmpp {
            xmpp.problems(apps, out);
        }
        let mut slots = HashSet::new();
        for pg in &self.postgres {
            let at = format!("\"{}\"", pg.url);
            if pg.url.parse::<tokio_postgres::Config>().is_err() {
                out.at(
                    &at,
                    "postgres `url` is not a connection string like postgres://user@host:5432/db"
                        .into(),
                );
            }
            for (key, name) in [("publication", &pg.publication), ("slot", &pg.slot)] {
                if !identifier(name)
                    || (key == "slot" && name.chars().any(|c| c.is_ascii_uppercase()))
                {
                    out.at(&format!("\"{name}\""), format!("postgres {key} `{name}` must be lowercase letters, digits and `_` (at most 63)"));
                }
            }
            if !slots.insert(pg.slot.as_str()) {
                out.at(
                    &format!("\"{}\"", pg.slot),
                    format!("postgres slot `{}` is read by two sources", pg.slot),
                );
            }
            if pg.batch == 0 || pg.poll_interval.is_zero() || pg.lease_ttl < Duration::from_secs(1)
            {
                out.at(
                    &at,
                    "postgres `batch` and `poll_interval` must be above 0, `lease_ttl` at least 1s"
                        .into(),
                );
            }
            if pg.tables.is_empty() {
                out.at(
                    &at,
                    "[[sources.postgres]] needs at least one [[sources.postgres.tables]]".into(),
                );
            }
            let mut seen = HashSet::new();
            for table in &pg.tables {
                table.problems(apps, out);
                if !seen.insert(split_table(&table.table)) {
                    out.at(
                        &format!("\"{}\"", table.table),
                        format!("postgres table `{}` is listed twice", table.table),
                    );
                }
            }
        }
    }

    /// The Postgres sources' settings (the config was checked).
    pub fn postgres_settings(&self) -> Vec<PostgresSettings> {
        self.postgres
            .iter()
            .map(|pg| PostgresSettings {
                url: pg.url.clone(),
                publication: pg.publication.clone(),
                slot: pg.slot.clone(),
                tables: pg.tables.iter().map(TableConfig::build).collect(),
                poll_interval: pg.poll_interval,
                batch: pg.batch,
                max_lag_bytes: pg.max_lag_bytes,
                reconnect_max: pg.reconnect_max,
                lease_ttl: pg.lease_ttl,
            })
            .collect()
    }

    /// The MQTT sources' settings (the config was checked); default client
    /// ids are derived from `node_id`.
    /// The XMPP federation components' settings.
    pub fn xmpp_settings(&self) -> Vec<crate::source::xmpp::XmppSettings> {
        self.xmpp
            .iter()
            .map(super::xmpp::XmppConfig::build)
            .collect()
    }

    pub fn mqtt_settings(&self, node_id: &str) -> Vec<MqttSettings> {
        self.mqtt
            .iter()
            .enumerate()
            .map(|(i, m)| m.build(node_id, i))
            .collect()
    }
}
