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
//! Backends' calls to users travel the same topic; each node answers the
//! calling node on that node's own replies topic,
//! `<prefix>:calls:<reply address>` (a random address per process, which
//! the call names as `reply_to`): how many of the user's connections it
//! reached, then, from the session that got it, the client's answer.
//! PUBLISH on the users topic says how many nodes listen, so the calling
//! node knows how many reach replies to wait for (on a Redis Cluster that
//! count covers one shard's listeners only: see docs/rpc.md).
//!
//! A user's backend subscriptions are a hash, `<prefix>:{app|user}:subs`
//! (channel → filters JSON), hash-tagged like channel keys so a Cluster
//! keeps it on one slot. It has no expiry: a grant lasts until revoked.

use chouquette_core::broker::{BrokerError, UserGrants};
use chouquette_core::user_calls::{self, CallReply};
use chouquette_core::user_mail::{MAX_GRANTS_PER_USER, UserMessage};
use std::sync::{Arc, LazyLock};

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

    /// The topic where replies about this node's calls to users come
    /// (`<prefix>:calls:<reply address>`, the address random per process).
    pub(super) fn replies_topic(&self) -> String {
        self.topic_of(&self.reply_address)
    }

    fn topic_of(&self, address: &str) -> String {
        format!("{}:calls:{address}", self.settings.prefix)
    }

    /// A message from the users topic: handed to the hub, or logged when
    /// unreadable (another version's, or not ours); never a panic. For a
    /// call, the calling node is told how many connections were reached
    /// here, from a task of its own (this runs on the link task).
    pub(super) fn on_user_message(self: &Arc<Self>, payload: &[u8]) {
        match UserMessage::decode(payload) {
            Ok(message) => {
                let reached = self.hub.deliver_to_user(&message);
                if let Some((address, reply)) = user_calls::reached(&message, reached) {
                    if *address == *self.reply_address {
                        self.hub.calls().deliver(reply);
                    } else {
                        let shared = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = shared.send_reply(&address, &reply).await {
                                tracing::debug!(error = %e, "a call's reach was not told");
                            }
                        });
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "dropped a message on the users topic"),
        }
    }

    /// A message from this node's replies topic: handed to its call table.
    pub(super) fn on_reply(&self, payload: &[u8]) {
        match CallReply::decode(payload) {
            Ok(reply) => self.hub.calls().deliver(reply),
            Err(e) => tracing::warn!(error = %e, "dropped a message on the replies topic"),
        }
    }

    /// PUBLISHes `reply` on the replies topic of the node at `address`.
    pub(super) async fn send_reply(
        &self,
        address: &str,
        reply: &CallReply,
    ) -> Result<(), BrokerError> {
        let link = self.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        redis::cmd("PUBLISH")
            .arg(self.topic_of(address))
            .arg(&reply.encode()[..])
            .query_async::<i64>(&mut commands)
            .await
            .map(drop)
            .map_err(|e| self.failed(&e))
    }
}

impl RedisBroker {
    /// PUBLISHes `message` on the users topic (this node hears it too);
    /// returns how many nodes listen there (PUBLISH's answer: each node has
    /// one pub/sub connection).
    pub(super) async fn publish_to_user(
        &self,
        message: &UserMessage,
    ) -> Result<usize, BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        redis::cmd("PUBLISH")
            .arg(shared.users_topic())
            .arg(&message.encode()[..])
            .query_async::<i64>(&mut commands)
            .await
            .map(|n| usize::try_from(n).unwrap_or(0))
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
