//! Apps (tenants) and their policies, as built from the configuration.
//!
//! An app owns its secrets (any verifies a token; rotation), its publish API
//! key, and per-channel policies; a channel not listed uses the app's default
//! policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::limits::AppLimits;

/// How one channel keeps history and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// Events kept for resume (0: none).
    pub history: usize,
    /// Events older than this are dropped from history.
    pub history_ttl: Option<Duration>,
    /// Keep the last event per `key` (docs/protocol.md, "Subscribing": snapshots).
    pub keep_state: bool,
    /// Most keys kept; a publish adding one more is refused.
    pub max_state_keys: usize,
    /// Tell subscribers who is subscribed (PROTOCOL.md section 10
    /// "Presence"; see [`crate::presence`]).
    pub presence: bool,
    /// The field of `data` whose changes are tracked per key (binary
    /// sensors: `since_change`, `changed_at`, flapping); none: not tracked.
    pub state_field: Option<Arc<str>>,
    /// Raise a `flapping` event when a key's tracked value changes too often.
    pub flapping: Option<crate::device_state::Flapping>,
    /// Notify, then fetch: events reach subscribers without their `data`
    /// (kind, keywords, key, offset), for clients that fetch from the
    /// backend (see [`crate::publication::Publication::notice_frame`]).
    pub notify_only: bool,
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        ChannelPolicy {
            history: 1000,
            history_ttl: Some(Duration::from_secs(24 * 3600)),
            keep_state: false,
            max_state_keys: 100_000,
            presence: false,
            state_field: None,
            flapping: None,
            notify_only: false,
        }
    }
}

/// Whether `given` equals `expected`, compared in time that does not depend
/// on where the two differ (API and admin keys).
pub fn keys_match(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// One app (tenant).
#[derive(Debug, Clone)]
pub struct App {
    /// Its id, as in `app_id`.
    pub id: Arc<str>,
    /// Token secrets; any of them verifies, the first signs.
    pub secrets: Vec<Vec<u8>>,
    /// The key backends present to publish for this app.
    pub api_key: Option<String>,
    /// Whether tokens without `exp` are accepted.
    pub allow_no_exp: bool,
    /// The policy of channels not listed in `channels`.
    pub default_channel: ChannelPolicy,
    /// Per-channel policies.
    pub channels: HashMap<String, ChannelPolicy>,
    /// Its limits (`[apps.limits]` over `[limits]`).
    pub limits: AppLimits,
    /// Its notification rules (`[apps.notifications]`).
    pub notifications: crate::notifications::NotificationPolicy,
    /// Its user-to-user message rules (`[apps.messages]`).
    pub messages: crate::messages::MessagePolicy,
}

impl App {
    /// Whether `key` is this app's publish key, compared in time that does
    /// not depend on where the two differ.
    pub fn accepts_api_key(&self, key: &str) -> bool {
        self.api_key
            .as_deref()
            .is_some_and(|expected| keys_match(expected, key))
    }

    /// The policy in force for `channel`.
    pub fn channel_policy(&self, channel: &str) -> &ChannelPolicy {
        self.channels.get(channel).unwrap_or(&self.default_channel)
    }
}

/// Every configured app, by id.
#[derive(Debug, Clone, Default)]
pub struct Apps {
    by_id: HashMap<Arc<str>, Arc<App>>,
}

impl Apps {
    /// Builds the registry; later apps with the same id replace earlier ones
    /// (the config loader refuses duplicates before this point).
    pub fn new(apps: impl IntoIterator<Item = App>) -> Apps {
        Apps {
            by_id: apps
                .into_iter()
                .map(|a| (a.id.clone(), Arc::new(a)))
                .collect(),
        }
    }

    /// The app with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    /// Every app, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }
}
