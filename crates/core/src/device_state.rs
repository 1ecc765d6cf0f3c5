//! Per-key tracking of a channel's state value: when it last changed
//! (binary sensors: `since_change`, `changed_at`) and whether it changes so
//! often that the sensor is likely broken (`flapping` events).
//!
//! The memory broker keeps one [`Tracked`] per key of a channel's kept
//! state, so the tracking is bounded by the channel's `max_state_keys`;
//! each holds at most `changes + 1` change times.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::device_time::{DeviceTime, StateMarks};
use crate::publication::{MAX_KEYWORD_LEN, MAX_KEYWORDS, NewEvent};

/// A channel's flapping rule: more than `changes` changes of a key's
/// tracked value within `window` raise one `flapping` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flapping {
    /// Changes allowed within the window.
    pub changes: usize,
    /// The window.
    pub window: Duration,
}

/// The kind of the event raised when a key starts flapping.
pub const FLAPPING_KIND: &str = "flapping";
/// The kind of the event raised when a flapping key calmed down.
pub const CLEARED_KIND: &str = "flapping_cleared";

/// What is remembered about one key's tracked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The value's JSON text.
    pub value: String,
    /// When it took that value (Unix ms, device clock when given).
    pub changed_ms: i64,
    /// Times of the recent changes, oldest first: at most the rule's
    /// `changes + 1`, none older than its window.
    pub changes: VecDeque<i64>,
    /// Whether a `flapping` event was raised and not yet cleared.
    pub flapping: bool,
}

/// A flapping episode starting or ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// The value changed `count` times between `first` and `last` (ms).
    Started {
        /// Changes within the window.
        count: usize,
        /// The first of them.
        first: i64,
        /// The last of them.
        last: i64,
    },
    /// A whole window went by without a change.
    Cleared,
}

/// Compares an event's tracked `value` at `at` (Unix ms) with what `prior`
/// remembers: the marks sent with the event, what to remember now, and an
/// alarm when a flapping episode starts or ends.
pub fn observe(
    prior: Option<&Tracked>,
    value: String,
    at: i64,
    rule: Option<Flapping>,
) -> (StateMarks, Tracked, Option<Alarm>) {
    let Some(prior) = prior else {
        let marks = StateMarks {
            changed_ms: Some(at),
            ..StateMarks::default()
        };
        let tracked = Tracked {
            value,
            changed_ms: at,
            changes: VecDeque::new(),
            flapping: false,
        };
        return (marks, tracked, None);
    };
    let changed = prior.value != value;
    let mut next = Tracked {
        changed_ms: if changed { at } else { prior.changed_ms },
        value,
        changes: prior.changes.clone(),
        flapping: prior.flapping,
    };
    let marks = StateMarks {
        late: false,
        changed_ms: Some(next.changed_ms),
        since_change_ms: Some(at.saturating_sub(prior.changed_ms).max(0)),
        changed,
    };
    let alarm = rule.and_then(|rule| flap(&mut next, changed, at, rule));
    (marks, next, alarm)
}

/// Updates the change times and the episode.
fn flap(tracked: &mut Tracked, changed: bool, at: i64, rule: Flapping) -> Option<Alarm> {
    let window = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
    let since = at.saturating_sub(window);
    while tracked.changes.front().is_some_and(|t| *t < since) {
        tracked.changes.pop_front();
    }
    let quiet = tracked.changes.is_empty();
    if changed {
        tracked.changes.push_back(at);
        while tracked.changes.len() > rule.changes.saturating_add(1) {
            tracked.changes.pop_front();
        }
    }
    if tracked.flapping && quiet {
        tracked.flapping = false;
        return Some(Alarm::Cleared);
    }
    if !tracked.flapping && tracked.changes.len() > rule.changes {
        tracked.flapping = true;
        return Some(Alarm::Started {
            count: tracked.changes.len(),
            first: tracked.changes.front().copied().unwrap_or(at),
            last: at,
        });
    }
    None
}

/// The event announcing `alarm` for `key`, on the channel of `about`: its
/// keywords plus `key:<key>` (room permitting), no `key` of its own (it
/// must not replace the sensor's state).
pub fn alarm_event(about: &NewEvent, key: &str, alarm: Alarm, rule: Flapping) -> NewEvent {
    let mut keywords = about.keywords.clone();
    let tag = format!("key:{key}");
    if keywords.len() < MAX_KEYWORDS && tag.len() <= MAX_KEYWORD_LEN {
        keywords.push(tag);
    }
    let ms = |t: i64| DeviceTime::from_millis(t).map(DeviceTime::rfc3339).ok();
    let window = rule.window.as_secs_f64();
    let (kind, data) = match alarm {
        Alarm::Started { count, first, last } => (
            FLAPPING_KIND,
            serde_json::json!({"key": key, "changes": count, "window": window,
                               "limit": rule.changes, "first": ms(first), "last": ms(last)}),
        ),
        Alarm::Cleared => (
            CLEARED_KIND,
            serde_json::json!({"key": key, "window": window}),
        ),
    };
    NewEvent {
        app_id: about.app_id.clone(),
        channel: about.channel.clone(),
        event_kind: kind.into(),
        keywords,
        key: None,
        // A JSON value always serializes.
        data: RawValue::from_string(data.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned()),
        id: None,
        time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Flapping = Flapping {
        changes: 3,
        window: Duration::from_secs(10),
    };

    /// Feeds `(value, at_ms)` in order; the alarms raised.
    fn run(steps: &[(&str, i64)]) -> (Vec<StateMarks>, Vec<Option<Alarm>>) {
        let mut tracked: Option<Tracked> = None;
        let (mut marks, mut alarms) = (Vec::new(), Vec::new());
        for (value, at) in steps {
            let (m, t, a) = observe(tracked.as_ref(), (*value).into(), *at, Some(RULE));
            tracked = Some(t);
            marks.push(m);
            alarms.push(a);
        }
        (marks, alarms)
    }

    #[test]
    fn since_change_counts_from_the_last_change() {
        let (marks, _) = run(&[("0", 1000), ("0", 3000), ("1", 4500), ("1", 5000)]);
        assert_eq!(marks[0].since_change_ms, None);
        assert_eq!(marks[1].since_change_ms, Some(2000));
        assert_eq!(
            (marks[2].since_change_ms, marks[2].changed),
            (Some(3500), true)
        );
        assert_eq!(marks[3].since_change_ms, Some(500));
        assert_eq!(marks[3].changed_ms, Some(4500));
    }

    #[test]
    fn flapping_is_raised_once_per_episode_and_cleared_after_a_quiet_window() {
        let steps = [
            ("0", 0),
            ("1", 1000),
            ("0", 2000),
            ("1", 3000),
            ("0", 4000), // 4th change within 10 s: flapping
            ("1", 5000), // still flapping: nothing new
            ("1", 9000),
            ("1", 16_000), // 11 s after the last change: cleared
        ];
        let (_, alarms) = run(&steps);
        let raised: Vec<(usize, Alarm)> = alarms
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (i, a)))
            .collect();
        assert_eq!(
            raised,
            vec![
                (
                    4,
                    Alarm::Started {
                        count: 4,
                        first: 1000,
                        last: 4000
                    }
                ),
                (7, Alarm::Cleared)
            ]
        );
    }

    #[test]
    fn slow_changes_never_flap() {
        let steps: Vec<(&str, i64)> = (0..20)
            .map(|i| (if i % 2 == 0 { "0" } else { "1" }, i * 4000))
            .collect();
        let (_, alarms) = run(&steps);
        assert!(alarms.iter().all(Option::is_none));
    }
}
