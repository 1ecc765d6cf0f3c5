//! The XMPP federation's settings, built from one `[[sources.xmpp]]` by the
//! config loader (which has already checked them). Secrets (the component
//! secret, the mailbox database URL with its password) sit in [`Secret`],
//! whose `Debug` never shows them, so no log line or panic message can.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chouquette_core::filter::Filter;
use serde::Deserialize;

/// A value that must never be logged.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// One XMPP component the gateway logs in as, with its mailboxes.
#[derive(Debug, Clone)]
pub struct XmppSettings {
    /// `host:port` of the XMPP server's component listener (XEP-0114).
    pub server: String,
    /// The component's domain, its JID on the federation.
    pub component: String,
    pub secret: Secret,
    /// The mailboxes' Postgres (`postgres://user:pass@host/db`).
    pub database: Secret,
    pub consumers: Vec<ConsumerSettings>,
    pub incoming: Vec<IncomingSettings>,
    /// How often each job runs: copy matching events into the outbox, send
    /// due outbox entries, publish pending inbox entries.
    pub fill_interval: Duration,
    pub send_interval: Duration,
    pub process_interval: Duration,
    /// First and longest wait before an unacknowledged message is sent again.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Longest pause between reconnections (to the XMPP server, to Postgres).
    pub reconnect_max: Duration,
    /// Most entries one job run takes.
    pub batch: usize,
    /// Outbox entries beyond which the fill job waits (events stay in the
    /// channel's history meanwhile).
    pub max_outbox: i64,
    /// Inbox entries beyond which incoming messages are not stored nor
    /// acknowledged (the sender retries later).
    pub max_inbox: i64,
    /// How long processed inbox entries are kept to recognize repeats.
    pub keep_processed: Duration,
    /// Largest stanza read from the server; a larger one drops the link.
    pub max_stanza_bytes: usize,
}

/// Outgoing: events of (app, channel) passing `filter` go to `to`.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Unique within the component: names the cursor and message ids.
    pub name: String,
    pub app: String,
    pub channel: String,
    /// `None`: every event of the channel.
    pub filter: Option<Filter>,
    /// The remote JID.
    pub to: String,
    /// The data field naming the object; the event's key when absent.
    pub object_field: Option<String>,
    /// Data fields sent as records; every scalar field when empty.
    pub fields: Vec<String>,
    /// Local object id to the remote side's id.
    pub id_map: HashMap<String, String>,
}

/// Incoming: messages from `from` (a bare JID) published on (app, channel).
#[derive(Debug, Clone)]
pub struct IncomingSettings {
    pub from: String,
    pub app: String,
    pub channel: String,
    pub event_kind: String,
    /// Remote object id to the local id.
    pub id_map: HashMap<String, String>,
}

impl XmppSettings {
    /// The incoming rule for a sender's bare JID.
    pub fn incoming_from(&self, bare: &str) -> Option<&IncomingSettings> {
        self.incoming.iter().find(|r| r.from == bare)
    }
}
