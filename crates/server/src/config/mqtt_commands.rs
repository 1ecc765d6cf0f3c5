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

#[cfg(test)]
mod tests {
    fn problems(section: &str) -> Vec<String> {
        let text = format!("{}{section}", chouquette_testkit::BASE_CONFIG);
        match crate::config::Config::from_toml(&text, std::iter::empty()) {
            Ok(_) => Vec::new(),
            Err(crate::config::ConfigError::Invalid(p)) => {
                p.into_iter().map(|p| p.message).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    const SECTION: &str = r#"
[[sources.mqtt]]
url = "mqtt://127.0.0.1:1883"

[[sources.mqtt.commands]]
app = "bluelib"
command_topic = "devices/{device}/commands"
reply_topic = "devices/{device}/replies"
"#;

    #[test]
    fn a_source_with_only_commands_loads_and_builds() {
        assert_eq!(problems(SECTION), Vec::<String>::new());
        let text = format!("{}{SECTION}", chouquette_testkit::BASE_CONFIG);
        let config = crate::config::Config::from_toml(&text, std::iter::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let settings = config.sources.mqtt_settings("n1");
        assert_eq!(settings[0].commands.len(), 1);
        assert_eq!(settings[0].subscriptions(), vec!["devices/+/replies"]);
    }

    #[test]
    fn bad_command_routes_are_refused() {
        let telemetry = "\n[[sources.mqtt.topics]]\nfilter = \"devices/#\"\napp = \"bluelib\"\n\
                         channel = \"devices\"\nevent_kind = \"telemetry\"\n";
        let cases = [
            (
                SECTION.replace("app = \"bluelib\"", "app = \"nope\""),
                "unknown app `nope`",
            ),
            (
                SECTION.replace("devices/{device}/commands", "devices/commands"),
                "exactly one level",
            ),
            (
                SECTION.replace("devices/{device}/replies", "devices/+/{device}"),
                "no `+`",
            ),
            (format!("{SECTION}{telemetry}"), "overlaps the filter"),
            (
                format!("{SECTION}{}", SECTION.replace("replies", "answers")),
                "has two [[sources.mqtt.commands]]",
            ),
        ];
        for (text, wanted) in cases {
            let found = problems(&text);
            assert!(
                found.iter().any(|p| p.contains(wanted)),
                "{wanted}: {found:?}"
            );
        }
    }
}
