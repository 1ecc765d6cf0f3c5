//! Presence on Redis: who is subscribed to each presence channel, on any
//! node, and a node's users leaving when the node dies.
//!
//! Per channel, under its hash tag (one Cluster slot): a sorted set of
//! entries `["<node>","<user>"]` scored by a deadline, and a hash counting
//! each user's entries. A node adds an entry when a user gets their first
//! subscription there, removes it when the last one goes, and every third
//! of `presence_timeout` pushes back the deadline of all of its entries
//! (the core's presence task calls [`RedisBroker::presence_refresh_now`]).
//! A node that dies stops refreshing: any live node's next call on that
//! channel (its refresh, a change, a subscriber's `present` read) removes
//! the entries past their deadline. So a dead node's users leave at most
//! `presence_timeout` plus a third of it after its last refresh.
//!
//! One script (`presence.lua`) does each step atomically and PUBLISHes the
//! cluster-wide transitions it made (a user's first entry, their last one
//! gone) on one node-wide topic, `<prefix>:presence`, serialized once; each
//! node hands them to its hub's presence, which ignores channels it has no
//! subscribers for. So a user with two tabs on two nodes closing one does
//! not leave. The node part of an entry is random per process, so a node
//! restarted under the same id does not take over entries of its previous
//! life: those expire.

use std::collections::HashMap;
use std::sync::LazyLock;

use chouquette_core::broker::BrokerError;
use chouquette_core::presence::LocalChange;
use chouquette_core::publication::ChannelId;
use redis::Script;
use serde::Deserialize;

use super::{RedisBroker, Shared, not_connected, wire::ChannelKeys};

static PRESENCE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("presence.lua")));

/// A message on the presence topic, as `presence.lua` writes it.
#[derive(Debug, Deserialize)]
struct Announced {
    app: String,
    channel: String,
    #[serde(default, deserialize_with = "users")]
    joined: Vec<String>,
    #[serde(default, deserialize_with = "users")]
    left: Vec<String>,
}

/// Lua's JSON writes an empty list as `{}`: accept it as none.
fn users<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Users {
        List(Vec<String>),
        Empty {},
    }
    Ok(match Users::deserialize(d)? {
        Users::List(list) => list,
        Users::Empty {} => Vec::new(),
    })
}

impl Shared {
    /// The topic every node listens on for presence transitions.
    pub(super) fn presence_topic(&self) -> String {
        format!("{}:presence", self.settings.prefix)
    }

    /// A message from the presence topic: handed to the hub, or logged
    /// when unreadable; never a panic.
    pub(super) fn on_presence_message(&self, payload: &[u8]) {
        match serde_json::from_slice::<Announced>(payload) {
            Ok(a) => {
                let channel = ChannelId::new(&a.app, &a.channel);
                self.hub.presence().announce(&channel, &a.joined, &a.left);
            }
            Err(e) => tracing::warn!(error = %e, "dropped a message on the presence topic"),
        }
    }
}

impl RedisBroker {
    /// Runs `presence.lua` on `channel` in `mode` with `users`; returns
    /// what a `read` returns (the users present).
    async fn run_presence(
        &self,
        channel: &ChannelId,
        mode: &str,
        users: &[&str],
    ) -> Result<Vec<String>, BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let tag = ChannelKeys::new(&shared.settings.prefix, channel).topic;
        let timeout =
            u64::try_from(shared.settings.presence_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = PRESENCE.prepare_invoke();
        invocation
            .key(format!("{tag}:pres"))
            .key(format!("{tag}:presn"))
            .arg(mode)
            .arg(&*shared.presence_node)
            .arg(timeout)
            .arg(shared.presence_topic())
            .arg(&*channel.app)
            .arg(&*channel.name);
        for user in users {
            invocation.arg(*user);
        }
        let mut commands = link.commands.clone();
        let reply: redis::Value = invocation
            .invoke_async(&mut commands)
            .await
            .map_err(|e| shared.failed(&e))?;
        match reply {
            redis::Value::Array(items) => Ok(items
                .iter()
                .filter_map(|v| match v {
                    redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                })
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// Records this node's transitions: per channel, the users gone, then
    /// the users come.
    pub(super) async fn presence_changes(
        &self,
        changes: &[LocalChange],
    ) -> Result<(), BrokerError> {
        let mut by_channel: HashMap<&ChannelId, (Vec<&str>, Vec<&str>)> = HashMap::new();
        for change in changes {
            let (come, gone) = by_channel.entry(&change.channel).or_default();
            if change.here { come } else { gone }.push(&change.user);
        }
        for (channel, (come, gone)) in by_channel {
            if !gone.is_empty() {
                self.run_presence(channel, "leave", &gone).await?;
            }
            if !come.is_empty() {
                self.run_presence(channel, "join", &come).await?;
            }
        }
        Ok(())
    }

    /// Pushes back the deadline of every entry of this node (adding any
    /// that expired meanwhile, e.g. during an outage: announced `joined`
    /// again), and clears dead nodes' entries on each channel it serves.
    pub(super) async fn presence_refresh_now(
        &self,
        here: &[(ChannelId, Vec<Box<str>>)],
    ) -> Result<(), BrokerError> {
        for (channel, users) in here {
            let users: Vec<&str> = users.iter().map(|u| &**u).collect();
            self.run_presence(channel, "join", &users).await?;
        }
        Ok(())
    }

    /// The users present on `channel` (dead nodes' entries cleared first).
    pub(super) async fn read_present(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<Box<str>>, BrokerError> {
        let users = self.run_presence(channel, "read", &[]).await?;
        Ok(users.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_read_with_lua_empty_lists() {
        let a: Announced =
            serde_json::from_str(r#"{"app":"a","channel":"chat","joined":["ana"],"left":{}}"#)
                .expect("read");
        assert_eq!((a.joined, a.left), (vec!["ana".to_string()], Vec::new()));
        let b: Announced =
            serde_json::from_str(r#"{"app":"a","channel":"chat","left":["vb"]}"#).expect("read");
        assert_eq!((b.joined.len(), b.left.len()), (0, 1));
        assert!(serde_json::from_slice::<Announced>(b"junk").is_err());
    }
}
