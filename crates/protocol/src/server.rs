//! Messages the gateway sends, serialized straight to bytes.
//!
//! Every message carries the envelope of docs/protocol.md ("Messages"): `class`,
//! `timestamp` (ISO 8601 UTC, microseconds) and `uuid` (v4). A `data` message
//! is built once per published event and its bytes shared by every
//! subscriber, so its `uuid` identifies the event, not the recipient.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::codes::{ErrorCode, ResetReason};

/// The envelope fields every gateway message starts with.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// ISO 8601 UTC with microseconds.
    pub timestamp: String,
    /// A fresh v4 UUID.
    pub uuid: String,
}

impl Envelope {
    /// An envelope stamped now, with a fresh uuid.
    pub fn now() -> Envelope {
        Envelope {
            timestamp: timestamp(SystemTime::now()),
            uuid: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Formats a time as `2014-03-07T19:18:03.124578Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// The fields of one published event, as sent in `data` messages.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// Channel name (within the app).
    pub channel: &'a str,
    /// Offset in the channel, from 1.
    pub offset: u64,
    /// The event's kind, matched by filters.
    pub event_kind: &'a str,
    /// `name:value` keywords, matched by filters.
    pub keywords: &'a [Box<str>],
    /// The backend's payload, passed through untouched.
    pub data: &'a RawValue,
    /// Device time and state marks, for events that carry them (all
    /// optional on the wire, docs/protocol.md "Device time").
    pub device: DeviceView<'a>,
}

/// The optional device-time fields of a `data` message.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceView<'a> {
    /// The device's own time for the event (RFC 3339).
    pub device_time: Option<&'a str>,
    /// When the gateway received it (RFC 3339), sent with `device_time`.
    pub received: Option<&'a str>,
    /// Older than its key's state: kept in history, did not replace it.
    pub late: bool,
    /// When the key's tracked state value took its current value.
    pub changed_at: Option<&'a str>,
    /// Seconds from that change to this event.
    pub since_change: Option<f64>,
}

#[derive(Serialize)]
struct DataMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    channel: &'a str,
    offset: u64,
    event_kind: &'a str,
    keywords: &'a [Box<str>],
    data: &'a RawValue,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    snapshot: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    received: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    late: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since_change: Option<f64>,
}

/// Serializes a `data` message; `snapshot` marks a last-known-state replay.
pub fn data(env: &Envelope, event: EventView<'_>, snapshot: bool) -> Bytes {
    to_bytes(&DataMessage {
        class: "data",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        channel: event.channel,
        offset: event.offset,
        event_kind: event.event_kind,
        keywords: event.keywords,
        data: event.data,
        snapshot,
        device_time: event.device.device_time,
        received: event.device.received,
        late: event.device.late,
        changed_at: event.device.changed_at,
        since_change: event.device.since_change,
    })
}

#[derive(Serialize)]
struct NoticeMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    channel: &'a str,
    offset: u64,
    event_kind: &'a str,
    keywords: &'a [Box<str>],
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    snapshot: bool,
}

/// Serializes a `data` message **without** its `data` (a notify-only
/// channel: the client fetches the payload from its backend), with the
/// event's `key` when it has one so the client knows what to fetch.
pub fn notice(env: &Envelope, event: EventView<'_>, key: Option<&str>, snapshot: bool) -> Bytes {
    to_bytes(&NoticeMessage {
        class: "data",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        channel: event.channel,
        offset: event.offset,
        event_kind: event.event_kind,
        keywords: event.keywords,
        key,
        snapshot,
    })
}

/// The position of a subscription, as given in an `ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckChannel {
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's last offset when the subscription went live.
    pub offset: u64,
    /// True when the requested `since` was honoured with no gap.
    pub recovered: bool,
}

#[derive(Serialize)]
struct AckMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a BTreeMap<String, AckChannel>>,
}

/// Serializes an `ack` for a client message; `channels` is set for a subscribe.
pub fn ack(reference: Option<&str>, channels: Option<&BTreeMap<String, AckChannel>>) -> Bytes {
    let env = Envelope::now();
    to_bytes(&AckMessage {
        class: "ack",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        reference,
        channels,
    })
}

#[derive(Serialize)]
struct PublishAckMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    epoch: &'a str,
    offset: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// Serializes the `ack` of a client `publish`: where the event went, as the
/// HTTP API answers it (`duplicate` only when its `id` was seen already).
pub fn publish_ack(reference: Option<&str>, epoch: &str, offset: u64, duplicate: bool) -> Bytes {
    let env = Envelope::now();
    to_bytes(&PublishAckMessage {
        class: "ack",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        reference,
        epoch,
        offset,
        duplicate,
    })
}

/// What an `error` message refers to, besides its code.
#[derive(Debug, Default, Clone, Copy)]
pub struct ErrorContext<'a> {
    /// The `uuid` of the client message that caused it.
    pub reference: Option<&'a str>,
    /// The channel it concerns, for per-channel errors.
    pub channel: Option<&'a str>,
    /// The call `id`, for RPC errors.
    pub id: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct ErrorMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
    code: ErrorCode,
    message: &'a str,
}

/// Serializes an `error` message.
pub fn error(code: ErrorCode, message: &str, ctx: ErrorContext<'_>) -> Bytes {
    let env = Envelope::now();
    to_bytes(&ErrorMessage {
        class: "error",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        reference: ctx.reference,
        channel: ctx.channel,
        id: ctx.id,
        code,
        message,
    })
}

#[derive(Serialize)]
struct CallErrorMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    id: &'a serde_json::Value,
    code: &'a str,
    message: &'a str,
}

/// Serializes the `error` answering a call with a code the gateway does not
/// define itself: a backend's own code for a refused call (docs/rpc.md).
/// The caller bounds and sanitizes `code` and `message`.
pub fn call_error(
    reference: Option<&str>,
    id: &serde_json::Value,
    code: &str,
    message: &str,
) -> Bytes {
    let env = Envelope::now();
    to_bytes(&CallErrorMessage {
        class: "error",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        reference,
        id,
        code,
        message,
    })
}

#[derive(Serialize)]
struct ResultMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    id: &'a serde_json::Value,
    result: &'a RawValue,
}

/// Serializes the `result` of a call: the backend's JSON, passed through.
pub fn result(reference: Option<&str>, id: &serde_json::Value, result: &RawValue) -> Bytes {
    let env = Envelope::now();
    to_bytes(&ResultMessage {
        class: "result",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        reference,
        id,
        result,
    })
}

#[derive(Serialize)]
struct CallMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    id: &'a str,
    method: &'a str,
    args: &'a [serde_json::Value],
    kwargs: &'a serde_json::Map<String, serde_json::Value>,
}

/// Serializes a `call` from a backend to a client (docs/rpc.md, "Calls to
/// clients"): the client answers with `result` or `error` naming `id`.
pub fn call(
    id: &str,
    method: &str,
    args: &[serde_json::Value],
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> Bytes {
    let env = Envelope::now();
    to_bytes(&CallMessage {
        class: "call",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        id,
        method,
        args,
        kwargs,
    })
}

#[derive(Serialize)]
struct UserMessageFrame<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    event_kind: &'a str,
    data: &'a RawValue,
}

/// Serializes a `message`: a backend's best-effort message to every
/// connection of one user (docs/protocol.md), neither stored nor replayed.
pub fn user_message(event_kind: &str, data: &RawValue) -> Bytes {
    let env = Envelope::now();
    to_bytes(&UserMessageFrame {
        class: "message",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        event_kind,
        data,
    })
}

#[derive(Serialize)]
struct ResetMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    reason: ResetReason,
}

/// Serializes a `reset`; without a channel it concerns every subscription.
pub fn reset(channel: Option<&str>, reason: ResetReason) -> Bytes {
    let env = Envelope::now();
    to_bytes(&ResetMessage {
        class: "reset",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        channel,
        reason,
    })
}

#[derive(Serialize)]
struct BackendSubMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

/// Serializes a `subscribed` (a backend subscribed the user to `channel`;
/// live events follow `offset` of `epoch`).
pub fn subscribed(channel: &str, epoch: &str, offset: u64) -> Bytes {
    let env = Envelope::now();
    to_bytes(&BackendSubMessage {
        class: "subscribed",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        channel,
        epoch: Some(epoch),
        offset: Some(offset),
    })
}

/// Serializes an `unsubscribed` (a backend ended the user's subscription).
pub fn unsubscribed(channel: &str) -> Bytes {
    let env = Envelope::now();
    to_bytes(&BackendSubMessage {
        class: "unsubscribed",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        channel,
        epoch: None,
        offset: None,
    })
}

#[derive(Serialize)]
struct ConnectedMessage<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    app_id: &'a str,
    user: &'a str,
    groups: &'a [String],
}

/// Serializes a `connected`: the backend accepted the connection at its
/// upgrade (connect auth) as `user` of `app_id`, with `groups`. It is the
/// first message such a connection receives.
pub fn connected(app_id: &str, user: &str, groups: &[String]) -> Bytes {
    let env = Envelope::now();
    to_bytes(&ConnectedMessage {
        class: "connected",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        app_id,
        user,
        groups,
    })
}

/// Whether a serialized gateway message is a `connected` (long-polls after
/// the first leave it out, as they leave out `ack`s).
pub fn is_connected(frame: &[u8]) -> bool {
    frame.starts_with(br#"{"class":"connected""#)
}

/// Whether a serialized gateway message is a `subscribed` (long-polls after
/// the first leave out those of the grants read at connect auth).
pub fn is_subscribed(frame: &[u8]) -> bool {
    frame.starts_with(br#"{"class":"subscribed""#)
}

#[derive(Serialize)]
struct PresenceMessage<'a, S: AsRef<str>> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "names")]
    present: Option<&'a [S]>,
    #[serde(skip_serializing_if = "<[S]>::is_empty", serialize_with = "some_names")]
    joined: &'a [S],
    #[serde(skip_serializing_if = "<[S]>::is_empty", serialize_with = "some_names")]
    left: &'a [S],
}

fn names<S: AsRef<str>, Z: serde::Serializer>(
    names: &Option<&[S]>,
    z: Z,
) -> Result<Z::Ok, Z::Error> {
    some_names(&names.unwrap_or(&[]), z)
}

fn some_names<S: AsRef<str>, Z: serde::Serializer>(names: &&[S], z: Z) -> Result<Z::Ok, Z::Error> {
    z.collect_seq(names.iter().map(AsRef::as_ref))
}

/// Serializes the `presence` a subscriber of a presence channel gets first:
/// the users `present` on it now (PROTOCOL.md section 10).
pub fn presence_list<S: AsRef<str>>(channel: &str, present: &[S]) -> Bytes {
    let env = Envelope::now();
    to_bytes(&PresenceMessage {
        class: "presence",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        channel,
        present: Some(present),
        joined: &[],
        left: &[],
    })
}

/// Serializes a `presence` change: the users who `joined` and `left` the
/// channel (an empty list is left out; both may be given).
pub fn presence_change<S: AsRef<str>>(channel: &str, joined: &[S], left: &[S]) -> Bytes {
    let env = Envelope::now();
    to_bytes(&PresenceMessage {
        class: "presence",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        channel,
        present: None,
        joined,
        left,
    })
}

/// Whether a serialized gateway message is an `ack` (every message this
/// module writes starts with its `class`).
pub fn is_ack(frame: &[u8]) -> bool {
    frame.starts_with(br#"{"class":"ack""#)
}

fn to_bytes<T: Serialize>(msg: &T) -> Bytes {
    // Serializing these plain structs into a Vec cannot fail: every map key
    // is a string and no Serialize impl here returns an error.
    Bytes::from(serde_json::to_vec(msg).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).expect("valid JSON")
    }

    #[test]
    fn presence_messages_name_only_what_they_carry() {
        let list = parse(&presence_list("chat", &["roger", "vb"]));
        assert_eq!(list["class"], "presence");
        assert_eq!(list["present"], serde_json::json!(["roger", "vb"]));
        assert!(list.get("joined").is_none() && list.get("left").is_none());
        let empty = parse(&presence_list::<&str>("chat", &[]));
        assert_eq!(empty["present"], serde_json::json!([]));
        let change = parse(&presence_change("chat", &["ana"], &[]));
        assert_eq!(change["joined"], serde_json::json!(["ana"]));
        assert!(change.get("left").is_none() && change.get("present").is_none());
        assert!(change["uuid"].is_string() && change["timestamp"].is_string());
    }

    #[test]
    fn data_message_has_envelope_and_fields() {
        let raw = RawValue::from_string(r#"{"uid":"B1"}"#.into()).expect("raw");
        let kw: Vec<Box<str>> = vec!["borne:B1".into()];
        let env = Envelope::now();
        let msg = parse(&data(
            &env,
            EventView {
                channel: "bornes",
                offset: 42,
                event_kind: "alarm",
                keywords: &kw,
                data: &raw,
                device: DeviceView::default(),
            },
            false,
        ));
        assert_eq!(msg["class"], "data");
        assert!(msg.get("late").is_none() && msg.get("device_time").is_none());
        assert_eq!(msg["offset"], 42);
        assert_eq!(msg["data"]["uid"], "B1");
        assert!(msg.get("snapshot").is_none());
        let ts = msg["timestamp"].as_str().expect("timestamp");
        assert_eq!(ts.len(), "2014-03-07T19:18:03.124578Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
        let uuid = uuid::Uuid::parse_str(msg["uuid"].as_str().expect("uuid")).expect("uuid");
        assert_eq!(uuid.get_version_num(), 4);
    }

    #[test]
    fn error_names_ref_and_channel() {
        let msg = parse(&error(
            ErrorCode::InvalidToken,
            "nope",
            ErrorContext {
                reference: Some("u1"),
                channel: Some("bornes"),
                id: None,
            },
        ));
        assert_eq!(msg["code"], "invalid_token");
        assert_eq!(msg["ref"], "u1");
        assert_eq!(msg["channel"], "bornes");
        assert!(msg.get("id").is_none());
    }

    #[test]
    fn results_carry_the_call_id_and_the_raw_answer() {
        let raw = RawValue::from_string(r#"{"ok":[1,2]}"#.into()).expect("raw");
        let msg = parse(&result(Some("u9"), &serde_json::json!("7"), &raw));
        assert_eq!(msg["class"], "result");
        assert_eq!(msg["id"], "7");
        assert_eq!(msg["ref"], "u9");
        assert_eq!(msg["result"]["ok"][1], 2);
        let msg = parse(&call_error(
            None,
            &serde_json::json!(8),
            "no_such_room",
            "x",
        ));
        assert_eq!(
            (msg["id"].as_u64(), msg["code"].as_str()),
            (Some(8), Some("no_such_room"))
        );
    }

    #[test]
    fn calls_to_clients_and_user_messages_have_their_fields() {
        let mut kwargs = serde_json::Map::new();
        kwargs.insert("level".into(), serde_json::json!(3));
        let msg = parse(&call(
            "c1",
            "device.reboot",
            &[serde_json::json!(1)],
            &kwargs,
        ));
        assert_eq!(msg["class"], "call");
        assert_eq!(msg["id"], "c1");
        assert_eq!(msg["method"], "device.reboot");
        assert_eq!(msg["args"][0], 1);
        assert_eq!(msg["kwargs"]["level"], 3);
        let raw = RawValue::from_string(r#"{"n":1}"#.into()).expect("raw");
        let msg = parse(&user_message("ping", &raw));
        assert_eq!(msg["class"], "message");
        assert_eq!(
            (msg["event_kind"].as_str(), msg["data"]["n"].as_u64()),
            (Some("ping"), Some(1))
        );
    }

    #[test]
    fn acks_are_recognised() {
        assert!(is_ack(&ack(None, None)));
        assert!(!is_ack(&reset(None, ResetReason::Shutdown)));
    }

    #[test]
    fn reset_without_channel() {
        let msg = parse(&reset(None, ResetReason::Shutdown));
        assert_eq!(msg["reason"], "shutdown");
        assert!(msg.get("channel").is_none());
    }
}
