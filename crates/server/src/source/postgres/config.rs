//! The Postgres source's settings, built from one `[[sources.postgres]]`
//! by the config loader (which has already checked them).

use std::time::Duration;

use super::pgoutput::Op;
use super::template::Template;

/// One replication slot read by one gateway.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Connection string (`postgres://user:pass@host:port/db`).
    pub url: String,
    /// The publication, created if missing.
    pub publication: String,
    /// The logical replication slot, created if missing.
    pub slot: String,
    /// The tables turned into events.
    pub tables: Vec<TableSettings>,
    /// Pause between two reads of the former polling reader: accepted so
    /// that configurations still load, unused since the slot is streamed.
    pub poll_interval: Duration,
    /// Most changes handed to ingest at once (whole transactions always).
    pub batch: usize,
    /// WAL retained for the slot beyond this is reported as falling behind.
    pub max_lag_bytes: u64,
    /// Longest pause between reconnection attempts.
    pub reconnect_max: Duration,
    /// With Redis: how long the slot's lease outlives its holder's last renewal.
    pub lease_ttl: Duration,
}

/// How one table's changes become events.
#[derive(Debug, Clone)]
pub struct TableSettings {
    /// Schema, unquoted (`public`).
    pub schema: String,
    /// Table name, unquoted.
    pub name: String,
    pub app: String,
    pub channel: String,
    /// Event kind for insert, update, delete.
    pub kinds: [String; 3],
    /// Event kind of a TRUNCATE; not published when `None`.
    pub truncate_kind: Option<String>,
    pub keywords: Vec<Template>,
    pub key: Option<Template>,
    /// Columns put in `new`/`old`; all when `None`.
    pub columns: Option<Vec<String>>,
}

impl TableSettings {
    /// `schema.name`, as the events' `table` says.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `"schema"."name"`, for SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.name)
    }

    /// The event kind of `op`.
    pub(super) fn kind(&self, op: Op) -> &str {
        match op {
            Op::Insert => &self.kinds[0],
            Op::Update => &self.kinds[1],
            Op::Delete => &self.kinds[2],
        }
    }

    /// Whether `column` goes into the event.
    pub(super) fn includes(&self, column: &str) -> bool {
        self.columns
            .as_ref()
            .is_none_or(|cols| cols.iter().any(|c| c == column))
    }
}
