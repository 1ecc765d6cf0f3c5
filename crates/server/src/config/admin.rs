//! `[admin]`: the operator's key and where kill switches and the audit log
//! are kept. Without a key the admin routes are off (404), so an empty key
//! is refused rather than taken as "no key"; an empty path likewise.

use std::path::PathBuf;

use serde::Deserialize;

use super::problem::Problems;

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Bearer key for `/admin` routes; without it they answer 404.
    pub key: Option<String>,
    /// Where kill switches are kept across restarts; none: in memory only.
    pub state_file: Option<PathBuf>,
    /// Where admin actions are appended as JSON lines; none: log only.
    pub audit_file: Option<PathBuf>,
}

impl Admin {
    pub(super) fn problems(&self, out: &mut Problems<'_>) {
        if self.key.as_deref().is_some_and(str::is_empty) {
            out.at("key", "admin.key must not be empty".into());
        }
        for (name, path) in [
            ("state_file", &self.state_file),
            ("audit_file", &self.audit_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                out.at(name, format!("admin.{name} must not be empty"));
            }
        }
    }
}
