//! Operator actions, as one capability: put a kill switch in force or lift
//! it, disconnect a user, list the switches and a user's connections, on
//! this node and, with the Redis broker, on every node.
//!
//! [`OperatorActions`] is the one entry for each action; the admin HTTP
//! routes only parse, call it, and answer. It holds what the actions need
//! (the node, the other nodes through Redis, the state file), not the
//! gateway state, so that any other way of acting (a future command channel)
//! gets the same checks, order and failure semantics.
//!
//! Invariants:
//! - Switch changes happen one at a time, and in this order: compute the
//!   change, record it in Redis and tell the other nodes, write the state
//!   file, and only then apply it here and signal the connections. A step
//!   that fails stops the change before anything is applied: Redis away is
//!   [`OperatorError::SwitchNotShared`], a file that cannot be written
//!   [`OperatorError::StateFile`]; the switches stay as they were.
//! - Switches change here only through `Node::apply_switch`, which signals
//!   the connections they cover (`Switches::set` is private to the core).
//!
//! The submodules: `cluster` carries actions between nodes over Redis,
//! [`store`] keeps switches across restarts, [`admin`] holds what the admin
//! API knows besides the actions (its key, the audit log, the start time).

pub mod admin;
mod cluster;
pub mod store;

use std::sync::Arc;

use chouquette_core::broker::BrokerError;
use chouquette_core::connections::Connection;
use chouquette_core::node::Node;
use chouquette_core::switches::Switch;

pub use self::admin::{Access, AdminState};
use self::cluster::Cluster;
use self::store::{StoreError, SwitchStore};
use crate::broker::redis::RedisBroker;

/// Why an operator action was refused or did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// The app named is not configured.
    #[error("unknown app")]
    UnknownApp,
    /// The user named is empty.
    #[error("`user` must not be empty")]
    EmptyUser,
    /// Redis could not record the switch change or carry it to the other
    /// nodes; nothing changed.
    #[error("cannot reach the other nodes through Redis, nothing changed: {0}")]
    SwitchNotShared(BrokerError),
    /// Redis could not carry the disconnect to the other nodes; no
    /// connection was closed.
    #[error("cannot reach the other nodes through Redis: {0}")]
    DisconnectNotShared(BrokerError),
    /// The state file could not be written; nothing changed.
    #[error("cannot write the state file, nothing changed: {0}")]
    StateFile(StoreError),
}

/// What a switch change did on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchChange {
    /// False when the switch already was as asked (it is still recorded and
    /// told to the other nodes, which may disagree).
    pub changed: bool,
    /// This node's connections signalled to end covered subscriptions.
    pub affected_connections: usize,
}

/// What a disconnect did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected {
    /// This node's connections closed.
    pub here: usize,
    /// Nodes that heard it, this one included (1 without Redis).
    pub nodes: usize,
}

/// The operator actions of one node.
#[derive(Debug)]
pub struct OperatorActions {
    node: Arc<Node>,
    /// The other nodes, when they share a Redis broker.
    cluster: Option<Cluster>,
    /// The state file, when configured (already loaded into the node).
    store: Option<SwitchStore>,
    /// Switch changes one at a time, so the file and Redis see them in the
    /// order they are applied.
    changes: tokio::sync::Mutex<()>,
}

impl OperatorActions {
    /// The actions on `node`; with `redis`, joins the other nodes on it
    /// (hears their actions and catches up with the switches stored there).
    pub fn new(
        node: Arc<Node>,
        redis: Option<Arc<RedisBroker>>,
        store: Option<SwitchStore>,
    ) -> OperatorActions {
        OperatorActions {
            cluster: redis.map(|redis| Cluster::join(redis, &node)),
            node,
            store,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The switches in force on this node, in a stable order.
    pub fn switches(&self) -> Vec<Switch> {
        self.node.switches().list()
    }

    /// Puts `switch` in force (`enabled: false`) or lifts it, everywhere:
    /// Redis and the other nodes first, then the state file, then here.
    pub async fn set_switch(
        &self,
        switch: &Switch,
        enabled: bool,
    ) -> Result<SwitchChange, OperatorError> {
        if let Some(app) = &switch.app {
            self.known_app(app)?;
        }
        let _one_at_a_time = self.changes.lock().await;
        let next = self.node.switches().with_change(switch, enabled);
        if let Some(cluster) = &self.cluster {
            cluster
                .switch(switch, enabled)
                .await
                .map_err(OperatorError::SwitchNotShared)?;
        }
        let Some(next) = next else {
            return Ok(SwitchChange {
                changed: false,
                affected_connections: 0,
            });
        };
        if let Some(store) = &self.store
            && let Err(e) = store.save(next).await
        {
            tracing::error!(error = %e, "cannot write the kill switch state file");
            return Err(OperatorError::StateFile(e));
        }
        let (changed, affected_connections) = self.node.apply_switch(switch, enabled);
        Ok(SwitchChange {
            changed,
            affected_connections,
        })
    }

    /// Closes every connection of `user` of `app`, telling the client
    /// `reason`: the other nodes are told first, so a Redis away closes none.
    pub async fn disconnect(
        &self,
        app: &str,
        user: &str,
        reason: &str,
    ) -> Result<Disconnected, OperatorError> {
        self.known_user(app, user)?;
        let nodes = match &self.cluster {
            Some(cluster) => cluster
                .disconnect(app, user, reason)
                .await
                .map_err(OperatorError::DisconnectNotShared)?,
            None => 1,
        };
        let here = self.node.disconnect_user(app, user, reason);
        Ok(Disconnected { here, nodes })
    }

    /// This node's connections held by `user` of `app`, oldest first.
    pub fn user_connections(
        &self,
        app: &str,
        user: &str,
    ) -> Result<Vec<Arc<Connection>>, OperatorError> {
        self.known_user(app, user)?;
        Ok(self.node.user_connections(app, user))
    }

    fn known_app(&self, app: &str) -> Result<(), OperatorError> {
        match self.node.apps().get(app) {
            Some(_) => Ok(()),
            None => Err(OperatorError::UnknownApp),
        }
    }

    fn known_user(&self, app: &str, user: &str) -> Result<(), OperatorError> {
        self.known_app(app)?;
        if user.is_empty() {
            return Err(OperatorError::EmptyUser);
        }
        Ok(())
    }
}
