//! Subscription filters (docs/protocol.md, "Filters").
//!
//! A filter maps event kinds (`"*"` for any) to constraints on keywords. An
//! entry applies to an event when its kind is the event's kind or `"*"`; it is
//! met when every constraint `name -> allowed` is satisfied by some keyword
//! `name:value` of the event with `value` allowed. The event is delivered
//! when at least one applicable entry is met. `{}` as an entry means every
//! event of that kind; an empty filter object delivers nothing.
//!
//! Filters come from signed tokens, but are still bounded so that one token
//! cannot make the hub index arbitrarily large.

use serde_json::Value;

/// Most entries (event kinds) in one filter.
pub const MAX_ENTRIES: usize = 64;
/// Most constraints in one entry.
pub const MAX_CONSTRAINTS: usize = 32;
/// Most allowed values for one constraint.
pub const MAX_ALLOWED: usize = 1024;

/// Why a filter object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The filter is not a JSON object (or a string holding one).
    #[error("filters must be an object of event kinds")]
    NotAnObject,
    /// An entry is not an object of constraints.
    #[error("filter for kind `{0}` must be an object")]
    EntryNotAnObject(String),
    /// An allowed value is not a string, number or boolean.
    #[error("allowed values for `{0}` must be strings, numbers or booleans")]
    BadValue(String),
    /// A bound above was exceeded.
    #[error("filter too large: {0}")]
    TooLarge(&'static str),
}

/// Which event kinds an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KindSelector {
    /// `"*"`: every kind.
    Any,
    /// One named kind.
    Named(Box<str>),
}

impl KindSelector {
    fn applies_to(&self, kind: &str) -> bool {
        match self {
            KindSelector::Any => true,
            KindSelector::Named(k) => &**k == kind,
        }
    }
}

/// One keyword constraint: the event must carry `name:v` with `v` in `allowed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Keyword name.
    pub name: Box<str>,
    /// Allowed values, sorted and without duplicates.
    pub allowed: Box<[Box<str>]>,
}

impl Constraint {
    fn satisfied_by<'a>(&self, keywords: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        keywords.into_iter().any(|(n, v)| {
            n == &*self.name && self.allowed.binary_search_by(|a| (**a).cmp(v)).is_ok()
        })
    }
}

/// One entry of a filter: a kind selector and its constraints (all must hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The kinds it applies to.
    pub kind: KindSelector,
    /// Constraints, all of which must be met.
    pub constraints: Box<[Constraint]>,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    entries: Box<[Entry]>,
}

/// Splits a keyword into name and value at the first colon.
pub fn split_keyword(keyword: &str) -> Option<(&str, &str)> {
    keyword.split_once(':')
}

impl Filter {
    /// Parses a filter object (or a JSON string holding one).
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        let object = match value {
            Value::Object(o) => o,
            Value::String(s) => {
                let inner: Value = serde_json::from_str(s).map_err(|_| FilterError::NotAnObject)?;
                return match inner {
                    Value::Object(_) => Filter::parse(&inner),
                    _ => Err(FilterError::NotAnObject),
                };
            }
            _ => return Err(FilterError::NotAnObject),
        };
        if object.len() > MAX_ENTRIES {
            return Err(FilterError::TooLarge("too many event kinds"));
        }
        let entries = object
            .iter()
            .map(|(kind, spec)| parse_entry(kind, spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter {
            entries: entries.into(),
        })
    }

    /// The entries, for indexing.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether an event of `kind` with `keywords` passes this filter.
    pub fn matches(&self, kind: &str, keywords: &[Box<str>]) -> bool {
        self.entries.iter().any(|e| {
            e.kind.applies_to(kind)
                && e.constraints
                    .iter()
                    .all(|c| c.satisfied_by(keywords.iter().filter_map(|k| split_keyword(k))))
        })
    }
}

fn parse_entry(kind: &str, spec: &Value) -> Result<Entry, FilterError> {
    let Value::Object(constraints) = spec else {
        return Err(FilterError::EntryNotAnObject(
            kind.chars().take(64).collect(),
        ));
    };
    if constraints.len() > MAX_CONSTRAINTS {
        return Err(FilterError::TooLarge("too many keyword constraints"));
    }
    let constraints = constraints
        .iter()
        .map(|(name, allowed)| parse_constraint(name, allowed))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Entry {
        kind: if kind == "*" {
            KindSelector::Any
        } else {
            KindSelector::Named(kind.into())
        },
        constraints: constraints.into(),
    })
}

fn parse_constraint(name: &str, allowed: &Value) -> Result<Constraint, FilterError> {
    let one = |v: &Value| -> Result<Box<str>, FilterError> {
        match v {
            Value::String(s) => Ok(s.as_str().into()),
            Value::Number(n) => Ok(n.to_string().into()),
            Value::Bool(b) => Ok(b.to_string().into()),
            _ => Err(FilterError::BadValue(name.chars().take(64).collect())),
        }
    };
    let mut values = match allowed {
        Value::Array(list) => {
            if list.len() > MAX_ALLOWED {
                return Err(FilterError::TooLarge("too many allowed values"));
            }
            list.iter().map(one).collect::<Result<Vec<_>, _>>()?
        }
        v => vec![one(v)?],
    };
    values.sort_unstable();
    values.dedup();
    Ok(Constraint {
        name: name.into(),
        allowed: values.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kw(list: &[&str]) -> Vec<Box<str>> {
        list.iter().map(|k| (*k).into()).collect()
    }

    fn filter(v: Value) -> Filter {
        Filter::parse(&v).expect("valid filter")
    }

    #[test]
    fn the_protocol_example() {
        let f = filter(json!({"alarm": {"level": "critical", "borne": ["B1"]}, "status": {}}));
        assert!(f.matches("alarm", &kw(&["borne:B1", "level:critical"])));
        assert!(!f.matches("alarm", &kw(&["borne:B2", "level:critical"])));
        assert!(!f.matches("alarm", &kw(&["borne:B1", "level:minor"])));
        assert!(!f.matches("alarm", &kw(&["borne:B1"])));
        assert!(f.matches("status", &kw(&[])));
        assert!(f.matches("status", &kw(&["borne:B2"])));
        assert!(!f.matches("other", &kw(&["borne:B1", "level:critical"])));
    }

    #[test]
    fn star_and_empty() {
        let any = filter(json!({"*": {"borne": "B1"}}));
        assert!(any.matches("whatever", &kw(&["borne:B1"])));
        assert!(!any.matches("whatever", &kw(&["borne:B11"])));
        assert!(!filter(json!({})).matches("alarm", &kw(&[])));
    }

    #[test]
    fn value_is_everything_after_the_first_colon() {
        let f = filter(json!({"e": {"url": "http://x:80"}}));
        assert!(f.matches("e", &kw(&["url:http://x:80"])));
        assert!(!f.matches("e", &kw(&["url:http://x"])));
    }

    #[test]
    fn numbers_and_json_strings() {
        let f = filter(json!({"e": {"id": [12, true]}}));
        assert!(f.matches("e", &kw(&["id:12"])));
        assert!(f.matches("e", &kw(&["id:true"])));
        let s = filter(json!("{\"e\": {}}"));
        assert!(s.matches("e", &kw(&[])));
    }

    #[test]
    fn bad_shapes() {
        assert_eq!(Filter::parse(&json!([1])), Err(FilterError::NotAnObject));
        assert!(matches!(
            Filter::parse(&json!({"e": 1})),
            Err(FilterError::EntryNotAnObject(_))
        ));
        assert!(matches!(
            Filter::parse(&json!({"e": {"a": {"b": 1}}})),
            Err(FilterError::BadValue(_))
        ));
    }
}
