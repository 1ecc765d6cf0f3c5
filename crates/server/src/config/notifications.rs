//! `[apps.notifications]` and its `[[apps.notifications.group]]` rules
//! (docs/configuration.md, docs/notifications.md).

use std::time::Duration;

use chouquette_core::notifications::{
    DEFAULT_EXPIRE_AFTER, DEFAULT_MAX_PENDING, MAX_KIND_BYTES, NotificationPolicy,
};
use serde::Deserialize;

use super::problem::Problems;
use super::value::{duration, opt_duration};

/// Largest `max_pending` accepted: each entry may hold a notification of
/// up to `max_publish_bytes`.
pub const MAX_MAX_PENDING: usize = 100_000;

/// Longest grouping window accepted (one day): a window holds a group open
/// (not delivered) that long.
pub const MAX_GROUP_WINDOW: Duration = Duration::from_secs(86_400);

/// `[apps.notifications]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Entries kept per user (default 1,000); past it the oldest is dropped.
    #[serde(default)]
    pub max_pending: Option<usize>,
    /// Pending notifications older than this are dropped (default 30 days).
    #[serde(default, deserialize_with = "opt_duration")]
    pub expire_after: Option<Duration>,
    /// Grouping rules, one per kind.
    #[serde(default)]
    pub group: Vec<GroupConfig>,
    /// The offline fallback (e-mail or webhook), when set.
    #[serde(default)]
    pub fallback: Option<super::fallback::FallbackConfig>,
}

/// `[[apps.notifications.group]]`: `kind = "comment"`, `window = "60s"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The notification kind grouped.
    pub kind: String,
    /// How long after a first notification the others are gathered.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
}

impl NotificationsConfig {
    /// The core's form.
    pub fn policy(&self) -> NotificationPolicy {
        NotificationPolicy {
            max_pending: self.max_pending.unwrap_or(DEFAULT_MAX_PENDING),
            expire_after: self.expire_after.unwrap_or(DEFAULT_EXPIRE_AFTER),
            groups: self
                .group
                .iter()
                .map(|g| (g.kind.clone(), g.window))
                .collect(),
        }
    }

    /// Its problems, for app `id` (`at` finds its line).
    pub(super) fn problems(&self, id: &str, at: &str, out: &mut Problems<'_>) {
        if self
            .max_pending
            .is_some_and(|m| m == 0 || m > MAX_MAX_PENDING)
        {
            out.at(
                at,
                format!("app `{id}`: notifications.max_pending must be 1 to {MAX_MAX_PENDING}"),
            );
        }
        if self
            .expire_after
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            out.at(
                at,
                format!("app `{id}`: notifications.expire_after must be at least 1s"),
            );
        }
        if let Some(fallback) = &self.fallback {
            fallback.problems(id, at, out);
        }
        let mut kinds = std::collections::HashSet::new();
        for g in &self.group {
            if g.kind.is_empty() || g.kind.len() > MAX_KIND_BYTES {
                out.at(
                    at,
                    format!(
                        "app `{id}`: a notifications.group kind has 1 to {MAX_KIND_BYTES} bytes"
                    ),
                );
            }
            if !kinds.insert(g.kind.as_str()) {
                out.at(
                    at,
                    format!(
                        "app `{id}`: notifications.group kind `{}` is listed twice",
                        g.kind
                    ),
                );
            }
            if g.window.is_zero() || g.window > MAX_GROUP_WINDOW {
                out.at(
                    at,
                    format!(
                        "app `{id}`: notifications.group window must be over 0 and at most 1 day"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use std::time::Duration;

    const APP: &str = "[[apps]]\nid = \"bluelib\"\nsecrets = [\"s\"]\n";

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{APP}{extra}"), std::iter::empty())
    }

    #[test]
    fn the_section_reaches_the_app_and_defaults_apply() {
        let c = load(
            "[apps.notifications]\nmax_pending = 5\nexpire_after = \"2d\"\n\
             [[apps.notifications.group]]\nkind = \"comment\"\nwindow = \"60s\"\n",
        )
        .expect("valid");
        let apps = c.apps();
        let policy = &apps.get("bluelib").expect("app").notifications;
        assert_eq!(policy.max_pending, 5);
        assert_eq!(policy.expire_after, Duration::from_secs(2 * 86_400));
        assert_eq!(policy.groups["comment"], Duration::from_secs(60));
        let c = load("").expect("valid");
        let apps = c.apps();
        let policy = &apps.get("bluelib").expect("app").notifications;
        assert_eq!(policy.max_pending, 1_000);
        assert_eq!(policy.expire_after, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn bad_values_are_problems() {
        for (extra, needle) in [
            ("[apps.notifications]\nmax_pending = 0\n", "max_pending"),
            (
                "[apps.notifications]\nmax_pending = 100001\n",
                "max_pending",
            ),
            (
                "[apps.notifications]\nexpire_after = \"10ms\"\n",
                "expire_after",
            ),
            (
                "[[apps.notifications.group]]\nkind = \"\"\nwindow = \"1s\"\n",
                "group kind",
            ),
            (
                "[[apps.notifications.group]]\nkind = \"c\"\nwindow = \"2d\"\n",
                "window",
            ),
            (
                "[[apps.notifications.group]]\nkind = \"c\"\nwindow = \"1s\"\n\
                 [[apps.notifications.group]]\nkind = \"c\"\nwindow = \"2s\"\n",
                "twice",
            ),
        ] {
            match load(extra) {
                Err(ConfigError::Invalid(problems)) => assert!(
                    problems.iter().any(|p| p.message.contains(needle)),
                    "{extra}: {problems:?}"
                ),
                other => panic!("{extra}: expected problems, got {other:?}"),
            }
        }
    }
}
