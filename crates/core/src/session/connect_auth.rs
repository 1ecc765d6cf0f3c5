//! A connection accepted by the backend at its upgrade (connect auth,
//! PROTOCOL.md section 10): the identity is set exactly as a `connect`
//! sets it, then the subscriptions the backend listed are registered and
//! recovered from filters in clear (the backend is trusted, as for
//! backend-driven subscriptions).
//!
//! What the client is told, in order: `connected`, then per subscription
//! its snapshots (or replay, when resuming) or an `error` naming the
//! channel, then one `ack` for them all. The user's stored grants follow,
//! as after a `connect` (read from the mailbox by the driver).
//!
//! The identity has no expiry: nothing in the backend's answer bounds it,
//! so it lasts as long as the connection (a long-poll request: each
//! request is authenticated again).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chouquette_protocol::client::{ChannelRequest, Since};
use chouquette_protocol::server::{self, ErrorContext};
use chouquette_protocol::ErrorCode;

use super::authorize::{Grant, Refusal};
use super::{Identity, ResumePoint, Session};
use crate::filter::Filter;
use crate::publication::ChannelId;

/// One subscription the backend's answer gives the connection.
#[derive(Debug)]
pub struct InitialSubscription {
    /// The channel name (already checked valid by the caller).
    pub channel: String,
    /// What it may see.
    pub filter: Filter,
    /// Where to resume from (a URL transport's cursor), if anywhere.
    pub since: Option<Since>,
}

impl Session {
    /// Gives the connection `identity` (as a `connect` would: the user's
    /// connection count and limit, the node's user index, the stored
    /// grants) and `subscriptions`, appending `connected`, their replies
    /// and one `ack` to `out`. Refused, with nothing appended, when the
    /// app is unknown or the user already holds the app's limit of
    /// connections: the transport then refuses the upgrade.
    pub async fn accept_identity(
        &mut self,
        identity: Identity,
        subscriptions: Vec<InitialSubscription>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), Refusal> {
        let Some(app) = self.node.apps().get(&identity.app).cloned() else {
            return Err(Refusal::new(ErrorCode::UnknownApp, "unknown app"));
        };
        self.hold_user(&app, &identity.user)?;
        self.hold_app(&app);
        let user: Box<str> = identity.user.as_str().into();
        let groups: Box<[String]> = identity.groups.clone().into_boxed_slice();
        out.push(server::connected(&app.id, &user, &groups));
        self.set_identity(Some(Arc::new(identity)), out);
        let mut acked = BTreeMap::new();
        let mut resumes = Vec::new();
        let listed = !subscriptions.is_empty();
        for sub in subscriptions {
            let id = ChannelId::new(&app.id, &sub.channel);
            if let Some(since) = &sub.since {
                resumes.push(ResumePoint {
                    channel: id.clone(),
                    epoch: Arc::from(since.epoch.as_str()),
                    offset: since.offset,
                });
            }
            let grant = Grant {
                filter: Arc::new(sub.filter),
                user: Some(user.clone()),
                groups: groups.clone(),
                exp: None,
            };
            let filter = grant.filter.clone();
            let request = ChannelRequest {
                filters: String::new(),
                since: sub.since,
            };
            let answer = match self.register(&app, id.clone(), grant) {
                Ok(slot) => {
                    self.recover(&app, slot, &id, &filter, &request, out)
                        .await
                }
                Err(r) => Err(r),
            };
            match answer {
                Ok(ack) => {
                    acked.insert(sub.channel, ack);
                }
                Err(r) => {
                    let ctx = ErrorContext {
                        channel: Some(&sub.channel),
                        ..ErrorContext::default()
                    };
                    self.error(out, r.code, &r.message, ctx);
                }
            }
        }
        if listed && !acked.is_empty() {
            out.push(server::ack(None, Some(&acked)));
        }
        // Kept only where no subscription holds the channel: refused ones
        // keep the cursor's position, as a URL token's do.
        for point in resumes {
            self.keep_position(point);
        }
        self.apply_switches(out);
        Ok(())
    }
}
