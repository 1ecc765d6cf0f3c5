//! User-to-user messages (docs/notifications.md, "User-to-user messages").
//!
//! A connection whose `connect` token carries a `message` claim may send
//! `{"class":"message","to":["ana"],"groups":["team-7"],"kind":"chat",
//! "body":"..."}`. The claim, signed by the backend, says whom: listed
//! users (or `"*"`, any user of the app) and groups **with their members**.
//! Members travel in the claim because the gateway has no other source of
//! truth for them: the users it happens to see connected with a `groups`
//! claim are not every member, and an offline member must get the message
//! too. The backend knows its groups; it writes them into the token.
//!
//! A message is delivered as a **notification** from the sender
//! ([`crate::notifications::notify`] with `from`): stored pending for each
//! recipient until acknowledged, so an offline recipient gets it at the
//! next connect, on any node, and grouping, the `notifications` switch
//! and the pending bounds apply as to any notification.
//!
//! Anti-spam, each refusal with its own code, nothing sent:
//! - no identity, no claim, a recipient the claim does not allow:
//!   `not_allowed`;
//! - a sender covered by a kill switch of the existing scopes (`user`,
//!   `group`, `app`, `global`, seen with its `connect` identity):
//!   `disabled`;
//! - more recipients than `[apps.messages] max_recipients` (a group
//!   counted by its members, the sender left out): `too_many_recipients`;
//! - faster than the sender's token bucket (`[apps.messages]
//!   per_second` and `burst`, one token per message, per node):
//!   `rate_limited`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::server::Envelope;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::app::Apps;
use crate::connections::Identity;
use crate::limits::{KeyedLimiter, Rate};
use crate::node::Node;
use crate::notifications::{
    self, MAX_BODY_BYTES, MAX_KIND_BYTES, MAX_LINK_BYTES, MAX_TITLE_BYTES, Notify,
};
use crate::switches::{Subject, Switch};
use crate::user_mail::MAX_USER_BYTES;

/// Users one `message` claim may list.
pub const MAX_CLAIM_USERS: usize = 1_000;
/// Groups one `message` claim may list.
pub const MAX_CLAIM_GROUPS: usize = 64;
/// Members one group of a `message` claim may list.
pub const MAX_GROUP_MEMBERS: usize = 1_000;
/// Default of `[apps.messages] max_recipients`.
pub const DEFAULT_MAX_RECIPIENTS: usize = 50;
/// Largest `[apps.messages] max_recipients` accepted.
pub const MAX_MAX_RECIPIENTS: usize = 1_000;
/// Default sender rate: 1 message a second, 10 at once.
pub const DEFAULT_RATE: Rate = Rate::new(1, 10);
/// Senders whose bucket a node tracks per app. Only identities from
/// tokens the app's backend signed reach it; at it, once senders with a
/// full bucket are pruned, a new sender is refused `rate_limited` (fail
/// closed: known senders keep their budget).
pub const MAX_TRACKED_SENDERS: usize = 100_000;

/// `[apps.messages]`: one app's anti-spam rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagePolicy {
    /// Messages per sender (token bucket, per node).
    pub rate: Rate,
    /// Recipients one message may reach, groups counted by their members.
    pub max_recipients: usize,
}

impl Default for MessagePolicy {
    fn default() -> Self {
        MessagePolicy {
            rate: DEFAULT_RATE,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
        }
    }
}

/// What a `connect` token's `message` claim allows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageGrant {
    /// `"*"` was listed: any user of the app.
    any_user: bool,
    users: BTreeSet<Box<str>>,
    groups: BTreeMap<Box<str>, Box<[Box<str>]>>,
}

/// Why a `message` claim is malformed (the `connect` is refused with
/// `invalid_token` and this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageClaimError {
    /// Not `{"users": [...], "groups": {...}}`.
    #[error(
        "claim `message` must be an object with `users` (an array of user ids) and/or `groups` (an object of group names to arrays of user ids)"
    )]
    Shape,
    /// Too many users, groups or members.
    #[error(
        "claim `message`: at most {MAX_CLAIM_USERS} users, {MAX_CLAIM_GROUPS} groups of {MAX_GROUP_MEMBERS} members"
    )]
    TooLarge,
    /// An empty or too long user or group name.
    #[error("claim `message`: user and group names have 1 to {MAX_USER_BYTES} bytes")]
    BadName,
}

fn names(value: &Value, max: usize) -> Result<Vec<Box<str>>, MessageClaimError> {
    let list = value.as_array().ok_or(MessageClaimError::Shape)?;
    if list.len() > max {
        return Err(MessageClaimError::TooLarge);
    }
    list.iter()
        .map(|v| match v.as_str() {
            Some(s) if valid_user(s) => Ok(Box::from(s)),
            Some(_) => Err(MessageClaimError::BadName),
            None => Err(MessageClaimError::Shape),
        })
        .collect()
}

fn valid_user(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_USER_BYTES
}

impl MessageGrant {
    /// Reads a `message` claim, bounded (see the constants).
    pub fn parse(claim: &Value) -> Result<MessageGrant, MessageClaimError> {
        let map = claim.as_object().ok_or(MessageClaimError::Shape)?;
        if map.keys().any(|k| k != "users" && k != "groups") {
            return Err(MessageClaimError::Shape);
        }
        let mut grant = MessageGrant::default();
        if let Some(users) = map.get("users") {
            for user in names(users, MAX_CLAIM_USERS)? {
                if &*user == "*" {
                    grant.any_user = true;
                } else {
                    grant.users.insert(user);
                }
            }
        }
        if let Some(groups) = map.get("groups") {
            let groups = groups.as_object().ok_or(MessageClaimError::Shape)?;
            if groups.len() > MAX_CLAIM_GROUPS {
                return Err(MessageClaimError::TooLarge);
            }
            for (name, members) in groups {
                if !valid_user(name) {
                    return Err(MessageClaimError::BadName);
                }
                let members = names(members, MAX_GROUP_MEMBERS)?;
                grant
                    .groups
                    .insert(name.as_str().into(), members.into_boxed_slice());
            }
        }
        Ok(grant)
    }

    /// Whether a message may go to `user` directly.
    pub fn allows_user(&self, user: &str) -> bool {
        self.any_user || self.users.contains(user)
    }

    /// The members of `group`, if the claim lists it.
    pub fn members(&self, group: &str) -> Option<&[Box<str>]> {
        self.groups.get(group).map(|m| &**m)
    }
}

/// Each app's sender buckets on this node.
#[derive(Debug, Default)]
pub struct Senders {
    by_app: HashMap<Arc<str>, KeyedLimiter<Box<str>>>,
}

impl Senders {
    /// A bucket per sender for every app, at its `[apps.messages]` rate.
    pub fn new(apps: &Apps) -> Senders {
        Senders {
            by_app: apps
                .iter()
                .map(|a| {
                    let limiter = KeyedLimiter::new(a.messages.rate, MAX_TRACKED_SENDERS);
                    (a.id.clone(), limiter)
                })
                .collect(),
        }
    }

    /// Takes one message token of `user` of `app`.
    fn take(&self, app: &str, user: &str, now: Instant) -> bool {
        self.by_app
            .get(app)
            .is_none_or(|l| l.check(user.into(), now).is_ok())
    }
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// Not a `message` of the expected shape, or a field out of bounds
    /// (`bad_message`, counted towards `max_bad_messages`).
    #[error("{0}")]
    Malformed(String),
    /// The identity or its claim does not allow it (`not_allowed`).
    #[error("{0}")]
    NotAllowed(&'static str),
    /// A kill switch covers the sender (`disabled`).
    #[error("messages switched off by {0}")]
    Disabled(Switch),
    /// Over `max_recipients` (`too_many_recipients`).
    #[error("{count} recipients, at most {max}")]
    TooManyRecipients {
        /// Recipients named (groups by their members).
        count: usize,
        /// The app's bound.
        max: usize,
    },
    /// Over the sender's rate (`rate_limited`).
    #[error("too many messages: slow down")]
    RateLimited,
    /// The broker could not store it (`unavailable`).
    #[error("{}", crate::broker::UNAVAILABLE_MESSAGE)]
    Unavailable,
}

impl Refused {
    /// The `error` code the client is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refused::Malformed(_) => ErrorCode::BadMessage,
            Refused::NotAllowed(_) => ErrorCode::NotAllowed,
            Refused::Disabled(_) => ErrorCode::Disabled,
            Refused::TooManyRecipients { .. } => ErrorCode::TooManyRecipients,
            Refused::RateLimited => ErrorCode::RateLimited,
            Refused::Unavailable => ErrorCode::Unavailable,
        }
    }
}

/// A `message` as the client sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    #[serde(rename = "class")]
    _class: IgnoredAny,
    #[serde(rename = "uuid", default)]
    _uuid: Option<IgnoredAny>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    kind: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// A message sent: its notification id and how many users it went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The notification id every recipient sees.
    pub id: String,
    /// Recipients, each once.
    pub recipients: usize,
}

/// The `ack` of a sent message: `{"class":"ack","ref":...,"id":"n-...",
/// "recipients":2}`.
pub fn ack_frame(reference: Option<&str>, sent: &Sent) -> Bytes {
    let env = Envelope::now();
    let mut value = serde_json::json!({
        "class": "ack",
        "timestamp": env.timestamp,
        "uuid": env.uuid,
        "id": sent.id,
        "recipients": sent.recipients,
    });
    if let Some(r) = reference {
        value["ref"] = r.into();
    }
    Bytes::from(value.to_string())
}

/// Sends the `message` `raw` from a connection with `identity`, or says
/// why not (the checks in the module docs, in that order).
pub async fn send(
    node: &Arc<Node>,
    identity: Option<&Identity>,
    raw: &RawValue,
) -> Result<Sent, Refused> {
    let message: Message = serde_json::from_str(raw.get())
        .map_err(|e| Refused::Malformed(format!("bad `message` message: {}", cut(&e))))?;
    let Some(identity) = identity else {
        return Err(Refused::NotAllowed(
            "send a `connect` with a token allowing messages first",
        ));
    };
    let Some(grant) = identity.messages.as_ref() else {
        return Err(Refused::NotAllowed(
            "the connect token has no `message` claim",
        ));
    };
    check_fields(&message, node.max_data_bytes())?;
    if let Some(switch) = switched_off(node, identity) {
        return Err(Refused::Disabled(switch));
    }
    let policy = node
        .apps()
        .get(&identity.app)
        .map(|a| a.messages)
        .unwrap_or_default();
    let users = recipients(grant, &identity.user, &message, policy.max_recipients)?;
    if !node
        .senders()
        .take(&identity.app, &identity.user, Instant::now())
    {
        return Err(Refused::RateLimited);
    }
    let recipients = users.len();
    let request = Notify {
        users,
        kind: message.kind,
        title: message.title,
        body: message.body,
        link: message.link,
        data: message.data,
        idempotency: None,
        from: Some(identity.user.clone()),
    };
    match notifications::notify(node, &identity.app, request).await {
        Ok(id) => Ok(Sent { id, recipients }),
        Err(e) => {
            tracing::warn!(error = %e, "message not stored");
            Err(Refused::Unavailable)
        }
    }
}

/// The bounds of a notification's fields (PROTOCOL.md section 8).
fn check_fields(m: &Message, max_data: usize) -> Result<(), Refused> {
    let too_long =
        |field: &str, max: usize| Refused::Malformed(format!("`{field}`: at most {max} bytes"));
    if m.kind.is_empty() || m.kind.len() > MAX_KIND_BYTES {
        return Err(Refused::Malformed(format!(
            "`kind`: 1 to {MAX_KIND_BYTES} bytes"
        )));
    }
    if m.title.len() > MAX_TITLE_BYTES {
        return Err(too_long("title", MAX_TITLE_BYTES));
    }
    if m.body.len() > MAX_BODY_BYTES {
        return Err(too_long("body", MAX_BODY_BYTES));
    }
    if m.link.as_ref().is_some_and(|l| l.len() > MAX_LINK_BYTES) {
        return Err(too_long("link", MAX_LINK_BYTES));
    }
    if m.data.as_ref().is_some_and(|d| d.get().len() > max_data) {
        return Err(too_long("data", max_data));
    }
    if m.to.is_empty() && m.groups.is_empty() {
        return Err(Refused::Malformed(
            "`to` or `groups`: name at least one recipient".into(),
        ));
    }
    Ok(())
}

/// The kill switch in force that covers the sender, if any: the existing
/// scopes (`global`, `app`, `user`, `group`) seen with its identity; a
/// `channel` switch never matches (a message is on no channel).
fn switched_off(node: &Node, identity: &Identity) -> Option<Switch> {
    let subject = Subject {
        app: &identity.app,
        channel: "",
        users: [Some(&identity.user), None],
        groups: [&identity.groups, &[]],
    };
    node.switches().blocking(&subject)
}

/// The users `message` goes to, each once: its `to` users (each allowed by
/// the claim) and the members of its `groups` (each listed in the claim),
/// the sender left out of groups; at most `max`.
fn recipients(
    grant: &MessageGrant,
    sender: &str,
    message: &Message,
    max: usize,
) -> Result<Vec<String>, Refused> {
    // Named entries alone may be over the bound: refused before any work.
    let named = message.to.len() + message.groups.len();
    if message.to.len() > max || named > MAX_CLAIM_USERS + MAX_CLAIM_GROUPS {
        return Err(Refused::TooManyRecipients { count: named, max });
    }
    let mut users = BTreeSet::new();
    for user in &message.to {
        if !valid_user(user) || !grant.allows_user(user) {
            return Err(Refused::NotAllowed(
                "the connect token does not allow messages to this user",
            ));
        }
        users.insert(user.as_str());
    }
    for group in &message.groups {
        let Some(members) = grant.members(group) else {
            return Err(Refused::NotAllowed(
                "the connect token does not allow messages to this group",
            ));
        };
        users.extend(members.iter().map(|m| &**m).filter(|m| *m != sender));
        if users.len() > max {
            break;
        }
    }
    if users.len() > max {
        return Err(Refused::TooManyRecipients {
            count: users.len(),
            max,
        });
    }
    if users.is_empty() {
        return Err(Refused::Malformed(
            "no recipient: the groups have no other member".into(),
        ));
    }
    Ok(users.into_iter().map(str::to_string).collect())
}

/// serde_json's message, cut so that long input is not echoed back.
fn cut(e: &serde_json::Error) -> String {
    e.to_string().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(to: &[&str], groups: &[&str]) -> Message {
        let raw = json!({"class": "message", "to": to, "groups": groups, "kind": "chat"});
        serde_json::from_value(raw).expect("message")
    }

    fn grant() -> MessageGrant {
        let claim = json!({"users": ["ana", "bob"], "groups": {"team": ["roger", "ana", "carl"]}});
        MessageGrant::parse(&claim).expect("claim")
    }

    #[test]
    fn recipients_are_allowed_deduplicated_and_bounded() {
        let g = grant();
        let got = recipients(&g, "roger", &message(&["ana"], &["team"]), 10).expect("ok");
        assert_eq!(got, vec!["ana".to_string(), "carl".to_string()]);
        let refused = |to: &[&str], groups: &[&str], max| {
            recipients(&g, "roger", &message(to, groups), max).map(|_| ())
        };
        assert_eq!(
            refused(&["zoe"], &[], 10),
            Err(Refused::NotAllowed(
                "the connect token does not allow messages to this user"
            ))
        );
        assert!(matches!(
            refused(&[], &["other"], 10),
            Err(Refused::NotAllowed(_))
        ));
        assert_eq!(
            refused(&["bob"], &["team"], 2),
            Err(Refused::TooManyRecipients { count: 3, max: 2 })
        );
        let anyone = MessageGrant::parse(&json!({"users": ["*"]})).expect("claim");
        assert!(recipients(&anyone, "roger", &message(&["zoe"], &[]), 10).is_ok());
    }

    #[test]
    fn malformed_claims_are_refused() {
        for claim in [
            json!(["ana"]),
            json!({"users": "ana"}),
            json!({"users": [7]}),
            json!({"users": [""]}),
            json!({"groups": {"g": "ana"}}),
            json!({"channels": []}),
            json!({"users": vec!["u"; MAX_CLAIM_USERS + 1]}),
        ] {
            assert!(MessageGrant::parse(&claim).is_err(), "{claim} accepted");
        }
    }

    #[test]
    fn refusals_have_their_own_codes() {
        let codes = [
            Refused::Malformed(String::new()).code(),
            Refused::NotAllowed("").code(),
            Refused::TooManyRecipients { count: 2, max: 1 }.code(),
            Refused::RateLimited.code(),
            Refused::Unavailable.code(),
        ];
        let distinct: BTreeSet<&str> = codes.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), codes.len());
        assert_eq!(codes[2].as_str(), "too_many_recipients");
    }
}
