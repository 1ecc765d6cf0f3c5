//! A client's user-to-user `message` (see [`crate::messages`]): sent,
//! answered by `ack` with the notification id and the recipient count, or
//! refused with the code of its refusal (`ref` naming the message).

use bytes::Bytes;
use chouquette_protocol::server::ErrorContext;
use serde_json::value::RawValue;

use super::{Session, Verdict};
use crate::messages::{self, Refused};

impl Session {
    /// Handles a client `message`; a malformed one counts as a bad message.
    pub(super) async fn message(
        &mut self,
        raw: &RawValue,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) -> Verdict {
        let identity = self.identity.clone();
        match messages::send(&self.node, identity.as_deref(), raw).await {
            Ok(sent) => out.push(messages::ack_frame(reference, &sent)),
            Err(Refused::Malformed(why)) => return self.bad_message(&why, reference, out),
            Err(refused) => {
                if matches!(refused, Refused::Disabled(_)) {
                    self.node.telemetry().disabled_refusal();
                }
                let ctx = ErrorContext {
                    reference,
                    ..ErrorContext::default()
                };
                self.error(out, refused.code(), &refused.to_string(), ctx);
            }
        }
        Verdict::Continue
    }
}
