//! `[[apps]]`: the tenants, each with its token secrets, API key, channel
//! policies (`[apps.channel_defaults]`, `[apps.channels.NAME]`) and limits
//! (`[apps.limits]`). Unset keys inherit: a channel from the app's channel
//! defaults, those from the core's; an app's limits from `[limits]`.
//! Builds the [`Apps`] registry. App ids are unique; a problem of an app
//! points at the line of its id.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chouquette_core::app::{App, AppLimits, Apps, ChannelPolicy};
use chouquette_core::limits::Rate;
use chouquette_core::publication::valid_name;
use serde::Deserialize;

use super::connect_auth::{self, ConnectAuthConfig};
use super::limits::{Limits, rate_problem};
use super::problem::Problems;
use super::rpc::{self, RpcRoute};
use super::value::{duration, opt_duration};

/// `[[apps]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app id.
    pub id: String,
    /// Token secrets: any verifies, the first signs.
    pub secrets: Vec<String>,
    /// Bearer key for `/api/v1` on behalf of this app.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Accept subscription tokens without `exp`.
    #[serde(default)]
    pub allow_tokens_without_exp: bool,
    /// Defaults for channels not listed under `channels`.
    #[serde(default)]
    pub channel_defaults: ChannelConfig,
    /// Per-channel settings.
    #[serde(default)]
    pub channels: HashMap<String, ChannelConfig>,
    /// This app's limits; unset keys take `[limits]`.
    #[serde(default)]
    pub limits: AppLimitsConfig,
    /// RPC routes for client calls, by method prefix.
    #[serde(default)]
    pub rpc: Vec<RpcRoute>,
    /// The backend that accepts or refuses connections at their upgrade.
    #[serde(default)]
    pub connect_auth: Option<ConnectAuthConfig>,
    /// Notifications to users: bounds, expiry, grouping.
    #[serde(default)]
    pub notifications: super::notifications::NotificationsConfig,
    /// Devices and their liveness (docs/devices.md).
    #[serde(default)]
    pub devices: Option<super::devices::DevicesConfig>,
    /// User-to-user messages: sender rate, recipients per message.
    #[serde(default)]
    pub messages: super::messages::MessagesConfig,
}

/// `[apps.limits]`: the per-app limits, each over its `[limits]` default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppLimitsConfig {
    /// Client messages per second per connection holding this app.
    pub client_messages_per_second: Option<u32>,
    /// Their burst.
    pub client_messages_burst: Option<u32>,
    /// Connections per user of this app on this node (0: no limit).
    pub max_connections_per_user: Option<usize>,
    /// Subscriptions per connection, checked when subscribing to this app.
    pub max_subscriptions_per_connection: Option<usize>,
    /// Events published per second for this app (0: no limit).
    pub publishes_per_second: Option<u32>,
    /// Their burst.
    pub publish_burst: Option<u32>,
    /// Client calls per second to this app's RPC routes, all connections
    /// together (0: no limit).
    pub calls_per_second: Option<u32>,
    /// Their burst.
    pub calls_burst: Option<u32>,
    /// Events one user (`connect` identity) may publish per second as a
    /// client (0: no limit beyond the app's); default 10.
    pub client_publishes_per_second: Option<u32>,
    /// Their burst; default 20.
    pub client_publish_burst: Option<u32>,
}

impl AppLimitsConfig {
    /// This app's call rate over the `[limits]` default.
    fn calls(&self, base: &Limits) -> Rate {
        Rate::new(
            self.calls_per_second.unwrap_or(base.calls_per_second),
            self.calls_burst.unwrap_or(base.calls_burst),
        )
    }

    fn over(&self, base: &Limits) -> AppLimits {
        AppLimits {
            client_messages: Rate::new(
                self.client_messages_per_second
                    .unwrap_or(base.client_messages_per_second),
                self.client_messages_burst
                    .unwrap_or(base.client_messages_burst),
            ),
            max_connections_per_user: self
                .max_connections_per_user
                .unwrap_or(base.max_connections_per_user),
            max_subscriptions: self
                .max_subscriptions_per_connection
                .unwrap_or(base.max_subscriptions_per_connection),
            publishes: Rate::new(
                self.publishes_per_second
                    .unwrap_or(base.publishes_per_second),
                self.publish_burst.unwrap_or(base.publish_burst),
            ),
            client_publishes: {
                let core = AppLimits::default().client_publishes;
                Rate::new(
                    self.client_publishes_per_second.unwrap_or(core.per_second),
                    self.client_publish_burst.unwrap_or(core.burst),
                )
            },
        }
    }
}

/// `[apps.channels.NAME]` and `[apps.channel_defaults]`; unset keys inherit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Events kept for resume.
    pub history: Option<usize>,
    /// Events older than this leave history (`0s`: no age limit).
    #[serde(default, deserialize_with = "opt_duration")]
    pub history_ttl: Option<Duration>,
    /// Keep the last event per key.
    pub keep_state: Option<bool>,
    /// Most keys kept.
    pub max_state_keys: Option<usize>,
    /// Tell subscribers who else is subscribed (`presence` messages).
    pub presence: Option<bool>,
    /// The field of `data` whose changes are tracked per key (docs/devices.md).
    pub state_field: Option<String>,
    /// Raise `flapping` events for keys changing too often (docs/devices.md).
    pub flapping: Option<FlappingConfig>,
    /// Notify, then fetch: deliver events without their `data`.
    pub notify_only: Option<bool>,
}

/// `[apps.channels.NAME.flapping]`: more than `changes` changes of a key's
/// `state_field` within `window` raise one `flapping` event.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlappingConfig {
    /// Changes allowed within the window.
    pub changes: usize,
    /// The window.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
}

impl ChannelConfig {
    fn over(&self, base: &ChannelPolicy) -> ChannelPolicy {
        ChannelPolicy {
            history: self.history.unwrap_or(base.history),
            history_ttl: match self.history_ttl {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => base.history_ttl,
            },
            keep_state: self.keep_state.unwrap_or(base.keep_state),
            max_state_keys: self.max_state_keys.unwrap_or(base.max_state_keys),
            presence: self.presence.unwrap_or(base.presence),
            state_field: match &self.state_field {
                Some(field) => Some(field.as_str().into()),
                None => base.state_field.clone(),
            },
            flapping: match self.flapping {
                Some(f) => Some(chouquette_core::device_state::Flapping {
                    changes: f.changes,
                    window: f.window,
                }),
                None => base.flapping,
            },
            notify_only: self.notify_only.unwrap_or(base.notify_only),
        }
    }
}

/// The apps registry, each app's unset settings taken from `limits` and the
/// core's channel defaults.
pub(super) fn registry(apps: &[AppConfig], limits: &Limits) -> Apps {
    Apps::new(apps.iter().map(|a| a.build(limits)))
}

/// Every app's RPC routes, with its call rate.
pub(super) fn rpc_routes(
    apps: &[AppConfig],
    limits: &Limits,
) -> Vec<(std::sync::Arc<str>, chouquette_core::rpc::AppRoutes)> {
    apps.iter()
        .map(|a| rpc::app_routes(&a.id, &a.rpc, a.limits.calls(limits)))
        .collect()
}

/// Every app's problems, and ids defined twice.
pub(super) fn problems(apps: &[AppConfig], limits: &Limits, out: &mut Problems<'_>) {
    let mut seen = HashSet::new();
    for app in apps {
        let at = format!("\"{}\"", app.id);
        if !valid_name(&app.id) {
            out.at(
                &at,
                format!("app id `{}` must be letters, digits and `_-.:@/`", app.id),
            );
        }
        if !seen.insert(app.id.as_str()) {
            out.at(&at, format!("app `{}` is defined twice", app.id));
        }
        app.problems(&at, limits, out);
    }
}

impl AppConfig {
    fn build(&self, limits: &Limits) -> App {
        let default_channel = self.channel_defaults.over(&ChannelPolicy::default());
        App {
            id: self.id.as_str().into(),
            secrets: self.secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            api_key: self.api_key.clone(),
            allow_no_exp: self.allow_tokens_without_exp,
            channels: self
                .channels
                .iter()
                .map(|(name, c)| (name.clone(), c.over(&default_channel)))
                .collect(),
            default_channel,
            limits: self.limits.over(limits),
            notifications: self.notifications.policy(),
            messages: self.messages.policy(),
        }
    }

    /// This app's own problems; `at` finds the line of its id.
    fn problems(&self, at: &str, limits: &Limits, out: &mut Problems<'_>) {
        let id = &self.id;
        self.notifications.problems(id, at, out);
        if let Some(devices) = &self.devices {
            devices.problems(id, at, out);
        }
        self.messages.problems(id, at, out);
        if self.secrets.is_empty() || self.secrets.iter().any(String::is_empty) {
            out.at(
                at,
                format!("app `{id}` needs at least one non-empty secret"),
            );
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            out.at(at, format!("app `{id}`: api_key must not be empty"));
        }
        let own = self.limits.over(limits);
        for (rate, burst, r) in [
            (
                "client_messages_per_second",
                "client_messages_burst",
                own.client_messages,
            ),
            ("publishes_per_second", "publish_burst", own.publishes),
            ("calls_per_second", "calls_burst", self.limits.calls(limits)),
            (
                "client_publishes_per_second",
                "client_publish_burst",
                own.client_publishes,
            ),
        ] {
            if let Some((_, message)) = rate_problem("limits", rate, burst, r) {
                out.at(at, format!("app `{id}`: apps.{message}"));
            }
        }
        if own.max_subscriptions == 0 {
            out.at(
                at,
                format!("app `{id}`: limits.max_subscriptions_per_connection must be at least 1"),
            );
        }
        rpc::problems(id, &self.rpc, out);
        if let Some(auth) = &self.connect_auth {
            connect_auth::problems(id, auth, out);
        }
        for name in self.channels.keys() {
            if !valid_name(name) {
                out.at(
                    name,
                    format!("app `{id}`: channel name `{name}` is not valid"),
                );
            }
        }
    }
}
