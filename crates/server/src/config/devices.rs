//! `[apps.devices]` and `[apps.devices.webhook]`: where an app's device
//! liveness events go (docs/devices.md, "Liveness").

use std::sync::Arc;
use std::time::Duration;

use chouquette_core::devices::DeviceSettings;
use chouquette_core::publication::valid_name;
use serde::Deserialize;

use super::problem::Problems;
use super::value::{duration, http_backend};

/// Default `max_devices`.
pub const DEFAULT_MAX_DEVICES: usize = 100_000;
/// Largest `max_devices` accepted (a tracked device costs about 100 bytes).
pub const MAX_MAX_DEVICES: usize = 10_000_000;
/// Longest webhook `timeout` accepted.
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// One app's `[apps.devices]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {
    /// The channel liveness events are published on.
    pub channel: String,
    /// An online device that sends nothing this long is announced silent.
    #[serde(default = "default_silent_after", deserialize_with = "duration")]
    pub silent_after: Duration,
    /// Most devices tracked; past it see docs/devices.md.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
    /// Also POST each liveness event, signed, to the backend.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// `[apps.devices.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path`, POSTed each liveness event.
    pub url: String,
    /// How long one POST may take (it is tried 3 times).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_silent_after() -> Duration {
    Duration::from_secs(300)
}

fn default_max_devices() -> usize {
    DEFAULT_MAX_DEVICES
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl DevicesConfig {
    /// The core's form, for app `app`.
    pub fn settings(&self) -> DeviceSettings {
        DeviceSettings {
            channel: self.channel.clone(),
            silent_after: self.silent_after,
            max_devices: self.max_devices,
        }
    }

    /// Its problems, for app `app` (`at` finds its line).
    pub(super) fn problems(&self, app: &str, at: &str, out: &mut Problems<'_>) {
        if !valid_name(&self.channel) {
            out.at(
                at,
                format!("app `{app}`: devices.channel is not a valid channel name"),
            );
        }
        if self.silent_after < Duration::from_secs(1) {
            out.at(
                at,
                format!("app `{app}`: devices.silent_after must be at least 1s"),
            );
        }
        if self.max_devices == 0 || self.max_devices > MAX_MAX_DEVICES {
            out.at(
                at,
                format!("app `{app}`: devices.max_devices must be 1 to {MAX_MAX_DEVICES}"),
            );
        }
        if let Some(webhook) = &self.webhook {
            let at = format!("\"{}\"", webhook.url);
            if let Err(message) = http_backend(&webhook.url, "http://host:port/path") {
                out.at(&at, format!("app `{app}`: devices.webhook.url {message}"));
            }
            if webhook.timeout.is_zero() || webhook.timeout > MAX_WEBHOOK_TIMEOUT {
                let max = MAX_WEBHOOK_TIMEOUT.as_secs();
                out.at(
                    &at,
                    format!(
                        "app `{app}`: devices.webhook.timeout must be over 0s and at most {max}s"
                    ),
                );
            }
        }
    }
}

/// Every app's device settings, for the node.
pub fn settings<'a>(
    apps: impl IntoIterator<Item = &'a super::AppConfig>,
) -> Vec<(Arc<str>, DeviceSettings)> {
    apps.into_iter()
        .filter_map(|a| Some((Arc::from(a.id.as_str()), a.devices.as_ref()?.settings())))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::time::Duration;

    const APP: &str = "[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n";

    #[test]
    fn devices_load_with_defaults() {
        let text = format!("{APP}[apps.devices]\nchannel = \"liveness\"\n");
        let config = Config::from_toml(&text, std::iter::empty()).expect("valid");
        let d = config.apps[0].devices.as_ref().expect("devices");
        assert_eq!(d.silent_after, Duration::from_secs(300));
        assert_eq!(d.max_devices, super::DEFAULT_MAX_DEVICES);
        assert!(d.webhook.is_none());
    }

    fn mqtt(app_extra: &str, mapping: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "{APP}{app_extra}[[sources.mqtt]]\nurl = \"mqtt://127.0.0.1:1883\"\n\
             [[sources.mqtt.topics]]\nfilter = \"devices/+/state\"\napp = \"a\"\n\
             channel = \"devices\"\nevent_kind = \"state\"\n{mapping}"
        );
        Config::from_toml(&text, std::iter::empty())
    }

    #[test]
    fn mqtt_device_mappings_need_devices_and_status_needs_a_device() {
        let devices = "[apps.devices]\nchannel = \"liveness\"\n";
        mqtt(devices, "device = \"{1}\"\nformat = \"status\"\n").expect("valid");
        let problems = |r: Result<Config, ConfigError>| match r {
            Err(ConfigError::Invalid(p)) => p.into_iter().map(|p| p.message).collect::<Vec<_>>(),
            other => panic!("expected problems, got {other:?}"),
        };
        let p = problems(mqtt("", "device = \"{1}\"\n"));
        assert!(
            p.iter().any(|m| m.contains("needs `[apps.devices]`")),
            "{p:?}"
        );
        let p = problems(mqtt(devices, "format = \"status\"\n"));
        assert!(p.iter().any(|m| m.contains("needs `device`")), "{p:?}");
        let p = problems(mqtt(devices, "device = \"{9\"\n"));
        assert!(
            p.iter().any(|m| m.contains("mqtt device template")),
            "{p:?}"
        );
    }

    #[test]
    fn bad_values_are_problems() {
        let text = format!(
            "{APP}[apps.devices]\nchannel = \"\"\nsilent_after = \"0s\"\nmax_devices = 0\n\
             [apps.devices.webhook]\nurl = \"ftp://x\"\n"
        );
        match Config::from_toml(&text, std::iter::empty()) {
            Err(ConfigError::Invalid(p)) => {
                let text: Vec<_> = p.iter().map(|p| p.message.clone()).collect();
                assert_eq!(text.len(), 4, "{text:?}");
                assert!(text.iter().all(|t| t.contains("devices.")), "{text:?}");
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }
}
