//! Backends calling a user's connections (docs/rpc.md, "Calls to
//! clients"), and publishing to one user: the reusable seam for anything
//! that asks a user's (or device's) connection something and waits for its
//! answer.
//!
//! A call travels like any message addressed to a user ([`crate::user_mail`]):
//! [`call_user`] builds the `call` frame once, registers the call in this
//! node's [`CallTable`] under a fresh id, and hands a [`UserCommand::Call`]
//! to the broker, which carries it to every node. Each node posts it to the
//! user's connections there and answers the calling node with how many it
//! reached ([`Reply::Reached`]). The broker says how many nodes heard the
//! call, so once every one of them has answered "none" the backend is told
//! `not_connected` at once; a node that died meanwhile never answers, so
//! after [`REACH_WAIT`] without any node reporting a connection the answer
//! is `not_connected` too.
//!
//! Every connection of the user gets the `call` (every tab, every device
//! holding that identity); the first `result` or `error` to reach the
//! calling node wins, later ones are ignored and counted. A session keeps
//! the ids of the calls it was sent, with the calling node's reply address
//! ([`OpenCalls`]), so a client can only answer a call it was sent, and its
//! answer goes straight back to that node ([`Broker::to_node`]).
//!
//! [`Broker::to_node`]: crate::broker::Broker::to_node

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::broker::BrokerError;
use crate::node::Node;
use crate::telemetry::prometheus::Family;
use crate::user_mail::{UserCommand, UserMessage};

/// Calls this node may have waiting for clients, all apps together; one
/// more is answered `503`. Each holds a few hundred bytes and one waiting
/// HTTP request.
pub const MAX_PENDING_CALLS: usize = 10_000;

/// Calls one user may have waiting on this node; one more is answered
/// `429`, so one backend loop cannot take the whole node's share.
pub const MAX_PENDING_PER_USER: usize = 16;

/// Calls one connection keeps answerable (ids it was sent and not yet
/// answered); past it the oldest is forgotten, and its answer ignored.
pub const MAX_OPEN_PER_CONNECTION: usize = 64;

/// A call's timeout when the backend names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest timeout a backend may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the calling node waits for some node to report a connection
/// of the user (each node answers at once; this covers a node that died
/// between hearing the call and answering).
pub const REACH_WAIT: Duration = Duration::from_secs(1);

/// Longest client error code passed to the backend, in bytes.
pub const MAX_CODE_BYTES: usize = 64;

/// Longest client error message passed to the backend, in bytes (cut).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// A backend's call, as the user's connections receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCall {
    /// The gateway's id for the call (the `id` of the `call` frame).
    pub id: Box<str>,
    /// Where the answer goes: the calling node's reply address
    /// ([`crate::broker::Broker::reply_address`]).
    pub reply_to: Box<str>,
    /// How long the call waits; a session forgets it after that.
    pub timeout: Duration,
    /// The `call` frame, serialized once.
    pub frame: Bytes,
}

/// What a client answered.
#[derive(Debug, Clone)]
pub enum ClientAnswer {
    /// Its `result`, passed through.
    Result(Box<RawValue>),
    /// Its `error`.
    Error {
        /// The client's code.
        code: String,
        /// Its message (may be empty).
        message: String,
    },
}

impl PartialEq for ClientAnswer {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ClientAnswer::Result(a), ClientAnswer::Result(b)) => a.get() == b.get(),
            (
                ClientAnswer::Error { code, message },
                ClientAnswer::Error {
                    code: c,
                    message: m,
                },
            ) => code == c && message == m,
            _ => false,
        }
    }
}

/// What a node tells the calling node about one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// It posted the call to this many of the user's connections.
    Reached(usize),
    /// A client answered.
    Answer(ClientAnswer),
}

/// A reply about the call `call`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReply {
    /// The call's id.
    pub call: Box<str>,
    /// What happened.
    pub reply: Reply,
}

/// Why a reply from another node could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable call reply: {0}")]
pub struct ReplyDecodeError(String);

impl CallReply {
    /// The reply as nodes exchange it (JSON); a client's `result` is
    /// carried as it wrote it, byte for byte.
    pub fn encode(&self) -> Bytes {
        #[derive(serde::Serialize)]
        struct Wire<'a> {
            call: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            reached: Option<usize>,
            #[serde(skip_serializing_if = "Option::is_none")]
            result: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<Value>,
        }
        let mut wire = Wire {
            call: &self.call,
            reached: None,
            result: None,
            error: None,
        };
        match &self.reply {
            Reply::Reached(n) => wire.reached = Some(*n),
            Reply::Answer(ClientAnswer::Result(raw)) => wire.result = Some(raw),
            Reply::Answer(ClientAnswer::Error { code, message }) => {
                wire.error = Some(json!({ "code": code, "message": message }));
            }
        }
        // Plain fields and valid JSON: serializing cannot fail.
        Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads what [`CallReply::encode`] wrote; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<CallReply, ReplyDecodeError> {
        #[derive(serde::Deserialize)]
        struct Wire {
            call: Box<str>,
            reached: Option<usize>,
            result: Option<Box<RawValue>>,
            error: Option<WireError>,
        }
        #[derive(serde::Deserialize)]
        struct WireError {
            code: String,
            message: String,
        }
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| ReplyDecodeError(e.to_string()))?;
        let reply = match (wire.reached, wire.result, wire.error) {
            (Some(n), None, None) => Reply::Reached(n),
            (None, Some(raw), None) => Reply::Answer(ClientAnswer::Result(raw)),
            (None, None, Some(e)) => Reply::Answer(ClientAnswer::Error {
                code: e.code,
                message: e.message,
            }),
            _ => return Err(ReplyDecodeError("not one of reached, result, error".into())),
        };
        Ok(CallReply {
            call: wire.call,
            reply,
        })
    }
}

/// The reply a node owes the caller after posting `message` to `reached`
/// of the user's connections: `Some((reply address, reply))` for a call.
pub fn reached(message: &UserMessage, reached: usize) -> Option<(Box<str>, CallReply)> {
    let UserCommand::Call(call) = &*message.command else {
        return None;
    };
    let reply = CallReply {
        call: call.id.clone(),
        reply: Reply::Reached(reached),
    };
    Some((call.reply_to.clone(), reply))
}

/// How a backend's call to a user ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A client's `result`.
    Result,
    /// A client's `error`.
    Error,
    /// Connections were reached, none answered in time.
    Timeout,
    /// No connection of the user anywhere.
    NotConnected,
    /// Refused: too many calls waiting on this node or for this user.
    Busy,
    /// The broker could not carry the call.
    Unavailable,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Result,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::NotConnected,
        Outcome::Busy,
        Outcome::Unavailable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Result => "result",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::NotConnected => "not_connected",
            Outcome::Busy => "busy",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// Why a call got no client answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The user has no connection on any node.
    #[error("the user has no connection")]
    NotConnected,
    /// Connections were reached; none answered in time.
    #[error("no connection answered in time")]
    Timeout,
    /// This node already waits on [`MAX_PENDING_CALLS`] calls.
    #[error("too many calls waiting on this node (limit {0})")]
    NodeBusy(usize),
    /// The user already has [`MAX_PENDING_PER_USER`] calls waiting here.
    #[error("too many calls waiting for this user (limit {0})")]
    UserBusy(usize),
    /// The broker could not carry the call.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl CallFailure {
    fn outcome(&self) -> Outcome {
        match self {
            CallFailure::NotConnected => Outcome::NotConnected,
            CallFailure::Timeout => Outcome::Timeout,
            CallFailure::NodeBusy(_) | CallFailure::UserBusy(_) => Outcome::Busy,
            CallFailure::Broker(_) => Outcome::Unavailable,
        }
    }
}

const CALLS: Family = Family::counter(
    "chouquette_client_calls_total",
    "Backend calls to a user's connections, by outcome.",
);
const IGNORED: Family = Family::counter(
    "chouquette_client_call_answers_ignored_total",
    "Client answers to calls that were unknown, expired or already answered.",
);
const PENDING: Family = Family::gauge(
    "chouquette_client_calls_pending",
    "Backend calls to users waiting for an answer on this node.",
);

/// What one waiting call has heard so far.
#[derive(Debug, Default)]
struct Heard {
    /// Nodes that said how many connections they reached.
    replied: usize,
    /// Connections reached, all nodes together.
    reached: usize,
    /// The first client answer.
    answer: Option<ClientAnswer>,
}

#[derive(Debug)]
struct Waiting {
    user: (Arc<str>, Box<str>),
    heard: watch::Sender<Heard>,
}

#[derive(Debug, Default)]
struct Table {
    calls: HashMap<Box<str>, Waiting>,
    /// Calls waiting per (app, user); an entry lives while one does.
    per_user: HashMap<(Arc<str>, Box<str>), usize>,
}

/// This node's calls waiting for clients (at most [`MAX_PENDING_CALLS`]),
/// and their counters. Lives in the hub, where brokers deliver replies.
#[derive(Debug, Default)]
pub struct CallTable {
    table: Mutex<Table>,
    next: AtomicU64,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    ignored: AtomicU64,
}

/// A call's place in the table, freed when dropped (answered, timed out,
/// or the HTTP request went away).
struct Entry<'a> {
    table: &'a CallTable,
    id: Box<str>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        if let Some(waiting) = table.calls.remove(&self.id)
            && let Some(n) = table.per_user.get_mut(&waiting.user)
        {
            *n -= 1;
            if *n == 0 {
                table.per_user.remove(&waiting.user);
            }
        }
    }
}

impl CallTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Single inserts and removes: never left half changed.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a call to `user` of `app` under a fresh id.
    fn open(
        &self,
        app: &str,
        user: &str,
    ) -> Result<(Entry<'_>, watch::Receiver<Heard>), CallFailure> {
        let mut table = self.lock();
        if table.calls.len() >= MAX_PENDING_CALLS {
            return Err(CallFailure::NodeBusy(MAX_PENDING_CALLS));
        }
        let key: (Arc<str>, Box<str>) = (app.into(), user.into());
        let held = table.per_user.get(&key).copied().unwrap_or(0);
        if held >= MAX_PENDING_PER_USER {
            return Err(CallFailure::UserBusy(MAX_PENDING_PER_USER));
        }
        table.per_user.insert(key.clone(), held + 1);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // A random part, so an id cannot be guessed from another one.
        let id: Box<str> =
            format!("{n}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]).into();
        let (heard, receiver) = watch::channel(Heard::default());
        table.calls.insert(id.clone(), Waiting { user: key, heard });
        Ok((Entry { table: self, id }, receiver))
    }

    /// A reply from a node (this one's included) about one of this node's
    /// calls. A reply about a call no longer waiting, or a second answer,
    /// is ignored (answers are counted).
    pub fn deliver(&self, reply: CallReply) {
        let table = self.lock();
        let Some(waiting) = table.calls.get(&reply.call) else {
            drop(table);
            if matches!(reply.reply, Reply::Answer(_)) {
                self.ignored();
            }
            return;
        };
        let mut late = false;
        waiting.heard.send_modify(|heard| match reply.reply {
            Reply::Reached(n) => {
                heard.replied += 1;
                heard.reached += n;
            }
            Reply::Answer(answer) => {
                if heard.answer.is_some() {
                    late = true;
                } else {
                    heard.answer = Some(answer);
                }
            }
        });
        drop(table);
        if late {
            self.ignored();
        }
    }

    /// A client answered a call it does not hold (unknown, expired, or
    /// already answered).
    pub fn ignored(&self) {
        self.ignored.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers ignored so far.
    pub fn ignored_count(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    /// Calls waiting now.
    pub fn pending(&self) -> usize {
        self.lock().calls.len()
    }

    fn record(&self, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the counters (Prometheus text).
    pub fn render(&self, out: &mut String) {
        let mut samples = CALLS.render(out);
        for (outcome, n) in Outcome::ALL.iter().zip(&self.outcomes) {
            samples.sample(&[("outcome", outcome.as_str())], n.load(Ordering::Relaxed));
        }
        IGNORED.render_value(out, self.ignored_count());
        PENDING.render_value(out, self.pending());
    }
}

/// A backend's call to a user.
#[derive(Debug)]
pub struct UserCall<'a> {
    /// The app.
    pub app: &'a str,
    /// The user (a `connect` identity's `sub`).
    pub user: &'a str,
    /// The method.
    pub method: &'a str,
    /// Positional arguments.
    pub args: &'a [Value],
    /// Named arguments.
    pub kwargs: &'a serde_json::Map<String, Value>,
    /// How long to wait for an answer (at most [`MAX_TIMEOUT`]).
    pub timeout: Duration,
}

/// Sends `call` to every connection of its user, on every node, and waits
/// for the first answer (see the module docs).
pub async fn call_user(node: &Node, call: UserCall<'_>) -> Result<ClientAnswer, CallFailure> {
    let started = Instant::now();
    let table = node.hub().calls();
    let answered = ask(node, &call, started).await;
    let outcome = match &answered {
        Ok(ClientAnswer::Result(_)) => Outcome::Result,
        Ok(ClientAnswer::Error { .. }) => Outcome::Error,
        Err(e) => e.outcome(),
    };
    table.record(outcome);
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (app, method, outcome) = (call.app, call.method, outcome.as_str());
    match &answered {
        // The node's or the broker's trouble, not the user's: operators look.
        Err(e @ (CallFailure::NodeBusy(_) | CallFailure::Broker(_))) => {
            tracing::warn!(app, method, outcome, ms, error = %e, "call to a user refused");
        }
        _ => tracing::debug!(app, method, outcome, ms, "call to a user"),
    }
    answered
}

async fn ask(
    node: &Node,
    call: &UserCall<'_>,
    started: Instant,
) -> Result<ClientAnswer, CallFailure> {
    let timeout = call.timeout.min(MAX_TIMEOUT);
    let (entry, mut heard) = node.hub().calls().open(call.app, call.user)?;
    let frame = chouquette_protocol::server::call(&entry.id, call.method, call.args, call.kwargs);
    let message = UserMessage {
        app: call.app.into(),
        user: call.user.into(),
        command: Arc::new(UserCommand::Call(ClientCall {
            id: entry.id.clone(),
            reply_to: node.broker().reply_address().into(),
            timeout,
            frame,
        })),
    };
    let nodes = node.broker().to_user_counted(&message).await?;
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let reach_deadline = tokio::time::Instant::from_std(started + REACH_WAIT.min(timeout));
    // Some node reached a connection, or every node said it reached none.
    let known = heard.wait_for(|h| h.answer.is_some() || h.reached > 0 || h.replied >= nodes);
    let reached = match tokio::time::timeout_at(reach_deadline, known).await {
        Ok(Ok(h)) => h.answer.is_some() || h.reached > 0,
        // The sender lives in the table as long as `entry`: not closed.
        Ok(Err(_)) | Err(_) => false,
    };
    if !reached {
        return Err(CallFailure::NotConnected);
    }
    let answered = heard.wait_for(|h| h.answer.is_some());
    let answer = match tokio::time::timeout_at(deadline, answered).await {
        Ok(Ok(h)) => h.answer.clone(),
        Ok(Err(_)) | Err(_) => None,
    };
    drop(entry);
    answer.ok_or(CallFailure::Timeout)
}

/// Writes a `message` (`event_kind`, `data`) to every connection of `user`
/// of `app`, on every node: best effort, not stored. Returns this node's
/// connections reached and how many nodes heard it.
pub async fn send_to_user(
    node: &Node,
    app: &str,
    user: &str,
    event_kind: &str,
    data: &RawValue,
) -> Result<(usize, usize), BrokerError> {
    let frame = chouquette_protocol::server::user_message(event_kind, data);
    let message = UserMessage {
        app: app.into(),
        user: user.into(),
        command: Arc::new(UserCommand::Frame(frame)),
    };
    let here = node.connections().of_user(app, user).len();
    let nodes = node.broker().to_user_counted(&message).await?;
    Ok((here, nodes))
}

/// Calls a connection was sent and may still answer, with where each
/// answer goes. At most [`MAX_OPEN_PER_CONNECTION`]; expired ones are
/// dropped first, then the oldest.
#[derive(Debug, Default)]
pub struct OpenCalls {
    open: Vec<(Box<str>, Box<str>, Instant)>,
}

impl OpenCalls {
    /// Remembers `call`, sent to the client now.
    pub fn sent(&mut self, call: &ClientCall, now: Instant) {
        self.open.retain(|(_, _, until)| *until > now);
        if self.open.len() >= MAX_OPEN_PER_CONNECTION {
            self.open.remove(0);
        }
        self.open
            .push((call.id.clone(), call.reply_to.clone(), now + call.timeout));
    }

    /// Where the answer to `id` goes, if the call is still open; it is
    /// forgotten (a second answer from this client is ignored).
    pub fn answered(&mut self, id: &str, now: Instant) -> Option<Box<str>> {
        let i = self.open.iter().position(|(open, _, _)| &**open == id)?;
        let (_, reply_to, until) = self.open.swap_remove(i);
        (until > now).then_some(reply_to)
    }
}

/// Hands a client's answer to the calling node, without waiting: this
/// node's table directly, another node's through the broker.
pub fn answer(node: &Arc<Node>, reply_to: Box<str>, reply: CallReply) {
    if *reply_to == *node.broker().reply_address() {
        node.hub().calls().deliver(reply);
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        if let Err(e) = node.broker().to_node(&reply_to, &reply).await {
            tracing::warn!(error = %e, "a client's answer to a call was lost: the broker failed");
        }
    });
}

/// Whether `code` may be passed to the backend as a client `error` code:
/// 1 to [`MAX_CODE_BYTES`] bytes of letters, digits, `_`, `.` and `-`.
pub fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE_BYTES
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `message` cut to [`MAX_ERROR_MESSAGE_BYTES`] on a character boundary.
pub fn cut_message(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE_BYTES {
        let mut cut = MAX_ERROR_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_garbage_is_an_error() {
        // A number serde_json could not hold in an f64 crosses untouched.
        let raw = RawValue::from_string(r#"{"ok":[1,2],"big":1e400}"#.into()).expect("raw");
        for reply in [
            Reply::Reached(3),
            Reply::Answer(ClientAnswer::Result(raw)),
            Reply::Answer(ClientAnswer::Error {
                code: "busy".into(),
                message: "later".into(),
            }),
        ] {
            let reply = CallReply {
                call: "1-abc".into(),
                reply,
            };
            assert_eq!(CallReply::decode(&reply.encode()), Ok(reply));
        }
        for junk in [
            &b"nope"[..],
            br#"{"call":"x"}"#,
            br#"{"call":"x","reached":1,"result":2}"#,
        ] {
            assert!(CallReply::decode(junk).is_err());
        }
    }

    #[test]
    fn the_table_is_bounded_per_user_and_frees_its_entries() {
        let table = CallTable::default();
        let held: Vec<_> = (0..MAX_PENDING_PER_USER)
            .map(|_| table.open("a", "roger").expect("room"))
            .collect();
        assert_eq!(
            table.open("a", "roger").err(),
            Some(CallFailure::UserBusy(MAX_PENDING_PER_USER))
        );
        assert!(table.open("a", "vb").is_ok(), "another user has room");
        drop(held);
        assert_eq!(table.pending(), 0);
        assert!(table.lock().per_user.is_empty());
        assert!(table.open("a", "roger").is_ok());
    }

    #[test]
    fn the_first_answer_wins_and_the_rest_are_counted() {
        let table = CallTable::default();
        let (entry, heard) = table.open("a", "u").expect("room");
        let id = entry.id.clone();
        let answer = |code: &str| CallReply {
            call: id.clone(),
            reply: Reply::Answer(ClientAnswer::Error {
                code: code.into(),
                message: String::new(),
            }),
        };
        table.deliver(answer("first"));
        table.deliver(answer("second"));
        let first = heard.borrow().answer.clone();
        assert!(matches!(first, Some(ClientAnswer::Error { code, .. }) if code == "first"));
        assert_eq!(table.ignored_count(), 1);
        drop(entry);
        table.deliver(answer("late"));
        assert_eq!(table.ignored_count(), 2);
    }

    #[test]
    fn open_calls_forget_expired_and_answered_ids() {
        let now = Instant::now();
        let call = |id: &str, secs| ClientCall {
            id: id.into(),
            reply_to: "node".into(),
            timeout: Duration::from_secs(secs),
            frame: Bytes::new(),
        };
        let mut open = OpenCalls::default();
        open.sent(&call("a", 5), now);
        open.sent(&call("b", 1), now);
        assert_eq!(open.answered("a", now).as_deref(), Some("node"));
        assert_eq!(open.answered("a", now), None, "answered once");
        assert_eq!(open.answered("b", now + Duration::from_secs(2)), None);
        for i in 0..=MAX_OPEN_PER_CONNECTION {
            open.sent(&call(&i.to_string(), 5), now);
        }
        assert_eq!(open.open.len(), MAX_OPEN_PER_CONNECTION);
        assert_eq!(open.answered("0", now), None, "the oldest was forgotten");
    }

    #[test]
    fn codes_are_checked_and_messages_cut() {
        assert!(valid_code("no_such.room-2"));
        for bad in ["", "a b", "é", &"x".repeat(MAX_CODE_BYTES + 1)] {
            assert!(!valid_code(bad), "{bad}");
        }
        let cut = cut_message("é".repeat(MAX_ERROR_MESSAGE_BYTES));
        assert!(cut.len() <= MAX_ERROR_MESSAGE_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
