//! The device's own clock reading on an event, and what the broker makes of
//! it (docs/devices.md, "Last known state, late messages and clock skew").
//!
//! Devices buffer readings while offline and flush them hours later, and
//! their clocks disagree with ours: the gateway keeps both the device's time
//! (`time` on a published event) and its own received time, so that a late
//! reading never passes for the current state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};

/// Latest accepted device time: 9999-12-31T23:59:59Z, in Unix milliseconds.
const MAX_MS: i64 = 253_402_300_799_000;

/// A device clock reading, in Unix milliseconds (from 1970 to year 9999).
///
/// Published as `time`: an RFC 3339 string (`2026-12-03T10:00:00Z`,
/// fractions allowed) or a number of seconds since the Unix epoch
/// (fractions allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceTime(i64);

/// Why a `time` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`time` must be an RFC 3339 time or Unix seconds between 1970 and 9999")]
pub struct BadTime;

impl DeviceTime {
    /// From Unix milliseconds, if in range.
    pub fn from_millis(ms: i64) -> Result<DeviceTime, BadTime> {
        if (0..=MAX_MS).contains(&ms) {
            Ok(DeviceTime(ms))
        } else {
            Err(BadTime)
        }
    }

    /// From Unix seconds (fractions kept to the millisecond).
    pub fn from_secs_f64(secs: f64) -> Result<DeviceTime, BadTime> {
        let ms = secs * 1000.0;
        if !ms.is_finite() || !(0.0..=MAX_MS as f64).contains(&ms) {
            return Err(BadTime);
        }
        // In range and finite: the cast cannot saturate.
        DeviceTime::from_millis(ms.round() as i64)
    }

    /// From an RFC 3339 time such as `2026-12-03T10:00:00.250Z`.
    pub fn parse_rfc3339(text: &str) -> Result<DeviceTime, BadTime> {
        let at = humantime::parse_rfc3339_weak(text).map_err(|_| BadTime)?;
        DeviceTime::from_system(at)
    }

    /// From a system time.
    pub fn from_system(at: SystemTime) -> Result<DeviceTime, BadTime> {
        let since = at.duration_since(UNIX_EPOCH).map_err(|_| BadTime)?;
        DeviceTime::from_millis(i64::try_from(since.as_millis()).map_err(|_| BadTime)?)
    }

    /// Now, on the gateway's clock.
    pub fn now() -> DeviceTime {
        DeviceTime::from_system(SystemTime::now()).unwrap_or(DeviceTime(0))
    }

    /// Unix milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// As a system time.
    pub fn system(self) -> SystemTime {
        // Never negative (checked on construction).
        UNIX_EPOCH + Duration::from_millis(self.0.unsigned_abs())
    }

    /// As sent to clients: RFC 3339 UTC with milliseconds.
    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_millis(self.system()).to_string()
    }
}

impl<'de> Deserialize<'de> for DeviceTime {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<DeviceTime, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Secs(f64),
            Text(String),
        }
        let parsed = match Given::deserialize(de)? {
            Given::Secs(secs) => DeviceTime::from_secs_f64(secs),
            Given::Text(text) => DeviceTime::parse_rfc3339(&text),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// What the broker found when it compared an event with its key's state
/// (docs/protocol.md, "data"): sent to clients beside the event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateMarks {
    /// The event's device time is older than the state's: it is kept in
    /// history and delivered, but did not replace the state.
    pub late: bool,
    /// When the tracked state value (`state_field`) took its current value,
    /// on the device's clock when it gave one (Unix milliseconds).
    pub changed_ms: Option<i64>,
    /// Milliseconds from that change to this event.
    pub since_change_ms: Option<i64>,
    /// Whether this event changed the tracked value.
    pub changed: bool,
}

/// The state value a channel tracks for changes (its `state_field`): the
/// JSON text of `data[field]`, or for an array (SenML records) that of the
/// last record having the field; absent when there is none.
pub fn state_value(data: &serde_json::value::RawValue, field: &str) -> Option<String> {
    type Fields<'a> = std::collections::HashMap<&'a str, &'a serde_json::value::RawValue>;
    let of = |json: &str| {
        let fields: Fields<'_> = serde_json::from_str(json).ok()?;
        fields.get(field).map(|v| v.get().to_string())
    };
    // RawValue cannot be read through an untagged enum: dispatch by hand.
    if data.get().trim_start().starts_with('[') {
        let records: Vec<&serde_json::value::RawValue> = serde_json::from_str(data.get()).ok()?;
        records.iter().rev().find_map(|r| of(r.get()))
    } else {
        of(data.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DeviceTime, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn accepts_rfc3339_and_unix_seconds() {
        let t = parse(r#""2026-12-03T10:00:00.250Z""#).expect("rfc3339");
        assert_eq!(t.millis(), 1_796_292_000_250);
        assert_eq!(parse("1796292000.25").expect("secs"), t);
        assert_eq!(
            parse("1796292000").expect("int").millis(),
            1_796_292_000_000
        );
        assert_eq!(t.rfc3339(), "2026-12-03T10:00:00.250Z");
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [r#""yesterday""#, "-1", "1e300", r#""""#, "true", "null"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_value_is_the_field_json() {
        let data =
            serde_json::value::RawValue::from_string(r#"{"on":true,"x":1}"#.into()).expect("raw");
        assert_eq!(state_value(&data, "on").as_deref(), Some("true"));
        assert_eq!(state_value(&data, "off"), None);
        let not_object = serde_json::value::RawValue::from_string("[1]".into()).expect("raw");
        assert_eq!(state_value(&not_object, "on"), None);
        let senml = serde_json::value::RawValue::from_string(
            r#"[{"n":"a","vb":true},{"n":"b","v":1},{"n":"c","vb":false}]"#.into(),
        )
        .expect("raw");
        assert_eq!(state_value(&senml, "vb").as_deref(), Some("false"));
        let number = serde_json::value::RawValue::from_string("7".into()).expect("raw");
        assert_eq!(state_value(&number, "vb"), None);
    }
}
