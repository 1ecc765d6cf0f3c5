//! Decoding of the `pgoutput` logical decoding messages (protocol version 1)
//! that the replication stream carries, one per XLogData message.
//!
//! The bytes come from the server, but a bug or a newer protocol must not
//! take the gateway down: every read is bounds-checked and a message that
//! does not decode is a [`DecodeError`], never a panic. Message kinds the
//! source has no use for (origin, type, logical messages) decode to
//! [`Message::Other`].

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Message {
    /// A transaction starts; `final_lsn` is its commit record's LSN.
    Begin {
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01 UTC.
        commit_micros: i64,
    },
    /// The transaction committed; replication resumes after `end_lsn`.
    Commit { end_lsn: u64 },
    /// The shape of a table, sent before its first change in a session.
    Relation(Relation),
    /// A row changed.
    Change(Change),
    /// These tables were emptied (`TRUNCATE`).
    Truncate { relations: Vec<u32> },
    /// Anything else.
    Other,
}

/// A table as the publication describes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Relation {
    pub id: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Column {
    pub name: String,
    pub type_oid: u32,
    /// Part of the replica identity (the key sent for deletes).
    pub key: bool,
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Change {
    pub relation: u32,
    pub op: Op,
    /// The old row: every column with REPLICA IDENTITY FULL (`full`), only
    /// the key columns otherwise; absent on insert, and on an update that
    /// did not change the key of a table without FULL.
    pub old: Option<Tuple>,
    /// Whether `old` holds the whole row rather than the key.
    pub old_full: bool,
    /// The new row (absent on delete).
    pub new: Option<Tuple>,
}

/// A row's values, in the relation's column order.
pub(super) type Tuple = Vec<Datum>;

/// One column value, in Postgres' text form.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Datum {
    Null,
    /// A TOAST-ed value the change did not touch: not sent.
    Unchanged,
    Text(String),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput message cut short")]
    Truncated,
    #[error("pgoutput message kind `{0}` where `{1}` was expected")]
    Unexpected(char, &'static str),
    #[error("pgoutput value is not UTF-8")]
    NotUtf8,
    #[error("pgoutput binary column values are not supported")]
    Binary,
}

/// Decodes one message.
pub(super) fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader(bytes);
    Ok(match r.u8()? {
        b'B' => {
            let final_lsn = r.u64()?;
            let commit_micros = r.i64()?;
            Message::Begin {
                final_lsn,
                commit_micros,
            }
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            Message::Commit { end_lsn: r.u64()? }
        }
        b'R' => Message::Relation(relation(&mut r)?),
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N', "N")?;
            Message::Change(Change {
                relation,
                op: Op::Insert,
                old: None,
                old_full: false,
                new: Some(tuple(&mut r)?),
            })
        }
        b'U' => Message::Change(update(&mut r)?),
        b'T' => {
            let count = r.u32()?;
            let _options = r.u8()?;
            // Bounded by the message: each id is 4 bytes read.
            let mut relations = Vec::with_capacity(r.0.len() / 4);
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            Message::Truncate { relations }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            Message::Change(Change {
                relation,
                op: Op::Delete,
                old: Some(tuple(&mut r)?),
                old_full: kind == b'O',
                new: None,
            })
        }
        _ => Message::Other,
    })
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let id = r.u32()?;
    let schema = r.cstring()?;
    let name = r.cstring()?;
    let _identity = r.u8()?;
    let count = r.u16()?;
    let mut columns = Vec::with_capacity(usize::from(count).min(1600));
    for _ in 0..count {
        let flags = r.u8()?;
        let name = r.cstring()?;
        let type_oid = r.u32()?;
        let _typmod = r.u32()?;
        columns.push(Column {
            name,
            type_oid,
            key: flags & 1 == 1,
        });
    }
    Ok(Relation {
        id,
        schema,
        name,
        columns,
    })
}

fn update(r: &mut Reader<'_>) -> Result<Change, DecodeError> {
    let relation = r.u32()?;
    let mut old = None;
    let mut old_full = false;
    let mut kind = r.u8()?;
    if kind == b'K' || kind == b'O' {
        old_full = kind == b'O';
        old = Some(tuple(r)?);
        kind = r.u8()?;
    }
    if kind != b'N' {
        return Err(DecodeError::Unexpected(char::from(kind), "N"));
    }
    Ok(Change {
        relation,
        op: Op::Update,
        old,
        old_full,
        new: Some(tuple(r)?),
    })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
    let count = r.u16()?;
    let mut values = Vec::with_capacity(usize::from(count).min(1600));
    for _ in 0..count {
        values.push(match r.u8()? {
            b'n' => Datum::Null,
            b'u' => Datum::Unchanged,
            b't' => {
                let len = usize::try_from(r.u32()?).map_err(|_| DecodeError::Truncated)?;
                let bytes = r.take(len)?;
                Datum::Text(String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8)?)
            }
            b'b' => return Err(DecodeError::Binary),
            other => return Err(DecodeError::Unexpected(char::from(other), "n, u or t")),
        });
    }
    Ok(values)
}

/// A bounds-checked cursor over a message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn expect(&mut self, kind: u8, name: &'static str) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got == kind {
            Ok(())
        } else {
            Err(DecodeError::Unexpected(char::from(got), name))
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn cstring(&mut self) -> Result<String, DecodeError> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated)?;
        let text = std::str::from_utf8(self.take(end)?).map_err(|_| DecodeError::NotUtf8)?;
        self.take(1)?;
        Ok(text.to_string())
    }
}

/// An LSN as Postgres writes it: `16/B374D848`.
pub(super) fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_short_or_unknown_message_is_an_error_not_a_panic() {
        assert_eq!(decode(b""), Err(DecodeError::Truncated));
        assert_eq!(decode(b"B\0\0"), Err(DecodeError::Truncated));
        assert_eq!(
            decode(b"I\0\0\0\x01X"),
            Err(DecodeError::Unexpected('X', "N"))
        );
        assert_eq!(
            decode(b"I\0\0\0\x01N\0\x01t\xff\xff\xff\xff"),
            Err(DecodeError::Truncated)
        );
        assert_eq!(decode(b"Z"), Ok(Message::Other));
        assert_eq!(
            decode(b"T\xff\xff\xff\xff\0\0\0\0\x01"),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(b"T\0\0\0\x02\0\0\0\0\x07\0\0\0\x09"),
            Ok(Message::Truncate {
                relations: vec![7, 9]
            })
        );
    }

    #[test]
    fn an_insert_decodes_its_values() {
        let bytes = b"I\0\0\0\x07N\0\x03t\0\0\0\x02B1nu";
        let Ok(Message::Change(change)) = decode(bytes) else {
            panic!("an insert");
        };
        assert_eq!(change.relation, 7);
        assert_eq!(
            change.new,
            Some(vec![
                Datum::Text("B1".into()),
                Datum::Null,
                Datum::Unchanged
            ])
        );
    }

    #[test]
    fn lsns_are_written_like_postgres() {
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(lsn_text(0x16B3748), "0/16B3748");
    }
}
