//! A connection's lattice subscriptions (docs/protocol.md "Lattices"):
//! `lattice_subscribe` lists the connection in the node's
//! [`LatticeFeed`](crate::lattice_feed::LatticeFeed) under its identity's
//! app and user, *then* reads the namespace's state and answers it in full;
//! changes merged later reach the outbox as frames the feed queues. See
//! [`crate::lattice_feed`] for why that leaves no gap.
//!
//! Lattices belong to the `connect` identity: when it goes (expiry) or
//! becomes another user's, every lattice subscription ends (the client
//! subscribes again after its next `connect`). When the broker link comes
//! back, each namespace's full state is sent again, since changes may have
//! been missed meanwhile.

use std::sync::Arc;

use bytes::Bytes;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::server::{self, ErrorContext};

use super::Session;
use crate::broker::UNAVAILABLE_MESSAGE;
use crate::lattice_feed::{self, MAX_NAMESPACES_PER_CONNECTION, valid_namespace};
use crate::user_mail::UserCommand;

/// The message of the `error` answering `lattice_subscribe` before any `connect`.
pub const LATTICE_CONNECT_FIRST: &str = "connect first: lattices need an identity";

/// One namespace this connection is listed under.
#[derive(Debug)]
struct Held {
    app: Arc<str>,
    user: Box<str>,
    namespace: Box<str>,
}

/// The namespaces one connection subscribed to, at most
/// [`MAX_NAMESPACES_PER_CONNECTION`].
#[derive(Debug, Default)]
pub(super) struct LatticeSubs {
    held: Vec<Held>,
}

impl LatticeSubs {
    /// Whether the connection holds any lattice subscription.
    pub(super) fn any(&self) -> bool {
        !self.held.is_empty()
    }
}

impl Session {
    /// `lattice_subscribe`: lists the connection, then answers the full
    /// state (a repeat for a held namespace only sends it again).
    pub(super) async fn lattice_subscribe(
        &mut self,
        namespace: &str,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) {
        let ctx = ErrorContext {
            reference,
            ..ErrorContext::default()
        };
        let Some(identity) = self.identity.clone() else {
            return self.error(out, ErrorCode::NotAllowed, LATTICE_CONNECT_FIRST, ctx);
        };
        if !valid_namespace(namespace) {
            let why = "invalid namespace: 1 to 64 characters among letters, digits and _-.:@/";
            return self.error(out, ErrorCode::BadMessage, why, ctx);
        }
        let held = self
            .lattices
            .held
            .iter()
            .any(|h| &*h.namespace == namespace);
        if !held {
            if self.lattices.held.len() >= MAX_NAMESPACES_PER_CONNECTION {
                let why = format!(
                    "this connection already holds {MAX_NAMESPACES_PER_CONNECTION} lattice namespaces"
                );
                return self.error(out, ErrorCode::TooManySubscriptions, &why, ctx);
            }
            // Listed before the read: no change can fall between the two.
            let connection = self.subscriptions.connection();
            self.node.hub().lattices().add(
                &identity.app,
                namespace,
                &identity.user,
                connection.id(),
                connection.outbox(),
            );
            self.lattices.held.push(Held {
                app: identity.app.clone(),
                user: identity.user.as_str().into(),
                namespace: namespace.into(),
            });
        }
        let state = self
            .node
            .broker()
            .lattices(&identity.app, namespace, &identity.user)
            .await;
        match state {
            Ok((shared, user)) => {
                out.push(lattice_feed::full_frame(
                    reference, namespace, &shared, &user,
                ));
            }
            Err(e) => {
                tracing::warn!(%namespace, error = %e, "lattice_subscribe refused: the broker failed");
                self.drop_lattice(namespace);
                self.error(out, ErrorCode::Unavailable, UNAVAILABLE_MESSAGE, ctx);
            }
        }
    }

    /// `lattice_unsubscribe`: no more changes of `namespace`; answered `ack`
    /// whether it was held or not.
    pub(super) fn lattice_unsubscribe(
        &mut self,
        namespace: &str,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) {
        self.drop_lattice(namespace);
        out.push(server::ack(reference, None));
    }

    fn drop_lattice(&mut self, namespace: &str) {
        let id = self.subscriptions.connection().id();
        let feed = self.node.hub().lattices();
        self.lattices.held.retain(|h| {
            let keep = &*h.namespace != namespace;
            if !keep {
                feed.remove(&h.app, &h.namespace, &h.user, id);
            }
            keep
        });
    }

    /// Ends every lattice subscription (the identity went, or the session).
    pub(super) fn end_lattices(&mut self) {
        let id = self.subscriptions.connection().id();
        let feed = self.node.hub().lattices();
        for h in self.lattices.held.drain(..) {
            feed.remove(&h.app, &h.namespace, &h.user, id);
        }
    }

    /// Asks the session, through its own mailbox, to send every held
    /// namespace's full state again (the broker link is back).
    pub(super) fn reload_lattices_later(&self) {
        if self.lattices.any() {
            let connection = self.subscriptions.connection();
            connection.post(Arc::new(UserCommand::ReloadLattices));
        }
    }

    /// Sends every held namespace's full state again.
    pub(super) async fn reload_lattices(&mut self, out: &mut Vec<Bytes>) {
        let held: Vec<(Arc<str>, Box<str>, Box<str>)> = self
            .lattices
            .held
            .iter()
            .map(|h| (h.app.clone(), h.user.clone(), h.namespace.clone()))
            .collect();
        for (app, user, namespace) in held {
            match self.node.broker().lattices(&app, &namespace, &user).await {
                Ok((shared, user)) => {
                    out.push(lattice_feed::full_frame(None, &namespace, &shared, &user));
                }
                Err(e) => {
                    tracing::warn!(%namespace, error = %e, "lattice state not read again");
                    let why = format!("lattice `{namespace}`: {UNAVAILABLE_MESSAGE}");
                    self.error(out, ErrorCode::Unavailable, &why, ErrorContext::default());
                }
            }
        }
    }
}
