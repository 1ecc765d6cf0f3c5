//! Clients publishing events (docs/protocol.md, "Client publish").
//!
//! A connection may publish only once a `connect` token gave it an identity
//! whose `publish` claim names the channel. The claim pins keywords per
//! channel, so that a device cannot speak for another: an event must carry
//! every pinned keyword, and no other keyword of the same name. A client
//! learns nothing about a channel's existence or its events from a refusal:
//! each one is `not_allowed`, and nothing is published.
//!
//! An allowed event goes through the one ingest pipeline, as a backend's
//! would ([`Caller::Client`]): the same field bounds, the same idempotency
//! `id`, the app's publish rate, plus a rate per user so that one chatty or
//! hostile client cannot spend the app's whole budget.

use std::collections::BTreeMap;

use bytes::Bytes;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::server::{self, ErrorContext};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use super::authorize::Refusal;
use super::{Session, Verdict};
use crate::broker::UNAVAILABLE_MESSAGE;
use crate::connections::Identity;
use crate::ingest::{self, Caller, PublishError, Refusal as IngestRefusal};
use crate::node::Node;
use crate::publication::{MAX_KEYWORDS, NewEvent, Position, check_keyword, valid_name};

/// Most channels one `publish` claim may name: a claim is for one device or
/// user, not a blanket grant.
pub const MAX_CLAIM_CHANNELS: usize = 64;

/// What a `connect` token's `publish` claim allows: per channel, the
/// keywords its events are pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishGrant {
    channels: BTreeMap<Box<str>, Box<[Box<str>]>>,
}

/// Why a `publish` claim is malformed (the `connect` is refused with
/// `invalid_token` and this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// Not an object of channel names to keyword arrays.
    #[error("claim `publish` must be an object of channel names to arrays of keywords")]
    NotAnObject,
    /// More than [`MAX_CLAIM_CHANNELS`] channels.
    #[error("claim `publish` names {0} channels, at most {MAX_CLAIM_CHANNELS}")]
    TooManyChannels(usize),
    /// A channel name that no channel can have.
    #[error("claim `publish`: `{0}` is not a valid channel name")]
    BadChannel(String),
    /// A channel's value is not an array of strings.
    #[error("claim `publish`: channel `{0}` must map to an array of `name:value` keywords")]
    NotKeywords(String),
    /// More pinned keywords than an event may carry.
    #[error("claim `publish`: channel `{0}` pins more than {MAX_KEYWORDS} keywords")]
    TooManyKeywords(String),
    /// A pinned keyword that is not `name:value`.
    #[error("claim `publish`: channel `{channel}`: keyword `{shown}` is not `name:value`")]
    BadKeyword {
        /// The channel.
        channel: String,
        /// The keyword, cut to 64 characters.
        shown: String,
    },
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

impl PublishGrant {
    /// Reads a `publish` claim, bounded: at most [`MAX_CLAIM_CHANNELS`]
    /// channels, each with at most [`MAX_KEYWORDS`] valid keywords.
    pub fn parse(claim: &Value) -> Result<PublishGrant, ClaimError> {
        let map = claim.as_object().ok_or(ClaimError::NotAnObject)?;
        if map.len() > MAX_CLAIM_CHANNELS {
            return Err(ClaimError::TooManyChannels(map.len()));
        }
        let mut channels = BTreeMap::new();
        for (name, pins) in map {
            if !valid_name(name) {
                return Err(ClaimError::BadChannel(cut(name)));
            }
            let pins = pins
                .as_array()
                .ok_or_else(|| ClaimError::NotKeywords(name.clone()))?;
            if pins.len() > MAX_KEYWORDS {
                return Err(ClaimError::TooManyKeywords(name.clone()));
            }
            let mut kept = Vec::with_capacity(pins.len());
            for pin in pins {
                let pin = pin
                    .as_str()
                    .ok_or_else(|| ClaimError::NotKeywords(name.clone()))?;
                check_keyword(pin).map_err(|_| ClaimError::BadKeyword {
                    channel: name.clone(),
                    shown: cut(pin),
                })?;
                kept.push(Box::from(pin));
            }
            channels.insert(Box::from(name.as_str()), kept.into_boxed_slice());
        }
        Ok(PublishGrant { channels })
    }

    /// Whether an event with `keywords` may be published on `channel`: the
    /// channel is named, the event carries every pinned keyword, and no
    /// other keyword with the name of a pinned one.
    pub fn allows(&self, channel: &str, keywords: &[String]) -> bool {
        let Some(pins) = self.channels.get(channel) else {
            return false;
        };
        let carried = pins.iter().all(|p| keywords.iter().any(|k| **k == **p));
        let impostor = keywords.iter().any(|k| {
            let name = keyword_name(k);
            pins.iter().any(|p| keyword_name(p) == name && **p != **k)
        });
        carried && !impostor
    }
}

/// The name of a `name:value` keyword (the whole keyword without a colon).
fn keyword_name(keyword: &str) -> &str {
    keyword.split_once(':').map_or(keyword, |(name, _)| name)
}

impl Session {
    /// Handles a client `publish`: answers `ack` with where the event went,
    /// or an `error` (with `ref`); a malformed message counts as a bad one.
    pub(super) async fn publish(
        &mut self,
        raw: &RawValue,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) -> Verdict {
        let identity = self.identity.clone();
        match publish(&self.node, identity.as_deref(), raw).await {
            Ok(p) => {
                if let Some(identity) = identity.as_deref() {
                    // A sign of life of the device (docs/devices.md).
                    let transport = self.subscriptions.connection().transport();
                    self.node
                        .devices()
                        .seen(&identity.app, &identity.user, transport.as_str());
                }
                out.push(server::publish_ack(
                    reference,
                    &p.epoch,
                    p.offset,
                    p.duplicate,
                ));
            }
            Err(Refused::Malformed(why)) => return self.bad_message(&why, reference, out),
            Err(Refused::Refused(r)) => {
                let ctx = ErrorContext {
                    reference,
                    ..ErrorContext::default()
                };
                self.error(out, r.code, &r.message, ctx);
            }
        }
        Verdict::Continue
    }
}

/// Why a client `publish` was not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The message is not a `publish` of the expected shape: answered as a
    /// bad message (counted towards `max_bad_messages`).
    Malformed(String),
    /// Refused with this error code and message.
    Refused(Refusal),
}

/// A `publish` message: the fields of a published event (as the HTTP API
/// takes them), plus the envelope's `class` and `uuid`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    #[serde(rename = "class")]
    _class: IgnoredAny,
    #[serde(rename = "uuid", default)]
    _uuid: Option<IgnoredAny>,
    app_id: String,
    channel: String,
    event_kind: String,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    time: Option<crate::device_time::DeviceTime>,
}

impl Message {
    fn into_event(self) -> NewEvent {
        NewEvent {
            app_id: self.app_id,
            channel: self.channel,
            event_kind: self.event_kind,
            keywords: self.keywords,
            key: self.key,
            data: self.data.unwrap_or_else(|| RawValue::NULL.to_owned()),
            id: self.id,
            time: self.time,
        }
    }
}

fn not_allowed(message: &str) -> Refused {
    Refused::Refused(Refusal::new(ErrorCode::NotAllowed, message))
}

/// Publishes the event of the `publish` message `raw` for a connection
/// with `identity`, or says why not. Every refusal is counted as a
/// rejected publish.
pub async fn publish(
    node: &Node,
    identity: Option<&Identity>,
    raw: &RawValue,
) -> Result<Position, Refused> {
    let result = checked_publish(node, identity, raw).await;
    if result.is_err() {
        node.telemetry().publish_rejected();
    }
    result
}

async fn checked_publish(
    node: &Node,
    identity: Option<&Identity>,
    raw: &RawValue,
) -> Result<Position, Refused> {
    let message: Message = serde_json::from_str(raw.get())
        .map_err(|e| Refused::Malformed(format!("bad `publish` message: {}", short(&e))))?;
    let Some(identity) = identity else {
        return Err(not_allowed(
            "send a `connect` with a token allowing it first",
        ));
    };
    if *identity.app != *message.app_id {
        return Err(not_allowed("the connect identity is of another app"));
    }
    let Some(grant) = identity.publish.as_ref() else {
        return Err(not_allowed("the connect token has no `publish` claim"));
    };
    if !grant.allows(&message.channel, &message.keywords) {
        return Err(not_allowed(
            "the connect token does not allow this channel or these keywords",
        ));
    }
    let caller = Caller::Client {
        app: &identity.app,
        user: &identity.user,
    };
    match ingest::publish(node, caller, vec![message.into_event()]).await {
        Ok(positions) => positions.into_iter().next().ok_or_else(|| {
            Refused::Refused(Refusal::new(ErrorCode::Unavailable, "nothing published"))
        }),
        Err(e) => Err(Refused::Refused(refusal(e))),
    }
}

/// What the client is told about a refusal of the pipeline.
fn refusal(e: PublishError) -> Refusal {
    let refusal = match e {
        PublishError::Refused { refusal, .. } => refusal,
        PublishError::Unavailable { error, .. } => {
            // The broker's detail is for operators, not clients.
            tracing::warn!(%error, "client publish refused: the broker is unavailable");
            return Refusal::new(ErrorCode::Unavailable, UNAVAILABLE_MESSAGE);
        }
    };
    let code = match &refusal {
        IngestRefusal::WrongKey | IngestRefusal::UnknownApp(_) => ErrorCode::NotAllowed,
        IngestRefusal::RateLimited { .. } | IngestRefusal::UserRateLimited { .. } => {
            ErrorCode::RateLimited
        }
        IngestRefusal::Invalid(_) => ErrorCode::BadMessage,
        _ => ErrorCode::Unavailable,
    };
    let message = match &refusal {
        IngestRefusal::RateLimited { .. } => "the app publishes faster than its limit".into(),
        other => other.to_string(),
    };
    Refusal::new(code, message)
}

/// serde_json's message, cut so that long input is not echoed back.
fn short(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn grant(claim: Value) -> PublishGrant {
        PublishGrant::parse(&claim).expect("valid claim")
    }

    fn kw(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pinned_keywords_must_be_carried_and_not_contradicted() {
        let g = grant(json!({"devices": ["device:D1"], "free": []}));
        assert!(g.allows("devices", &kw(&["device:D1"])));
        assert!(g.allows("devices", &kw(&["device:D1", "zone:Z"])));
        assert!(!g.allows("devices", &kw(&["device:D2"])));
        assert!(!g.allows("devices", &kw(&[])));
        assert!(!g.allows("devices", &kw(&["device:D1", "device:D2"])));
        assert!(!g.allows("other", &kw(&["device:D1"])));
        assert!(g.allows("free", &kw(&["anything:at-all"])));
    }

    #[test]
    fn malformed_claims_are_refused() {
        let bad = [
            json!(["devices"]),
            json!({"devices": "device:D1"}),
            json!({"devices": [7]}),
            json!({"devices": ["nocolon"]}),
            json!({"bad name": []}),
            json!({"devices": vec!["a:b"; MAX_KEYWORDS + 1]}),
        ];
        for claim in bad {
            assert!(PublishGrant::parse(&claim).is_err(), "{claim} accepted");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_CLAIM_CHANNELS)
            .map(|i| (format!("c{i}"), json!([])))
            .collect();
        let e = PublishGrant::parse(&Value::Object(many));
        assert_eq!(e, Err(ClaimError::TooManyChannels(MAX_CLAIM_CHANNELS + 1)));
    }
}
