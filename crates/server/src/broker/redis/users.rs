//! Messages addressed to a user, and backend subscriptions, on Redis.
//!
//! Every node listens on one node-wide topic, `<prefix>:users`, and a
//! message for a user is PUBLISHed there once, serialized once: each node
//! reads it and hands it to its hub, which posts it to the user's
//! connections there (most nodes hold none and drop it after one index
//! lookup). One topic rather than one per user keeps the link simple (no
//! SUBSCRIBE per identified connection, nothing to re-listen on after a
//! reconnect) at a cost of O(nodes) deliveries per message, which is right
//! for a few nodes; per-user topics are the step after that.
//!
//! A user's backend subscriptions are a hash, `<prefix>:{app|user}:subs`
//! (channel → filters JSON), hash-tagged like channel keys so a Cluster
//! keeps it on one slot. It has no expiry: a grant lasts until revoked.

use chouquette_core::broker::{BrokerError, UserGrants};
use chouquette_core::user_mail::{MAX_GRANTS_PER_USER, UserMessage};
use std::sync::LazyLock;

use redis::Script;

use super::{RedisBroker, Shared, not_connected};

/// Stores or revokes one grant; a new channel past the bound is refused
/// (0), all in one step so that two API calls cannot both pass the bound.
const SET_GRANT_LUA: &str = r"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
   or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
";

/// Hashed once: `EVALSHA` after the first call.
static SET_GRANT: LazyLock<Script> = LazyLock::new(|| Script::new(SET_GRANT_LUA));

impl Shared {
    /// The topic every node listens on for messages addressed to users.
    pub(super) fn users_topic(&self) -> String {
        format!("{}:users", self.settings.prefix)
    }

    /// The hash of `user`'s backend subscriptions (`|` cannot appear in app
    /// ids, so two (app, user) pairs never share a name).
    fn grants_key(&self, app: &str, user: &str) -> String {
        format!("{}:{{{app}|{user}}}:subs", self.settings.prefix)
    }

    /// A message from the users topic: handed to the hub, or logged when
    /// unreadable (another version's, or not ours); never a panic.
    pub(super) fn on_user_message(&self, payload: &[u8]) {
        match UserMessage::decode(payload) {
            Ok(message) => {
                self.hub.deliver_to_user(&message);
            }
            Err(e) => tracing::warn!(error = %e, "dropped a message on the users topic"),
        }
    }
}

impl RedisBroker {
    /// PUBLISHes `message` on the users topic (this node hears it too).
    pub(super) async fn publish_to_user(&self, message: &UserMessage) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        redis::cmd("PUBLISH")
            .arg(shared.users_topic())
            .arg(&message.encode()[..])
            .query_async::<i64>(&mut commands)
            .await
            .map(drop)
            .map_err(|e| shared.failed(&e))
    }

    /// Records or revokes one backend subscription.
    pub(super) async fn write_grant(
        &self,
        app: &str,
        user: &str,
        channel: &str,
        filters: Option<&serde_json::Value>,
    ) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        let stored: i64 = SET_GRANT
            .key(shared.grants_key(app, user))
            .arg(channel)
            .arg(filters.map(ToString::to_string).unwrap_or_default())
            .arg(MAX_GRANTS_PER_USER)
            .invoke_async(&mut commands)
            .await
            .map_err(|e| shared.failed(&e))?;
        if stored == 1 {
            Ok(())
        } else {
            Err(BrokerError::TooManyGrants(MAX_GRANTS_PER_USER))
        }
    }

    /// The backend subscriptions of `user`; an entry that is not JSON
    /// (written by hand) is skipped and logged.
    pub(super) async fn read_grants(
        &self,
        app: &str,
        user: &str,
    ) -> Result<UserGrants, BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        let entries: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(shared.grants_key(app, user))
            .query_async(&mut commands)
            .await
            .map_err(|e| shared.failed(&e))?;
        let mut grants = Vec::with_capacity(entries.len());
        for (channel, filters) in entries {
            match serde_json::from_str(&filters) {
                Ok(filters) => grants.push((channel, filters)),
                Err(e) => tracing::warn!(%channel, error = %e, "skipped an unreadable grant"),
            }
        }
        grants.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(grants)
    }
}
