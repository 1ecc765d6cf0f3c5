//! A connection's `call`s to backends (docs/rpc.md).
//!
//! A call is checked here (identity, calls in flight, the app's route and
//! rate) and either answered at once with an `error`, or handed to the
//! node's [`Backends`] in a task of its own: the session returns at once,
//! so the connection keeps reading messages and delivering events while
//! the backend thinks. The answer, `result` or `error` with the call's `id`,
//! is queued in the connection's outbox like any other frame that is not a
//! channel's event ([`NO_SLOT`]), so every transport writes it.
//!
//! A task lives at most its route's timeout (the [`Backends`] enforce it),
//! and no longer than its session: when the session ends, its calls still
//! waiting are dropped, cancelling their requests to the backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::client::Call;
use chouquette_protocol::server::{self, ErrorContext};
use tokio::sync::watch;

use crate::app::App;
use crate::clock::unix_now;
use crate::connections::Identity;
use crate::era::Era;
use crate::node::Node;
use crate::outbox::{NO_SLOT, Outbound, Outbox};
use crate::rpc::{Answer, AnswerFuture, BackendCall, Backends, Outcome, Refusal, Route, Unrouted};
use crate::telemetry::Telemetry;

/// The message of the `error` answering a call before any `connect`.
pub const CONNECT_FIRST: &str = "connect first: a call needs an identity";

/// Calls of one connection waiting on backends. Dropped with the session:
/// its calls still waiting are then dropped too (their backend requests
/// cancelled), so a closed connection holds nothing.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Made at the first call: most connections never call, and an idle
    /// connection's memory is what a node's capacity is counted in (the
    /// watch channel alone is some 400 bytes).
    calls: OnceLock<Calls>,
}

#[derive(Debug)]
struct Calls {
    count: Arc<AtomicUsize>,
    /// Never sent on: its drop is what the calls' tasks watch for.
    open: watch::Sender<()>,
}

/// Releases one call in flight when its task ends, however it ends.
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    fn calls(&self) -> &Calls {
        self.calls.get_or_init(|| Calls {
            count: Arc::default(),
            open: watch::channel(()).0,
        })
    }

    /// Holds one more call, unless `max` are already held.
    fn hold(&self, max: usize) -> Option<Held> {
        let count = &self.calls().count;
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        });
        taken.ok().map(|_| Held(count.clone()))
    }

    /// Closed when the session ends.
    fn closed(&self) -> watch::Receiver<()> {
        self.calls().open.subscribe()
    }
}

/// Who is calling, and where the answer goes.
pub(super) struct Caller<'a> {
    pub node: &'a Arc<Node>,
    pub identity: Option<&'a Arc<Identity>>,
    pub outbox: &'a Arc<Outbox>,
    pub in_flight: &'a InFlight,
}

/// Why a call is answered by the gateway itself: the counter, the code
/// and the message.
type Refused = (Refusal, ErrorCode, &'static str);

/// Answers `call` at once with an `error` appended to `out`, or sends it
/// to its backend and queues the answer in the outbox later.
pub(super) fn start(caller: Caller<'_>, call: Call, reference: Option<&str>, out: &mut Vec<Bytes>) {
    let node = caller.node;
    match check(&caller, &call.method) {
        Ok((identity, held, app, route, backends)) => {
            let Call {
                id,
                method,
                args,
                kwargs,
            } = call;
            let answer = backends.call(BackendCall {
                route: route.clone(),
                app,
                identity: identity.clone(),
                method,
                args,
                kwargs,
            });
            let pending = Pending {
                route,
                id,
                reference: reference.map(str::to_owned),
                held,
            };
            spawn_answer(&caller, pending, answer);
        }
        Err((why, code, message)) => {
            node.rpc().telemetry().refused(why);
            node.telemetry().error(code);
            let ctx = ErrorContext {
                reference,
                channel: None,
                id: Some(&call.id),
            };
            out.push(server::error(code, message, ctx));
        }
    }
}

/// What a call may go through with: its identity, its place among the
/// calls in flight, its app, route and backends.
type Checked<'a> = (
    &'a Arc<Identity>,
    Held,
    Arc<App>,
    Arc<Route>,
    &'a dyn Backends,
);

/// Identity, calls in flight, then the app's route and rate.
fn check<'a>(caller: &Caller<'a>, method: &str) -> Result<Checked<'a>, Refused> {
    let node = caller.node;
    let identity =
        caller
            .identity
            .ok_or((Refusal::NotConnected, ErrorCode::NotAllowed, CONNECT_FIRST))?;
    if identity.exp.is_some_and(|exp| exp <= unix_now()) {
        let why = "the connection's identity expired: connect again";
        return Err((Refusal::Expired, ErrorCode::TokenExpired, why));
    }
    let max = node.session_limits().max_calls_in_flight;
    let held = caller.in_flight.hold(max).ok_or((
        Refusal::InFlight,
        ErrorCode::RateLimited,
        "too many calls waiting on backends: wait for an answer",
    ))?;
    let no_route = (
        Refusal::NoRoute,
        ErrorCode::Unavailable,
        "no RPC route is configured for this method",
    );
    let app = node.apps().get(&identity.app).cloned().ok_or(no_route)?;
    match node.rpc().route(&app.id, method) {
        Ok((route, backends)) => Ok((identity, held, app, route, backends)),
        Err(Unrouted::NoRoute) => Err(no_route),
        Err(Unrouted::RateLimited) => Err((
            Refusal::AppRate,
            ErrorCode::RateLimited,
            "too many calls for this app: slow down",
        )),
    }
}

/// A call sent to its backend, until its answer is queued.
struct Pending {
    route: Arc<Route>,
    id: serde_json::Value,
    reference: Option<String>,
    /// Its place among the connection's calls in flight, freed at the end.
    held: Held,
}

/// Waits for `answer` in a task of its own (dropped with the session) and
/// queues the frame answering the call in the connection's outbox.
fn spawn_answer(caller: &Caller<'_>, pending: Pending, answer: AnswerFuture) {
    let (telemetry, outbox) = (caller.node.telemetry().clone(), caller.outbox.clone());
    let sent = Instant::now();
    let mut closed = caller.in_flight.closed();
    tokio::spawn(async move {
        let answer = tokio::select! {
            answer = answer => answer,
            // The session is gone: nobody is left to answer.
            _ = closed.changed() => return,
        };
        let Pending {
            route,
            id,
            reference,
            held,
        } = pending;
        route.counters.record(Outcome::of(&answer), sent.elapsed());
        let frame = answer_frame(&telemetry, reference.as_deref(), &id, answer);
        outbox.push(Outbound {
            frame,
            slot: NO_SLOT,
            era: Era::default(),
            offset: 0,
            received: Instant::now(),
        });
        drop(held);
    });
}

/// The frame answering a call: its `result`, or an `error` with its `id`.
fn answer_frame(
    telemetry: &Telemetry,
    reference: Option<&str>,
    id: &serde_json::Value,
    answer: Answer,
) -> Bytes {
    let ctx = ErrorContext {
        reference,
        channel: None,
        id: Some(id),
    };
    match answer {
        Answer::Result(result) => server::result(reference, id, &result),
        Answer::Refused { code, message } => {
            telemetry.error(ErrorCode::CallRefused);
            let message = message.as_deref().unwrap_or("the backend refused the call");
            match code {
                Some(code) => server::call_error(reference, id, &code, message),
                None => server::error(ErrorCode::CallRefused, message, ctx),
            }
        }
        Answer::Failed(failure) => {
            telemetry.error(failure.code());
            server::error(failure.code(), failure.message(), ctx)
        }
    }
}
