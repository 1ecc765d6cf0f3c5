//! The audit log of operator actions.
//!
//! Every admin action (a switch change, a disconnect, a test publish) is one
//! tracing event at INFO on target `chouquette::audit`, and, when
//! `[admin] audit_file` is set, one JSON line appended to that file:
//!
//! ```json
//! {"at":"2025-01-31T10:00:00.000000Z","who":"6f1ed002","remote":"127.0.0.1:50412","action":"switch_off","detail":{...}}
//! ```
//!
//! `who` is the admin key's fingerprint (first 8 hex digits of its SHA-256),
//! never the key. The file is opened for each line (so log rotation by
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

/// First 8 hex digits of the SHA-256 of `key`: names a key without revealing it.
pub fn fingerprint(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who did something: the key's fingerprint and the remote address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// [`fingerprint`] of the key used.
    pub who: String,
    /// The client's address.
    pub remote: SocketAddr,
}

#[derive(Serialize)]
struct Line<'a> {
    at: String,
    who: &'a str,
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
            remote: actor.remote.to_string(),
            action: action.as_str(),
            detail,
        };
        tracing::info!(
            target: TARGET,
            who = %line.who,
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
    fn fingerprint_is_eight_hex_digits_of_sha256() {
        let fp = fingerprint("admin-key");
        assert_eq!(fp.len(), 8);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fp, fingerprint("admin-kez"));
        // SHA-256("abc") = ba7816bf 8f01cfea ... (FIPS 180-2 test vector).
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }
}
