//! `[shutdown]`: how a stopping node treats its connections: they get
//! `grace` to flush what is queued before the process exits.

use std::time::Duration;

use serde::Deserialize;

use super::value::duration;

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// How long connections get to flush before the process exits.
    #[serde(deserialize_with = "duration")]
    pub grace: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            grace: Duration::from_secs(10),
        }
    }
}
