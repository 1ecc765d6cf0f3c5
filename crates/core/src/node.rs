//! The shared state of one gateway node that sessions and sources use.
//!
//! Wiring only: the apps, the hub, the broker, telemetry and the limits every
//! session obeys. Events from any source enter through the one pipeline in
//! [`crate::ingest`].

use std::sync::Arc;

use crate::app::Apps;
use crate::broker::{Broker, BrokerError};
use crate::connections::{Connection, Registry};
use crate::hub::Hub;
use crate::ingest::{self, Caller, PublishError};
use crate::lattice::{Bounds, Lattice};
use crate::lattice_feed::{self, NamespaceValues};
use crate::limits::{Limiters, Rate};
use crate::outbox::{SIGNAL_BROKER_LOST, SIGNAL_BROKER_RESTORED};
use crate::publication::{NewEvent, Position};
use crate::rpc::Rpc;
use crate::switches::{Switch, Switches};
use crate::telemetry::Telemetry;
use crate::user_mail::{UserCommand, UserMessage};

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
    /// Seconds of clock skew tolerated on token `exp` and `nbf` (config
    /// `[tokens] leeway`), for subscription and `connect` tokens alike.
    pub token_leeway: u64,
    /// Calls one connection may have waiting on backends; one more is
    /// answered `rate_limited` at once.
    pub max_calls_in_flight: usize,
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
            token_leeway: 5,
            max_calls_in_flight: 32,
        }
    }
}

/// One node's shared state. Its parts are private: each is reached through
/// a method saying what it is for, and the only changes they allow are the
/// ones that keep the node consistent (a kill switch changes only through
/// [`Node::apply_switch`], which signals the connections it covers).
pub struct Node {
    id: Arc<str>,
    apps: Apps,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    telemetry: Arc<Telemetry>,
    limits: SessionLimits,
    max_data_bytes: usize,
    switches: Switches,
    limiters: Limiters,
    rpc: Rpc,
    notifier: crate::notifications::Notifier,
    devices: Arc<crate::devices::Devices>,
    senders: crate::messages::Senders,
}

/// What a node is built from ([`Node::new`]).
pub struct NodeParts {
    /// This node's id (config `[node] id`, or hostname-pid).
    pub id: Arc<str>,
    /// Configured apps.
    pub apps: Apps,
    /// This node's subscriptions; the broker delivers to it.
    pub hub: Arc<Hub>,
    /// Offsets, history, delivery.
    pub broker: Arc<dyn Broker>,
    /// Counters.
    pub telemetry: Arc<Telemetry>,
    /// Per-session limits.
    pub limits: SessionLimits,
    /// The largest `data` an event may carry, whatever its source (config
    /// `max_publish_bytes`): a client's connection is sized to write any
    /// event that passed it, so a larger one could reach nobody.
    pub max_data_bytes: usize,
    /// Kill switches in force at start (from the state file).
    pub switches: Vec<Switch>,
    /// Rate and connection limits' state.
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
    /// A node with no connection yet.
    pub fn new(parts: NodeParts) -> Node {
        let senders = crate::messages::Senders::new(&parts.apps);
        Node {
            senders,
            id: parts.id,
            apps: parts.apps,
            hub: parts.hub,
            broker: parts.broker,
            telemetry: parts.telemetry,
            limits: parts.limits,
            max_data_bytes: parts.max_data_bytes,
            switches: Switches::new(parts.switches),
            limiters: parts.limiters,
            rpc: Rpc::default(),
            notifier: crate::notifications::Notifier::default(),
            devices: Arc::default(),
        }
    }

    /// The node with these devices (without, no app has devices).
    pub fn with_devices(mut self, devices: crate::devices::Devices) -> Node {
        self.devices = Arc::new(devices);
        self
    }

    /// Devices and their liveness (docs/devices.md).
    pub fn devices(&self) -> &Arc<crate::devices::Devices> {
        &self.devices
    }

    /// This node's notification counters and group timers.
    pub fn notifier(&self) -> &crate::notifications::Notifier {
        &self.notifier
    }

    /// Each app's user-to-user message senders' buckets on this node.
    pub fn senders(&self) -> &crate::messages::Senders {
        &self.senders
    }

    /// The node with RPC routes to backends (without, every call is
    /// answered `unavailable`).
    pub fn with_rpc(mut self, rpc: Rpc) -> Node {
        self.rpc = rpc;
        self
    }

    /// RPC routes, backends and their counters.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// This node's id (config `[node] id`, or hostname-pid).
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The configured apps.
    pub fn apps(&self) -> &Apps {
        &self.apps
    }

    /// This node's subscriptions, by channel.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Offsets, history and delivery across nodes.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Every counter and histogram.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The limits every session obeys.
    pub fn session_limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// The largest `data` an event may carry, from any source.
    pub fn max_data_bytes(&self) -> usize {
        self.max_data_bytes
    }

    /// The kill switches in force (read only: see [`Node::apply_switch`]).
    pub fn switches(&self) -> &Switches {
        &self.switches
    }

    /// This node's open connections, as operators see them.
    pub fn connections(&self) -> &Registry {
        self.hub.connections()
    }

    /// Rate and connection limits' state, and their refusal counters.
    pub fn limiters(&self) -> &Limiters {
        &self.limiters
    }

    /// Tells every connection when the broker link is lost and when it is
    /// back (`reset` `broker_unavailable`, then `broker_restored`); runs
    /// until the broker is dropped.
    pub async fn follow_broker(self: Arc<Self>) {
        let mut link = self.broker.link();
        let mut up = *link.borrow_and_update();
        let mut era = self.hub.era();
        self.telemetry.link.link_up(up);
        while link.changed().await.is_ok() {
            let now = *link.borrow_and_update();
            let era_now = self.hub.era();
            for &signal in link_signals(up, now, era != era_now) {
                for connection in self.connections().snapshot() {
                    connection.signal(signal);
                }
            }
            (up, era) = (now, era_now);
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
        if switch.scope == crate::switches::Scope::Notifications {
            // Either way: each covered connection says `disabled`, or
            // reads its user's pending list again when lifted.
            for connection in self.connections().snapshot() {
                connection.recheck_switches();
                affected += 1;
            }
        } else if !enabled {
            for connection in self.connections().snapshot() {
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
            .connections()
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

    /// Sends `command` to every connection of `user` of `app`, on every
    /// node, through the broker (the one way to address a user: see
    /// [`crate::user_mail`]). Returns how many of the user's connections
    /// this node holds now: counting other nodes' would cost a round trip
    /// to each, so the answer is this node's (documented as such).
    pub async fn send_to_user(
        &self,
        app: &str,
        user: &str,
        command: UserCommand,
    ) -> Result<usize, BrokerError> {
        let message = UserMessage {
            app: app.into(),
            user: user.into(),
            command: Arc::new(command),
        };
        let here = self.connections().of_user(app, user).len();
        self.broker.to_user(&message).await?;
        Ok(here)
    }

    /// Subscribes (`Some(filters)`) or unsubscribes (`None`) `user` of `app`
    /// to `channel` by the backend's decision: the grant is stored first
    /// (connections opened later read it at `connect`), then every open
    /// connection of the user is told. Returns this node's connections
    /// reached.
    pub async fn backend_subscription(
        &self,
        app: &str,
        user: &str,
        channel: &str,
        filters: Option<serde_json::Value>,
    ) -> Result<usize, BrokerError> {
        self.broker
            .set_grant(app, user, channel, filters.as_ref())
            .await?;
        let channel = channel.to_string();
        let command = match filters {
            Some(filters) => UserCommand::Subscribe { channel, filters },
            None => UserCommand::Unsubscribe { channel },
        };
        self.send_to_user(app, user, command).await
    }

    /// Merges a backend's lattice update into `namespace` of `app` (in the
    /// broker, all or nothing, within [`Bounds::default`]), then sends what
    /// changed to every subscriber on every node: the shared values to all
    /// of them, each user's to that user's own (see
    /// [`crate::lattice_feed`]). Answers what changed.
    ///
    /// A node that fails between the merge and the sends leaves the change
    /// stored but untold; subscribers get it with their next full state
    /// (at the next `lattice_subscribe`, or when the broker link is back).
    ///
    /// [`Bounds::default`]: crate::lattice::Bounds
    pub async fn update_lattices(
        &self,
        app: &str,
        namespace: &str,
        update: &NamespaceValues,
    ) -> Result<NamespaceValues, BrokerError> {
        let bounds = Bounds::default();
        let change = self
            .broker
            .merge_lattices(app, namespace, update, &bounds)
            .await?;
        let none = Lattice::default();
        if !change.shared.is_empty() {
            let frame = lattice_feed::change_frame(namespace, &change.shared, &none);
            let command = UserCommand::Lattice {
                namespace: namespace.into(),
                frame,
            };
            self.send_to_user(app, "", command).await?;
        }
        for (user, values) in &change.users {
            let frame = lattice_feed::change_frame(namespace, &none, values);
            let command = UserCommand::Lattice {
                namespace: namespace.into(),
                frame,
            };
            self.send_to_user(app, user, command).await?;
        }
        Ok(change)
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

/// What to tell connections when the broker link is seen `now` after `was`.
/// The link's watch keeps only its latest value, so a quick loss and return
/// can look like no change at all; the hub's era moving on (each link-up
/// starts one) says it happened, and events may have been missed meanwhile.
fn link_signals(was: bool, now: bool, era_moved: bool) -> &'static [crate::outbox::Signals] {
    match (was, now) {
        (true, false) => &[SIGNAL_BROKER_LOST],
        (false, true) => &[SIGNAL_BROKER_RESTORED],
        (true, true) if era_moved => &[SIGNAL_BROKER_LOST, SIGNAL_BROKER_RESTORED],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flap_the_watch_merged_is_still_announced() {
        assert_eq!(link_signals(true, false, false), [SIGNAL_BROKER_LOST]);
        assert_eq!(link_signals(false, true, true), [SIGNAL_BROKER_RESTORED]);
        // Down and up again between two looks: same value, a new era.
        assert_eq!(
            link_signals(true, true, true),
            [SIGNAL_BROKER_LOST, SIGNAL_BROKER_RESTORED]
        );
        assert!(link_signals(true, true, false).is_empty());
        assert!(link_signals(false, false, true).is_empty());
    }
}
