//! `[[sources.mqtt]]` (with its `[[sources.mqtt.topics]]`): an MQTT broker
//! whose messages become events (OPERATING.md "MQTT source"). Checks what
//! can be checked without connecting: the URL, filters (valid, not
//! overlapping), apps, channels, kinds, templates (`{N}` levels only).

use std::time::Duration;

use chouquette_core::publication::valid_name;
use serde::Deserialize;

use super::apps::AppConfig;
use super::problem::Problems;
use super::value::duration;
use crate::source::mqtt::{Format, MqttSettings, TopicSettings, topic};
use crate::source::postgres::Template;

/// `[[sources.mqtt]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://[user:password@]host[:port]` (1883 by default).
    pub url: String,
    /// The MQTT client id; default `chouquette-<node id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Shared subscription group (`$share/<group>/<filter>`): the gateways
    /// of one group get each message once between them. `""`: plain
    /// subscriptions (every gateway gets every message).
    #[serde(default = "default_group")]
    pub share_group: String,
    /// Longest pause between reconnection attempts.
    #[serde(default = "default_reconnect", deserialize_with = "duration")]
    pub reconnect_max: Duration,
    #[serde(default)]
    pub topics: Vec<MqttTopicConfig>,
    /// Device commands through this broker (`config/mqtt_commands.rs`).
    #[serde(default)]
    pub commands: Vec<super::mqtt_commands::MqttCommandConfig>,
}

/// `[[sources.mqtt.topics]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTopicConfig {
    pub filter: String,
    pub app: String,
    pub channel: String,
    pub event_kind: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "default_format")]
    pub format: String,
    /// JSON payloads: the field holding the device time (docs/devices.md).
    #[serde(default)]
    pub time_field: Option<String>,
    /// Optional: the device the topic names (`"{1}"`), seen at each
    /// message (docs/devices.md, "Liveness").
    #[serde(default)]
    pub device: Option<String>,
}

fn default_group() -> String {
    "chouquette".into()
}
fn default_reconnect() -> Duration {
    Duration::from_secs(5)
}
fn default_format() -> String {
    "json".into()
}

/// Host, port and the credentials of an `mqtt://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

/// Decodes `%XX` escapes (credentials in a URL).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_url(url: &str) -> Result<Url, String> {
    if url.starts_with("mqtts://") {
        return Err(
            "mqtts:// (TLS) is not supported: use mqtt:// to a broker on a trusted \
                    network or through a local TLS tunnel (docs/sources/mqtt.md)"
                .into(),
        );
    }
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or("the url must start with mqtt://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err("the url has no path or query: mqtt://[user:password@]host[:port]".into());
    }
    let (credentials, address) = match rest.rsplit_once('@') {
        Some((c, a)) => (Some(c), a),
        None => (None, rest),
    };
    let (username, password) = match credentials {
        None => (None, None),
        Some(c) => {
            let (user, pass) = match c.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (c, None),
            };
            let bad = || "bad %-escape in the url's credentials".to_string();
            let user = percent_decode(user).ok_or_else(bad)?;
            let pass = pass
                .map(|p| percent_decode(p).ok_or_else(bad))
                .transpose()?;
            (Some(user), pass)
        }
    };
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("bad port `{p}` in the url"))?,
        ),
        _ => (address, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the url has no host".into());
    }
    Ok(Url {
        host: host.to_string(),
        port,
        username,
        password,
    })
}

/// A template whose placeholders are all topic levels (`{0}`, `{1}`...).
fn level_template(text: &str) -> Result<Template, String> {
    let template = Template::parse(text).map_err(|e| e.to_string())?;
    if template.columns().any(|c| c.parse::<usize>().is_err()) {
        return Err("placeholders are topic levels: {0}, {1}, ...".into());
    }
    Ok(template)
}

impl MqttConfig {
    pub(super) fn problems(&self, apps: &[AppConfig], out: &mut Problems<'_>) {
        // Never the whole URL in a message: it may hold a password.
        let at = "[[sources.mqtt]]";
        match parse_url(&self.url) {
            Err(e) => out.at("url", format!("mqtt `url`: {e}")),
            Ok(url) => {
                if url.username.is_some() && self.username.is_some() {
                    out.at(
                        "url",
                        "mqtt credentials are given both in `url` and as `username`".into(),
                    );
                }
            }
        }
        if self.password.is_some() && self.username.is_none() {
            out.at("password", "mqtt `password` needs `username`".into());
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 256)
        {
            out.at(
                "client_id",
                "mqtt `client_id` must be 1 to 256 bytes".into(),
            );
        }
        if !self.share_group.is_empty()
            && (self.share_group.contains(['/', '+', '#']) || !valid_name(&self.share_group))
        {
            out.at(
                "share_group",
                format!(
                    "mqtt `share_group` `{}` must be a name without `/`, `+`, `#`",
                    self.share_group
                ),
            );
        }
        if self.reconnect_max < Duration::from_millis(100) {
            out.at(
                "reconnect_max",
                "mqtt `reconnect_max` must be at least 100ms".into(),
            );
        }
        if self.topics.is_empty() && self.commands.is_empty() {
            out.at(
                at,
                "[[sources.mqtt]] needs at least one [[sources.mqtt.topics]] or [[sources.mqtt.commands]]".into(),
            );
        }
        for (i, t) in self.topics.iter().enumerate() {
            t.problems(apps, out);
            for other in &self.topics[..i] {
                if topic::overlap(&t.filter, &other.filter) {
                    out.at(
                        &format!("\"{}\"", t.filter),
                        format!(
                            "mqtt filters `{}` and `{}` overlap: a topic would have two mappings",
                            other.filter, t.filter
                        ),
                    );
                }
            }
        }
    }

    /// The settings (the config was checked); `index` tells apart the
    /// default client ids of several sources.
    pub(super) fn build(&self, node_id: &str, index: usize) -> MqttSettings {
        let url = parse_url(&self.url).unwrap_or(Url {
            host: String::new(),
            port: 1883,
            username: None,
            password: None,
        });
        let client_id = self.client_id.clone().unwrap_or_else(|| match index {
            0 => format!("chouquette-{node_id}"),
            n => format!("chouquette-{node_id}-{n}"),
        });
        MqttSettings {
            host: url.host,
            port: url.port,
            client_id,
            username: self.username.clone().or(url.username),
            password: self.password.clone().or(url.password),
            share_group: (!self.share_group.is_empty()).then(|| self.share_group.clone()),
            reconnect_max: self.reconnect_max,
            topics: self.topics.iter().map(MqttTopicConfig::build).collect(),
            commands: self.commands.iter().map(|c| c.build()).collect(),
        }
    }
}

impl MqttTopicConfig {
    fn problems(&self, apps: &[AppConfig], out: &mut Problems<'_>) {
        let at = format!("\"{}\"", self.filter);
        let filter = &self.filter;
        if !topic::valid_filter(filter) {
            out.at(&at, format!("mqtt filter `{filter}` is not a valid MQTT topic filter (`+` and `#` alone in their level, `#` last; no `$share/`: see share_group)"));
        }
        if !apps.iter().any(|a| a.id == self.app) {
            out.at(
                &at,
                format!("mqtt filter `{filter}`: unknown app `{}`", self.app),
            );
        }
        if !valid_name(&self.channel) {
            out.at(
                &at,
                format!(
                    "mqtt filter `{filter}`: invalid channel name `{}`",
                    self.channel
                ),
            );
        }
        if !valid_name(&self.event_kind) || self.event_kind == "*" {
            out.at(
                &at,
                format!(
                    "mqtt filter `{filter}`: invalid event kind `{}`",
                    self.event_kind
                ),
            );
        }
        if self.format != "json" && self.format != "senml" && self.format != "status" {
            out.at(
                &at,
                format!(
                    "mqtt filter `{filter}`: `format` is \"json\", \"senml\" or \"status\", not `{}`",
                    self.format
                ),
            );
        }
        self.device_problems(apps, out);
        for keyword in &self.keywords {
            let named = keyword
                .split_once(':')
                .is_some_and(|(name, _)| valid_name(name));
            if let Err(e) = level_template(keyword) {
                out.at(
                    &format!("\"{keyword}\""),
                    format!("mqtt keyword template `{keyword}`: {e}"),
                );
            } else if !named {
                out.at(
                    &format!("\"{keyword}\""),
                    format!("mqtt keyword template `{keyword}` must be `name:value`"),
                );
            }
        }
        if let Some(key) = &self.key
            && let Err(e) = level_template(key)
        {
            out.at(
                &format!("\"{key}\""),
                format!("mqtt key template `{key}`: {e}"),
            );
        }
    }

    /// `device` is a topic-level template; `format = "status"` needs it,
    /// and either needs the app to have `[apps.devices]`.
    fn device_problems(&self, apps: &[AppConfig], out: &mut Problems<'_>) {
        let filter = &self.filter;
        let at = format!("\"{filter}\"");
        if let Some(device) = &self.device
            && let Err(e) = level_template(device)
        {
            out.at(
                &format!("\"{device}\""),
                format!("mqtt device template `{device}`: {e}"),
            );
        }
        if self.format == "status" && self.device.is_none() {
            out.at(
                &at,
                format!("mqtt filter `{filter}`: `format = \"status\"` needs `device`"),
            );
        }
        let has_devices = apps.iter().any(|a| a.id == self.app && a.devices.is_some());
        if self.device.is_some() && !has_devices {
            out.at(
                &at,
                format!(
                    "mqtt filter `{filter}`: `device` needs `[apps.devices]` in app `{}`",
                    self.app
                ),
            );
        }
    }

    fn build(&self) -> TopicSettings {
        let parse = |t: &String| level_template(t).ok();
        TopicSettings {
            filter: self.filter.clone(),
            app: self.app.clone(),
            channel: self.channel.clone(),
            event_kind: self.event_kind.clone(),
            keywords: self.keywords.iter().filter_map(parse).collect(),
            key: self.key.as_ref().and_then(parse),
            format: if self.format == "senml" {
                Format::Senml
            } else {
                Format::Json
            },
            time_field: self.time_field.clone(),
            device: self.device.as_ref().and_then(parse),
            status: self.format == "status",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_credentials() {
        assert_eq!(
            parse_url("mqtt://gw:p%40ss@broker.local:1884"),
            Ok(Url {
                host: "broker.local".into(),
                port: 1884,
                username: Some("gw".into()),
                password: Some("p@ss".into()),
            })
        );
        let plain = parse_url("mqtt://127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.username),
            ("127.0.0.1", 1883, None)
        );
        let v6 = parse_url("mqtt://[::1]:1885").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1885));
        assert!(parse_url("mqtts://broker").is_err_and(|e| e.contains("TLS")));
        assert!(parse_url("http://broker").is_err());
        assert!(parse_url("mqtt://broker:x").is_err());
        assert!(parse_url("mqtt://broker/path").is_err());
        assert!(parse_url("mqtt://").is_err());
    }

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
url = "mqtt://gw:secret@127.0.0.1:1883"

[[sources.mqtt.topics]]
filter = "devices/+/telemetry"
app = "bluelib"
channel = "devices"
event_kind = "telemetry"
keywords = ["device:{1}"]
key = "device:{1}"
format = "senml"
"#;

    #[test]
    fn a_valid_section_loads_and_builds() {
        assert_eq!(problems(SECTION), Vec::<String>::new());
        let text = format!("{}{SECTION}", chouquette_testkit::BASE_CONFIG);
        let config = crate::config::Config::from_toml(&text, std::iter::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let settings = config.sources.mqtt_settings("n1");
        assert_eq!(settings.len(), 1);
        let s = &settings[0];
        assert_eq!(
            (s.host.as_str(), s.port, s.client_id.as_str()),
            ("127.0.0.1", 1883, "chouquette-n1")
        );
        assert_eq!(
            (s.username.as_deref(), s.password.as_deref()),
            (Some("gw"), Some("secret"))
        );
        assert_eq!(
            s.subscription("devices/+/telemetry"),
            "$share/chouquette/devices/+/telemetry"
        );
        assert_eq!(s.topics[0].format, Format::Senml);
    }

    #[test]
    fn bad_sections_are_refused_without_showing_the_password() {
        let cases = [
            (SECTION.replace("mqtt://", "mqtts://"), "TLS"),
            (
                SECTION.replace("\"bluelib\"", "\"nope\""),
                "unknown app `nope`",
            ),
            (SECTION.replace("{1}\"]", "{uid}\"]"), "topic levels"),
            (SECTION.replace("senml", "xml"), "`format`"),
            (
                SECTION.replace("devices/+/telemetry", "devices/#/x"),
                "not a valid MQTT topic filter",
            ),
            (
                SECTION.replace("url =", "share_group = \"a/b\"\nurl ="),
                "share_group",
            ),
            (
                format!(
                    "{SECTION}{}",
                    &SECTION[SECTION.find("[[sources.mqtt.topics]]").unwrap_or(0)..]
                        .replace("devices/+/telemetry", "devices/D1/#")
                ),
                "overlap",
            ),
        ];
        for (text, wanted) in cases {
            let found = problems(&text);
            assert!(
                found.iter().any(|p| p.contains(wanted)),
                "{wanted}: {found:?}"
            );
            assert!(found.iter().all(|p| !p.contains("secret")), "{found:?}");
        }
    }

    #[test]
    fn templates_read_topic_levels_only() {
        assert!(level_template("device:{1}").is_ok());
        assert!(level_template("device:{uid}").is_err());
        assert!(level_template("device:{1").is_err());
    }
}
