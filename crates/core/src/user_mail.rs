//! What the gateway sends to a user rather than to a channel: every
//! connection holding that user's `connect` identity, on every node.
//!
//! A feature that addresses a user (backend-driven subscriptions today;
//! notifications, calls to a device, lattices later) builds a
//! [`UserMessage`] and hands it to [`Node::send_to_user`]. The broker carries
//! it to every node (the memory broker straight to its hub, the Redis broker
//! over one node-wide topic, serialized once with [`UserMessage::encode`]);
//! each node looks the user up in its connection index and posts the command
//! into each connection's mailbox, which raises an outbox signal. The
//! session acts on it in its own task, so a sender never waits for a client.
//!
//! [`Node::send_to_user`]: crate::node::Node::send_to_user

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::user_calls::ClientCall;

/// Commands one connection's mailbox holds before it counts as a slow
/// consumer: the mailbox is emptied and the connection closed
/// (`slow_consumer`), so the client reconnects and gets its grants at
/// `connect` again.
pub const MAILBOX_CAPACITY: usize = 32;

/// Backend subscriptions one user may hold per app. A POST for a further
/// channel is refused (`507`); replacing the filters of a held channel is
/// always accepted.
pub const MAX_GRANTS_PER_USER: usize = 64;

/// Users holding backend subscriptions that the memory broker remembers
/// (all apps together); past it, a POST for a new user is refused (`507`).
pub const MAX_GRANT_USERS: usize = 100_000;

/// Longest user id accepted by the internal API, in bytes.
pub const MAX_USER_BYTES: usize = 256;

/// What a user's connections are asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Subscribe to `channel` (of the user's app) with these filters, in
    /// clear: the backend is trusted.
    Subscribe {
        /// The channel name.
        channel: String,
        /// The filters, as a subscription token's `filters` claim.
        filters: Value,
    },
    /// End the backend subscription to `channel`.
    Unsubscribe {
        /// The channel name.
        channel: String,
    },
    /// A ready message, written as is (its bytes shared by every connection).
    Frame(Bytes),
    /// Read the user's stored grants and apply them, then send its pending
    /// notifications (posted by a session to itself at `connect`; never
    /// sent between nodes).
    LoadGrants,
    /// A backend's call: write its frame and keep its id answerable
    /// (see [`crate::user_calls`]).
    Call(ClientCall),
    /// A change of a lattice namespace (see [`crate::lattice_feed`]), a
    /// ready frame: each hub queues it for the connections subscribed to
    /// `namespace` of the user, or of every user when the message's user is
    /// empty (the shared values). Never posted to a mailbox.
    Lattice {
        /// The namespace.
        namespace: Box<str>,
        /// The `lattice` message.
        frame: Bytes,
    },
    /// Read the lattice namespaces this connection subscribed to again and
    /// send their full state (posted by a session to itself when the broker
    /// link is back: changes may have been missed meanwhile; never sent
    /// between nodes).
    ReloadLattices,
    /// Read the user's pending notifications and send them (posted by a
    /// session to itself when a `notifications` switch is lifted; at
    /// `connect`, `LoadGrants` reads them after the grants; never sent
    /// between nodes).
    LoadNotifications,
}

/// A command for every connection of `user` of `app`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserMessage {
    /// The app.
    pub app: Arc<str>,
    /// The user id (a `connect` token's `sub`).
    pub user: Box<str>,
    /// What to do.
    pub command: Arc<UserCommand>,
}

/// Why a message from another node could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable user message: {0}")]
pub struct DecodeError(String);

impl UserMessage {
    /// The message as nodes exchange it (JSON), built once per send.
    pub fn encode(&self) -> Bytes {
        let mut value = json!({ "app": &*self.app, "user": &*self.user });
        match &*self.command {
            UserCommand::Subscribe { channel, filters } => {
                value["do"] = "subscribe".into();
                value["channel"] = channel.as_str().into();
                value["filters"] = filters.clone();
            }
            UserCommand::Unsubscribe { channel } => {
                value["do"] = "unsubscribe".into();
                value["channel"] = channel.as_str().into();
            }
            UserCommand::Frame(frame) => {
                value["do"] = "frame".into();
                value["frame"] = String::from_utf8_lossy(frame).into_owned().into();
            }
            UserCommand::LoadGrants => value["do"] = "load".into(),
            UserCommand::Call(call) => {
                value["do"] = "call".into();
                value["id"] = (*call.id).into();
                value["reply_to"] = (*call.reply_to).into();
                value["timeout_ms"] = u64::try_from(call.timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .into();
                value["frame"] = String::from_utf8_lossy(&call.frame).into_owned().into();
            }
            UserCommand::Lattice { namespace, frame } => {
                value["do"] = "lattice".into();
                value["namespace"] = (**namespace).into();
                value["frame"] = String::from_utf8_lossy(frame).into_owned().into();
            }
            UserCommand::ReloadLattices => value["do"] = "reload_lattices".into(),
            UserCommand::LoadNotifications => value["do"] = "load_notifications".into(),
        }
        Bytes::from(value.to_string())
    }

    /// Reads what [`UserMessage::encode`] wrote (on another node, maybe of
    /// another version: anything else is an error, never a panic).
    pub fn decode(bytes: &[u8]) -> Result<UserMessage, DecodeError> {
        let bad = |what: &str| DecodeError(what.to_string());
        let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        let text = |field: &str| {
            value
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("`{field}` is missing")))
        };
        let command = match text("do")? {
            "subscribe" => UserCommand::Subscribe {
                channel: text("channel")?.to_string(),
                filters: value.get("filters").cloned().unwrap_or(Value::Null),
            },
            "unsubscribe" => UserCommand::Unsubscribe {
                channel: text("channel")?.to_string(),
            },
            "frame" => UserCommand::Frame(Bytes::from(text("frame")?.to_string())),
            "call" => UserCommand::Call(ClientCall {
                id: text("id")?.into(),
                reply_to: text("reply_to")?.into(),
                timeout: std::time::Duration::from_millis(
                    value
                        .get("timeout_ms")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| bad("`timeout_ms` is missing"))?,
                ),
                frame: Bytes::from(text("frame")?.to_string()),
            }),
            "lattice" => UserCommand::Lattice {
                namespace: text("namespace")?.into(),
                frame: Bytes::from(text("frame")?.to_string()),
            },
            other => return Err(bad(&format!("unknown command `{other}`"))),
        };
        Ok(UserMessage {
            app: text("app")?.into(),
            user: text("user")?.into(),
            command: Arc::new(command),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let commands = [
            UserCommand::Subscribe {
                channel: "bornes".into(),
                filters: json!({"alarm": {"borne": "B1"}}),
            },
            UserCommand::Unsubscribe {
                channel: "bornes".into(),
            },
            UserCommand::Frame(Bytes::from_static(br#"{"class":"x"}"#)),
            UserCommand::Call(ClientCall {
                id: "1-ab".into(),
                reply_to: "n1".into(),
                timeout: std::time::Duration::from_millis(1500),
                frame: Bytes::from_static(br#"{"class":"call"}"#),
            }),
            UserCommand::Lattice {
                namespace: "unread".into(),
                frame: Bytes::from_static(br#"{"class":"lattice"}"#),
            },
        ];
        for command in commands {
            let message = UserMessage {
                app: "a".into(),
                user: "roger".into(),
                command: Arc::new(command),
            };
            assert_eq!(UserMessage::decode(&message.encode()), Ok(message));
        }
        for junk in [
            &b"nope"[..],
            b"{}",
            br#"{"do":"load","app":"a","user":"u"}"#,
        ] {
            assert!(UserMessage::decode(junk).is_err());
        }
    }
}
