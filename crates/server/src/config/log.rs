//! `[log]`: the format and filter of the process's log. `RUST_LOG`, when
//! set, wins over `level`, as operators expect of a Rust program.
//!
//! `level` must be a filter that logs something: a bare level name, or
//! directives that each say their level (`chouquette=debug`). A bare word
//! such as `verbose` is a valid tracing filter (everything from a target
//! named `verbose`), which would silence the whole gateway: refused.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use super::problem::Problems;

/// The level names `level` may be on its own, or per target after `=`.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `chouquette=debug`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Log {
    pub(super) fn problems(&self, out: &mut Problems<'_>) {
        let level = self.level.trim();
        let bare_words = level
            .split(',')
            .map(str::trim)
            .any(|d| !d.contains('=') && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d)));
        if level.is_empty() || bare_words || EnvFilter::try_new(level).is_err() {
            out.at(
                "level",
                format!(
                    "log.level `{}` is not a filter: use one of {}, or directives \
                     that each name their level, like `info,chouquette=debug`",
                    self.level,
                    LEVELS.join(", ")
                ),
            );
        }
    }
}
