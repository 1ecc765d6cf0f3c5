//! One inbox entry, read: its events, each with the idempotency id it is
//! published once under, or its notification, or why the entry cannot be
//! read.
//!
//! An entry holds one event as JSON in its field `event`, several as a
//! JSON array in `events`, or one notification to users in `notification`
//! (the body of `POST /api/v1/notify`); one of the three, never two. An
//! event or a notification without its own `id` gets one derived from the
//! entry (`inbox:<entry id>`, `inbox:<entry id>/<i>` in an array), so an
//! entry read again after a crash is not published or stored twice.

use chouquette_core::notifications::{Notify, NotifyRequest};
use chouquette_core::publication::NewEvent;
use redis::streams::StreamId;

/// The fields an entry may carry its content in.
const CONTENT_FIELDS: [&str; 3] = ["event", "events", "notification"];

/// What an entry asks for.
pub(super) enum Content {
    /// Events, published as one group; checked by the ingest pipeline.
    Events(Vec<NewEvent>),
    /// A notification of the app, checked already (as the HTTP route does).
    Notification(Box<(String, Notify)>),
}

/// One entry of the stream.
pub(super) struct Entry {
    /// Its stream id.
    pub id: String,
    /// What it asks for, or why it is refused as a whole.
    pub content: Result<Content, String>,
    /// The JSON as given, for the dead-letter stream.
    pub raw: String,
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    entry
        .map
        .get(name)
        .and_then(|v| <String as redis::FromRedisValue>::from_redis_value_ref(v).ok())
}

/// `event` with the id it is published once under: the backend's own `id`
/// when it set one (shared with HTTP publishes), else one derived from
/// where it sits in the stream. The id is never shown to clients.
fn with_dedup_id(mut event: NewEvent, place: &str) -> NewEvent {
    if event.id.is_none() {
        event.id = Some(format!("inbox:{place}"));
    }
    event
}

/// Reads `entry`; its events are checked by the ingest pipeline, not here,
/// its notification here, against the bounds of `POST /api/v1/notify`
/// (`max_data_bytes` for its `data`).
pub(super) fn parse(entry: &StreamId, max_data_bytes: usize) -> Entry {
    let given: Vec<&str> = CONTENT_FIELDS
        .into_iter()
        .filter(|name| entry.map.contains_key(*name))
        .collect();
    let (raw, content) = match given.as_slice() {
        [] => (
            String::new(),
            Err("no `event`, `events` or `notification` field".into()),
        ),
        [one] => {
            let raw = field(entry, one).unwrap_or_default();
            let content = read(one, &raw, &entry.id, max_data_bytes);
            (raw, content)
        }
        [..] => (
            String::new(),
            Err(format!(
                "fields {}: an entry holds one of `event`, `events` or `notification`",
                given.join(", ")
            )),
        ),
    };
    Entry {
        id: entry.id.clone(),
        content,
        raw,
    }
}

/// The content of field `name`, holding `raw`, of the entry `id`.
fn read(name: &str, raw: &str, id: &str, max_data_bytes: usize) -> Result<Content, String> {
    match name {
        "event" => serde_json::from_str::<NewEvent>(raw)
            .map(|e| Content::Events(vec![with_dedup_id(e, id)]))
            .map_err(|e| format!("field `event`: {e}")),
        "events" => serde_json::from_str::<Vec<NewEvent>>(raw)
            .map(|events| {
                let events = events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| with_dedup_id(e, &format!("{id}/{i}")))
                    .collect();
                Content::Events(events)
            })
            .map_err(|e| format!("field `events`: {e}")),
        _ => {
            let request = serde_json::from_str::<NotifyRequest>(raw)
                .map_err(|e| format!("field `notification`: {e}"))?;
            let (app, mut notify) = request
                .check(max_data_bytes)
                .map_err(|e| format!("field `notification`: {e}"))?;
            notify
                .idempotency
                .get_or_insert_with(|| format!("inbox:{id}"));
            Ok(Content::Notification(Box::new((app, notify))))
        }
    }
}
