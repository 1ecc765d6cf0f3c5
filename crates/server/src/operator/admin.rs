//! What the admin API knows besides the actions: the key operators present,
//! its fingerprint (who acted, in the audit log), the audit log, and when
//! the node started (its uptime).
//!
//! The key never leaves this type: [`AdminState::check`] compares a
//! presented key in constant time and answers only who it names.

use std::time::{Duration, Instant};

use chouquette_core::app::keys_match;

use crate::audit::{Audit, fingerprint};

/// Whether a request may act, by the key it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No admin key is configured: the admin API is off.
    Off,
    /// No key was presented.
    Missing,
    /// The key presented is not the admin key.
    Wrong,
    /// The admin key: acting as its fingerprint.
    Granted(String),
}

/// The admin API's key, audit log and start time.
#[derive(Debug)]
pub struct AdminState {
    key: Option<String>,
    fingerprint: String,
    audit: Audit,
    started: Instant,
}

impl AdminState {
    /// The admin state; `key` `None` turns the admin API off.
    pub fn new(key: Option<String>, audit: Audit) -> AdminState {
        AdminState {
            fingerprint: key.as_deref().map(fingerprint).unwrap_or_default(),
            key,
            audit,
            started: Instant::now(),
        }
    }

    /// Whether `presented` (the request's key, if any) may act.
    pub fn check(&self, presented: Option<&str>) -> Access {
        let Some(expected) = self.key.as_deref() else {
            return Access::Off;
        };
        match presented {
            None => Access::Missing,
            Some(key) if !keys_match(expected, key) => Access::Wrong,
            Some(_) => Access::Granted(self.fingerprint.clone()),
        }
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}
