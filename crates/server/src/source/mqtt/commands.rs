//! Commands to MQTT devices (docs/devices.md "Commands"): the gateway
//! publishes a command on the device's command topic and reads its answer
//! on the device's reply topic, through the connection of the MQTT source
//! whose `[[sources.mqtt.commands]]` names the app.
//!
//! The payloads, both ways (JSON):
//!
//! - command, gateway → device, QoS 1, not retained:
//!   `{"id": "<correlation id>", "method": "...", "args": [...],
//!   "kwargs": {...}, "reply_to": "<the device's reply topic>",
//!   "expires": "<ISO 8601 UTC>"}`
//! - reply, device → gateway: `{"id": "<the same id>", "result": <any>}`
//!   or `{"id": "...", "error": {"code": "...", "message": "..."}}`.
//!
//! Reply filters are subscribed plainly, never in the source's share
//! group: every gateway reads every reply and keeps those of its own
//! commands (see [`crate::device_commands::waiting`]). Replies are one per
//! command, so that costs little, and the answer needs no hop between
//! gateways.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use chouquette_core::user_calls::{ClientAnswer, cut_message, valid_code};
use rumqttc::{AsyncClient, Publish, QoS};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::status::Status;
use super::topic;
use crate::device_commands::waiting::{Dropped, Waiting};

/// The placeholder of the device id in command and reply topics.
pub const DEVICE: &str = "{device}";

/// One app's command and reply topics (`[[sources.mqtt.commands]]`).
#[derive(Debug, Clone)]
pub struct CommandSettings {
    pub app: String,
    /// `devices/{device}/commands`: one level is exactly `{device}`.
    pub command_topic: String,
    /// `devices/{device}/replies`: one level is exactly `{device}`.
    pub reply_topic: String,
}

/// Why a topic template is not usable.
pub fn template_problem(template: &str) -> Option<&'static str> {
    let levels: Vec<&str> = template.split('/').collect();
    if levels.iter().filter(|l| **l == DEVICE).count() != 1 {
        return Some("must have exactly one level that is `{device}`");
    }
    if template.contains('\0') || template.starts_with('$') {
        return Some("must not start with `$` nor hold NUL");
    }
    let odd = levels
        .iter()
        .any(|l| *l != DEVICE && l.contains(['+', '#', '{', '}']));
    odd.then_some("no `+`, `#`, `{` or `}` outside the `{device}` level")
}

/// Whether `device` can stand for one topic level (and never make a
/// `$` topic, which brokers keep for themselves).
pub fn valid_device_level(device: &str) -> bool {
    !device.is_empty() && !device.starts_with('$') && !device.contains(['/', '+', '#', '\0'])
}

impl CommandSettings {
    /// The filter of every device's replies (`{device}` as `+`).
    pub fn reply_filter(&self) -> String {
        self.reply_topic.replace(DEVICE, "+")
    }

    fn reply_level(&self) -> usize {
        self.reply_topic
            .split('/')
            .position(|l| l == DEVICE)
            .unwrap_or(0)
    }

    /// The device whose reply topic `topic` is, if it is one.
    fn replying_device<'t>(&self, topic: &'t str) -> Option<&'t str> {
        if !topic::matches(&self.reply_filter(), topic) {
            return None;
        }
        topic.split('/').nth(self.reply_level())
    }
}

/// Why a command was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The source is not connected and subscribed.
    #[error("the MQTT broker is not connected")]
    NotConnected,
    /// The client's request queue is full or closed.
    #[error("the MQTT client refused the command: {0}")]
    Client(String),
}

/// A command to be published.
#[derive(Debug)]
pub struct MqttCommand<'a> {
    pub app: &'a str,
    pub device: &'a str,
    pub id: &'a str,
    pub method: &'a str,
    pub args: &'a [Value],
    pub kwargs: &'a Map<String, Value>,
    pub expires: SystemTime,
}

/// One MQTT source's side of commands: its client, once it runs, and the
/// apps whose commands it carries.
#[derive(Debug)]
pub struct CommandLink {
    routes: Vec<CommandSettings>,
    client: OnceLock<AsyncClient>,
    status: Arc<Status>,
    waiting: Arc<Waiting>,
}

impl CommandLink {
    pub(super) fn new(
        routes: Vec<CommandSettings>,
        status: Arc<Status>,
        waiting: Arc<Waiting>,
    ) -> CommandLink {
        CommandLink {
            routes,
            client: OnceLock::new(),
            status,
            waiting,
        }
    }

    /// The apps whose commands go through this link.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.app.as_str())
    }

    /// The source's client, once it runs.
    pub(super) fn attach(&self, client: AsyncClient) {
        let _ = self.client.set(client);
    }

    /// Publishes `command` on its device's command topic, QoS 1.
    pub fn publish(&self, command: &MqttCommand<'_>) -> Result<(), PublishError> {
        let route = self.routes.iter().find(|r| r.app == command.app);
        let (Some(route), Some(client)) = (route, self.client.get()) else {
            return Err(PublishError::NotConnected);
        };
        if !self.status.is_up() {
            return Err(PublishError::NotConnected);
        }
        let payload = json!({
            "id": command.id,
            "method": command.method,
            "args": command.args,
            "kwargs": command.kwargs,
            "reply_to": route.reply_topic.replace(DEVICE, command.device),
            "expires": chouquette_protocol::server::timestamp(command.expires),
        });
        let topic = route.command_topic.replace(DEVICE, command.device);
        client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .map_err(|e| PublishError::Client(e.to_string()))
    }

    /// Takes `publish` if it is on a reply topic (delivered to its command,
    /// or counted and dropped): `true` when it was a reply.
    pub(super) fn take_reply(&self, publish: &Publish) -> bool {
        let topic = publish.topic.as_str();
        let Some((route, device)) = self
            .routes
            .iter()
            .find_map(|r| Some((r, r.replying_device(topic)?)))
        else {
            return false;
        };
        match parse_reply(&publish.payload) {
            Some((id, answer)) => self.waiting.reply(&route.app, device, &id, answer),
            None => self.waiting.drop_reply(Dropped::Invalid),
        }
        true
    }
}

/// `{"id", "result"}` or `{"id", "error": {"code", "message"}}`; the
/// result is kept as the device wrote it.
fn parse_reply(payload: &[u8]) -> Option<(String, ClientAnswer)> {
    #[derive(Deserialize)]
    struct Error {
        code: String,
        #[serde(default)]
        message: String,
    }
    let mut fields: std::collections::HashMap<String, Box<RawValue>> =
        serde_json::from_slice(payload).ok()?;
    let id: String = serde_json::from_str(fields.remove("id")?.get()).ok()?;
    match (fields.remove("result"), fields.remove("error")) {
        (Some(result), None) => Some((id, ClientAnswer::Result(result))),
        (None, Some(error)) => {
            let error: Error = serde_json::from_str(error.get()).ok()?;
            valid_code(&error.code).then(|| {
                let message = cut_message(error.message);
                (
                    id,
                    ClientAnswer::Error {
                        code: error.code,
                        message,
                    },
                )
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_need_one_device_level() {
        assert_eq!(template_problem("devices/{device}/commands"), None);
        for bad in [
            "devices/commands",
            "devices/{device}/{device}",
            "devices/d{device}/x",
            "devices/+/{device}",
            "$SYS/{device}",
        ] {
            assert!(template_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn replies_name_their_device_and_parse_both_ways() {
        let route = CommandSettings {
            app: "a".into(),
            command_topic: "devices/{device}/commands".into(),
            reply_topic: "devices/{device}/replies".into(),
        };
        assert_eq!(route.reply_filter(), "devices/+/replies");
        assert_eq!(route.replying_device("devices/D1/replies"), Some("D1"));
        assert_eq!(route.replying_device("devices/D1/telemetry"), None);
        let (id, answer) = parse_reply(br#"{"id":"x","result":null}"#).expect("a result");
        assert_eq!(id, "x");
        assert!(matches!(answer, ClientAnswer::Result(r) if r.get() == "null"));
        let (_, answer) = parse_reply(br#"{"id":"x","error":{"code":"busy"}}"#).expect("an error");
        assert_eq!(
            answer,
            ClientAnswer::Error {
                code: "busy".into(),
                message: String::new()
            }
        );
        for junk in [
            &b"nope"[..],
            br#"{"result":1}"#,
            br#"{"id":1,"result":1}"#,
            br#"{"id":"x"}"#,
            br#"{"id":"x","result":1,"error":{"code":"a"}}"#,
            br#"{"id":"x","error":{"code":"not valid"}}"#,
        ] {
            assert!(parse_reply(junk).is_none(), "{junk:?}");
        }
    }
}
