//! A connection accepted by the backend at its upgrade (connect auth,
//! PROTOCOL.md section 10): the identity is set exactly as a `connect`
//! sets it, then the subscriptions the backend listed are registered and
//! recovered from filters in clear (the backend is trusted, as for
//! backend-driven subscriptions).
//!
//! What the client is told, in order: `connected`, then per subscription
//! its snapshots (or replay, when resuming) or an `error` naming the
//! channel, then one `ack` for them all, then the user's stored grants
//! (backend-driven subscriptions), each with its snapshots and
//! `subscribed`, as after a `connect`. The grants are read here rather
//! than from the mailbox, so that a URL transport's cursor resumes them
//! too (a long-poll builds a new session at every request); the mailbox's
//! own reading then finds them held and repeats nothing.
//!
//! The identity has no expiry: nothing in the backend's answer bounds it,
//! so it lasts as long as the connection (a long-poll request: each
//! request is authenticated again).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::client::{ChannelRequest, Since};
use chouquette_protocol::server::{self, ErrorContext};

use super::authorize::{Grant, Refusal};
use super::{Identity, ResumePoint, Session};
use crate::broker::UNAVAILABLE_MESSAGE;
use crate::filter::Filter;
use crate::publication::ChannelId;

/// Where a URL transport's cursor puts each channel of the identity's
/// app: the subscriptions and grants it names resume from there.
pub type Resume = BTreeMap<String, Since>;

impl Session {
    /// Gives the connection `identity` (as a `connect` would: the user's
    /// connection count and limit, the node's user index, the stored
    /// grants) and `subscriptions` (channel names checked valid by the
    /// caller), appending `connected`, their replies and one `ack`, then
    /// the grants' to `out`; each resumes from `resume` where it names the
    /// channel. Refused, with nothing appended, when the app is unknown or
    /// the user already holds the app's limit of connections: the transport
    /// then refuses the upgrade.
    pub async fn accept_identity(
        &mut self,
        identity: Identity,
        subscriptions: Vec<(String, Filter)>,
        resume: &Resume,
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
        let mut named: Vec<String> = Vec::new();
        let listed = !subscriptions.is_empty();
        for (channel, filter) in subscriptions {
            let id = ChannelId::new(&app.id, &channel);
            let since = resume.get(&channel).cloned();
            named.push(channel.clone());
            let grant = Grant {
                filter: Arc::new(filter),
                user: Some(user.clone()),
                groups: groups.clone(),
                exp: None,
                notify_only: app.channel_policy(&channel).notify_only,
            };
            let filter = grant.filter.clone();
            let request = ChannelRequest {
                filters: String::new(),
                since,
            };
            let answer = match self.register(&app, id.clone(), grant) {
                Ok(slot) => self.recover(&app, slot, &id, &filter, &request, out).await,
                Err(r) => Err(r),
            };
            match answer {
                Ok(ack) => {
                    acked.insert(channel, ack);
                }
                Err(r) => {
                    let ctx = ErrorContext {
                        channel: Some(&channel),
                        ..ErrorContext::default()
                    };
                    self.error(out, r.code, &r.message, ctx);
                }
            }
        }
        if listed && !acked.is_empty() {
            out.push(server::ack(None, Some(&acked)));
        }
        self.load_grants_from(&app.id, resume, &mut named, out)
            .await;
        // Kept only where no subscription holds the channel: refused ones
        // keep the cursor's position, as a URL token's do.
        for channel in named {
            if let Some(since) = resume.get(&channel) {
                self.keep_position(ResumePoint {
                    channel: ChannelId::new(&app.id, &channel),
                    epoch: Arc::from(since.epoch.as_str()),
                    offset: since.offset,
                });
            }
        }
        self.apply_switches(out);
        Ok(())
    }

    /// Applies the user's stored grants, resuming from `resume`; adds
    /// their channels to `named`. A broker that cannot say is told as
    /// after a `connect` (`error` `unavailable` without channel).
    async fn load_grants_from(
        &mut self,
        app: &str,
        resume: &Resume,
        named: &mut Vec<String>,
        out: &mut Vec<Bytes>,
    ) {
        let Some(user) = self.identity.as_ref().map(|i| i.user.clone()) else {
            return;
        };
        match self.node.broker().grants(app, &user).await {
            Ok(grants) => {
                for (channel, filters) in grants {
                    let since = resume.get(&*channel).cloned();
                    self.backend_subscribe_from(&channel, &filters, since, out)
                        .await;
                    named.push(channel.to_string());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "backend subscriptions not read at connect auth");
                let why = format!("backend subscriptions: {UNAVAILABLE_MESSAGE}");
                self.error(out, ErrorCode::Unavailable, &why, ErrorContext::default());
            }
        }
    }
}
