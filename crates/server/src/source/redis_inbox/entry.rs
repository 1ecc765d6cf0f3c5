//! One inbox entry, read: its events, each with the idempotency id it is
//! published once under, or why the entry cannot be read.
//!
//! An entry holds one event as JSON in its field `event`, or several as a
//! JSON array in `events`. An event without its own `id` gets one derived
//! from the entry (`inbox:<entry id>`, `inbox:<entry id>/<i>` in an array),
//! so an entry read again after a crash is not published twice.

use chouquette_core::publication::NewEvent;
use redis::streams::StreamId;

/// One entry of the stream.
pub(super) struct Entry {
    /// Its stream id.
    pub id: String,
    /// Its events, or why it is refused as a whole.
    pub events: Result<Vec<NewEvent>, String>,
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

/// Reads `entry`; its events are checked by the ingest pipeline, not here.
pub(super) fn parse(entry: &StreamId) -> Entry {
    let (raw, events) = if let Some(one) = field(entry, "event") {
        let events = serde_json::from_str::<NewEvent>(&one)
            .map(|e| vec![with_dedup_id(e, &entry.id)])
            .map_err(|e| format!("field `event`: {e}"));
        (one, events)
    } else if let Some(many) = field(entry, "events") {
        let events = serde_json::from_str::<Vec<NewEvent>>(&many)
            .map(|events| {
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| with_dedup_id(e, &format!("{}/{i}", entry.id)))
                    .collect()
            })
            .map_err(|e| format!("field `events`: {e}"));
        (many, events)
    } else {
        (String::new(), Err("no `event` or `events` field".into()))
    };
    Entry {
        id: entry.id.clone(),
        events,
        raw,
    }
}
