//! MQTT topic filters (`+` one level, `#` the rest): which configured filter
//! a message's topic falls under, and whether two filters could both take
//! one topic (refused in the config, so that each message has one mapping).

/// Whether `filter` is a valid MQTT filter: non-empty, `+` and `#` alone in
/// their level, `#` last, no NUL.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') || filter.starts_with("$share/") {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i + 1 == levels.len(),
        "+" => true,
        other => !other.contains('+') && !other.contains('#'),
    })
}

/// Whether `topic` matches `filter`. Like brokers, a filter starting with a
/// wildcard does not match topics starting with `$` (`$SYS/...`).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (wanted, Some(got)) if wanted == got => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Whether some topic matches both filters.
pub fn overlap(a: &str, b: &str) -> bool {
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

/// The topic's levels, `{N}` of the templates being the Nth (from 0).
pub fn levels(topic: &str) -> Vec<&str> {
    topic.split('/').collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("+"), Just("")], 1..4),
            any::<bool>(),
        )
            .prop_map(|(levels, hash)| {
                let mut f = levels.join("/");
                if hash {
                    f.push_str("/#");
                }
                f
            })
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just("")], 1..5)
            .prop_map(|levels| levels.join("/"))
    }

    proptest! {
        /// The config's overlap check never misses: a topic two filters
        /// both match means they overlap, so one source never has two
        /// mappings for a message.
        #[test]
        fn overlap_never_misses(a in filter(), b in filter(), t in topic()) {
            if matches(&a, &t) && matches(&b, &t) {
                prop_assert!(overlap(&a, &b), "{a} and {b} both match {t}");
            }
        }
    }

    #[test]
    fn filters_match_like_a_broker() {
        assert!(matches("devices/+/telemetry", "devices/D1/telemetry"));
        assert!(!matches("devices/+/telemetry", "devices/D1/telemetry/x"));
        assert!(!matches("devices/+/telemetry", "devices/telemetry"));
        assert!(matches("devices/#", "devices/D1/a/b"));
        assert!(matches("devices/#", "devices"));
        assert!(!matches("#", "$SYS/uptime"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/c"));
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in ["", "a/#/b", "a/b+", "a#", "$share/g/a"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        for good in ["#", "+", "a/+/b", "a/#", "/a"] {
            assert!(valid_filter(good), "{good}");
        }
    }

    #[test]
    fn overlapping_filters_are_found() {
        assert!(overlap("devices/+/telemetry", "devices/D1/#"));
        assert!(overlap("a/+", "+/b"));
        assert!(!overlap("devices/+/telemetry", "devices/+/status"));
        assert!(!overlap("a/b", "a/b/c"));
        assert!(overlap("a/b", "a/b"));
    }
}
