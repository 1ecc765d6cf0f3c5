//! What the Redis broker writes and reads: key names, the stored form of an
//! event, and the replies of its scripts.
//!
//! A channel's keys share the hash tag `{app|channel}` (`|` cannot appear in
//! app ids or channel names), so on a Redis Cluster they sit on one slot and
//! the scripts may touch them together. An event is stored and sent between
//! nodes as JSON with its `uuid` and `timestamp`, so every node sends the
//! client the same message; the offset travels beside it, assigned by the
//! script.

use std::sync::Arc;

use chouquette_core::broker::BrokerError;
use chouquette_core::device_state::Alarm;
use chouquette_core::device_time::{DeviceTime, StateMarks};
use chouquette_core::publication::{ChannelId, NewEvent, Publication};
use chouquette_protocol::server::Envelope;
use redis::Value;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The Redis names of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelKeys {
    /// Hash: `epoch`, `top`.
    pub meta: String,
    /// Stream: the history.
    pub hist: String,
    /// Hash: last known state by key.
    pub state: String,
    /// Sorted set: idempotency ids published within the dedup window.
    pub seen: String,
    /// Hash: idempotency id → offset.
    pub seenoff: String,
    /// Hash: per kept key, its device time and tracked value (publish.lua).
    pub devstate: String,
    /// Pub/sub topic every node subscribed to the channel listens on.
    pub topic: String,
}

impl ChannelKeys {
    /// The names of `channel` under `prefix`.
    pub fn new(prefix: &str, channel: &ChannelId) -> ChannelKeys {
        let tag = format!("{prefix}:{{{}|{}}}", channel.app, channel.name);
        ChannelKeys {
            meta: format!("{tag}:meta"),
            hist: format!("{tag}:hist"),
            state: format!("{tag}:state"),
            seen: format!("{tag}:seen"),
            seenoff: format!("{tag}:seenoff"),
            devstate: format!("{tag}:devstate"),
            topic: tag,
        }
    }
}

/// An event as stored in Redis and sent between nodes.
#[derive(Debug, Serialize)]
struct StoredRef<'a> {
    app_id: &'a str,
    channel: &'a str,
    event_kind: &'a str,
    keywords: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_ms: Option<i64>,
    uuid: &'a str,
    timestamp: &'a str,
    data: &'a RawValue,
}

#[derive(Debug, Deserialize)]
struct Stored {
    app_id: String,
    channel: String,
    event_kind: String,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    key: Option<String>,
    /// The device time (Unix ms).
    #[serde(default)]
    time_ms: Option<i64>,
    /// Spliced in by publish.lua (see there): the key's state marks.
    #[serde(default)]
    late: bool,
    #[serde(default)]
    changed_ms: Option<i64>,
    #[serde(default)]
    since_change_ms: Option<i64>,
    uuid: String,
    timestamp: String,
    data: Box<RawValue>,
}

/// The stored form of `event`, stamped with a fresh `uuid` and time.
pub fn encode(event: &NewEvent) -> String {
    let envelope = Envelope::now();
    let stored = StoredRef {
        app_id: &event.app_id,
        channel: &event.channel,
        event_kind: &event.event_kind,
        keywords: &event.keywords,
        key: event.key.as_deref(),
        time_ms: event.time.map(DeviceTime::millis),
        uuid: &envelope.uuid,
        timestamp: &envelope.timestamp,
        data: &event.data,
    };
    // Serializing plain strings and an already valid RawValue cannot fail.
    serde_json::to_string(&stored).unwrap_or_default()
}

/// Why a stored event could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not `<offset> <body>` (or `<epoch> <offset> <body>`).
    #[error("malformed record")]
    Shape,
    /// The body is not a stored event.
    #[error("malformed event: {0}")]
    Json(#[from] serde_json::Error),
}

fn publication(offset: u64, body: &[u8]) -> Result<Publication, DecodeError> {
    let stored: Stored = serde_json::from_slice(body)?;
    let channel = ChannelId::new(&stored.app_id, &stored.channel);
    let envelope = Envelope {
        timestamp: stored.timestamp,
        uuid: stored.uuid,
    };
    let event = NewEvent {
        app_id: stored.app_id,
        channel: stored.channel,
        event_kind: stored.event_kind,
        keywords: stored.keywords,
        key: stored.key,
        data: stored.data,
        id: None,
        time: stored
            .time_ms
            .and_then(|ms| DeviceTime::from_millis(ms).ok()),
    };
    let marks = StateMarks {
        late: stored.late,
        changed_ms: stored.changed_ms,
        since_change_ms: stored.since_change_ms,
        changed: false,
    };
    Ok(Publication::restore_marked(
        channel, offset, event, envelope, marks,
    ))
}

fn split_word(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = bytes.iter().position(|b| *b == b' ')?;
    Some((&bytes[..space], &bytes[space + 1..]))
}

fn parse_offset(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A history or state item: `<offset> <body>`.
pub fn decode_item(item: &[u8]) -> Result<Publication, DecodeError> {
    let (offset, body) = split_word(item).ok_or(DecodeError::Shape)?;
    publication(parse_offset(offset).ok_or(DecodeError::Shape)?, body)
}

/// A pub/sub message, decoded.
#[derive(Debug)]
pub struct Message {
    /// The event.
    pub publication: Publication,
    /// The channel's epoch it was numbered in: a new one means the channel
    /// was numbered anew (its keys were gone) under its subscribers.
    pub epoch: Arc<str>,
    /// Redis's clock when it published (Unix milliseconds).
    pub sent_ms: u64,
}

/// A pub/sub message: `<epoch> <offset> <ms> <body>`.
pub fn decode_message(message: &[u8]) -> Result<Message, DecodeError> {
    let (epoch, rest) = split_word(message).ok_or(DecodeError::Shape)?;
    let (offset, rest) = split_word(rest).ok_or(DecodeError::Shape)?;
    let (sent_ms, body) = split_word(rest).ok_or(DecodeError::Shape)?;
    let epoch = std::str::from_utf8(epoch)
        .ok()
        .filter(|e| !e.is_empty())
        .ok_or(DecodeError::Shape)?;
    let offset = parse_offset(offset).ok_or(DecodeError::Shape)?;
    let sent_ms = parse_offset(sent_ms).ok_or(DecodeError::Shape)?;
    Ok(Message {
        publication: publication(offset, body)?,
        epoch: epoch.into(),
        sent_ms,
    })
}

/// The reply of `publish.lua`.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// Whether the batch stopped because the state was full.
    pub state_full: bool,
    /// Per event handled, its offset, and whether its id had been published
    /// already (the offset is then the first one's).
    pub offsets: Vec<(u64, bool)>,
    /// Flapping episodes started or ended, with the index of the event
    /// (from 0) that started or ended them.
    pub alarms: Vec<(usize, Alarm)>,
}

/// One `alarms` item of `publish.lua`: `<index from 1> started <count>
/// <first ms> <last ms>` or `<index from 1> cleared`.
fn alarm(value: &Value) -> Option<(usize, Alarm)> {
    let text = std::str::from_utf8(text(value)?).ok()?;
    let mut words = text.split(' ');
    let index: usize = words.next()?.parse().ok()?;
    let alarm = match words.next()? {
        "cleared" => Alarm::Cleared,
        "started" => Alarm::Started {
            count: words.next()?.parse().ok()?,
            first: words.next()?.parse().ok()?,
            last: words.next()?.parse().ok()?,
        },
        _ => return None,
    };
    Some((index.checked_sub(1)?, alarm))
}

/// The reply of `recover.lua`.
#[derive(Debug)]
pub struct Read {
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// Its last offset.
    pub top: u64,
    /// Its oldest retained offset (`top + 1` when history is empty).
    pub first: u64,
    /// Replayed events or kept state, in the order Redis gave them.
    pub items: Vec<Publication>,
}

fn bad_reply(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("unexpected reply from Redis ({what})"))
}

fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => parse_offset(text(other)?),
    }
}

fn epoch(value: Option<&Value>) -> Result<Arc<str>, BrokerError> {
    let bytes = value.and_then(text).ok_or_else(|| bad_reply("epoch"))?;
    std::str::from_utf8(bytes)
        .map(Into::into)
        .map_err(|_| bad_reply("epoch"))
}

/// Reads the reply of `publish.lua`.
pub fn published(reply: Value) -> Result<Published, BrokerError> {
    let Value::Array(items) = reply else {
        return Err(bad_reply("publish"));
    };
    let epoch = epoch(items.first())?;
    let state_full = items.get(1).and_then(text) == Some(b"state_full".as_slice());
    let alarms = match items.get(2) {
        Some(Value::Array(alarms)) => alarms.iter().map(alarm).collect::<Option<Vec<_>>>(),
        // An empty Lua table comes back as an empty array, or as nil.
        Some(Value::Nil) => Some(Vec::new()),
        _ => None,
    }
    .ok_or_else(|| bad_reply("alarms"))?;
    let offsets = items
        .iter()
        .skip(3)
        .map(|v| match v {
            Value::Int(i) if *i < 0 => Some((i.unsigned_abs(), true)),
            other => number(other).map(|o| (o, false)),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad_reply("offsets"))?;
    Ok(Published {
        epoch,
        state_full,
        offsets,
        alarms,
    })
}

/// Reads the reply of `recover.lua`.
pub fn read(reply: Value) -> Result<Read, BrokerError> {
    let Value::Array(values) = reply else {
        return Err(bad_reply("recover"));
    };
    let epoch = epoch(values.first())?;
    let top = values
        .get(1)
        .and_then(number)
        .ok_or_else(|| bad_reply("top"))?;
    let first = values
        .get(2)
        .and_then(number)
        .ok_or_else(|| bad_reply("first"))?;
    let mut items = Vec::with_capacity(values.len().saturating_sub(3));
    for value in values.iter().skip(3) {
        let bytes = text(value).ok_or_else(|| bad_reply("item"))?;
        let item = decode_item(bytes)
            .map_err(|e| BrokerError::Unavailable(format!("unreadable event in Redis: {e}")))?;
        items.push(item);
    }
    Ok(Read {
        epoch,
        top,
        first,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> NewEvent {
        serde_json::from_str(
            r#"{"app_id":"a/b","channel":"c:1","event_kind":"alarm","keywords":["borne:B1"],"key":"B1","data":{"v":[1,2]}}"#,
        )
        .expect("event")
    }

    #[test]
    fn keys_share_one_hash_tag_that_names_cannot_forge() {
        let keys = ChannelKeys::new("chq", &ChannelId::new("a/b", "c:1"));
        assert_eq!(keys.meta, "chq:{a/b|c:1}:meta");
        assert_eq!(keys.topic, "chq:{a/b|c:1}");
        // `a` + `b/c:1` is another channel with other keys.
        let other = ChannelKeys::new("chq", &ChannelId::new("a", "b/c:1"));
        assert_ne!(keys.meta, other.meta);
    }

    #[test]
    fn an_event_round_trips_with_its_envelope() {
        let body = encode(&event());
        let message = format!("e1 42 1795668097187 {body}");
        let Message {
            publication: p,
            epoch,
            sent_ms,
        } = decode_message(message.as_bytes()).expect("decode");
        assert_eq!(sent_ms, 1_795_668_097_187);
        assert_eq!(&*epoch, "e1");
        assert_eq!(p.offset, 42);
        assert_eq!(&*p.channel.app, "a/b");
        assert_eq!(&*p.event_kind, "alarm");
        assert_eq!(p.key.as_deref(), Some("B1"));
        assert_eq!(p.data().get(), r#"{"v":[1,2]}"#);
        let again = decode_item(format!("42 {body}").as_bytes()).expect("item");
        assert_eq!(again.envelope().uuid, p.envelope().uuid);
        assert_eq!(again.frame(), p.frame());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"42",
            b"x {}",
            b"42 {",
            b"42 {\"app_id\":1}",
            b"\xff\xfe 1 2",
        ] {
            assert!(decode_item(bad).is_err(), "{bad:?}");
        }
        assert!(decode_message(b"e1 42 {}").is_err(), "no time");
        assert!(published(Value::Nil).is_err());
        assert!(read(Value::Array(vec![Value::Int(1)])).is_err());
    }

    #[test]
    fn script_replies_are_read() {
        let reply = Value::Array(vec![
            Value::BulkString(b"e1".to_vec()),
            Value::BulkString(b"state_full".to_vec()),
            // No flapping alarm raised by this batch.
            Value::Array(Vec::new()),
            Value::Int(7),
            Value::Int(-3),
        ]);
        let p = published(reply).expect("published");
        assert_eq!(&*p.epoch, "e1");
        assert!(p.state_full);
        assert_eq!(p.offsets, vec![(7, false), (3, true)]);
    }
}
