//! Lattice values: the state a namespace keeps for an app's users (shared,
//! or one user's own), updated by backends and kept in step on every tab
//! and every node (docs/protocol.md, "Lattices").
//!
//! Each value is a join-semilattice, so merging is commutative, associative
//! and idempotent: whoever sees the same updates, in any order and any
//! number of times, ends with the same state, with no coordination between
//! nodes. That is what lets updates travel through Redis pub/sub, be
//! replayed after a reconnect, or race between two backends.
//!
//! - `counter`: a non-negative integer; the greater wins.
//! - `set`: strings; the union.
//! - `register`: a JSON value with a timestamp; the greater `ts` wins, and
//!   on equal timestamps the greater value as canonical JSON text, so that
//!   two nodes never keep different values.
//!
//! A key updated with another type than it holds keeps the greater type in
//! the order counter < set < register (the lattice's ordinal sum): the
//! result is still a lattice, and a backend that changes a key's type gets
//! a deterministic, documented outcome instead of nodes that disagree.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Limits on one lattice (a namespace's shared state, or one user's), so
/// that a backend cannot make every connection of a namespace hold
/// unbounded state. An update that would pass one changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Keys in one lattice.
    pub max_keys: usize,
    /// Elements in one set.
    pub max_set_len: usize,
    /// Bytes of a key, a set element, or a register's JSON text.
    pub max_text_len: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_keys: 256,
            max_set_len: 1024,
            max_text_len: 4096,
        }
    }
}

impl Bounds {
    /// No limit: for reading state the gateway stored itself (it was within
    /// the bounds in force when written; smaller bounds since must not make
    /// it unreadable).
    pub const STORED: Bounds = Bounds {
        max_keys: usize::MAX,
        max_set_len: usize::MAX,
        max_text_len: usize::MAX,
    };
}

/// Why an update was refused; nothing of it was merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LatticeError {
    /// The value is not one of the three typed forms.
    #[error("key `{key}`: {problem}")]
    BadValue {
        /// The key, cut to 64 characters.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A key, set element or register value is over `max_text_len`.
    #[error("key `{key}`: text longer than {max} bytes")]
    TooLong {
        /// The key, cut to 64 characters.
        key: String,
        /// The bound.
        max: usize,
    },
    /// The lattice would hold more than `max_keys` keys.
    #[error("more than {0} keys")]
    TooManyKeys(usize),
    /// A set would hold more than `max_set_len` elements.
    #[error("key `{key}`: set larger than {max} elements")]
    SetTooLarge {
        /// The key, cut to 64 characters.
        key: String,
        /// The bound.
        max: usize,
    },
}

/// A register: a JSON value and when it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    /// Seconds, finite (checked on parse).
    ts: f64,
    /// Canonical JSON text (object keys sorted), compared on equal `ts`.
    value: Box<str>,
}

impl Register {
    fn order(&self, other: &Register) -> Ordering {
        self.ts
            .total_cmp(&other.ts)
            .then_with(|| self.value.cmp(&other.value))
    }
}

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Max-merged.
    Counter(u64),
    /// Union-merged.
    Set(BTreeSet<Box<str>>),
    /// Last writer (greatest `ts`, then greatest text) wins.
    Register(Register),
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Counter(_) => 0,
            Value::Set(_) => 1,
            Value::Register(_) => 2,
        }
    }

    /// Joins `other` into `self`; answers what a holder of the old value
    /// needs to reach the new one (`None`: nothing changed). For a set
    /// that is only the new elements.
    pub fn join(&mut self, other: &Value) -> Option<Value> {
        match (&mut *self, other) {
            (Value::Counter(a), Value::Counter(b)) => (*b > *a).then(|| {
                *a = *b;
                Value::Counter(*b)
            }),
            (Value::Set(a), Value::Set(b)) => {
                let added: BTreeSet<Box<str>> = b.difference(a).cloned().collect();
                a.extend(added.iter().cloned());
                (!added.is_empty()).then_some(Value::Set(added))
            }
            (Value::Register(a), Value::Register(b)) => {
                (b.order(a) == Ordering::Greater).then(|| {
                    *a = b.clone();
                    Value::Register(b.clone())
                })
            }
            (mine, theirs) => (theirs.rank() > mine.rank()).then(|| {
                *mine = theirs.clone();
                theirs.clone()
            }),
        }
    }

    /// Elements this value would add to `current` (a set's growth).
    fn added_len(&self, current: Option<&Value>) -> usize {
        match (self, current) {
            (Value::Set(new), Some(Value::Set(old))) => new.difference(old).count(),
            (Value::Set(new), _) => new.len(),
            _ => 0,
        }
    }
}

/// One lattice: typed values by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lattice {
    values: BTreeMap<Box<str>, Value>,
}

impl Lattice {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The values this lattice holds now for the keys `delta` names: what a
    /// client is sent for a change, so that applying it twice, late, or out
    /// of order with other changes still converges (each value is the
    /// merged one, never only its increment).
    pub fn current_of(&self, delta: &Lattice) -> Lattice {
        let values = delta
            .values
            .keys()
            .filter_map(|k| self.values.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        Lattice { values }
    }

    /// The wire form, as [`Lattice::parse`] reads it back (stored by the
    /// Redis broker, sent to clients).
    pub fn to_json(&self) -> String {
        // Every register's text was produced by serde_json (see
        // `parse_value`), so serializing cannot fail; `{}` is a safe floor.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Merges `update` in, all or nothing: within `bounds` the result is
    /// `self ⊔ update` and the answer is the delta that brings any holder of
    /// the old state to the new one (only the keys that changed).
    pub fn merge(&mut self, update: &Lattice, bounds: &Bounds) -> Result<Lattice, LatticeError> {
        self.check(update, bounds)?;
        let mut delta = Lattice::default();
        for (key, value) in &update.values {
            let changed = match self.values.get_mut(key) {
                Some(current) => current.join(value),
                None => {
                    self.values.insert(key.clone(), value.clone());
                    Some(value.clone())
                }
            };
            if let Some(change) = changed {
                delta.values.insert(key.clone(), change);
            }
        }
        Ok(delta)
    }

    /// Whether merging `update` stays within `bounds`.
    fn check(&self, update: &Lattice, bounds: &Bounds) -> Result<(), LatticeError> {
        let new_keys = update
            .values
            .keys()
            .filter(|k| !self.values.contains_key(*k))
            .count();
        if self.values.len() + new_keys > bounds.max_keys {
            return Err(LatticeError::TooManyKeys(bounds.max_keys));
        }
        for (key, value) in &update.values {
            let current = self.values.get(key);
            let held = match current {
                Some(Value::Set(s)) => s.len(),
                _ => 0,
            };
            if held + value.added_len(current) > bounds.max_set_len {
                return Err(LatticeError::SetTooLarge {
                    key: shown(key),
                    max: bounds.max_set_len,
                });
            }
        }
        Ok(())
    }

    /// Parses the wire form (`{"key": {"counter": 7}, ...}`), checking
    /// every text against `bounds`.
    pub fn parse(json: &str, bounds: &Bounds) -> Result<Lattice, LatticeError> {
        let wire: BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(json).map_err(|e| LatticeError::BadValue {
                key: String::new(),
                problem: e.to_string(),
            })?;
        if wire.len() > bounds.max_keys {
            return Err(LatticeError::TooManyKeys(bounds.max_keys));
        }
        let mut values = BTreeMap::new();
        for (key, raw) in wire {
            if key.len() > bounds.max_text_len {
                return Err(LatticeError::TooLong {
                    key: shown(&key),
                    max: bounds.max_text_len,
                });
            }
            let value = parse_value(&key, &raw, bounds)?;
            values.insert(key.into_boxed_str(), value);
        }
        Ok(Lattice { values })
    }
}

fn shown(key: &str) -> String {
    key.chars().take(64).collect()
}

/// The wire form of one value, as backends send it and clients get it.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum WireValue {
    Counter(u64),
    Set(Vec<String>),
    Register(WireRegister),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRegister {
    value: serde_json::Value,
    ts: f64,
}

fn parse_value(key: &str, raw: &RawValue, bounds: &Bounds) -> Result<Value, LatticeError> {
    let bad = |problem: String| LatticeError::BadValue {
        key: shown(key),
        problem,
    };
    let too_long = || LatticeError::TooLong {
        key: shown(key),
        max: bounds.max_text_len,
    };
    let wire: WireValue = serde_json::from_str(raw.get()).map_err(|e| {
        bad(format!(
            "expected {{\"counter\": n}}, {{\"set\": [...]}} or {{\"register\": {{\"value\": ..., \"ts\": ...}}}} ({e})"
        ))
    })?;
    match wire {
        WireValue::Counter(n) => Ok(Value::Counter(n)),
        WireValue::Set(items) => {
            if items.len() > bounds.max_set_len {
                return Err(LatticeError::SetTooLarge {
                    key: shown(key),
                    max: bounds.max_set_len,
                });
            }
            if items.iter().any(|i| i.len() > bounds.max_text_len) {
                return Err(too_long());
            }
            Ok(Value::Set(
                items.into_iter().map(String::into_boxed_str).collect(),
            ))
        }
        WireValue::Register(r) => {
            if !r.ts.is_finite() {
                return Err(bad("`ts` must be a finite number".into()));
            }
            // serde_json's map is sorted: the text is canonical.
            let value = r.value.to_string();
            if value.len() > bounds.max_text_len {
                return Err(too_long());
            }
            Ok(Value::Register(Register {
                ts: r.ts,
                value: value.into_boxed_str(),
            }))
        }
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Value::Counter(n) => map.serialize_entry("counter", n)?,
            Value::Set(items) => map.serialize_entry("set", items)?,
            Value::Register(r) => {
                let value: &RawValue = serde_json::from_str(&r.value).map_err(|e| {
                    serde::ser::Error::custom(format!("register text is not JSON: {e}"))
                })?;
                let wire = serde_json::json!({ "value": value, "ts": r.ts });
                map.serialize_entry("register", &wire)?;
            }
        }
        map.end()
    }
}

impl Serialize for Lattice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.values.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn big() -> Bounds {
        Bounds {
            max_keys: 1000,
            max_set_len: 1000,
            max_text_len: 1000,
        }
    }

    fn parse(v: serde_json::Value) -> Lattice {
        Lattice::parse(&v.to_string(), &big()).expect("valid")
    }

    fn joined(a: &Lattice, b: &Lattice) -> Lattice {
        let mut out = a.clone();
        out.merge(b, &big()).expect("within bounds");
        out
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0u64..5).prop_map(Value::Counter),
            proptest::collection::btree_set("[a-c]", 0..3)
                .prop_map(|s| Value::Set(s.into_iter().map(String::into_boxed_str).collect())),
            (0u8..3, "[xy]").prop_map(|(ts, v)| Value::Register(Register {
                ts: f64::from(ts),
                value: json!(v).to_string().into_boxed_str(),
            })),
        ]
    }

    fn lattice() -> impl Strategy<Value = Lattice> {
        proptest::collection::btree_map("[pq]", value(), 0..3).prop_map(|m| Lattice {
            values: m
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect(),
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in lattice(), b in lattice()) {
            prop_assert_eq!(joined(&a, &b), joined(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in lattice(), b in lattice(), c in lattice()) {
            prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in lattice(), b in lattice()) {
            let once = joined(&a, &b);
            prop_assert_eq!(joined(&once, &b), once.clone());
            prop_assert_eq!(joined(&a, &a), a);
        }

        /// A tab that saw the old state and then the delta holds what the
        /// node holds: deltas are enough to converge.
        #[test]
        fn the_delta_brings_the_old_state_to_the_new(a in lattice(), b in lattice()) {
            let mut node = a.clone();
            let delta = node.merge(&b, &big()).expect("within bounds");
            prop_assert_eq!(joined(&a, &delta), node);
        }

        /// Any order of any repetition of updates ends in the same state.
        #[test]
        fn every_order_of_updates_converges(updates in proptest::collection::vec(lattice(), 1..5)) {
            let forward = updates.iter().fold(Lattice::default(), |s, u| joined(&s, u));
            let mut twice = updates.clone();
            twice.extend(updates.iter().rev().cloned());
            let backward = twice.iter().rev().fold(Lattice::default(), |s, u| joined(&s, u));
            prop_assert_eq!(forward, backward);
        }
    }

    #[test]
    fn each_type_merges_by_its_rule() {
        let mut state = parse(json!({
            "total": {"counter": 7},
            "rooms": {"set": ["r1"]},
            "status": {"register": {"value": "away", "ts": 10.5}}
        }));
        let delta = state
            .merge(
                &parse(json!({
                    "total": {"counter": 3},
                    "rooms": {"set": ["r1", "r2"]},
                    "status": {"register": {"value": "busy", "ts": 11}}
                })),
                &big(),
            )
            .expect("merged");
        assert_eq!(
            serde_json::to_value(&delta).expect("json"),
            json!({"rooms": {"set": ["r2"]}, "status": {"register": {"value": "busy", "ts": 11.0}}})
        );
        assert_eq!(state.get("total"), Some(&Value::Counter(7)));
    }

    #[test]
    fn equal_timestamps_keep_the_greater_json_text() {
        let a = parse(json!({"s": {"register": {"value": {"b": 1, "a": 2}, "ts": 5}}}));
        let b = parse(json!({"s": {"register": {"value": "zzz", "ts": 5}}}));
        let ab = joined(&a, &b);
        assert_eq!(ab, joined(&b, &a));
        // `"zzz"` (a quote first) sorts before `{"a":2,"b":1}`.
        assert_eq!(
            serde_json::to_value(&ab).expect("json"),
            json!({"s": {"register": {"value": {"a": 2, "b": 1}, "ts": 5.0}}})
        );
    }

    #[test]
    fn a_bound_refuses_the_whole_update() {
        let bounds = Bounds {
            max_keys: 2,
            max_set_len: 2,
            max_text_len: 8,
        };
        let mut state = Lattice::parse(r#"{"a": {"set": ["1"]}}"#, &bounds).expect("valid");
        let update = Lattice::parse(
            r#"{"b": {"counter": 1}, "a": {"set": ["2", "3"]}}"#,
            &bounds,
        )
        .expect("valid alone");
        let before = state.clone();
        assert!(matches!(
            state.merge(&update, &bounds),
            Err(LatticeError::SetTooLarge { max: 2, .. })
        ));
        assert_eq!(state, before, "nothing merged");
        let three = r#"{"a": {"counter": 1}, "b": {"counter": 1}, "c": {"counter": 1}}"#;
        assert_eq!(
            Lattice::parse(three, &bounds),
            Err(LatticeError::TooManyKeys(2))
        );
        let long = r#"{"a": {"register": {"value": "123456789", "ts": 1}}}"#;
        assert!(matches!(
            Lattice::parse(long, &bounds),
            Err(LatticeError::TooLong { .. })
        ));
    }

    #[test]
    fn malformed_values_are_named() {
        for bad in [
            r#"{"a": 3}"#,
            r#"{"a": {"counter": -1}}"#,
            r#"{"a": {"counter": 1, "set": []}}"#,
            r#"{"a": {"register": {"value": 1}}}"#,
            r#"{"a": {"gauge": 1}}"#,
            r#"[1]"#,
        ] {
            assert!(
                matches!(
                    Lattice::parse(bad, &big()),
                    Err(LatticeError::BadValue { .. })
                ),
                "{bad}"
            );
        }
    }
}
