//! The audit log of operator actions.
//!
//! Every admin action (a switch change, a disconnect, a test publish) is one
//! tracing event at INFO on target `chouquette::audit`, and, when
//! `[admin] audit_file` is set, one JSON line appended to that file:
//!
//! ```json
//! {"at":"2025-01-31T10:00:00.000000Z","who":"0f3c...(32 hex digits)","operator":"alice","remote":"127.0.0.1:50412","action":"switch_off","detail":{...}}
//! ```
//!
//! `who` is the admin key's fingerprint (128 bits of a salted SHA-256), never
//! the key; `operator` is the optional, self-declared `X-Operator` header
//! (bounded and printable, see [`operator_name`]), absent when not sent. The file is opened for each line (so log rotation by
//! renaming works) and lines are written one at a time. A line that cannot
//! be written is reported as an ERROR event; the action itself stands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use chouquette_core::telemetry::AdminAction;
use chouquette_protocol::server::timestamp;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// The tracing target of audit events.
pub const TARGET: &str = "chouquette::audit";

/// Prefixed to the key before hashing, so a fingerprint cannot be looked up
/// in tables of plain SHA-256 digests of common keys.
const FINGERPRINT_SALT: &[u8] = b"chouquette admin key fingerprint v1\0";

/// Longest `X-Operator` value accepted, in bytes.
pub const MAX_OPERATOR_LEN: usize = 64;

/// The first 32 hex digits (128 bits) of the salted SHA-256 of `key`: names
/// a key without revealing it, long enough not to collide between keys.
pub fn fingerprint(key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(FINGERPRINT_SALT);
    hash.update(key.as_bytes());
    hash.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why an `X-Operator` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`X-Operator` must be 1 to {MAX_OPERATOR_LEN} printable ASCII characters")]
pub struct BadOperator;

/// The self-declared operator name of an `X-Operator` header: 1 to
/// [`MAX_OPERATOR_LEN`] printable ASCII characters (spaces allowed), so a
/// log line cannot be forged or bloated through it. It is recorded as
/// given; the key holder could claim any name.
pub fn operator_name(raw: &[u8]) -> Result<String, BadOperator> {
    let printable = raw.iter().all(|b| (0x20..0x7f).contains(b));
    if raw.is_empty() || raw.len() > MAX_OPERATOR_LEN || !printable {
        return Err(BadOperator);
    }
    String::from_utf8(raw.to_vec()).map_err(|_| BadOperator)
}

/// Who did something: the key's fingerprint, the operator's self-declared
/// name, and the remote address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// [`fingerprint`] of the key used.
    pub who: String,
    /// The `X-Operator` header, when sent (see [`operator_name`]).
    pub operator: Option<String>,
    /// The client's address.
    pub remote: SocketAddr,
}

#[derive(Serialize)]
struct Line<'a> {
    at: String,
    who: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<&'a str>,
    remote: String,
    action: &'a str,
    detail: &'a Value,
}

/// Why the audit file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("audit file {path}: {source}")]
pub struct AuditError {
    /// The file.
    pub path: String,
    /// The I/O error.
    pub source: std::io::Error,
}

/// The audit log.
#[derive(Debug, Default)]
pub struct Audit {
    file: Option<PathBuf>,
    write: Mutex<()>,
}

impl Audit {
    /// A log writing lines to `file` too, when given; checks it can be opened.
    pub fn open(file: Option<PathBuf>) -> Result<Audit, AuditError> {
        if let Some(path) = &file {
            append_options().open(path).map_err(|source| AuditError {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(Audit {
            file,
            write: Mutex::new(()),
        })
    }

    /// Records one action.
    pub async fn record(&self, actor: &Actor, action: AdminAction, detail: &Value) {
        let line = Line {
            at: timestamp(SystemTime::now()),
            who: &actor.who,
            operator: actor.operator.as_deref(),
            remote: actor.remote.to_string(),
            action: action.as_str(),
            detail,
        };
        tracing::info!(
            target: TARGET,
            who = %line.who,
            operator = line.operator.unwrap_or(""),
            remote = %line.remote,
            action = line.action,
            detail = %detail,
            at = %line.at,
            "admin action"
        );
        let Some(path) = &self.file else {
            return;
        };
        let mut text = serde_json::to_vec(&line).unwrap_or_default();
        text.push(b'\n');
        let _one_at_a_time = self.write.lock().await;
        if let Err(e) = append(path, &text).await {
            tracing::error!(target: TARGET, file = %path.display(), error = %e, "cannot write the audit line");
        }
    }
}

fn append_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    options
}

async fn append(path: &PathBuf, text: &[u8]) -> std::io::Result<()> {
    let mut file = tokio::fs::OpenOptions::from(append_options())
        .open(path)
        .await?;
    file.write_all(text).await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_128_bits_of_a_salted_sha256() {
        let fp = fingerprint("admin-key");
        assert_eq!(fp.len(), 32);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fp, fingerprint("admin-kez"));
        // Not the plain SHA-256 ("abc" = ba7816bf 8f01cfea ..., FIPS 180-2).
        assert!(!fingerprint("abc").starts_with("ba7816bf"));
    }

    #[test]
    fn operator_names_are_bounded_and_printable() {
        assert_eq!(
            operator_name(b"alice (on call)"),
            Ok("alice (on call)".into())
        );
        assert_eq!(operator_name(b""), Err(BadOperator));
        assert_eq!(operator_name(b"a\nforged line"), Err(BadOperator));
        assert_eq!(operator_name("caf\u{e9}".as_bytes()), Err(BadOperator));
        assert_eq!(
            operator_name(&[b'a'; MAX_OPERATOR_LEN + 1]),
            Err(BadOperator)
        );
    }
}
