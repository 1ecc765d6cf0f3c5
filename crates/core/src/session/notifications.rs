//! Notifications as one session handles them (PROTOCOL.md section 8,
//! docs/notifications.md): the user's pending list sent after the
//! identity is set (read with its grants, `LoadGrants`, after the
//! `connect` `ack`, or after `connected` for connect auth), a client's
//! `notification_ack`, and the `notifications` kill switch told as
//! `notification_status`.

use bytes::Bytes;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::server::{self, ErrorContext};

use super::Session;
use crate::broker::UNAVAILABLE_MESSAGE;
use crate::notifications::{self, MAX_ACK_IDS};
use crate::user_mail::UserCommand;

/// Longest id an acknowledgement may name, in bytes (ours are 18).
pub const MAX_ACK_ID_BYTES: usize = 64;

/// The error told to a `notification_ack` without identity.
pub const NOTIFICATIONS_CONNECT_FIRST: &str = "connect first: notifications need an identity";

/// Checks an acknowledgement's ids (shared with `POST /notifications/ack`).
pub fn check_ack_ids(ids: &[String]) -> Result<(), String> {
    if ids.is_empty() || ids.len() > MAX_ACK_IDS {
        return Err(format!("`ids`: 1 to {MAX_ACK_IDS} notification ids"));
    }
    if ids
        .iter()
        .any(|id| id.is_empty() || id.len() > MAX_ACK_ID_BYTES)
    {
        return Err(format!(
            "a notification id has 1 to {MAX_ACK_ID_BYTES} bytes"
        ));
    }
    Ok(())
}

impl Session {
    /// `notification_ack`: removes the ids from the user's pending list,
    /// answered by `ack` (an id already gone is no error).
    pub(super) async fn notification_ack(
        &mut self,
        ids: Vec<String>,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) {
        let ctx = ErrorContext {
            reference,
            ..ErrorContext::default()
        };
        let Some(identity) = self.identity.clone() else {
            return self.error(out, ErrorCode::NotAllowed, NOTIFICATIONS_CONNECT_FIRST, ctx);
        };
        if let Err(why) = check_ack_ids(&ids) {
            return self.error(out, ErrorCode::BadMessage, &why, ctx);
        }
        match notifications::acknowledge(&self.node, &identity.app, &identity.user, ids).await {
            Ok(_) => out.push(server::ack(reference, None)),
            Err(e) => {
                tracing::warn!(error = %e, "notification acknowledgement failed");
                self.error(out, ErrorCode::Unavailable, UNAVAILABLE_MESSAGE, ctx);
            }
        }
    }

    /// Sends the user's pending notifications, oldest first (at connect,
    /// and when a `notifications` switch is lifted).
    pub(super) async fn load_notifications(&mut self, out: &mut Vec<Bytes>) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        if self.node.switches().notifications_off(&identity.app) {
            self.notification_switch(out);
            return;
        }
        match notifications::pending_frames(&self.node, &identity.app, &identity.user).await {
            Ok(frames) => out.extend(frames),
            Err(e) => {
                tracing::warn!(error = %e, "pending notifications not read");
                let why = format!("notifications: {UNAVAILABLE_MESSAGE}");
                self.error(out, ErrorCode::Unavailable, &why, ErrorContext::default());
            }
        }
    }

    /// Tells the client when a `notifications` switch covering its app
    /// comes into force (`notification_status` `disabled`) or is lifted
    /// (`enabled`, then its pending ones are read again).
    pub(super) fn notification_switch(&mut self, out: &mut Vec<Bytes>) {
        let Some(identity) = self.identity.as_ref() else {
            return;
        };
        let off = self.node.switches().notifications_off(&identity.app);
        if off == self.notifications_off {
            return;
        }
        self.notifications_off = off;
        out.push(notifications::status_frame(!off));
        if !off {
            self.subscriptions
                .connection()
                .post(std::sync::Arc::new(UserCommand::LoadNotifications));
        }
    }
}
