//! The MQTT source's settings, built from one `[[sources.mqtt]]` by the
//! config loader (which has already checked them).

use std::time::Duration;

use crate::source::postgres::Template;

/// One broker connection and the filters it subscribes.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// The MQTT client id; its session (subscriptions, messages not yet
    /// acknowledged) is kept by the broker across reconnections.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Subscribe as `$share/<group>/<filter>`, so that the gateways of one
    /// group receive each message once between them; `None`: plain filters.
    pub share_group: Option<String>,
    /// Longest pause between reconnection attempts.
    pub reconnect_max: Duration,
    pub topics: Vec<TopicSettings>,
    /// Apps whose device commands go through this connection.
    pub commands: Vec<super::commands::CommandSettings>,
}

/// How the messages under one filter become events.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    pub filter: String,
    pub app: String,
    pub channel: String,
    pub event_kind: String,
    /// Templates whose `{N}` is the topic's level N (from 0).
    pub keywords: Vec<Template>,
    pub key: Option<Template>,
    pub format: Format,
    /// JSON payloads: the top-level field holding the device's time (RFC
    /// 3339 or Unix seconds), published as the event's `time`.
    pub time_field: Option<String>,
    /// The device the topic names, seen at each message.
    pub device: Option<Template>,
    /// `format = "status"`: the payload is the device's `online` or
    /// `offline` status (its Last Will), not an event.
    pub status: bool,
}

/// What a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Any JSON value, published as it is.
    Json,
    /// A SenML pack (RFC 8428, JSON), published as its resolved records.
    Senml,
}

impl MqttSettings {
    /// What the source is called in logs, metrics and `/readyz`: its
    /// client id (never the URL, which may hold a password).
    pub fn name(&self) -> &str {
        &self.client_id
    }

    /// Every filter as subscribed: the topics' (shared when configured,
    /// but for statuses), then the command replies' (never shared: each
    /// gateway reads the replies to its own commands, docs/devices.md).
    /// A status (`format = "status"`, typically a Last Will) must reach
    /// every gateway: each that holds the device lets it go, so the last
    /// one announces it offline; in a share group it would reach one,
    /// and a device whose messages the group spread over several
    /// gateways would stay online on the others until found silent. A
    /// status is never an event, so hearing it on every gateway doubles
    /// nothing.
    pub fn subscriptions(&self) -> Vec<String> {
        let topics = self.topics.iter().map(|t| {
            if t.status {
                t.filter.clone()
            } else {
                self.subscription(&t.filter)
            }
        });
        let replies = self.commands.iter().map(|c| c.reply_filter());
        topics.chain(replies).collect()
    }

    /// The filter as subscribed (`$share/<group>/...` when shared).
    pub fn subscription(&self, filter: &str) -> String {
        match &self.share_group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter.to_string(),
        }
    }
}
