//! One MQTT message as an event: the filter it falls under picks the app,
//! channel and kind; its topic's levels fill the keyword and key templates;
//! its payload becomes `data` (JSON as is, SenML resolved).

use std::collections::HashMap;
use std::fmt::Write as _;

use chouquette_core::device_time::DeviceTime;
use chouquette_core::publication::NewEvent;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::config::{Format, TopicSettings};
use super::senml;
use super::status::Invalid;
use super::topic;

/// Why a message is not published, with what to log.
#[derive(Debug)]
pub struct Refused {
    pub reason: Invalid,
    pub detail: String,
}

fn refused(reason: Invalid, detail: impl Into<String>) -> Refused {
    Refused {
        reason,
        detail: detail.into(),
    }
}

/// The event for a message on `topic`, under the first of `topics` that
/// matches (the config allows no overlap, so there is one); `now` in Unix
/// seconds for SenML's relative times.
pub fn event(
    topics: &[TopicSettings],
    topic_name: &str,
    payload: &[u8],
    now: f64,
) -> Result<NewEvent, Refused> {
    let settings = topics
        .iter()
        .find(|t| topic::matches(&t.filter, topic_name))
        .ok_or_else(|| refused(Invalid::NoFilter, "no configured filter matches"))?;
    // Levels by number; an empty level counts as missing (`device:` is no keyword).
    let numbers: Vec<String> = (0..topic::levels(topic_name).len())
        .map(|n| n.to_string())
        .collect();
    let levels: HashMap<&str, &str> = numbers
        .iter()
        .map(String::as_str)
        .zip(topic::levels(topic_name))
        .filter(|(_, level)| !level.is_empty())
        .collect();
    let missing = || {
        refused(
            Invalid::MissingLevel,
            "a template reads a missing or empty topic level",
        )
    };
    let keywords = settings
        .keywords
        .iter()
        .map(|t| t.render(&levels).ok_or_else(missing))
        .collect::<Result<Vec<_>, _>>()?;
    let key = match &settings.key {
        Some(t) => Some(t.render(&levels).ok_or_else(missing)?),
        None => None,
    };
    let (data, id, time) = match settings.format {
        Format::Json => {
            let data: Box<RawValue> = serde_json::from_slice(payload)
                .map_err(|e| refused(Invalid::NotJson, e.to_string()))?;
            let time = match &settings.time_field {
                Some(field) => json_time(&data, field)?,
                None => None,
            };
            (data, None, time)
        }
        Format::Senml => {
            let resolved =
                senml::resolve(payload, now).map_err(|e| refused(Invalid::Senml, e.to_string()))?;
            let text = serde_json::to_string(&resolved.records)
                .map_err(|e| refused(Invalid::Senml, e.to_string()))?;
            let data =
                RawValue::from_string(text).map_err(|e| refused(Invalid::Senml, e.to_string()))?;
            // Absolute times: the same message always means the same
            // readings, so a redelivery is recognised as a duplicate; and
            // the latest of them is the device's time (relative times only
            // say "now", on our clock).
            (
                data,
                resolved
                    .absolute
                    .then(|| idempotency_id(topic_name, payload)),
                resolved
                    .absolute
                    .then(|| senml_time(&resolved.records))
                    .flatten(),
            )
        }
    };
    Ok(NewEvent {
        app_id: settings.app.clone(),
        channel: settings.channel.clone(),
        event_kind: settings.event_kind.clone(),
        keywords,
        key,
        data,
        id,
        time,
    })
}

/// The device time in a JSON payload's `field`: none when the payload has
/// no such field, refused when it is not a time.
fn json_time(data: &RawValue, field: &str) -> Result<Option<DeviceTime>, Refused> {
    let Ok(fields) = serde_json::from_str::<HashMap<&str, &RawValue>>(data.get()) else {
        return Ok(None);
    };
    let Some(given) = fields.get(field) else {
        return Ok(None);
    };
    serde_json::from_str::<DeviceTime>(given.get())
        .map(Some)
        .map_err(|e| refused(Invalid::BadTime, e.to_string()))
}

/// The latest record time `t` of resolved SenML records.
fn senml_time(records: &[serde_json::Value]) -> Option<DeviceTime> {
    records
        .iter()
        .filter_map(|r| r.get("t").and_then(serde_json::Value::as_f64))
        .filter_map(|t| DeviceTime::from_secs_f64(t).ok())
        .max()
}

/// `mqtt:` and 32 hex digits of SHA-256 over the topic and the payload.
fn idempotency_id(topic_name: &str, payload: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(topic_name.as_bytes());
    hash.update([0]);
    hash.update(payload);
    let digest = hash.finalize();
    let mut id = String::from("mqtt:");
    for byte in digest.iter().take(16) {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::postgres::Template;

    fn settings(format: Format) -> Vec<TopicSettings> {
        let t = |s: &str| Template::parse(s).unwrap_or_else(|e| panic!("{e}"));
        vec![TopicSettings {
            filter: "devices/+/telemetry/#".into(),
            app: "bluelib".into(),
            channel: "devices".into(),
            event_kind: "telemetry".into(),
            keywords: vec![t("device:{1}"), t("sensor:{3}")],
            key: Some(t("device:{1}")),
            format,
            time_field: Some("ts".into()),
            device: None,
            status: false,
        }]
    }

    #[test]
    fn topic_levels_fill_keywords_and_key() {
        let e = event(
            &settings(Format::Json),
            "devices/D1/telemetry/temp",
            b"{\"v\":1}",
            0.0,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(e.keywords, ["device:D1", "sensor:temp"]);
        assert_eq!(e.key.as_deref(), Some("device:D1"));
        assert_eq!(e.data.get(), "{\"v\":1}");
        assert_eq!(e.id, None);
        assert_eq!(e.time, None);
        let timed = event(
            &settings(Format::Json),
            "devices/D1/telemetry/temp",
            br#"{"v":1,"ts":1700000000.5}"#,
            0.0,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(timed.time.map(DeviceTime::millis), Some(1_700_000_000_500));
    }

    #[test]
    fn a_missing_level_or_bad_payload_is_refused() {
        let s = settings(Format::Json);
        let reason =
            |topic: &str, payload: &[u8]| event(&s, topic, payload, 0.0).err().map(|r| r.reason);
        assert_eq!(
            reason("devices/D1/telemetry", b"1"),
            Some(Invalid::MissingLevel)
        );
        assert_eq!(
            reason("devices//telemetry/x", b"1"),
            Some(Invalid::MissingLevel)
        );
        assert_eq!(
            reason("devices/D1/telemetry/x", b"{"),
            Some(Invalid::NotJson)
        );
        assert_eq!(reason("other/D1", b"1"), Some(Invalid::NoFilter));
        assert_eq!(
            reason("devices/D1/telemetry/x", br#"{"ts":"soon"}"#),
            Some(Invalid::BadTime)
        );
    }

    #[test]
    fn senml_with_absolute_times_gets_a_stable_id() {
        let s = settings(Format::Senml);
        let absolute = br#"[{"bn":"D1/","bt":1700000000,"n":"temp","v":20}]"#;
        let a =
            event(&s, "devices/D1/telemetry/t", absolute, 5.0).unwrap_or_else(|e| panic!("{e:?}"));
        let b =
            event(&s, "devices/D1/telemetry/t", absolute, 9.0).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(
            a.id.as_deref()
                .is_some_and(|id| id.starts_with("mqtt:") && id.len() == 37)
        );
        assert_eq!(a.id, b.id);
        let relative = br#"[{"n":"temp","v":20}]"#;
        let c =
            event(&s, "devices/D1/telemetry/t", relative, 5.0).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.id, None);
        assert_eq!(c.time, None);
        assert_eq!(a.time.map(DeviceTime::millis), Some(1_700_000_000_000));
        let bad = event(&s, "devices/D1/telemetry/t", b"[]", 5.0)
            .err()
            .map(|r| r.reason);
        assert_eq!(bad, Some(Invalid::Senml));
    }
}
