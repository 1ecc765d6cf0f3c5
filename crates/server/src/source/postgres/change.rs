//! From decoded messages to events: the messages of one read are fed in
//! order, and each commit hands back its transaction, whose row changes
//! on configured tables became one event each, in commit order.
//!
//! Each event's idempotency `id` is `pg:<system id>:<commit LSN>:<index>`:
//! the cluster's identity, the transaction's commit LSN (unique in the
//! cluster's WAL, whatever the database) and the change's place in the
//! transaction. A transaction read again after a crash gets the same ids,
//! so what had been published is recognised as a duplicate.

use std::collections::HashMap;

use chouquette_core::publication::NewEvent;
use serde_json::{Map, Value, json};

use super::config::TableSettings;
use super::pgoutput::{Change, Datum, DecodeError, Message, Op, Relation, Tuple, decode, lsn_text};
use super::value::to_json;

/// A committed transaction, read.
#[derive(Debug)]
pub(super) struct Transaction {
    /// LSN of its commit record.
    pub commit_lsn: u64,
    /// Where replication resumes after it: acknowledged once it is published.
    pub end_lsn: u64,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_micros: i64,
    /// One event per change on a configured table, in order.
    pub events: Vec<NewEvent>,
}

/// Why messages did not make transactions (the session restarts).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("a change outside a transaction")]
    NoTransaction,
    #[error("a change on relation {0}, never described")]
    UnknownRelation(u32),
}

/// Turns one session's messages into transactions.
pub(super) struct Decoder<'s> {
    tables: &'s [TableSettings],
    /// Prefix of the event ids: `pg:<system id>`.
    origin: &'s str,
    /// One entry per published table seen: bounded by the publication.
    relations: HashMap<u32, Relation>,
    current: Option<Transaction>,
    /// Changes seen in the current transaction, configured or not.
    index: usize,
}

impl<'s> Decoder<'s> {
    pub fn new(tables: &'s [TableSettings], origin: &'s str) -> Decoder<'s> {
        Decoder {
            tables,
            origin,
            relations: HashMap::new(),
            current: None,
            index: 0,
        }
    }

    /// Whether a transaction has begun and not committed: a position the
    /// server reports meanwhile may be inside it, not past it.
    pub fn in_transaction(&self) -> bool {
        self.current.is_some()
    }

    /// Feeds one message; a commit returns its transaction.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<Transaction>, ChangeError> {
        match decode(bytes)? {
            Message::Begin {
                final_lsn,
                commit_micros,
            } => {
                self.index = 0;
                self.current = Some(Transaction {
                    commit_lsn: final_lsn,
                    end_lsn: final_lsn,
                    commit_micros,
                    events: Vec::new(),
                });
            }
            Message::Commit { end_lsn } => {
                let mut done = self.current.take().ok_or(ChangeError::NoTransaction)?;
                done.end_lsn = end_lsn;
                return Ok(Some(done));
            }
            Message::Relation(relation) => {
                self.relations.insert(relation.id, relation);
            }
            Message::Change(change) => self.change(&change)?,
            Message::Truncate { relations } => self.truncate(&relations)?,
            Message::Other => {}
        }
        Ok(None)
    }

    fn change(&mut self, change: &Change) -> Result<(), ChangeError> {
        let index = self.index;
        self.index += 1;
        let relation = self
            .relations
            .get(&change.relation)
            .ok_or(ChangeError::UnknownRelation(change.relation))?;
        let Some(table) = self
            .tables
            .iter()
            .find(|t| t.schema == relation.schema && t.name == relation.name)
        else {
            return Ok(());
        };
        let current = self.current.as_mut().ok_or(ChangeError::NoTransaction)?;
        let id = format!("{}:{}:{index}", self.origin, lsn_text(current.commit_lsn));
        let event = event(table, relation, change, current.commit_lsn, id);
        current.events.push(event);
        Ok(())
    }
}

impl Decoder<'_> {
    /// A TRUNCATE: one event per configured table that names a kind for
    /// it, each counted in the transaction's changes like a row.
    fn truncate(&mut self, relations: &[u32]) -> Result<(), ChangeError> {
        for &id in relations {
            let index = self.index;
            self.index += 1;
            let relation = self
                .relations
                .get(&id)
                .ok_or(ChangeError::UnknownRelation(id))?;
            let Some((table, kind)) = self
                .tables
                .iter()
                .find(|t| t.schema == relation.schema && t.name == relation.name)
                .and_then(|t| Some((t, t.truncate_kind.as_ref()?)))
            else {
                continue;
            };
            let current = self.current.as_mut().ok_or(ChangeError::NoTransaction)?;
            let commit = lsn_text(current.commit_lsn);
            let data = json!({
                "op": "truncate",
                "new": null,
                "old": null,
                "lsn": commit,
                "table": table.qualified(),
            });
            let none = HashMap::new();
            current.events.push(NewEvent {
                app_id: table.app.clone(),
                channel: table.channel.clone(),
                event_kind: kind.clone(),
                // Only keywords that name no column: there is no row.
                keywords: table
                    .keywords
                    .iter()
                    .filter_map(|t| t.render(&none))
                    .collect(),
                // No row, so no state to set.
                key: None,
                data: serde_json::value::to_raw_value(&data)
                    .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
                id: Some(format!("{}:{commit}:{index}", self.origin)),
                time: None,
            });
        }
        Ok(())
    }
}

/// The event of one change.
fn event(
    table: &TableSettings,
    relation: &Relation,
    change: &Change,
    commit_lsn: u64,
    id: String,
) -> NewEvent {
    let old = change.old.as_ref();
    let new_json = change
        .new
        .as_ref()
        .map(|new| row_json(table, relation, new, old, true));
    let old_json = old.map(|o| row_json(table, relation, o, None, change.old_full));
    let data = json!({
        "op": change.op.as_str(),
        "new": new_json,
        "old": old_json,
        "lsn": lsn_text(commit_lsn),
        "table": table.qualified(),
    });
    let values = template_values(relation, change);
    let keywords = table
        .keywords
        .iter()
        .filter_map(|t| t.render(&values))
        .collect();
    NewEvent {
        app_id: table.app.clone(),
        channel: table.channel.clone(),
        event_kind: table.kind(change.op).to_string(),
        keywords,
        key: table.key.as_ref().and_then(|t| t.render(&values)),
        data: serde_json::value::to_raw_value(&data)
            .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        id: Some(id),
        time: None,
    }
}

/// A row as a JSON object of its included columns. Without `full`, the
/// tuple is a key and only key columns are kept. A TOAST-ed value left
/// unchanged is taken from `fallback` (the old row) when it has it, and
/// left out otherwise.
fn row_json(
    table: &TableSettings,
    relation: &Relation,
    tuple: &Tuple,
    fallback: Option<&Tuple>,
    full: bool,
) -> Value {
    let mut row = Map::new();
    for (i, (column, datum)) in relation.columns.iter().zip(tuple).enumerate() {
        if !table.includes(&column.name) || (!full && !column.key) {
            continue;
        }
        let datum = match datum {
            Datum::Unchanged => match fallback.and_then(|f| f.get(i)) {
                Some(d @ Datum::Text(_)) => d,
                _ => continue,
            },
            d => d,
        };
        let value = match datum {
            Datum::Text(text) => to_json(column.type_oid, text),
            Datum::Null | Datum::Unchanged => Value::Null,
        };
        row.insert(column.name.clone(), value);
    }
    Value::Object(row)
}

/// The text values templates read: the new row's (the old row's for a
/// delete), an unchanged TOAST-ed value taken from the old row.
fn template_values<'a>(relation: &'a Relation, change: &'a Change) -> HashMap<&'a str, &'a str> {
    let (main, other) = match change.op {
        Op::Delete => (change.old.as_ref(), None),
        Op::Insert | Op::Update => (change.new.as_ref(), change.old.as_ref()),
    };
    let mut values = HashMap::new();
    let Some(main) = main else {
        return values;
    };
    for (i, (column, datum)) in relation.columns.iter().zip(main).enumerate() {
        let text = match datum {
            Datum::Text(t) => Some(t.as_str()),
            Datum::Unchanged => match other.and_then(|o| o.get(i)) {
                Some(Datum::Text(t)) => Some(t.as_str()),
                _ => None,
            },
            Datum::Null => None,
        };
        if let Some(text) = text {
            values.insert(column.name.as_str(), text);
        }
    }
    values
}
