//! `[static]`: a folder served at `/` on the public listener, e.g. an app's
//! `public/`. It must exist when the config is checked, so a typo is found
//! before start rather than as 404s.

use std::path::PathBuf;

use serde::Deserialize;

use super::problem::Problems;

/// `[static]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticFiles {
    /// Folder served at `/` on the public listener (e.g. an app's `public/`).
    pub dir: Option<PathBuf>,
    /// Let browsers cache assets other than HTML for an hour; `false`
    /// revalidates every file at each load (`chouquette dev` does).
    pub cache_assets: bool,
}

impl Default for StaticFiles {
    fn default() -> Self {
        StaticFiles {
            dir: None,
            cache_assets: true,
        }
    }
}

impl StaticFiles {
    pub(super) fn problems(&self, out: &mut Problems<'_>) {
        if let Some(dir) = &self.dir
            && !dir.is_dir()
        {
            out.at(
                "dir",
                format!("static.dir `{}` is not a folder", dir.display()),
            );
        }
    }
}
