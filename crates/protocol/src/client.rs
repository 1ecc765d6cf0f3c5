//! Messages a client (browser, device) sends to the gateway.
//!
//! Parsing is two-step: the `class` (and optional `uuid`) is read first, then
//! the body for that class. Every failure is a [`ParseError`] that still
//! carries the client's `uuid` when it could be read, so the gateway's
//! `bad_message` error can name it in `ref`. Nothing here panics on any input.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest client `uuid` echoed back in `ref`; longer ones are refused.
pub const MAX_CLIENT_UUID_LEN: usize = 128;

/// One message from a client.
#[derive(Debug)]
pub struct ClientMessage {
    /// The client's own id for this message, echoed in replies as `ref`.
    pub uuid: Option<String>,
    /// What the message asks for.
    pub body: ClientBody,
}

/// The class-specific part of a client message.
#[derive(Debug)]
pub enum ClientBody {
    /// `subscribe`: the Webchouquette flow (docs/protocol.md, "Subscribing").
    Subscribe(Subscribe),
    /// `unsubscribe`: `{"channels": ["bornes"]}`.
    Unsubscribe(Unsubscribe),
    /// `connect`: gives the connection a user identity.
    Connect(Connect),
    /// `call`: an RPC to a backend.
    Call(Call),
    /// `publish`: a client publishing an event where its token allows it.
    Publish(Box<RawValue>),
    /// `result`: the client's answer to a backend's `call`.
    Result(CallResult),
    /// `error` with an `id`: the client refusing a backend's `call`.
    Error(CallError),
    /// `lattice_subscribe`: `{"namespace": "unread"}`, the full state then changes.
    LatticeSubscribe(LatticeRequest),
    /// `lattice_unsubscribe`: `{"namespace": "unread"}`, no more changes.
    LatticeUnsubscribe(LatticeRequest),
    /// `notification_ack`: `{"ids": ["n-81f2"]}`, answered by `ack`.
    NotificationAck(NotificationAck),
    /// `message`: a user-to-user message, where the `connect` token's
    /// `message` claim allows its recipients (read by the gateway's core).
    Message(Box<RawValue>),
}

impl ClientBody {
    /// The wire class of this body.
    pub fn class(&self) -> &'static str {
        match self {
            ClientBody::Subscribe(_) => "subscribe",
            ClientBody::Unsubscribe(_) => "unsubscribe",
            ClientBody::Connect(_) => "connect",
            ClientBody::Call(_) => "call",
            ClientBody::Publish(_) => "publish",
            ClientBody::Result(_) => "result",
            ClientBody::Error(_) => "error",
            ClientBody::LatticeSubscribe(_) => "lattice_subscribe",
            ClientBody::LatticeUnsubscribe(_) => "lattice_unsubscribe",
            ClientBody::NotificationAck(_) => "notification_ack",
            ClientBody::Message(_) => "message",
        }
    }
}

/// A `subscribe` message, as the backend produced it.
#[derive(Debug, Deserialize)]
pub struct Subscribe {
    /// The app (tenant) the channels belong to.
    pub app_id: String,
    /// Channel name to its signed subscription.
    pub channels: BTreeMap<String, ChannelRequest>,
}

/// One channel of a `subscribe` message.
#[derive(Debug, Deserialize)]
pub struct ChannelRequest {
    /// The subscription token (a JWT signed by the backend).
    pub filters: String,
    /// Resume point, added by the client when it reconnects.
    #[serde(default)]
    pub since: Option<Since>,
}

/// A resume point: the epoch and the last offset the client has seen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Since {
    /// The channel's epoch when the client saw `offset`.
    pub epoch: String,
    /// The last offset the client received.
    pub offset: u64,
}

/// An `unsubscribe` message.
#[derive(Debug, Deserialize)]
pub struct Unsubscribe {
    /// Channels to leave.
    pub channels: Vec<String>,
}

/// A `connect` message.
#[derive(Debug, Deserialize)]
pub struct Connect {
    /// The app the identity belongs to.
    pub app_id: String,
    /// A JWT with `app_id`, `sub`, `exp` and optionally `groups`.
    pub token: String,
}

/// A `call` message (RPC to a backend).
#[derive(Debug, Deserialize)]
pub struct Call {
    /// The caller's id for the call, echoed in `result` or `error`.
    pub id: serde_json::Value,
    /// Dotted method name, routed by prefix.
    pub method: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
    /// Named arguments.
    #[serde(default)]
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

/// A client's `result`, answering a backend's `call` (docs/rpc.md).
#[derive(Debug, Deserialize)]
pub struct CallResult {
    /// The `id` of the gateway's `call`.
    pub id: serde_json::Value,
    /// The answer, passed to the backend untouched.
    pub result: Box<RawValue>,
}

/// A client's `error`, refusing a backend's `call` (docs/rpc.md).
#[derive(Debug, Deserialize)]
pub struct CallError {
    /// The `id` of the gateway's `call`.
    pub id: serde_json::Value,
    /// The client's own code (bounded by the gateway before it is passed on).
    pub code: String,
    /// A human explanation.
    #[serde(default)]
    pub message: Option<String>,
}

/// A `lattice_subscribe` or `lattice_unsubscribe` message.
#[derive(Debug, Deserialize)]
pub struct LatticeRequest {
    /// The namespace of the connection's app (its `connect` identity's).
    pub namespace: String,
}

/// A `notification_ack` message (also the body of `POST /notifications/ack`).
#[derive(Debug, Deserialize)]
pub struct NotificationAck {
    /// The notification ids (a group's id, or any of its members').
    pub ids: Vec<String>,
}

/// Why a client message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The client's `uuid`, when it could be read.
    pub uuid: Option<String>,
    /// A short human explanation, safe to send back to the client.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    class: Option<serde_json::Value>,
    #[serde(default)]
    uuid: Option<serde_json::Value>,
}

/// Parses one client message from a text frame (or an SSE/poll request body).
pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
    let head: Head = serde_json::from_str(text).map_err(|e| ParseError {
        uuid: None,
        message: format!("not a JSON object: {}", short(&e)),
    })?;
    let uuid = match head.uuid {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.len() <= MAX_CLIENT_UUID_LEN => Some(s),
        Some(_) => {
            return Err(ParseError {
                uuid: None,
                message: format!("`uuid` must be a string of at most {MAX_CLIENT_UUID_LEN} bytes"),
            });
        }
    };
    let fail = |message: String| ParseError {
        uuid: uuid.clone(),
        message,
    };
    let class = match head.class {
        Some(serde_json::Value::String(c)) => c,
        Some(_) => return Err(fail("`class` must be a string".into())),
        None => return Err(fail("missing `class`".into())),
    };
    let body = match class.as_str() {
        "subscribe" => ClientBody::Subscribe(body(text, &class).map_err(fail)?),
        "unsubscribe" => ClientBody::Unsubscribe(body(text, &class).map_err(fail)?),
        "connect" => ClientBody::Connect(body(text, &class).map_err(fail)?),
        "call" => ClientBody::Call(body(text, &class).map_err(fail)?),
        "publish" => ClientBody::Publish(body(text, &class).map_err(fail)?),
        "result" => ClientBody::Result(body(text, &class).map_err(fail)?),
        "error" => ClientBody::Error(body(text, &class).map_err(fail)?),
        "lattice_subscribe" => ClientBody::LatticeSubscribe(body(text, &class).map_err(fail)?),
        "lattice_unsubscribe" => ClientBody::LatticeUnsubscribe(body(text, &class).map_err(fail)?),
        "notification_ack" => ClientBody::NotificationAck(body(text, &class).map_err(fail)?),
        "message" => ClientBody::Message(body(text, &class).map_err(fail)?),
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(fail(format!("unknown class `{shown}`")));
        }
    };
    Ok(ClientMessage { uuid, body })
}

fn body<'a, T: Deserialize<'a>>(text: &'a str, class: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("bad `{class}` message: {}", short(&e)))
}

/// serde_json's message without the echo of long input.
fn short(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_webchouquette_subscribe() {
        let m = parse(
            r#"{"class":"subscribe","app_id":"bluelib","uuid":"u1",
                "channels":{"bornes":{"filters":"tok","since":{"epoch":"e","offset":41}}}}"#,
        )
        .expect("valid");
        assert_eq!(m.uuid.as_deref(), Some("u1"));
        let ClientBody::Subscribe(s) = m.body else {
            panic!("not a subscribe")
        };
        assert_eq!(s.app_id, "bluelib");
        let ch = &s.channels["bornes"];
        assert_eq!(ch.filters, "tok");
        assert_eq!(
            ch.since,
            Some(Since {
                epoch: "e".into(),
                offset: 41
            })
        );
    }

    #[test]
    fn keeps_uuid_on_shape_errors() {
        let e = parse(r#"{"class":"subscribe","uuid":"u2"}"#).expect_err("no channels");
        assert_eq!(e.uuid.as_deref(), Some("u2"));
        assert!(e.message.contains("app_id") || e.message.contains("channels"));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "null",
            "[]",
            "42",
            "{",
            r#"{"uuid":"x"}"#,
            r#"{"class":7}"#,
            r#"{"class":"nope"}"#,
            r#"{"class":"unsubscribe","channels":"bornes"}"#,
            r#"{"class":"lattice_subscribe"}"#,
            r#"{"class":"lattice_unsubscribe","namespace":7}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn parses_answers_to_calls() {
        let m = parse(r#"{"class":"result","id":"c1","result":{"ok":true}}"#).expect("result");
        let ClientBody::Result(r) = m.body else {
            panic!("not a result")
        };
        assert_eq!(
            (r.id.as_str(), r.result.get()),
            (Some("c1"), r#"{"ok":true}"#)
        );
        let m = parse(r#"{"class":"error","id":"c1","code":"busy"}"#).expect("error");
        let ClientBody::Error(e) = m.body else {
            panic!("not an error")
        };
        assert_eq!((e.code.as_str(), e.message), ("busy", None));
        for bad in [
            r#"{"class":"result","result":1}"#,
            r#"{"class":"result","id":"c1"}"#,
            r#"{"class":"error","id":"c1"}"#,
            r#"{"class":"error","id":"c1","code":7}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn refuses_oversized_uuid() {
        let long = "x".repeat(MAX_CLIENT_UUID_LEN + 1);
        let e = parse(&format!(r#"{{"class":"connect","uuid":"{long}"}}"#)).expect_err("long");
        assert_eq!(e.uuid, None);
    }
}
