//! SenML (RFC 8428), JSON form, resolved (section 4.6): each record's base
//! name, time, unit, value and sum applied, times made absolute, so that a
//! subscriber reads every record on its own.
//!
//! Our own few types rather than a crate: the format is small and the
//! crates are thin. What is refused (the whole pack, nothing published):
//! not a JSON array, an empty pack, a record that is not an object, a field
//! of the wrong type, a record with two values, a measurement record
//! without a value or sum, a resolved name that is empty or outside the
//! RFC's characters, a `bver` above the one understood (10), a field ending
//! in `_` (must-understand extensions we do not), a time that is not finite.

use serde_json::{Map, Number, Value};

/// Times below this are relative to now (RFC 8428 section 4.5.3: 2^28 s).
const RELATIVE_BELOW: f64 = 268_435_456.0;
/// The SenML version these rules are for.
const VERSION: i64 = 10;
/// Most records in one pack: the packet size bounds it already; this keeps
/// a pack of a million empty objects from becoming a million records.
pub const MAX_RECORDS: usize = 10_000;

/// Why a payload is not a valid SenML pack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenmlError {
    #[error("not JSON")]
    NotJson,
    #[error("a SenML pack is a JSON array")]
    NotArray,
    #[error("empty pack")]
    Empty,
    #[error("more than {MAX_RECORDS} records")]
    TooMany,
    #[error("record {0} is not an object")]
    NotObject(usize),
    #[error("record {0}: field `{1}` has the wrong type")]
    BadType(usize, &'static str),
    #[error("record {0}: more than one of v, vs, vb, vd")]
    TwoValues(usize),
    #[error("record {0}: no value and no sum")]
    NoValue(usize),
    #[error("record {0}: no valid name (bn + n)")]
    BadName(usize),
    #[error("record {0}: unsupported SenML version")]
    Version(usize),
    #[error("record {0}: must-understand field `{1}`")]
    MustUnderstand(usize, String),
    #[error("record {0}: `vd` is not base64url")]
    BadData(usize),
}

/// A pack resolved: its records, and whether every time in it was given
/// absolute (then the same payload always resolves the same, and may name
/// its event for idempotency).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub records: Vec<Value>,
    pub absolute: bool,
}

/// The base fields in force, carried from record to record.
#[derive(Default)]
struct Base {
    name: String,
    time: f64,
    unit: Option<String>,
    value: f64,
    sum: f64,
}

/// Resolves `payload`, a JSON SenML pack; `now` is Unix seconds, added to
/// relative times.
pub fn resolve(payload: &[u8], now: f64) -> Result<Resolved, SenmlError> {
    let pack: Value = serde_json::from_slice(payload).map_err(|_| SenmlError::NotJson)?;
    let Value::Array(records) = pack else {
        return Err(SenmlError::NotArray);
    };
    if records.is_empty() {
        return Err(SenmlError::Empty);
    }
    if records.len() > MAX_RECORDS {
        return Err(SenmlError::TooMany);
    }
    let mut base = Base::default();
    let mut out = Vec::with_capacity(records.len());
    let mut absolute = true;
    for (i, record) in records.iter().enumerate() {
        let Value::Object(fields) = record else {
            return Err(SenmlError::NotObject(i));
        };
        if let Some(resolved) = resolve_record(i, fields, &mut base, now, &mut absolute)? {
            out.push(resolved);
        }
    }
    if out.is_empty() {
        return Err(SenmlError::Empty);
    }
    Ok(Resolved {
        records: out,
        absolute,
    })
}

fn number(
    i: usize,
    fields: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<f64>, SenmlError> {
    match fields.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(SenmlError::BadType(i, key)),
        Some(_) => Err(SenmlError::BadType(i, key)),
    }
}

fn text<'f>(
    i: usize,
    fields: &'f Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'f str>, SenmlError> {
    match fields.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SenmlError::BadType(i, key)),
    }
}

/// RFC 8428 section 4.5.1: starts with a letter or digit, then letters,
/// digits and `-:./_`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-:./_".contains(c))
}

fn json_number(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// One record resolved, or `None` for a record carrying only base fields.
fn resolve_record(
    i: usize,
    fields: &Map<String, Value>,
    base: &mut Base,
    now: f64,
    absolute: &mut bool,
) -> Result<Option<Value>, SenmlError> {
    if let Some(key) = fields.keys().find(|k| k.ends_with('_')) {
        return Err(SenmlError::MustUnderstand(i, key.clone()));
    }
    if let Some(version) = number(i, fields, "bver")?
        && (version.fract() != 0.0 || !(1.0..=VERSION as f64).contains(&version))
    {
        return Err(SenmlError::Version(i));
    }
    if let Some(name) = text(i, fields, "bn")? {
        base.name = name.to_string();
    }
    if let Some(time) = number(i, fields, "bt")? {
        base.time = time;
    }
    if let Some(unit) = text(i, fields, "bu")? {
        base.unit = Some(unit.to_string());
    }
    if let Some(value) = number(i, fields, "bv")? {
        base.value = value;
    }
    if let Some(sum) = number(i, fields, "bs")? {
        base.sum = sum;
    }
    let name = text(i, fields, "n")?;
    let unit = text(i, fields, "u")?;
    let time = number(i, fields, "t")?;
    let update = number(i, fields, "ut")?;
    let sum = number(i, fields, "s")?;
    let v = number(i, fields, "v")?;
    let vs = text(i, fields, "vs")?;
    let vd = text(i, fields, "vd")?;
    let vb = match fields.get("vb") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(SenmlError::BadType(i, "vb")),
    };
    let values = usize::from(v.is_some())
        + usize::from(vs.is_some())
        + usize::from(vd.is_some())
        + usize::from(vb.is_some());
    if values > 1 {
        return Err(SenmlError::TwoValues(i));
    }
    let base_only = ["bn", "bt", "bu", "bv", "bs", "bver"]
        .iter()
        .any(|k| fields.contains_key(*k));
    if values == 0 && sum.is_none() {
        if name.is_none() && unit.is_none() && time.is_none() && base_only {
            // Only base fields: they apply to the records after it.
            return Ok(None);
        }
        return Err(SenmlError::NoValue(i));
    }
    let full_name = format!("{}{}", base.name, name.unwrap_or_default());
    if !valid_name(&full_name) {
        return Err(SenmlError::BadName(i));
    }
    let mut t = base.time + time.unwrap_or(0.0);
    if t < RELATIVE_BELOW {
        *absolute = false;
        t += now;
    }
    let mut out = Map::new();
    out.insert("n".into(), Value::String(full_name));
    if let Some(unit) = unit.map(str::to_string).or_else(|| base.unit.clone()) {
        out.insert("u".into(), Value::String(unit));
    }
    out.insert("t".into(), json_number(t));
    if let Some(v) = v {
        out.insert("v".into(), json_number(base.value + v));
    }
    if let Some(vs) = vs {
        out.insert("vs".into(), Value::String(vs.to_string()));
    }
    if let Some(vb) = vb {
        out.insert("vb".into(), Value::Bool(vb));
    }
    if let Some(vd) = vd {
        let base64url = vd
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=');
        if !base64url {
            return Err(SenmlError::BadData(i));
        }
        out.insert("vd".into(), Value::String(vd.to_string()));
    }
    if let Some(s) = sum {
        out.insert("s".into(), json_number(base.sum + s));
    }
    if let Some(ut) = update {
        out.insert("ut".into(), json_number(ut));
    }
    Ok(Some(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const NOW: f64 = 1_700_000_000.0;

    fn ok(pack: Value) -> Resolved {
        resolve(pack.to_string().as_bytes(), NOW).unwrap_or_else(|e| panic!("{pack}: {e}"))
    }

    fn err(pack: Value) -> SenmlError {
        match resolve(pack.to_string().as_bytes(), NOW) {
            Ok(r) => panic!("{pack} should be refused, resolved to {r:?}"),
            Err(e) => e,
        }
    }

    /// The RFC's own example of section 5.1.2 style: base name, time and
    /// unit applied to every record, relative times made absolute.
    #[test]
    fn base_fields_apply_to_every_record() {
        let r = ok(json!([
            {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e9, "bu": "%RH", "v": 21.2},
            {"t": 10, "v": 21.3},
            {"n": "temp", "u": "Cel", "t": 20, "v": 23.5}
        ]));
        assert!(r.absolute);
        assert_eq!(
            r.records,
            vec![
                json!({"n": "urn:dev:ow:10e2073a01080063:", "u": "%RH", "t": 1.320067464e9, "v": 21.2}),
                json!({"n": "urn:dev:ow:10e2073a01080063:", "u": "%RH", "t": 1.320067474e9, "v": 21.3}),
                json!({"n": "urn:dev:ow:10e2073a01080063:temp", "u": "Cel", "t": 1.320067484e9, "v": 23.5}),
            ]
        );
    }

    #[test]
    fn relative_times_base_value_sum_and_other_value_types() {
        let r = ok(json!([
            {"bn": "d1/", "bv": 100, "bs": 10},
            {"n": "power", "v": 5, "t": -5},
            {"n": "energy", "s": 2},
            {"n": "door", "vb": true},
            {"n": "label", "vs": "on"},
            {"n": "blob", "vd": "aGVsbG8"}
        ]));
        assert!(!r.absolute);
        assert_eq!(r.records.len(), 5);
        assert_eq!(
            r.records[0],
            json!({"n": "d1/power", "t": NOW - 5.0, "v": 105.0})
        );
        assert_eq!(r.records[1], json!({"n": "d1/energy", "t": NOW, "s": 12.0}));
        assert_eq!(r.records[2]["vb"], json!(true));
        assert_eq!(r.records[3]["vs"], json!("on"));
        assert_eq!(r.records[4]["vd"], json!("aGVsbG8"));
    }

    #[test]
    fn invalid_packs_are_refused() {
        assert_eq!(resolve(b"{", NOW), Err(SenmlError::NotJson));
        assert_eq!(err(json!({"n": "a", "v": 1})), SenmlError::NotArray);
        assert_eq!(err(json!([])), SenmlError::Empty);
        assert_eq!(err(json!([{"bn": "only-base"}])), SenmlError::Empty);
        assert_eq!(err(json!([1])), SenmlError::NotObject(0));
        assert_eq!(err(json!([{"v": 1}])), SenmlError::BadName(0));
        assert_eq!(err(json!([{"n": "-a", "v": 1}])), SenmlError::BadName(0));
        assert_eq!(err(json!([{"n": "a b", "v": 1}])), SenmlError::BadName(0));
        assert_eq!(
            err(json!([{"n": "a", "v": 1, "vs": "x"}])),
            SenmlError::TwoValues(0)
        );
        assert_eq!(err(json!([{"n": "a"}])), SenmlError::NoValue(0));
        assert_eq!(
            err(json!([{"n": "a", "v": "1"}])),
            SenmlError::BadType(0, "v")
        );
        assert_eq!(err(json!([{"n": 1, "v": 1}])), SenmlError::BadType(0, "n"));
        assert_eq!(
            err(json!([{"n": "a", "vb": 1}])),
            SenmlError::BadType(0, "vb")
        );
        assert_eq!(
            err(json!([{"n": "a", "v": 1, "t": "x"}])),
            SenmlError::BadType(0, "t")
        );
        assert_eq!(
            err(json!([{"n": "a", "v": 1, "bver": 11}])),
            SenmlError::Version(0)
        );
        assert_eq!(
            err(json!([{"n": "a", "v": 1, "x_": 1}])),
            SenmlError::MustUnderstand(0, "x_".into())
        );
        assert_eq!(
            err(json!([{"n": "a", "vd": "a+b/"}])),
            SenmlError::BadData(0)
        );
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(json_number),
            any::<i64>().prop_map(|n| json!(n)),
            prop_oneof![
                Just("n"),
                Just("bn"),
                Just("v"),
                Just("t"),
                Just("bt"),
                Just("a"),
                Just("")
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                Just("n"),
                Just("bn"),
                Just("v"),
                Just("vs"),
                Just("vb"),
                Just("vd"),
                Just("s"),
                Just("t"),
                Just("bt"),
                Just("bu"),
                Just("bv"),
                Just("bs"),
                Just("bver"),
                Just("u"),
                Just("ut"),
                Just("x_"),
                Just("other")
            ]
            .prop_map(String::from);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever JSON (or bytes) arrives, resolving answers and never
        /// panics; what it accepts has a name and one time per record.
        #[test]
        fn never_panics_on_arbitrary_json(pack in arbitrary_json(), now in any::<f64>()) {
            if let Ok(r) = resolve(pack.to_string().as_bytes(), now) {
                for record in &r.records {
                    prop_assert!(record["n"].is_string());
                    prop_assert!(record.get("t").is_some());
                }
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = resolve(&bytes, NOW);
        }
    }
}
