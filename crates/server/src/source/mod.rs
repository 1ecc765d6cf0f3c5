//! Sources: where events come from. Each turns outside input into
//! [`NewEvent`]s and hands them, in groups, to the one ingest pipeline
//! ([`chouquette_core::ingest`]), which checks the app, the caller and the
//! app's publish rate, publishes, and says per event what happened. A
//! source never drops an accepted event silently: it answers, retries, or
//! sets the event aside where an operator can see it.
//!
//! One source, one folder: `source/<name>/`, with
//! - `config.rs`: its settings, the typed form of its config section (the
//!   config loader builds them);
//! - `mod.rs`: a value holding the settings and connections it needs, which
//!   implements [`Source`]; `serve` starts it with [`spawn`].
//!
//! A source chooses its groups (what is published all-or-nothing: an HTTP
//! request, an inbox entry) and its [`Caller`]: a source the gateway reads
//! itself submits as [`Caller::Source`], so the app's publish rate applies
//! and a rate-limited group should wait and be retried, not refused.
//!
//! The `http` source is the one pushed to: the internal API mounts its
//! handler instead of running it.
//!
//! [`NewEvent`]: chouquette_core::publication::NewEvent
//! [`Caller`]: chouquette_core::ingest::Caller
//! [`Caller::Source`]: chouquette_core::ingest::Caller::Source

pub mod http;
pub mod mqtt;
pub mod postgres;
pub mod redis_inbox;
pub mod statuses;
pub mod xmpp;

use std::future::Future;
use std::sync::Arc;

use chouquette_core::node::Node;
use tokio::task::AbortHandle;

use crate::shutdown::Shutdown;

/// An inbound stream of events the gateway consumes.
pub trait Source: Send + 'static {
    /// Consumes the source, submitting its events to the ingest pipeline,
    /// until `shutdown` says stop. Outages are retried inside: it returns
    /// only when stopping.
    fn run(self, node: Arc<Node>, shutdown: Shutdown) -> impl Future<Output = ()> + Send;
}

/// Runs `source` in its own task; the handle ends it when the node stops.
pub fn spawn(source: impl Source, node: Arc<Node>, shutdown: Shutdown) -> AbortHandle {
    tokio::spawn(source.run(node, shutdown)).abort_handle()
}
