//! `[apps.messages]`: the anti-spam rules of user-to-user messages
//! (docs/configuration.md, docs/notifications.md "User-to-user messages").

use chouquette_core::limits::Rate;
use chouquette_core::messages::{
    DEFAULT_MAX_RECIPIENTS, DEFAULT_RATE, MAX_MAX_RECIPIENTS, MessagePolicy,
};
use serde::Deserialize;

use super::limits::rate_problem;
use super::problem::Problems;

/// `[apps.messages]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesConfig {
    /// Messages per second one sender may send, per node (0: no limit);
    /// default 1.
    #[serde(default)]
    pub per_second: Option<u32>,
    /// Their burst; default 10.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Recipients one message may reach, groups counted by their members;
    /// default 50.
    #[serde(default)]
    pub max_recipients: Option<usize>,
}

impl MessagesConfig {
    /// The core's form.
    pub fn policy(&self) -> MessagePolicy {
        MessagePolicy {
            rate: Rate::new(
                self.per_second.unwrap_or(DEFAULT_RATE.per_second),
                self.burst.unwrap_or(DEFAULT_RATE.burst),
            ),
            max_recipients: self.max_recipients.unwrap_or(DEFAULT_MAX_RECIPIENTS),
        }
    }

    /// Its problems, for app `id` (`at` finds its line).
    pub(super) fn problems(&self, id: &str, at: &str, out: &mut Problems<'_>) {
        let policy = self.policy();
        if let Some((_, message)) = rate_problem("messages", "per_second", "burst", policy.rate) {
            out.at(at, format!("app `{id}`: apps.{message}"));
        }
        if policy.max_recipients == 0 || policy.max_recipients > MAX_MAX_RECIPIENTS {
            out.at(
                at,
                format!("app `{id}`: messages.max_recipients must be 1 to {MAX_MAX_RECIPIENTS}"),
            );
        }
    }
}
