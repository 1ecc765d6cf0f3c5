//! The keyword index that makes fan-out independent of the subscriber count.
//!
//! Each filter entry is filed under one keyword it requires (the constraint
//! with the fewest allowed values, one slot per allowed value), or under
//! "unconstrained" when it has none. An event then only looks at the lists for
//! its kind and `"*"`, and for each of its own keywords: ten thousand
//! subscribers each filtered to their own charging point cost one hash lookup
//! per keyword, not ten thousand filter checks. Candidates are then checked
//! against their whole filter, so the index may over-approximate but never
//! miss; except those it knows match (filed as unconstrained, or under the
//! one constraint their entry has), which the fan-out need not check again.

use std::collections::HashMap;
use std::hash::Hash;

use crate::filter::{Entry, Filter, KindSelector};

/// A filed subscription, and whether being found under its key is enough
/// for its filter to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Filed<Id> {
    id: Id,
    sure: bool,
}

/// A candidate from [`FilterIndex::candidates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate<Id> {
    /// The subscription.
    pub id: Id,
    /// Its filter may not match: check it. False when the index knows it
    /// matches.
    pub unsure: bool,
}

#[derive(Debug)]
struct KindIndex<Id> {
    unconstrained: Vec<Filed<Id>>,
    by_keyword: HashMap<Box<str>, Vec<Filed<Id>>>,
}

impl<Id> Default for KindIndex<Id> {
    fn default() -> Self {
        KindIndex {
            unconstrained: Vec::new(),
            by_keyword: HashMap::new(),
        }
    }
}

impl<Id> KindIndex<Id> {
    fn is_empty(&self) -> bool {
        self.unconstrained.is_empty() && self.by_keyword.is_empty()
    }
}

/// Subscription ids indexed by the keywords their filters require.
#[derive(Debug)]
pub struct FilterIndex<Id> {
    any: KindIndex<Id>,
    named: HashMap<Box<str>, KindIndex<Id>>,
}

impl<Id> Default for FilterIndex<Id> {
    fn default() -> Self {
        FilterIndex {
            any: KindIndex::default(),
            named: HashMap::new(),
        }
    }
}

/// The keywords an entry is filed under: `None` for unconstrained.
fn index_keys(entry: &Entry) -> Option<Vec<String>> {
    let c = entry.constraints.iter().min_by_key(|c| c.allowed.len())?;
    Some(
        c.allowed
            .iter()
            .map(|v| format!("{}:{}", c.name, v))
            .collect(),
    )
}

/// Whether an event found under one of `entry`'s keys (or unconstrained)
/// passes the entry: it has no other constraint, and its keyword splits
/// back into the constraint's name (a name holding `:` would not).
fn sure(entry: &Entry) -> bool {
    match &*entry.constraints {
        [] => true,
        [only] => !only.name.contains(':'),
        _ => false,
    }
}

fn remove_one<Id: PartialEq>(list: &mut Vec<Filed<Id>>, id: &Id) {
    if let Some(pos) = list.iter().position(|x| x.id == *id) {
        list.swap_remove(pos);
    }
}

impl<Id: Copy + Eq + Hash + Ord> FilterIndex<Id> {
    fn kind_mut(&mut self, kind: &KindSelector) -> &mut KindIndex<Id> {
        match kind {
            KindSelector::Any => &mut self.any,
            KindSelector::Named(k) => self.named.entry(k.clone()).or_default(),
        }
    }

    /// Files `id` under every entry of `filter`.
    pub fn insert(&mut self, id: Id, filter: &Filter) {
        for entry in filter.entries() {
            let filed = Filed {
                id,
                sure: sure(entry),
            };
            let slot = self.kind_mut(&entry.kind);
            match index_keys(entry) {
                None => slot.unconstrained.push(filed),
                Some(keys) => {
                    for k in keys {
                        slot.by_keyword.entry(k.into()).or_default().push(filed);
                    }
                }
            }
        }
    }

    /// Removes `id`, which must have been inserted with this same `filter`.
    pub fn remove(&mut self, id: Id, filter: &Filter) {
        for entry in filter.entries() {
            let slot = self.kind_mut(&entry.kind);
            match index_keys(entry) {
                None => remove_one(&mut slot.unconstrained, &id),
                Some(keys) => {
                    for k in keys {
                        if let Some(list) = slot.by_keyword.get_mut(k.as_str()) {
                            remove_one(list, &id);
                            if list.is_empty() {
                                slot.by_keyword.remove(k.as_str());
                            }
                        }
                    }
                }
            }
            if let KindSelector::Named(k) = &entry.kind
                && self.named.get(k).is_some_and(KindIndex::is_empty)
            {
                self.named.remove(k);
            }
        }
    }

    /// Appends to `out` every id whose filter may match the event, each
    /// once, saying whether its filter must still be checked.
    pub fn candidates(&self, kind: &str, keywords: &[Box<str>], out: &mut Vec<Candidate<Id>>) {
        let start = out.len();
        let mut lists = 0usize;
        let named = self.named.get(kind);
        for slot in std::iter::once(&self.any).chain(named) {
            for list in std::iter::once(&slot.unconstrained)
                .chain(keywords.iter().filter_map(|k| slot.by_keyword.get(&**k)))
            {
                if !list.is_empty() {
                    lists += 1;
                    out.extend(list.iter().map(|f| Candidate {
                        id: f.id,
                        unsure: !f.sure,
                    }));
                }
            }
        }
        // An id appears at most once per list; only several lists can
        // repeat it. Sorted, its sure finding comes first and is kept.
        if lists > 1 {
            out[start..].sort_unstable();
            let mut tail = out.split_off(start);
            tail.dedup_by_key(|c| c.id);
            out.extend(tail);
        }
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.any.is_empty() && self.named.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn kw(list: &[&str]) -> Vec<Box<str>> {
        list.iter().map(|k| (*k).into()).collect()
    }

    fn matching(
        index: &FilterIndex<u32>,
        filters: &[Filter],
        kind: &str,
        keywords: &[Box<str>],
    ) -> Vec<u32> {
        let mut out = Vec::new();
        index.candidates(kind, keywords, &mut out);
        for c in &out {
            // What the index says matches does.
            let matches = filters[c.id as usize].matches(kind, keywords);
            assert!(c.unsure || matches, "{c:?} does not match");
        }
        let mut found: Vec<u32> = out
            .iter()
            .filter(|c| !c.unsure || filters[c.id as usize].matches(kind, keywords))
            .map(|c| c.id)
            .collect();
        found.sort_unstable();
        let before = found.len();
        found.dedup();
        assert_eq!(found.len(), before, "each candidate once");
        found
    }

    #[test]
    fn insert_find_remove() {
        let filters = [
            Filter::parse(&json!({"alarm": {"borne": "B1"}})).expect("f0"),
            Filter::parse(&json!({"alarm": {}, "*": {"borne": "B1"}})).expect("f1"),
            Filter::parse(&json!({"status": {"borne": ["B1", "B2"], "level": "x"}})).expect("f2"),
        ];
        let mut index = FilterIndex::default();
        for (i, f) in filters.iter().enumerate() {
            index.insert(i as u32, f);
        }
        assert_eq!(
            matching(&index, &filters, "alarm", &kw(&["borne:B1"])),
            vec![0, 1]
        );
        assert_eq!(
            matching(&index, &filters, "alarm", &kw(&["borne:B2"])),
            vec![1]
        );
        assert_eq!(
            matching(&index, &filters, "status", &kw(&["borne:B2", "level:x"])),
            vec![2]
        );
        assert_eq!(
            matching(&index, &filters, "status", &kw(&["borne:B1"])),
            vec![1]
        );
        for (i, f) in filters.iter().enumerate() {
            index.remove(i as u32, f);
        }
        assert!(index.is_empty());
    }

    fn arb_filter() -> impl Strategy<Value = serde_json::Value> {
        let kinds = prop::sample::select(vec!["*", "a", "b"]);
        let names = prop::sample::select(vec!["x", "y", "x:1"]);
        let values = prop::collection::vec(prop::sample::select(vec!["1", "2", "3"]), 1..3);
        let entry = prop::collection::btree_map(names, values, 0..3);
        prop::collection::btree_map(kinds, entry, 0..3).prop_map(|m| json!(m))
    }

    fn arb_event() -> impl Strategy<Value = (String, Vec<String>)> {
        let kind = prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
        let keyword = prop::sample::select(vec!["x:1", "x:2", "y:1", "y:3", "z:1", "x", "x:1:1"])
            .prop_map(String::from);
        (kind, prop::collection::vec(keyword, 0..4))
    }

    proptest! {
        /// The index finds exactly the subscriptions a full scan would.
        #[test]
        fn index_agrees_with_scan(
            raw in prop::collection::vec(arb_filter(), 1..20),
            events in prop::collection::vec(arb_event(), 1..20),
        ) {
            let filters: Vec<Filter> = raw.iter().map(|f| Filter::parse(f).expect("valid")).collect();
            let mut index = FilterIndex::default();
            for (i, f) in filters.iter().enumerate() {
                index.insert(i as u32, f);
            }
            for (kind, keywords) in &events {
                let keywords: Vec<Box<str>> = keywords.iter().map(|k| k.as_str().into()).collect();
                let scan: Vec<u32> = (0..filters.len() as u32)
                    .filter(|i| filters[*i as usize].matches(kind, &keywords))
                    .collect();
                prop_assert_eq!(matching(&index, &filters, kind, &keywords), scan);
            }
            for (i, f) in filters.iter().enumerate() {
                index.remove(i as u32, f);
            }
            prop_assert!(index.is_empty());
        }
    }
}
