//! Backend-driven subscriptions as one session applies them (PROTOCOL.md
//! section 10), and the session's side of messages addressed to its user.
//!
//! Commands reach the session through its connection's mailbox (see
//! [`crate::user_mail`]); the driver calls [`Session::read_mail`] when one
//! waits, in the session's own task, so the API call that sent it never
//! waits for a client. A backend subscription is registered and recovered
//! exactly as a client's (subscription limit, kill switches, snapshots of a
//! keep-state channel), from filters in clear: the backend is trusted. The
//! client is then told `subscribed`, after the snapshots.
//!
//! One subscription per channel name, whoever asked: a backend subscription
//! replaces the client's own to the same channel and a client's subscribe
//! replaces the backend's, as any re-subscribe does. A revocation ends only
//! a subscription the backend made (a client's own, authorized by its own
//! token, stays). Grants belong to the user: when the connection's identity
//! goes (expiry) or becomes another user's, its backend subscriptions end,
//! each with `unsubscribed`.

use std::sync::Arc;

use bytes::Bytes;
use chouquette_protocol::client::{ChannelRequest, Since};
use chouquette_protocol::server::{self, ErrorContext};
use serde_json::Value;

use super::authorize::{Grant, Refusal};
use super::{Identity, Session};
use crate::broker::UNAVAILABLE_MESSAGE;
use crate::filter::Filter;
use crate::outbox::SIGNAL_USER;
use crate::publication::{ChannelId, valid_name};
use crate::user_mail::{MAILBOX_CAPACITY, UserCommand};
use chouquette_protocol::ErrorCode;

/// One subscription a backend made on this connection.
#[derive(Debug)]
struct Held {
    channel: Box<str>,
    slot: u32,
    filters: Value,
}

/// The subscriptions backends made on one connection. An entry whose slot
/// the session no longer holds (the client re-subscribed or unsubscribed, a
/// switch ended it) is stale and pruned; there is at most one per channel,
/// so it is bounded by the session's subscription limit.
#[derive(Debug, Default)]
pub(super) struct BackendSubs {
    held: Vec<Held>,
}

fn same_user(a: Option<&Identity>, b: Option<&Identity>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a.app == b.app && a.user == b.user)
}

impl Session {
    /// Sets (or clears) the connection's `connect` identity: the one place
    /// it changes, so the node's user index follows. A new identity makes
    /// the session read the user's stored grants (after the `ack`); losing
    /// it, or becoming another user, ends the backend subscriptions.
    pub(super) fn set_identity(&mut self, identity: Option<Arc<Identity>>, out: &mut Vec<Bytes>) {
        if !same_user(self.identity.as_deref(), identity.as_deref()) {
            self.end_backend_subs(out);
            self.end_lattices();
        }
        self.devices_follow(identity.as_deref());
        self.identity = identity.clone();
        let connection = self.subscriptions.connection().clone();
        let has_identity = identity.is_some();
        self.node.connections().set_identity(&connection, identity);
        if has_identity {
            connection.post(Arc::new(UserCommand::LoadGrants));
        }
    }

    /// Tells the node's devices that this connection stopped or started
    /// standing for a device (docs/devices.md, "Liveness").
    fn devices_follow(&self, new: Option<&Identity>) {
        let devices = self.node.devices();
        let old = self.identity.as_deref();
        let is = |i: Option<&Identity>| i.is_some_and(|i| devices.is_device(i));
        if same_user(old, new) && is(old) == is(new) {
            return;
        }
        let transport = self.subscriptions.connection().transport();
        if let Some(old) = old {
            devices.disconnected(old, transport);
        }
        if let Some(new) = new {
            devices.connected(new, transport);
        }
    }

    /// Whether commands addressed to the user wait for this session.
    pub fn has_mail(&self) -> bool {
        self.subscriptions.connection().has_mail()
    }

    /// Acts on the commands waiting in the mailbox, appending what the
    /// client is told to `out`. Takes at most one mailbox's worth per call
    /// and raises the signal again if more wait, so the driver's other
    /// duties get their turn.
    pub async fn read_mail(&mut self, out: &mut Vec<Bytes>) {
        let connection = self.subscriptions.connection().clone();
        for _ in 0..MAILBOX_CAPACITY {
            let Some(command) = connection.take_mail() else {
                return;
            };
            match &*command {
                UserCommand::Subscribe { channel, filters } => {
                    self.backend_subscribe(channel, filters, out).await;
                }
                UserCommand::Unsubscribe { channel } => self.backend_unsubscribe(channel, out),
                UserCommand::Frame(frame) => out.push(frame.clone()),
                UserCommand::LoadGrants => {
                    self.load_grants(out).await;
                    // The user's pending notifications follow its grants.
                    self.load_notifications(out).await;
                }
                UserCommand::Call(call) => self.call_sent(call, out),
                // Queued by the hub's lattice feed, never posted to a mailbox.
                UserCommand::Lattice { .. } => {}
                UserCommand::ReloadLattices => self.reload_lattices(out).await,
                UserCommand::LoadNotifications => self.load_notifications(out).await,
            }
        }
        if connection.has_mail() {
            connection.outbox().signal(SIGNAL_USER);
        }
    }

    /// Applies every grant stored for the user (at `connect`).
    async fn load_grants(&mut self, out: &mut Vec<Bytes>) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let grants = self
            .node
            .broker()
            .grants(&identity.app, &identity.user)
            .await;
        match grants {
            Ok(grants) => {
                for (channel, filters) in grants {
                    self.backend_subscribe(&channel, &filters, out).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "backend subscriptions not read at connect");
                let why = format!("backend subscriptions: {UNAVAILABLE_MESSAGE}");
                self.error(out, ErrorCode::Unavailable, &why, ErrorContext::default());
            }
        }
    }

    /// Whether the backend subscription to `channel` with `filters` is in
    /// force already (a grant read at `connect` and the same grant's
    /// message crossing it): applying it again would only repeat it.
    fn holds_grant(&self, channel: &str, filters: &Value) -> bool {
        self.backend.held.iter().any(|h| {
            &*h.channel == channel && h.filters == *filters && self.subscriptions.holds(h.slot)
        })
    }

    /// Subscribes the connection to `channel` of its user's app, as the
    /// backend asked; tells the client `subscribed` after the snapshots, or
    /// `error` naming the channel.
    async fn backend_subscribe(&mut self, channel: &str, filters: &Value, out: &mut Vec<Bytes>) {
        self.backend_subscribe_from(channel, filters, None, out)
            .await;
    }

    /// [`Session::backend_subscribe`], resuming after `since` when given
    /// (a URL transport's cursor, for connect auth).
    pub(super) async fn backend_subscribe_from(
        &mut self,
        channel: &str,
        filters: &Value,
        since: Option<Since>,
        out: &mut Vec<Bytes>,
    ) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let Some(app) = self.node.apps().get(&identity.app).cloned() else {
            return;
        };
        if self.holds_grant(channel, filters) {
            return;
        }
        match self
            .backend_register(&app, &identity, channel, filters, since, out)
            .await
        {
            Ok((slot, epoch, offset)) => {
                let subscriptions = &self.subscriptions;
                let held = &mut self.backend.held;
                held.retain(|h| &*h.channel != channel && subscriptions.holds(h.slot));
                held.push(Held {
                    channel: channel.into(),
                    slot,
                    filters: filters.clone(),
                });
                out.push(server::subscribed(channel, &epoch, offset));
            }
            Err(r) => {
                let ctx = ErrorContext {
                    channel: Some(channel),
                    ..ErrorContext::default()
                };
                self.error(out, r.code, &r.message, ctx);
            }
        }
    }

    /// Registers and recovers a backend subscription; returns its slot and
    /// where live events follow.
    async fn backend_register(
        &mut self,
        app: &crate::app::App,
        identity: &Identity,
        channel: &str,
        filters: &Value,
        since: Option<Since>,
        out: &mut Vec<Bytes>,
    ) -> Result<(u32, String, u64), Refusal> {
        // Checked by the internal API; checked again, as this may come from
        // another node.
        if !valid_name(channel) {
            return Err(Refusal::new(ErrorCode::BadMessage, "invalid channel name"));
        }
        let filter = Filter::parse(filters)
            .map_err(|e| Refusal::new(ErrorCode::BadMessage, e.to_string()))?;
        let grant = Grant {
            filter: Arc::new(filter),
            user: Some(identity.user.as_str().into()),
            groups: identity.groups.clone().into_boxed_slice(),
            exp: None,
            notify_only: app.channel_policy(channel).notify_only,
        };
        let filter = grant.filter.clone();
        let id = ChannelId::new(&app.id, channel);
        let slot = self.register(app, id.clone(), grant)?;
        let request = ChannelRequest {
            filters: String::new(),
            since,
        };
        let ack = self.recover(app, slot, &id, &filter, &request, out).await?;
        Ok((slot, ack.epoch, ack.offset))
    }

    /// Ends the backend subscription to `channel`, telling the client
    /// `unsubscribed`; a client's own subscription to it stays.
    fn backend_unsubscribe(&mut self, channel: &str, out: &mut Vec<Bytes>) {
        let Some(i) = self
            .backend
            .held
            .iter()
            .position(|h| &*h.channel == channel)
        else {
            return;
        };
        let held = self.backend.held.swap_remove(i);
        if self.subscriptions.holds(held.slot) {
            self.subscriptions.release(held.slot);
            out.push(server::unsubscribed(channel));
        }
    }

    /// Ends every backend subscription, each with `unsubscribed`.
    fn end_backend_subs(&mut self, out: &mut Vec<Bytes>) {
        for held in std::mem::take(&mut self.backend.held) {
            if self.subscriptions.holds(held.slot) {
                self.subscriptions.release(held.slot);
                out.push(server::unsubscribed(&held.channel));
            }
        }
    }
}
