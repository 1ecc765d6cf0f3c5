//! Operator actions carried to every node sharing one Redis.
//!
//! With the Redis broker, a kill switch is recorded in Redis (the set every
//! node reads again each time its link comes up, so a node that was away
//! catches up) and announced on the control topic, as is a disconnect; each
//! node applies what it hears to its own connections. With the memory
//! broker there is one node and nothing to share.
//!
//! The set in Redis is authoritative once it exists. A Redis that has no
//! record at all (new, or restarted without persistence) is seeded with the
//! switches this node holds, so a Redis restart does not lift them.
//!
//! What a node hears is applied with `Node::apply_switch` and
//! `Node::disconnect_user`, as local actions are; a message from this node
//! itself is ignored (it applied the action already).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use chouquette_core::broker::{Broker, BrokerError};
use chouquette_core::node::Node;
use chouquette_core::switches::Switch;
use serde::{Deserialize, Serialize};

use crate::broker::redis::{Control, RedisBroker};

/// One control message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum Message {
    /// A kill switch put in force (`enabled: false`) or lifted.
    Switch { switch: Switch, enabled: bool },
    /// Close a user's connections.
    Disconnect {
        app: String,
        user: String,
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    /// The node that acted (it applied the action itself already).
    origin: String,
    message: Message,
}

/// Shares admin actions between the nodes on one Redis.
pub(super) struct Cluster {
    redis: Arc<RedisBroker>,
    origin: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn field(switch: &Switch) -> String {
    // A switch is plain strings: serializing cannot fail.
    serde_json::to_string(switch).unwrap_or_default()
}

impl Cluster {
    /// Listens for other nodes' actions on `redis` and applies them to `node`.
    pub fn join(redis: Arc<RedisBroker>, node: &Arc<Node>) -> Cluster {
        let origin = node.id().to_string();
        let weak_node = Arc::downgrade(node);
        let weak_redis = Arc::downgrade(&redis);
        let me = origin.clone();
        redis.on_control(Arc::new(move |event| {
            let Some(node) = weak_node.upgrade() else {
                return;
            };
            match event {
                Control::Message(bytes) => hear(&node, &me, bytes),
                Control::Connected => {
                    tokio::spawn(resync(node, weak_redis.clone()));
                }
            }
        }));
        // The first link may have come up before the handler was set.
        if redis.connected() {
            tokio::spawn(resync(node.clone(), Arc::downgrade(&redis)));
        }
        Cluster { redis, origin }
    }

    /// Records a switch change in Redis and tells the other nodes. Called
    /// before the change is applied here: when Redis is away, nothing changes.
    pub async fn switch(&self, switch: &Switch, enabled: bool) -> Result<(), BrokerError> {
        let value = field(switch);
        let stored = (!enabled).then_some(value.as_str());
        self.redis.store_switch(&value, stored).await?;
        self.tell(Message::Switch {
            switch: switch.clone(),
            enabled,
        })
        .await
        .map(|_| ())
    }

    /// Tells every other node to close `user`'s connections; returns how
    /// many nodes listen (this one included).
    pub async fn disconnect(
        &self,
        app: &str,
        user: &str,
        reason: &str,
    ) -> Result<usize, BrokerError> {
        self.tell(Message::Disconnect {
            app: app.into(),
            user: user.into(),
            reason: reason.into(),
        })
        .await
    }

    async fn tell(&self, message: Message) -> Result<usize, BrokerError> {
        let envelope = Envelope {
            origin: self.origin.clone(),
            message,
        };
        let payload = serde_json::to_string(&envelope).unwrap_or_default();
        self.redis.broadcast(&payload).await
    }
}

/// Applies another node's action.
fn hear(node: &Node, me: &str, bytes: &[u8]) {
    let envelope: Envelope = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable control message");
            return;
        }
    };
    if envelope.origin == me {
        return;
    }
    match envelope.message {
        Message::Switch { switch, enabled } => match switch.validated() {
            Ok(switch) => {
                let (_, affected) = node.apply_switch(&switch, enabled);
                tracing::info!(%switch, enabled, affected, origin = %envelope.origin,
                    "kill switch changed on another node");
            }
            Err(e) => tracing::warn!(error = %e, "invalid switch in a control message"),
        },
        Message::Disconnect { app, user, reason } => {
            let closed = node.disconnect_user(&app, &user, &reason);
            tracing::info!(%app, closed, origin = %envelope.origin,
                "user disconnected from another node");
        }
    }
}

/// Brings this node's switches in line with Redis after the link came up.
async fn resync(node: Arc<Node>, redis: Weak<RedisBroker>) {
    let Some(redis) = redis.upgrade() else {
        return;
    };
    let stored = match redis.stored_switches().await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the kill switches from Redis");
            return;
        }
    };
    let local: BTreeSet<Switch> = node.switches().list().into_iter().collect();
    let Some(values) = stored else {
        for switch in &local {
            let value = field(switch);
            if let Err(e) = redis.store_switch(&value, Some(&value)).await {
                tracing::warn!(error = %e, "cannot record the kill switches in Redis");
                return;
            }
        }
        return;
    };
    let wanted: BTreeSet<Switch> = values
        .iter()
        .filter_map(|v| serde_json::from_str::<Switch>(v).ok())
        .filter_map(|s| s.validated().ok())
        .collect();
    for switch in local.difference(&wanted) {
        node.apply_switch(switch, true);
    }
    for switch in wanted.difference(&local) {
        node.apply_switch(switch, false);
    }
}
