//! Kill switches kept across restarts: `[admin] state_file`.
//!
//! The file is one JSON object, `{"version": 1, "switches": [...]}`, each
//! switch as `GET /admin/switches` lists it. It is rewritten whole on every
//! change, atomically: a temporary file beside it is written and synced,
//! then renamed over it, so a crash leaves the old or the new list, never a
//! mix. A missing file is created empty at start (which also proves the
//! folder is writable); a file that cannot be read or parsed stops the start.

use std::path::{Path, PathBuf};

use chouquette_core::switches::Switch;
use serde::{Deserialize, Serialize};

/// The format version written.
const VERSION: u32 = 1;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content is not a switch list this gateway wrote.
    #[error("{path}: not a kill switch state file: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    version: u32,
    switches: Vec<Switch>,
}

/// The state file.
#[derive(Debug, Clone)]
pub struct SwitchStore {
    path: PathBuf,
}

impl SwitchStore {
    /// A store at `path`.
    pub fn new(path: PathBuf) -> SwitchStore {
        SwitchStore { path }
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn corrupt(&self, message: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            message: message.into(),
        }
    }

    /// Reads the switches; a missing file is created empty.
    pub fn load(&self) -> Result<Vec<Switch>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.save_now(&[])?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.io(e)),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| self.corrupt(e.to_string()))?;
        if state.version != VERSION {
            return Err(self.corrupt(format!("unknown version {}", state.version)));
        }
        state
            .switches
            .into_iter()
            .map(|s| s.validated().map_err(|e| self.corrupt(e.to_string())))
            .collect()
    }

    /// Replaces the file with `switches`, atomically, off the async threads.
    pub async fn save(&self, switches: Vec<Switch>) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.save_now(&switches))
            .await
            .map_err(|e| self.io(std::io::Error::other(e.to_string())))?
    }

    fn save_now(&self, switches: &[Switch]) -> Result<(), StoreError> {
        let state = State {
            version: VERSION,
            switches: switches.to_vec(),
        };
        let mut text =
            serde_json::to_vec_pretty(&state).map_err(|e| self.corrupt(e.to_string()))?;
        text.push(b'\n');
        let temp = temp_path(&self.path);
        write_synced(&temp, &text).map_err(|e| self.io(e))?;
        std::fs::rename(&temp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            self.io(e)
        })
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chouquette_core::switches::SwitchSpec;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chouquette-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[tokio::test]
    async fn round_trip_and_corruption() {
        let dir = temp_dir("store");
        let store = SwitchStore::new(dir.join("switches.json"));
        assert!(store.load().expect("created").is_empty());
        let s = Switch::parse(&SwitchSpec {
            scope: "app",
            app: Some("a"),
            ..SwitchSpec::default()
        })
        .expect("valid");
        store.save(vec![s.clone()]).await.expect("saved");
        assert_eq!(store.load().expect("read"), vec![s]);
        std::fs::write(dir.join("switches.json"), "{not json").expect("write");
        let err = store.load().expect_err("corrupt");
        assert!(
            err.to_string().contains("not a kill switch state file"),
            "{err}"
        );
        std::fs::write(
            dir.join("switches.json"),
            r#"{"version":1,"switches":[{"scope":"app"}]}"#,
        )
        .expect("write");
        assert!(store.load().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
