//! The shared state of one gateway node that sessions and sources use.
//!
//! Wiring only: the apps, the hub, the broker, telemetry and the limits every
//! session obeys. Events from any source enter through the one pipeline in
//! [`crate::ingest`].

use std::sync::Arc;

use crate::app::Apps;
use crate::broker::Broker;
use crate::connections::{Connection, Registry};
use crate::hub::Hub;
use crate::ingest::{self, Caller, PublishError};
use crate::limits::{Limiters, Rate};
use crate::outbox::{SIGNAL_BROKER_LOST, SIGNAL_BROKER_RESTORED};
use crate::publication::{NewEvent, Position};
use crate::switches::{Switch, Switches};
use crate::telemetry::Telemetry;

/// Limits every session obeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Frames queued for one connection before it counts as a slow consumer.
    pub outbox_capacity: usize,
    /// Bad messages tolerated before the connection is closed (1008).
    pub max_bad_messages: u32,
    /// Largest client message handled; larger ones get `bad_message`.
    pub max_message_bytes: usize,
    /// Client messages per connection until it holds an app (then the app's).
    pub client_messages: Rate,
    /// Messages refused as `rate_limited` (one forgiven per second) before
    /// the connection is closed as abusive (1008).
    pub max_rate_limited: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_subscriptions: 256,
            outbox_capacity: 4096,
            max_bad_messages: 20,
            max_message_bytes: 64 * 1024,
            client_messages: Rate::new(50, 100),
            max_rate_limited: 50,
        }
    }
}

/// One node's shared state.
pub struct Node {
    /// This node's id (config `[node] id`, or hostname-pid).
    pub id: Arc<str>,
    /// Configured apps.
    pub apps: Apps,
    /// This node's subscriptions.
    pub hub: Arc<Hub>,
    /// Offsets, history, delivery.
    pub broker: Arc<dyn Broker>,
    /// Counters.
    pub telemetry: Arc<Telemetry>,
    /// Per-session limits.
    pub limits: SessionLimits,
    /// Kill switches in force. Publishing ignores them.
    pub switches: Switches,
    /// Open connections, for operators.
    pub connections: Registry,
    /// Rate and connection limits' state, and their refusal counters.
    pub limiters: Limiters,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("broker", &self.broker.kind())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Tells every connection when the broker link is lost and when it is
    /// back (`reset` `broker_unavailable`, then `broker_restored`); runs
    /// until the broker is dropped.
    pub async fn follow_broker(self: Arc<Self>) {
        let mut link = self.broker.link();
        let mut up = *link.borrow_and_update();
        self.telemetry.link.link_up(up);
        while link.changed().await.is_ok() {
            let now = *link.borrow_and_update();
            if now == up {
                continue;
            }
            up = now;
            let signal = if up {
                SIGNAL_BROKER_RESTORED
            } else {
                SIGNAL_BROKER_LOST
            };
            for connection in self.connections.snapshot() {
                connection.signal(signal);
            }
        }
    }

    /// Puts `switch` in force (`enabled: false`) or lifts it; on a change
    /// that switches off, signals every connection holding a subscription it
    /// covers (each ends them with `reset` `disabled`). Returns whether it
    /// changed anything and how many connections were signalled. The only
    /// way switches change: a change that skipped the signal would leave
    /// covered subscriptions running.
    pub fn apply_switch(&self, switch: &Switch, enabled: bool) -> (bool, usize) {
        if !self.switches.set(switch.clone(), enabled) {
            return (false, 0);
        }
        let mut affected = 0;
        if !enabled {
            for connection in self.connections.snapshot() {
                if connection.affected_by(switch) {
                    connection.recheck_switches();
                    affected += 1;
                }
            }
        }
        (true, affected)
    }

    /// This node's connections held by `user` of `app`, oldest first.
    pub fn user_connections(&self, app: &str, user: &str) -> Vec<Arc<Connection>> {
        let mut found: Vec<_> = self
            .connections
            .snapshot()
            .into_iter()
            .filter(|c| c.held_by(app, user))
            .collect();
        found.sort_by_key(|c| c.id());
        found
    }

    /// Closes every connection of `user` of `app` on this node, telling the
    /// client `reason`; returns how many.
    pub fn disconnect_user(&self, app: &str, user: &str, reason: &str) -> usize {
        let found = self.user_connections(app, user);
        for connection in &found {
            connection.disconnect(reason);
        }
        found.len()
    }

    /// Publishes `events` as one batch on the gateway's own authority (no
    /// API key, no rate limit): a thin call into the [`ingest`] pipeline,
    /// which every source goes through.
    ///
    /// [`ingest`]: crate::ingest
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Position>, PublishError> {
        ingest::publish(self, Caller::Trusted, events).await
    }
}
