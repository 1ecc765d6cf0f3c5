//! One channel's log: offsets, epoch, bounded history and last known state.
//!
//! This is the in-memory form used by the memory broker. History is bounded
//! by length and by age; the state map by its number of keys (a publish that
//! would add a key past the bound is refused, never silently evicted). The
//! idempotency ids of the events in history are remembered with them, so a
//! retried publish is recognized while its original is in history.
//!
//! An event with a device `time` older than its key's state's is late: it
//! goes to history and is delivered (marked `late`) but leaves the state
//! alone. With a `state_field`, each kept key's value is tracked
//! ([`crate::device_state`]): at most one [`Tracked`] per kept key.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::app::ChannelPolicy;
use crate::device_state::{self, Tracked};
use crate::device_time::{DeviceTime, StateMarks, state_value};
use crate::publication::{ChannelId, NewEvent, Publication};
use crate::recovery::{self, Plan};

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The channel already keeps state for its maximum number of keys.
    #[error("channel keeps state for {0} keys already (limit)")]
    StateFull(usize),
}

/// What a subscriber gets when it joins or resumes.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// The channel's last offset at the time of the read.
    pub top: u64,
    /// The events to replay (resume), or the last state (fresh subscribe).
    pub events: Vec<Arc<Publication>>,
    /// True when a requested resume was impossible: send `reset`.
    pub gap: bool,
}

/// What an append did.
#[derive(Debug, Clone)]
pub enum Appended {
    /// The event got the next offset.
    New(Arc<Publication>),
    /// Its `id` was published already, at this offset: nothing changed.
    Duplicate(u64),
}

/// One channel's offsets, history and state.
#[derive(Debug)]
pub struct ChannelLog {
    channel: ChannelId,
    epoch: Arc<str>,
    top: u64,
    history: VecDeque<Arc<Publication>>,
    state: HashMap<Box<str>, Arc<Publication>>,
    /// Idempotency id → offset, for the events in `history`.
    ids: HashMap<Box<str>, u64>,
    /// The tracked `state_field` value per kept key (never more keys than
    /// `state`).
    tracked: HashMap<Box<str>, Tracked>,
    /// A `flapping` event raised by the last append, for the broker to
    /// deliver after it.
    alarm: Option<Arc<Publication>>,
}

impl ChannelLog {
    /// An empty log with a fresh epoch.
    pub fn new(channel: ChannelId, epoch: Arc<str>) -> ChannelLog {
        ChannelLog {
            channel,
            epoch,
            top: 0,
            history: VecDeque::new(),
            state: HashMap::new(),
            ids: HashMap::new(),
            tracked: HashMap::new(),
            alarm: None,
        }
    }

    /// The `flapping` (or `flapping_cleared`) event the last append raised,
    /// already in history with the offset after it: deliver it next.
    pub fn take_alarm(&mut self) -> Option<Arc<Publication>> {
        self.alarm.take()
    }

    /// The epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Gives `event` the next offset and records it in history and state,
    /// unless its `id` is that of an event still in history.
    pub fn append(
        &mut self,
        event: NewEvent,
        policy: &ChannelPolicy,
        now: Instant,
    ) -> Result<Appended, LogError> {
        if let Some(offset) = event.id.as_deref().and_then(|id| self.ids.get(id)) {
            return Ok(Appended::Duplicate(*offset));
        }
        let keeps_key = policy.keep_state && event.key.is_some();
        if keeps_key
            && self.state.len() >= policy.max_state_keys
            && event
                .key
                .as_deref()
                .is_some_and(|k| !self.state.contains_key(k))
        {
            return Err(LogError::StateFull(policy.max_state_keys));
        }
        let late = keeps_key && self.is_late(&event);
        let (marks, alarm) = match &event.key {
            Some(key) if keeps_key && !late => self.track(key, &event, policy),
            _ => (
                StateMarks {
                    late,
                    ..StateMarks::default()
                },
                None,
            ),
        };
        let publication = self.push(event, marks, policy);
        if keeps_key
            && !late
            && let Some(key) = &publication.key
        {
            self.state.insert(key.clone(), publication.clone());
        }
        self.alarm = alarm.map(|alarm| self.push(alarm, StateMarks::default(), policy));
        self.trim(policy, now);
        Ok(Appended::New(publication))
    }

    /// Gives `event` the next offset and puts it in history.
    fn push(
        &mut self,
        event: NewEvent,
        marks: StateMarks,
        policy: &ChannelPolicy,
    ) -> Arc<Publication> {
        self.top += 1;
        let publication = Arc::new(Publication::marked(
            self.channel.clone(),
            self.top,
            event,
            marks,
        ));
        if policy.history > 0 {
            if let Some(id) = &publication.id {
                self.ids.insert(id.clone(), publication.offset);
            }
            self.history.push_back(publication.clone());
        }
        publication
    }

    /// Whether `event`'s device time is older than its key's state's.
    fn is_late(&self, event: &NewEvent) -> bool {
        let held = event
            .key
            .as_deref()
            .and_then(|k| self.state.get(k))
            .and_then(|p| p.device_time);
        matches!((event.time, held), (Some(t), Some(h)) if t < h)
    }

    /// Tracks the key's `state_field` value: the marks for the event, and
    /// the flapping event it raises, if any.
    fn track(
        &mut self,
        key: &str,
        event: &NewEvent,
        policy: &ChannelPolicy,
    ) -> (StateMarks, Option<NewEvent>) {
        let value = policy
            .state_field
            .as_deref()
            .and_then(|field| state_value(&event.data, field));
        let Some(value) = value else {
            return (StateMarks::default(), None);
        };
        let at = event.time.unwrap_or_else(DeviceTime::now).millis();
        let (marks, tracked, alarm) =
            device_state::observe(self.tracked.get(key), value, at, policy.flapping);
        self.tracked.insert(key.into(), tracked);
        let alarm = alarm
            .zip(policy.flapping)
            .map(|(alarm, rule)| device_state::alarm_event(event, key, alarm, rule));
        (marks, alarm)
    }

    fn trim(&mut self, policy: &ChannelPolicy, now: Instant) {
        while self.history.len() > policy.history {
            self.drop_oldest();
        }
        if let Some(ttl) = policy.history_ttl {
            while self
                .history
                .front()
                .is_some_and(|p| now.saturating_duration_since(p.received) > ttl)
            {
                self.drop_oldest();
            }
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(p) = self.history.pop_front()
            && let Some(id) = &p.id
        {
            self.ids.remove(id);
        }
    }

    /// The kept state, in offset order.
    fn snapshot(&self) -> Vec<Arc<Publication>> {
        let mut events: Vec<_> = self.state.values().cloned().collect();
        events.sort_unstable_by_key(|p| p.offset);
        events
    }

    /// Events after `since` (same epoch), or a gap (with the last known
    /// state when the channel keeps one); without `since`, the last known
    /// state (when `snapshot`) in offset order.
    pub fn recover(
        &mut self,
        since: Option<(&str, u64)>,
        snapshot: bool,
        policy: &ChannelPolicy,
        now: Instant,
    ) -> Recovered {
        self.trim(policy, now);
        let mut out = Recovered {
            epoch: self.epoch.clone(),
            top: self.top,
            events: Vec::new(),
            gap: false,
        };
        match since {
            Some((epoch, offset)) => {
                let first = self.history.front().map_or(self.top + 1, |p| p.offset);
                match recovery::plan(offset, epoch == &*self.epoch, first, self.top) {
                    // The state stands in for the missed history.
                    Plan::Gap => {
                        out.gap = true;
                        if policy.keep_state {
                            out.events = self.snapshot();
                        }
                    }
                    Plan::Replay { after } => {
                        out.events = self
                            .history
                            .iter()
                            .filter(|p| p.offset > after)
                            .cloned()
                            .collect();
                    }
                }
            }
            None if snapshot && policy.keep_state => out.events = self.snapshot(),
            None => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(key: Option<&str>) -> NewEvent {
        NewEvent {
            app_id: "a".into(),
            channel: "c".into(),
            event_kind: "k".into(),
            keywords: vec![],
            key: key.map(String::from),
            data: serde_json::value::RawValue::NULL.to_owned(),
            id: None,
            time: None,
        }
    }

    fn policy(history: usize) -> ChannelPolicy {
        ChannelPolicy {
            history,
            keep_state: true,
            max_state_keys: 2,
            ..ChannelPolicy::default()
        }
    }

    #[test]
    fn offsets_history_and_gap() {
        let now = Instant::now();
        let p = policy(3);
        let mut log = ChannelLog::new(ChannelId::new("a", "c"), "e1".into());
        for _ in 0..5 {
            log.append(event(None), &p, now).expect("append");
        }
        let r = log.recover(Some(("e1", 2)), false, &p, now);
        assert!(!r.gap);
        assert_eq!(
            r.events.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert!(log.recover(Some(("e1", 1)), false, &p, now).gap);
        assert!(log.recover(Some(("e0", 4)), false, &p, now).gap);
        assert!(
            log.recover(Some(("e1", 5)), false, &p, now)
                .events
                .is_empty()
        );
    }

    #[test]
    fn state_is_bounded_and_latest_wins() {
        let now = Instant::now();
        let p = policy(0);
        let mut log = ChannelLog::new(ChannelId::new("a", "c"), "e".into());
        log.append(event(Some("b1")), &p, now).expect("b1");
        log.append(event(Some("b2")), &p, now).expect("b2");
        log.append(event(Some("b1")), &p, now).expect("b1 again");
        assert_eq!(
            log.append(event(Some("b3")), &p, now).map(|_| ()),
            Err(LogError::StateFull(2))
        );
        let r = log.recover(None, true, &p, now);
        assert_eq!(
            r.events.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(r.top, 3);
    }

    #[test]
    fn an_id_in_history_is_published_once() {
        let now = Instant::now();
        let p = policy(2);
        let mut log = ChannelLog::new(ChannelId::new("a", "c"), "e".into());
        let with_id = |id: &str| NewEvent {
            id: Some(id.into()),
            ..event(None)
        };
        let offset = |a: Appended| match a {
            Appended::New(p) => (p.offset, false),
            Appended::Duplicate(o) => (o, true),
        };
        let first = log.append(with_id("x"), &p, now).expect("x");
        assert_eq!(offset(first), (1, false));
        let again = log.append(with_id("x"), &p, now).expect("x again");
        assert_eq!(offset(again), (1, true));
        log.append(event(None), &p, now).expect("2");
        log.append(event(None), &p, now).expect("3");
        // `x` left history: it is forgotten, a retry now publishes.
        let late = log.append(with_id("x"), &p, now).expect("x late");
        assert_eq!(offset(late), (4, false));
        assert_eq!(log.ids.len(), 1);
    }

    #[test]
    fn history_expires_by_age() {
        let start = Instant::now();
        let p = ChannelPolicy {
            history_ttl: Some(Duration::from_secs(10)),
            ..policy(10)
        };
        let mut log = ChannelLog::new(ChannelId::new("a", "c"), "e".into());
        log.append(event(None), &p, start).expect("append");
        assert!(!log.recover(Some(("e", 0)), false, &p, start).gap);
        let later = start + Duration::from_secs(3600);
        assert!(log.recover(Some(("e", 0)), false, &p, later).gap);
    }

    fn timed(key: &str, secs: i64, data: &str) -> NewEvent {
        NewEvent {
            time: Some(DeviceTime::from_millis(secs * 1000).expect("time")),
            data: serde_json::value::RawValue::from_string(data.into()).expect("raw"),
            ..event(Some(key))
        }
    }

    fn state_of(log: &mut ChannelLog, p: &ChannelPolicy) -> Vec<Arc<Publication>> {
        log.recover(None, true, p, Instant::now()).events
    }

    #[test]
    fn a_late_event_is_kept_in_history_but_leaves_the_state() {
        let now = Instant::now();
        let p = policy(10);
        let mut log = ChannelLog::new(ChannelId::new("a", "c"), "e".into());
        let Appended::New(fresh) = log.append(timed("b1", 200, "1"), &p, now).expect("fresh")
        else {
            panic!("duplicate")
        };
        assert!(!fresh.marks.late);
        let Appended::New(late) = log.append(timed("b1", 100, "2"), &p, now).expect("late") else {
            panic!("duplicate")
        };
        assert!(late.marks.late);
        let frame: serde_json::Value = serde_json::from_slice(late.frame()).expect("json");
        assert_eq!(frame["late"], true);
        assert_eq!(frame["device_time"], "1970-01-01T00:01:40.000Z");
        assert_eq!(frame["received"], frame["timestamp"]);
        let state = state_of(&mut log, &p);
        assert_eq!(state.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![1]);
        let history = log.recover(Some(("e", 0)), false, &p, now).events;
        assert_eq!(history.len(), 2);
        // Equal times, and events without one, replace the state as always.
        log.append(timed("b1", 200, "3"), &p, now).expect("equal");
        assert_eq!(state_of(&mut log, &p)[0].offset, 3);
        log.append(event(Some("b1")), &p, now).expect("untimed");
        assert_eq!(state_of(&mut log, &p)[0].offset, 4);
    }

    #[test]
    fn a_state_field_change_carries_since_change_and_flapping_raises_an_event() {
        let now = Instant::now();
        let p = ChannelPolicy {
            state_field: Some("on".into()),
            flapping: Some(crate::device_state::Flapping {
                changes: 2,
                window: Duration::from_secs(60),
            }),
            ..policy(10)
        };
        let mut log = ChannelLog::new(ChannelId::new("a", "c"), "e".into());
        let mut last = None;
        for (i, on) in ["false", "true", "false", "true"].iter().enumerate() {
            let secs = 10 * (i as i64 + 1);
            let data = format!(r#"{{"on":{on}}}"#);
            let Appended::New(p) = log
                .append(timed("b1", secs, &data), &p, now)
                .expect("append")
            else {
                panic!("duplicate")
            };
            last = Some((p, log.take_alarm()));
        }
        let p3 = state_of(&mut log, &p).remove(0);
        assert_eq!(p3.marks.since_change_ms, Some(10_000));
        let (_, alarm) = last.expect("appended");
        let alarm = alarm.expect("flapping after 3 changes within 60 s");
        assert_eq!(&*alarm.event_kind, "flapping");
        assert_eq!(alarm.key, None);
        assert_eq!(&*alarm.keywords[0], "key:b1");
        let data: serde_json::Value = serde_json::from_str(alarm.data().get()).expect("json");
        assert_eq!(data["changes"], 3);
        assert_eq!(data["first"], "1970-01-01T00:00:20.000Z");
        assert_eq!(alarm.offset, 5);
        let frame: serde_json::Value = serde_json::from_slice(p3.frame()).expect("json");
        assert_eq!(frame["since_change"], 10.0);
        assert_eq!(frame["changed_at"], "1970-01-01T00:00:40.000Z");
    }

    proptest::proptest! {
        /// Whatever order a key's events arrive in, its state ends as the
        /// one with the newest device time (of equal times, the last to
        /// arrive, as without times).
        #[test]
        fn state_ends_as_the_newest_device_time(times in proptest::collection::vec(0i64..50, 1..40)) {
            let now = Instant::now();
            let p = policy(0);
            let mut log = ChannelLog::new(ChannelId::new("a", "c"), "e".into());
            for t in &times {
                log.append(timed("b1", *t, "null"), &p, now).expect("append");
            }
            let newest = times.iter().max().copied().unwrap_or_default();
            let state = state_of(&mut log, &p);
            proptest::prop_assert_eq!(state.len(), 1);
            proptest::prop_assert_eq!(state[0].device_time.map(DeviceTime::millis), Some(newest * 1000));
            let last_newest = times.iter().rposition(|t| *t == newest).unwrap_or_default();
            proptest::prop_assert_eq!(state[0].offset, last_newest as u64 + 1);
        }
    }
}
