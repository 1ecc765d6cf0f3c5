//! The broker: offsets, history, last state and delivery across nodes.
//!
//! A small trait with one implementation per backend. [`MemoryBroker`] is the
//! default (one node, nothing external) and the stand-in for tests; a Redis
//! broker shares offsets and history between nodes. Every implementation
//! must deliver each channel's publications to every node's [`Hub`] in
//! offset order, exactly once.
//!
//! [`Hub`]: crate::hub::Hub

mod link;
mod memory;

use std::future::Future;
use std::pin::Pin;

pub use link::LinkTelemetry;
pub use memory::MemoryBroker;

use crate::app::ChannelPolicy;
use crate::history::{LogError, Recovered};
use crate::lattice::{Bounds, Lattice};
use crate::lattice_feed::{MergeError, NamespaceValues};
use crate::notifications::{Outcome as NotificationOutcome, PendingOp};
use crate::presence::LocalChange;
use crate::publication::{ChannelId, NewEvent, Position};
use crate::user_calls::CallReply;
use crate::user_mail::UserMessage;

/// A user's backend subscriptions: channel name → filters (in clear).
pub type UserGrants = Vec<(String, serde_json::Value)>;

/// A fresh channel epoch: 8 random hex digits, so that a channel created
/// again (a restarted memory broker, keys expired in Redis) never reuses
/// one and resuming clients are told `history_gap`.
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// A boxed future, so that brokers can sit behind `dyn Broker`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What clients and backends are told when the broker fails: never the
/// broker's own error text (addresses, Redis replies), which goes to the log.
pub const UNAVAILABLE_MESSAGE: &str = "the broker is unavailable; retry";

/// Why the broker could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker cannot be reached; nothing was stored.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The channel refused the event (a bound was hit); nothing was stored.
    #[error(transparent)]
    Refused(#[from] LogError),
    /// The node already tracks its maximum number of channels.
    #[error("too many channels (limit {0})")]
    TooManyChannels(usize),
    /// The user (or, on the memory broker, the node) already holds its
    /// maximum of backend subscriptions; nothing was stored.
    #[error("too many backend subscriptions (limit {0})")]
    TooManyGrants(usize),
    /// A lattice update was refused (a bad value, a bound); nothing of it
    /// was merged.
    #[error(transparent)]
    Lattice(#[from] MergeError),
    /// The app already holds its maximum of lattice namespaces.
    #[error("too many lattice namespaces for this app (limit {0})")]
    TooManyNamespaces(usize),
    /// The namespace already holds values for its maximum of users.
    #[error("too many users with values in this namespace (limit {0})")]
    TooManyLatticeUsers(usize),
    /// The memory broker already keeps pending notifications for its
    /// maximum of users; nothing was stored for this one.
    #[error("too many users with pending notifications (limit {0})")]
    TooManyNotifiedUsers(usize),
}

/// A publish that stopped part-way: what was published, and why it stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} (after {} published)", published.len())]
pub struct PublishFailure {
    /// Positions of the events published before the failure.
    pub published: Vec<Position>,
    /// Why the next event was not published.
    pub error: BrokerError,
    /// The events after the refused one, handed back untouched: a batch may
    /// mix events of several submitters, and the others' events still have
    /// to go out without being cloned up front. Empty when the broker is
    /// unavailable (nothing more will be tried then).
    pub rest: Vec<NewEvent>,
}

impl From<BrokerError> for PublishFailure {
    fn from(error: BrokerError) -> Self {
        PublishFailure {
            published: Vec::new(),
            error,
            rest: Vec::new(),
        }
    }
}

/// Offsets, history, state and delivery for every channel.
pub trait Broker: Send + Sync + 'static {
    /// `memory` or `redis`, for status and metrics.
    fn kind(&self) -> &'static str;

    /// Whether the broker is reachable now.
    fn connected(&self) -> bool;

    /// Follows [`Broker::connected`]: the node tells every client when the
    /// link is lost and when it is back.
    fn link(&self) -> tokio::sync::watch::Receiver<bool>;

    /// Gives each event the next offset of `channel`, stores it, and delivers
    /// it to every node, in order. An event whose `id` the channel already
    /// published is not published again: its position is the first one's,
    /// marked `duplicate`. A refused event stops the batch: those before it
    /// stay published and are named in the failure, those after it are
    /// handed back in it.
    fn publish<'a>(
        &'a self,
        channel: &'a ChannelId,
        policy: &'a ChannelPolicy,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Vec<Position>, PublishFailure>>;

    /// Reads what a subscriber needs to join: the events after `since`
    /// (`(epoch, offset)`), or the last known state when `snapshot`.
    fn recover<'a>(
        &'a self,
        channel: &'a ChannelId,
        policy: &'a ChannelPolicy,
        since: Option<(&'a str, u64)>,
        snapshot: bool,
    ) -> BoxFuture<'a, Result<Recovered, BrokerError>>;

    /// Carries `message` to every node's hub, this one's included
    /// ([`Hub::deliver_to_user`]), which hands it to the user's connections
    /// there. Best effort, like delivery: a node that is not linked misses
    /// it (its clients were told `broker_unavailable`).
    ///
    /// [`Hub::deliver_to_user`]: crate::hub::Hub::deliver_to_user
    fn to_user<'a>(&'a self, message: &'a UserMessage) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Like [`Broker::to_user`], and says how many nodes heard the message
    /// (the caller of a [`UserCommand::Call`] waits for that many
    /// [`Reply::Reached`]). For a call, each node that hears it sends the
    /// caller [`user_calls::reached`] through [`Broker::to_node`].
    ///
    /// [`UserCommand::Call`]: crate::user_mail::UserCommand::Call
    /// [`Reply::Reached`]: crate::user_calls::Reply::Reached
    /// [`user_calls::reached`]: crate::user_calls::reached
    fn to_user_counted<'a>(
        &'a self,
        message: &'a UserMessage,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;

    /// Where replies for this node go: the `reply_to` of the calls it
    /// sends, naming this node among those sharing the broker.
    fn reply_address(&self) -> &str;

    /// Carries `reply` to the node whose [`Broker::reply_address`] is
    /// `address` ([`CallTable::deliver`] there). Best effort: a node that is
    /// gone misses it (its call was dropped with it).
    ///
    /// [`CallTable::deliver`]: crate::user_calls::CallTable::deliver
    fn to_node<'a>(
        &'a self,
        address: &'a str,
        reply: &'a CallReply,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Records (`Some(filters)`) or revokes (`None`) the backend
    /// subscription of `user` of `app` to `channel`, which every node reads
    /// when the user connects ([`Broker::grants`]). Bounded per user
    /// ([`crate::user_mail::MAX_GRANTS_PER_USER`]): past it, a new channel
    /// is refused with [`BrokerError::TooManyGrants`].
    fn set_grant<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
        channel: &'a str,
        filters: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// The backend subscriptions of `user` of `app` in force.
    fn grants<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<UserGrants, BrokerError>>;

    /// Merges `update` into `namespace` of `app` (see
    /// [`crate::lattice_feed::merge`]), all or nothing, and so that no
    /// concurrent merge on any node is lost; answers what changed, each
    /// key with its merged value. Bounded: each lattice by `bounds`,
    /// [`crate::lattice_feed::MAX_NAMESPACES_PER_APP`] and
    /// [`crate::lattice_feed::MAX_USERS_PER_NAMESPACE`]. Delivering the
    /// change is the caller's ([`crate::node::Node::update_lattices`]).
    fn merge_lattices<'a>(
        &'a self,
        app: &'a str,
        namespace: &'a str,
        update: &'a NamespaceValues,
        bounds: &'a Bounds,
    ) -> BoxFuture<'a, Result<NamespaceValues, BrokerError>>;

    /// The shared values of `namespace` of `app`, and `user`'s own (empty
    /// when none were merged).
    fn lattices<'a>(
        &'a self,
        app: &'a str,
        namespace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(Lattice, Lattice), BrokerError>>;
    /// Applies `op` to the pending notifications of `user` of `app`
    /// ([`crate::notifications::Pending::apply`] at `now`, entries older
    /// than `expire_after`, both µs, dropped first), so that no concurrent
    /// operation on any node is lost; the list is kept until it is empty
    /// or `expire_after` passed without a change.
    fn notifications<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
        op: PendingOp,
        now: u64,
        expire_after: u64,
    ) -> BoxFuture<'a, Result<NotificationOutcome, BrokerError>>;

    /// The notification id recorded for the idempotency id `key` of `app`
    /// (kept `ttl`): with `claim`, records it unless another is, and
    /// answers the other one (`None` when `claim` is now recorded);
    /// without, only reads.
    fn notification_id<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        claim: Option<&'a str>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>>;

    /// Records this node's presence transitions (a user's first
    /// subscription here to a presence channel, or last one gone) and
    /// announces the cluster-wide ones (a user's first node, last node
    /// gone) to every node's [`crate::presence::Presence`]. The default
    /// records nothing (a broker without presence).
    fn presence_changed<'a>(
        &'a self,
        changes: &'a [LocalChange],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let _ = changes;
        Box::pin(async { Ok(()) })
    }

    /// Says which users this node still has on each of its presence
    /// channels (called periodically): a shared broker pushes back their
    /// expiry and removes, announcing `left`, the users of nodes that
    /// stopped saying so. The default does nothing.
    fn presence_refresh<'a>(
        &'a self,
        here: &'a [(ChannelId, Vec<Box<str>>)],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let _ = here;
        Box::pin(async { Ok(()) })
    }

    /// The users present on `channel`, on every node (unsorted, maybe more
    /// than a `present` list shows). The default knows none.
    fn present<'a>(
        &'a self,
        channel: &'a ChannelId,
    ) -> BoxFuture<'a, Result<Vec<Box<str>>, BrokerError>> {
        let _ = channel;
        Box::pin(async { Ok(Vec::new()) })
    }
}
