//! A published event: what a backend sends, and what the broker made of it.
//!
//! A [`Publication`] carries its `data` message already serialized: fan-out
//! clones a `Bytes` handle per subscriber and never serializes again. The
//! snapshot form (with `"snapshot": true`) is built lazily, once, the first
//! time a subscriber needs it.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use chouquette_protocol::server::{self, DeviceView, Envelope, EventView};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::device_time::{DeviceTime, StateMarks};

/// Longest `event_kind`, channel name or `key`, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most keywords on one event.
pub const MAX_KEYWORDS: usize = 64;
/// Longest keyword, in bytes.
pub const MAX_KEYWORD_LEN: usize = 512;
/// Longest idempotency `id`, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A channel, named within its app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    /// The app (tenant).
    pub app: Arc<str>,
    /// The channel's name within the app.
    pub name: Arc<str>,
}

impl ChannelId {
    /// A channel id from its parts.
    pub fn new(app: &str, name: &str) -> ChannelId {
        ChannelId {
            app: app.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.app, self.name)
    }
}

/// An event as a backend publishes it, before it has an offset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// The app it belongs to.
    pub app_id: String,
    /// The channel within the app.
    pub channel: String,
    /// The kind, matched by filters.
    pub event_kind: String,
    /// `name:value` keywords, matched by filters.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// With a key, the event becomes the last known state of that key.
    #[serde(default)]
    pub key: Option<String>,
    /// The payload, passed through untouched.
    #[serde(default = "null_data")]
    pub data: Box<RawValue>,
    /// An idempotency id chosen by the backend: publishing an event whose
    /// `id` its channel already published (while the broker remembers it)
    /// publishes nothing and answers the first one's position, so a backend
    /// may retry a publish whose answer it did not get.
    #[serde(default)]
    pub id: Option<String>,
    /// The device's own time for the event (RFC 3339 or Unix seconds): an
    /// event older than its key's state does not replace it (it is kept in
    /// history, flagged `late`), and the device's clock skew is measured.
    #[serde(default)]
    pub time: Option<DeviceTime>,
}

fn null_data() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

/// `items` split into runs of consecutive events of one channel, in order:
/// each run goes to the broker as one batch (one offset step, one round
/// trip). `event` finds the event in an item.
pub fn channel_runs<T>(items: Vec<T>, event: impl Fn(&T) -> &NewEvent) -> Vec<(ChannelId, Vec<T>)> {
    let mut runs: Vec<(ChannelId, Vec<T>)> = Vec::new();
    for item in items {
        let e = event(&item);
        match runs.last_mut() {
            Some((channel, run)) if *channel.app == *e.app_id && *channel.name == *e.channel => {
                run.push(item);
            }
            _ => {
                let channel = ChannelId::new(&e.app_id, &e.channel);
                runs.push((channel, vec![item]));
            }
        }
    }
    runs
}

/// Why an event was refused before publishing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A name is empty, too long, or has characters outside the allowed set.
    #[error("`{0}` must be 1 to {MAX_NAME_LEN} bytes of letters, digits and `_-.:@/`")]
    BadName(&'static str),
    /// More than [`MAX_KEYWORDS`] keywords.
    #[error("keywords: {0} given, at most {MAX_KEYWORDS}")]
    TooManyKeywords(usize),
    /// Keyword `index` is not `name:value` with a valid name, or too long.
    #[error("keyword {index} (`{shown}`): {problem}")]
    BadKeyword {
        /// Its position in `keywords`.
        index: usize,
        /// The keyword, cut to 64 characters.
        shown: String,
        /// What is wrong with it.
        problem: KeywordProblem,
    },
    /// `key` is empty or too long.
    #[error("`key` must be 1 to {MAX_NAME_LEN} bytes")]
    BadKey,
    /// `id` is empty or too long.
    #[error("`id` must be 1 to {MAX_ID_LEN} bytes")]
    BadId,
    /// `data` is larger than the gateway's `max_publish_bytes`: a source
    /// other than the publish API (whose body is bounded already) brought it.
    #[error("`data` is {size} bytes, at most {max}")]
    DataTooLarge {
        /// Its size in bytes, as JSON.
        size: usize,
        /// The bound.
        max: usize,
    },
}

/// What is wrong with one keyword.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeywordProblem {
    /// No colon: filters match `name:value`, so it could never match.
    #[error("must be `name:value`, e.g. `borne:B1`")]
    NoColon,
    /// The part before the first colon is empty or has other characters.
    #[error("the name before the colon must be 1 or more letters, digits or `_-.@/`")]
    BadName,
    /// Longer than [`MAX_KEYWORD_LEN`].
    #[error("longer than {MAX_KEYWORD_LEN} bytes")]
    TooLong,
}

/// Checks one keyword: `name:value`, the name in the name alphabet (the
/// value is anything: it is compared, never interpreted).
pub fn check_keyword(keyword: &str) -> Result<(), KeywordProblem> {
    if keyword.len() > MAX_KEYWORD_LEN {
        return Err(KeywordProblem::TooLong);
    }
    let Some((name, _value)) = keyword.split_once(':') else {
        return Err(KeywordProblem::NoColon);
    };
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-.@/".contains(&b);
    if name.is_empty() || !name.bytes().all(allowed) {
        return Err(KeywordProblem::BadName);
    }
    Ok(())
}

/// Whether `name` is acceptable as a channel name or event kind.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@/".contains(&b))
}

impl NewEvent {
    /// Checks the bounds and shapes of every field.
    pub fn validate(&self) -> Result<(), EventError> {
        if !valid_name(&self.channel) {
            return Err(EventError::BadName("channel"));
        }
        if !valid_name(&self.event_kind) || self.event_kind == "*" {
            return Err(EventError::BadName("event_kind"));
        }
        if self.keywords.len() > MAX_KEYWORDS {
            return Err(EventError::TooManyKeywords(self.keywords.len()));
        }
        for (index, keyword) in self.keywords.iter().enumerate() {
            check_keyword(keyword).map_err(|problem| EventError::BadKeyword {
                index,
                shown: keyword.chars().take(64).collect(),
                problem,
            })?;
        }
        if self
            .key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > MAX_NAME_LEN)
        {
            return Err(EventError::BadKey);
        }
        if self
            .id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > MAX_ID_LEN)
        {
            return Err(EventError::BadId);
        }
        Ok(())
    }
}

/// An event with its offset, serialized once for every subscriber.
#[derive(Debug)]
pub struct Publication {
    /// Its channel.
    pub channel: ChannelId,
    /// Offset within the channel, from 1.
    pub offset: u64,
    /// The kind, matched by filters.
    pub event_kind: Box<str>,
    /// Keywords, matched by filters.
    pub keywords: Box<[Box<str>]>,
    /// The last-known-state key, if any.
    pub key: Option<Box<str>>,
    /// The backend's idempotency id, if any (never sent to clients).
    pub id: Option<Box<str>>,
    /// When this node first saw it (latency metrics, history age).
    pub received: Instant,
    /// The device's own time, if it gave one.
    pub device_time: Option<DeviceTime>,
    /// What the broker found comparing it with its key's state.
    pub marks: StateMarks,
    device_text: Option<Box<str>>,
    changed_text: Option<Box<str>>,
    data: Box<RawValue>,
    envelope: Envelope,
    frame: Bytes,
    snapshot_frame: OnceLock<Bytes>,
    /// The frames of notify-only channels (no `data`), live then snapshot,
    /// built on first use.
    notice_frames: [OnceLock<Bytes>; 2],
}

impl Publication {
    /// Gives `event` its offset and serializes its `data` message.
    pub fn new(channel: ChannelId, offset: u64, event: NewEvent) -> Publication {
        Publication::restore(channel, offset, event, Envelope::now())
    }

    /// [`Publication::new`] with what the broker found about its state.
    pub fn marked(
        channel: ChannelId,
        offset: u64,
        event: NewEvent,
        marks: StateMarks,
    ) -> Publication {
        Publication::restore_marked(channel, offset, event, Envelope::now(), marks)
    }

    /// Rebuilds a publication stamped elsewhere (another node, the broker's
    /// history): the same `uuid` and `timestamp` on every node.
    pub fn restore(
        channel: ChannelId,
        offset: u64,
        event: NewEvent,
        envelope: Envelope,
    ) -> Publication {
        Publication::restore_marked(channel, offset, event, envelope, StateMarks::default())
    }

    /// [`Publication::restore`] with the state marks the broker stored.
    pub fn restore_marked(
        channel: ChannelId,
        offset: u64,
        event: NewEvent,
        envelope: Envelope,
        marks: StateMarks,
    ) -> Publication {
        let keywords: Box<[Box<str>]> = event.keywords.into_iter().map(Into::into).collect();
        let mut publication = Publication {
            channel,
            offset,
            event_kind: event.event_kind.into(),
            keywords,
            key: event.key.map(Into::into),
            id: event.id.map(Into::into),
            received: Instant::now(),
            device_time: event.time,
            marks,
            device_text: event.time.map(|t| t.rfc3339().into()),
            changed_text: marks
                .changed_ms
                .and_then(|ms| DeviceTime::from_millis(ms).ok())
                .map(|t| t.rfc3339().into()),
            data: event.data,
            envelope,
            frame: Bytes::new(),
            snapshot_frame: OnceLock::new(),
            notice_frames: [OnceLock::new(), OnceLock::new()],
        };
        publication.frame = server::data(&publication.envelope, publication.view(), false);
        publication
    }

    fn view(&self) -> EventView<'_> {
        EventView {
            channel: &self.channel.name,
            offset: self.offset,
            event_kind: &self.event_kind,
            keywords: &self.keywords,
            data: &self.data,
            device: DeviceView {
                device_time: self.device_text.as_deref(),
                received: self
                    .device_text
                    .as_ref()
                    .map(|_| self.envelope.timestamp.as_str()),
                late: self.marks.late,
                changed_at: self.changed_text.as_deref(),
                since_change: self.marks.since_change_ms.map(|ms| ms as f64 / 1000.0),
            },
        }
    }

    /// The serialized `data` message, shared by every subscriber.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The same message marked `"snapshot": true`, built on first use.
    pub fn snapshot_frame(&self) -> &Bytes {
        self.snapshot_frame
            .get_or_init(|| server::data(&self.envelope, self.view(), true))
    }

    /// The message without `data` that subscribers of a notify-only
    /// channel get (kind, keywords, key, offset), `snapshot` or not: built
    /// once, on first use, and shared by every such subscriber.
    pub fn notice_frame(&self, snapshot: bool) -> &Bytes {
        self.notice_frames[usize::from(snapshot)].get_or_init(|| {
            server::notice(&self.envelope, self.view(), self.key.as_deref(), snapshot)
        })
    }

    /// The frame a subscriber gets live: [`Publication::frame`], or
    /// [`Publication::notice_frame`] on a notify-only channel.
    pub fn frame_for(&self, notify_only: bool) -> &Bytes {
        match notify_only {
            true => self.notice_frame(false),
            false => &self.frame,
        }
    }

    /// The snapshot a subscriber gets: [`Publication::snapshot_frame`], or
    /// the snapshot [`Publication::notice_frame`] on a notify-only channel.
    pub fn snapshot_frame_for(&self, notify_only: bool) -> &Bytes {
        match notify_only {
            true => self.notice_frame(true),
            false => self.snapshot_frame(),
        }
    }

    /// The payload as published.
    pub fn data(&self) -> &RawValue {
        &self.data
    }

    /// The `uuid` and `timestamp` every node sends with it.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

/// Where a publication landed: the answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// The publication's offset.
    pub offset: u64,
    /// True when the event's `id` had been published already: this is the
    /// first one's position, and nothing was published (omitted when false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> NewEvent {
        serde_json::from_str(json).expect("event")
    }

    #[test]
    fn validates_names_and_keywords() {
        let ok = event(
            r#"{"app_id":"a","channel":"bornes","event_kind":"alarm","keywords":["borne:B1"]}"#,
        );
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.data.get(), "null");
        let bad = event(r#"{"app_id":"a","channel":"","event_kind":"alarm"}"#);
        assert_eq!(bad.validate(), Err(EventError::BadName("channel")));
        let keyword = |k: &str| {
            let json = serde_json::json!({"app_id": "a", "channel": "c", "event_kind": "a",
                                          "keywords": ["ok:1", k]});
            event(&json.to_string()).validate()
        };
        let problem = |p| {
            move |shown: &str| EventError::BadKeyword {
                index: 1,
                shown: shown.into(),
                problem: p,
            }
        };
        assert_eq!(keyword("B1"), Err(problem(KeywordProblem::NoColon)("B1")));
        assert_eq!(keyword(":B1"), Err(problem(KeywordProblem::BadName)(":B1")));
        let spaced = "bo rne:B1";
        assert_eq!(
            keyword(spaced),
            Err(problem(KeywordProblem::BadName)(spaced))
        );
        assert_eq!(keyword("borne:B1 and more: yes"), Ok(()));
        assert_eq!(keyword("user.id:"), Ok(()));
        let long = format!("k:{}", "x".repeat(MAX_KEYWORD_LEN));
        assert!(matches!(
            keyword(&long),
            Err(EventError::BadKeyword {
                problem: KeywordProblem::TooLong,
                ..
            })
        ));
        assert!(
            serde_json::from_str::<NewEvent>(
                r#"{"app_id":"a","channel":"c","event_kind":"a","x":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn runs_group_consecutive_events_of_one_channel() {
        let on = |app: &str, channel: &str| {
            event(&format!(
                r#"{{"app_id":"{app}","channel":"{channel}","event_kind":"k"}}"#
            ))
        };
        let items = vec![on("a", "x"), on("a", "x"), on("b", "x"), on("a", "x")];
        let runs = channel_runs(items, |e| e);
        let shape: Vec<(String, usize)> = runs
            .iter()
            .map(|(c, run)| (c.to_string(), run.len()))
            .collect();
        assert_eq!(
            shape,
            vec![("a/x".into(), 2), ("b/x".into(), 1), ("a/x".into(), 1)]
        );
    }

    #[test]
    fn frames_are_built_once() {
        let p = Publication::new(
            ChannelId::new("a", "c"),
            7,
            event(r#"{"app_id":"a","channel":"c","event_kind":"k","data":{"v":1}}"#),
        );
        let v: serde_json::Value = serde_json::from_slice(p.frame()).expect("json");
        assert_eq!(v["offset"], 7);
        assert_eq!(v["data"]["v"], 1);
        let s: serde_json::Value = serde_json::from_slice(p.snapshot_frame()).expect("json");
        assert_eq!(s["snapshot"], true);
        assert_eq!(s["uuid"], v["uuid"]);
    }

    #[test]
    fn notice_frames_carry_no_data_and_are_shared() {
        let p = Publication::new(
            ChannelId::new("a", "c"),
            7,
            event(
                r#"{"app_id":"a","channel":"c","event_kind":"k","keywords":["x:1"],
                    "key":"doc:9","data":{"v":1}}"#,
            ),
        );
        let n: serde_json::Value = serde_json::from_slice(p.frame_for(true)).expect("json");
        assert!(n.get("data").is_none(), "{n}");
        assert_eq!(
            (n["offset"].as_u64(), n["key"].as_str()),
            (Some(7), Some("doc:9"))
        );
        assert_eq!(n["keywords"], serde_json::json!(["x:1"]));
        assert_eq!(
            n["uuid"],
            serde_json::from_slice::<serde_json::Value>(p.frame()).expect("json")["uuid"]
        );
        assert!(std::ptr::eq(p.frame_for(true), p.frame_for(true)));
        let s: serde_json::Value =
            serde_json::from_slice(p.snapshot_frame_for(true)).expect("json");
        assert_eq!(s["snapshot"], true);
        assert!(s.get("data").is_none());
        assert_eq!(p.frame_for(false), p.frame());
    }
}
