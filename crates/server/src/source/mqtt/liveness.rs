//! What an MQTT message says about its device's liveness (docs/devices.md,
//! "Liveness"): a message under a mapping with `device = "{N}"` is a sign
//! of life of the device its topic names; a message under a mapping with
//! `format = "status"` is the device's status, `online` or `offline`
//! (what a device publishes, retained, when it connects, and leaves as its
//! Last Will for the broker to publish when it vanishes), never an event.

use std::collections::HashMap;

use chouquette_core::devices::Devices;

use super::config::TopicSettings;
use super::topic;

/// What the message was for liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No mapping names a device here.
    Nothing,
    /// A sign of life; the message is still published as an event.
    Message,
    /// A status message, handled: not to be published.
    Status,
    /// A status message whose payload is neither `online` nor `offline`.
    BadStatus,
}

/// Reports the message on `topic_name` to `devices`; `retained` messages
/// (replayed by the broker at subscribe time) only count as statuses.
pub fn report(
    devices: &Devices,
    topics: &[TopicSettings],
    topic_name: &str,
    payload: &[u8],
    retained: bool,
) -> Seen {
    let Some(settings) = topics
        .iter()
        .find(|t| topic::matches(&t.filter, topic_name))
    else {
        return Seen::Nothing;
    };
    let Some(device) = device(settings, topic_name) else {
        return Seen::Nothing;
    };
    if settings.status {
        return match status(payload) {
            Some(online) => {
                devices.status(&settings.app, &device, online);
                Seen::Status
            }
            None => Seen::BadStatus,
        };
    }
    if retained {
        return Seen::Nothing;
    }
    devices.seen(&settings.app, &device, "mqtt");
    Seen::Message
}

/// The device the topic names under `settings`, if it has a `device`.
fn device(settings: &TopicSettings, topic_name: &str) -> Option<String> {
    let template = settings.device.as_ref()?;
    let numbers: Vec<String> = (0..topic::levels(topic_name).len())
        .map(|n| n.to_string())
        .collect();
    let levels: HashMap<&str, &str> = numbers
        .iter()
        .map(String::as_str)
        .zip(topic::levels(topic_name))
        .filter(|(_, level)| !level.is_empty())
        .collect();
    template.render(&levels).filter(|d| !d.is_empty())
}

/// `online` or `offline`, bare or as a JSON string, any case.
fn status(payload: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(payload).ok()?.trim().trim_matches('"');
    if text.eq_ignore_ascii_case("online") {
        Some(true)
    } else if text.eq_ignore_ascii_case("offline") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_online_or_offline() {
        assert_eq!(status(b"online"), Some(true));
        assert_eq!(status(b"\"OFFLINE\"\n"), Some(false));
        assert_eq!(status(b"maybe"), None);
        assert_eq!(status(&[0xff, 0xfe]), None);
    }
}
