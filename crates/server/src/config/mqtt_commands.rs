//! `[[sources.mqtt.commands]]`: the command and reply topics of one app's
//! devices on an MQTT source (docs/devices.md "Commands"). Checks the
//! templates, the app, that no reply filter could take a topic another
//! filter of the source maps, and that each app has one command route.

use serde::Deserialize;

use super::apps::AppConfig;
use super::mqtt::MqttConfig;
use super::problem::Problems;
use crate::source::mqtt::commands::{CommandSettings, template_problem};
use crate::source::mqtt::topic;

/// `[[sources.mqtt.commands]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttCommandConfig {
    /// The app whose devices are commanded here.
    pub app: String,
    /// Where a command to a device is published: `devices/{device}/commands`.
    pub command_topic: String,
    /// Where devices answer, `{device}` read from its level:
    /// `devices/{device}/replies` (subscribed as `devices/+/replies`).
    pub reply_topic: String,
}

impl MqttCommandConfig {
    pub(super) fn build(&self) -> CommandSettings {
        CommandSettings {
            app: self.app.clone(),
            command_topic: self.command_topic.clone(),
            reply_topic: self.reply_topic.clone(),
        }
    }

    fn problems(&self, source: &MqttConfig, apps: &[AppConfig], out: &mut Problems<'_>) {
        let at = format!("\"{}\"", self.reply_topic);
        if !apps.iter().any(|a| a.id == self.app) {
            out.at(&at, format!("mqtt commands: unknown app `{}`", self.app));
        }
        for (key, template) in [
            ("command_topic", &self.command_topic),
            ("reply_topic", &self.reply_topic),
        ] {
            if let Some(why) = template_problem(template) {
                out.at(
                    &format!("\"{template}\""),
                    format!("mqtt commands `{key}` `{template}` {why}"),
                );
            }
        }
        let replies = self.build().reply_filter();
        for t in &source.topics {
            if topic::overlap(&replies, &t.filter) {
                out.at(
                    &at,
                    format!(
                        "mqtt reply topic `{}` overlaps the filter `{}`: a reply would also be an event",
                        self.reply_topic, t.filter
                    ),
                );
            }
        }
    }
}

/// Every problem of the sources' command routes: each route's own, and an
/// app commanded through two routes (which one would a command take?) or
/// two routes of one source whose replies overlap.
pub(super) fn problems(sources: &[MqttConfig], apps: &[AppConfig], out: &mut Problems<'_>) {
    let mut seen: Vec<&str> = Vec::new();
    for source in sources {
        for (i, command) in source.commands.iter().enumerate() {
            command.problems(source, apps, out);
            if seen.contains(&command.app.as_str()) {
                out.at(
                    &format!("\"{}\"", command.reply_topic),
                    format!(
                        "mqtt commands: app `{}` has two [[sources.mqtt.commands]]",
                        command.app
                    ),
                );
            }
            seen.push(&command.app);
            let filter = command.build().reply_filter();
            for other in &source.commands[..i] {
                if topic::overlap(&filter, &other.build().reply_filter()) {
                    out.at(
                        &format!("\"{}\"", command.reply_topic),
                        format!(
                            "mqtt reply topics `{}` and `{}` overlap",
                            other.reply_topic, command.reply_topic
                        ),
                    );
                }
            }
        }
    }
}
