//! `[[sources.xmpp]]` (with its `[[sources.xmpp.consumers]]` and
//! `[[sources.xmpp.incoming]]`): the XMPP federation (docs/federation.md).
//! Checks what can be checked without connecting: the server address, the
//! component domain, the database URL, apps, channels, filters, names,
//! bounds. The secret and the database URL are [`Secret`]s: `Debug` of
//! this section never shows them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chouquette_core::filter::Filter;
use chouquette_core::publication::valid_name;
use serde::Deserialize;

use super::apps::AppConfig;
use super::problem::Problems;
use super::value::duration;
use crate::source::xmpp::{ConsumerSettings, IncomingSettings, Secret, XmppSettings};

/// `[[sources.xmpp]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// The XMPP server's component listener, `host:port`.
    #[serde(default = "default_server")]
    pub server: String,
    /// The component's domain (its JID), as the server's config names it.
    pub component: String,
    /// The component's shared secret.
    pub secret: Secret,
    /// The mailboxes' database, `postgres://user:password@host:port/db`.
    pub database: Secret,
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub fill_interval: Duration,
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub send_interval: Duration,
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub process_interval: Duration,
    #[serde(default = "default_retry_initial", deserialize_with = "duration")]
    pub retry_initial: Duration,
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_max: Duration,
    #[serde(default = "default_reconnect", deserialize_with = "duration")]
    pub reconnect_max: Duration,
    #[serde(default = "default_batch")]
    pub batch: usize,
    #[serde(default = "default_max_box")]
    pub max_outbox: i64,
    #[serde(default = "default_max_box")]
    pub max_inbox: i64,
    #[serde(default = "default_keep", deserialize_with = "duration")]
    pub keep_processed: Duration,
    #[serde(default = "default_max_stanza")]
    pub max_stanza_bytes: usize,
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    #[serde(default)]
    pub incoming: Vec<IncomingConfig>,
}

/// `[[sources.xmpp.consumers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub name: String,
    pub app: String,
    pub channel: String,
    /// A subscription filter (docs/protocol.md "Filters"); every event when absent.
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    pub to: String,
    #[serde(default)]
    pub object_field: Option<String>,
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default)]
    pub id_map: HashMap<String, String>,
}

/// `[[sources.xmpp.incoming]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingConfig {
    pub from: String,
    pub app: String,
    pub channel: String,
    #[serde(default = "default_kind")]
    pub event_kind: String,
    #[serde(default)]
    pub id_map: HashMap<String, String>,
}

fn default_server() -> String {
    "127.0.0.1:5347".into()
}
fn default_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_reconnect() -> Duration {
    Duration::from_secs(5)
}
fn default_batch() -> usize {
    100
}
fn default_max_box() -> i64 {
    100_000
}
fn default_keep() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_max_stanza() -> usize {
    256 * 1024
}
fn default_kind() -> String {
    "senml".into()
}

/// A JID as the federation uses it: `domain` or `user@domain`, no resource,
/// no spaces or quotes.
fn valid_jid(jid: &str) -> bool {
    !jid.is_empty()
        && jid.len() <= 1023
        && !jid.contains('/')
        && jid
            .chars()
            .all(|c| !c.is_whitespace() && !"\"'<>&".contains(c))
        && jid.rsplit('@').next().is_some_and(|d| !d.is_empty())
}

impl XmppConfig {
    /// Every problem of this section, at its line.
    pub(super) fn problems(&self, apps: &[AppConfig], out: &mut Problems<'_>) {
        let at = format!("\"{}\"", self.component);
        if !valid_jid(&self.component) || self.component.contains('@') {
            out.at(
                &at,
                format!("xmpp `component` `{}` must be a domain", self.component),
            );
        }
        if self
            .server
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            out.at(
                &at,
                format!("xmpp `server` `{}` must be host:port", self.server),
            );
        }
        if self.secret.expose().is_empty() {
            out.at(&at, "xmpp `secret` must not be empty".into());
        }
        if self
            .database
            .expose()
            .parse::<tokio_postgres::Config>()
            .is_err()
        {
            out.at(
                &at,
                "xmpp `database` is not a connection string like postgres://user@host:5432/db"
                    .into(),
            );
        }
        let zero = [
            self.fill_interval,
            self.send_interval,
            self.process_interval,
            self.retry_initial,
        ]
        .iter()
        .any(Duration::is_zero);
        if zero
            || self.batch == 0
            || self.max_outbox <= 0
            || self.max_inbox <= 0
            || self.max_stanza_bytes < 1024
        {
            out.at(&at, "xmpp intervals, `retry_initial`, `batch`, `max_outbox` and `max_inbox` must be above 0, `max_stanza_bytes` at least 1024".into());
        }
        if self.retry_max < self.retry_initial {
            out.at(
                &at,
                "xmpp `retry_max` must be at least `retry_initial`".into(),
            );
        }
        let known = |app: &str, channel: &str, out: &mut Problems<'_>| {
            if !apps.iter().any(|a| a.id == app) {
                out.at(&format!("\"{app}\""), format!("xmpp: unknown app `{app}`"));
            }
            if !valid_name(channel) {
                out.at(
                    &format!("\"{channel}\""),
                    format!("xmpp: invalid channel name `{channel}`"),
                );
            }
        };
        let mut names = HashSet::new();
        for c in &self.consumers {
            known(&c.app, &c.channel, out);
            let at = format!("\"{}\"", c.name);
            if !valid_name(&c.name) || c.name.contains('/') {
                out.at(
                    &at,
                    format!(
                        "xmpp consumer name `{}`: letters, digits and `_-.:@`",
                        c.name
                    ),
                );
            }
            if !names.insert(&c.name) {
                out.at(&at, format!("xmpp consumer `{}` is listed twice", c.name));
            }
            if !valid_jid(&c.to) {
                out.at(
                    &format!("\"{}\"", c.to),
                    format!("xmpp consumer `to` `{}` is not a bare JID", c.to),
                );
            }
            if let Some(filter) = &c.filter
                && let Err(e) = Filter::parse(filter)
            {
                out.at(&at, format!("xmpp consumer `{}` filter: {e}", c.name));
            }
        }
        let mut senders = HashSet::new();
        for r in &self.incoming {
            known(&r.app, &r.channel, out);
            let at = format!("\"{}\"", r.from);
            if !valid_jid(&r.from) {
                out.at(
                    &at,
                    format!("xmpp incoming `from` `{}` is not a bare JID", r.from),
                );
            }
            if !senders.insert(&r.from) {
                out.at(
                    &at,
                    format!("xmpp incoming `from` `{}` is listed twice", r.from),
                );
            }
            if !valid_name(&r.event_kind) {
                out.at(
                    &at,
                    format!("xmpp incoming: invalid event kind `{}`", r.event_kind),
                );
            }
        }
    }

    /// The typed settings (the config is valid).
    pub fn build(&self) -> XmppSettings {
        XmppSettings {
            server: self.server.clone(),
            component: self.component.clone(),
            secret: self.secret.clone(),
            database: self.database.clone(),
            consumers: self
                .consumers
                .iter()
                .map(|c| ConsumerSettings {
                    name: c.name.clone(),
                    app: c.app.clone(),
                    channel: c.channel.clone(),
                    filter: c.filter.as_ref().and_then(|f| Filter::parse(f).ok()),
                    to: c.to.clone(),
                    object_field: c.object_field.clone(),
                    fields: c.fields.clone(),
                    id_map: c.id_map.clone(),
                })
                .collect(),
            incoming: self
                .incoming
                .iter()
                .map(|r| IncomingSettings {
                    from: r.from.clone(),
                    app: r.app.clone(),
                    channel: r.channel.clone(),
                    event_kind: r.event_kind.clone(),
                    id_map: r.id_map.clone(),
                })
                .collect(),
            fill_interval: self.fill_interval,
            send_interval: self.send_interval,
            process_interval: self.process_interval,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            reconnect_max: self.reconnect_max,
            batch: self.batch,
            max_outbox: self.max_outbox,
            max_inbox: self.max_inbox,
            keep_processed: self.keep_processed,
            max_stanza_bytes: self.max_stanza_bytes,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let config: XmppConfig = toml::from_str(
            r#"component = "a.example"
secret = "s3cr3t-value"
database = "postgres://u:pw-in-url@127.0.0.1/db""#,
        )
        .unwrap();
        let shown = format!("{config:?} {:?}", config.build());
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("pw-in-url"), "{shown}");
        assert!(shown.contains("a.example"));
    }

    #[test]
    fn jids_are_bare() {
        assert!(valid_jid("b.example"));
        assert!(valid_jid("org@b.example"));
        assert!(!valid_jid("org@b.example/res"));
        assert!(!valid_jid("a'b"));
        assert!(!valid_jid(""));
    }
}
