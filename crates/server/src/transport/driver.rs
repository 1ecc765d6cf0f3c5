//! The connection driver: the one loop every connection runs, whatever its
//! transport.
//!
//! It owns what all connections share: the stop signal, the session's outbox
//! (live frames taken in batches, each batch written then reported to the
//! session with [`Session::written`]), client messages, token expiry, the
//! heartbeat and idle timeout, the write deadline, the subscribe deadline,
//! the count of messages written, and why the connection ended ([`End`], mapped to telemetry's
//! [`CloseReason`] here and nowhere else). A transport supplies only its
//! [`Wire`]: how a batch of messages becomes bytes on its socket, how it says
//! goodbye, what it hears from the client, and how it keeps an idle
//! connection alive.
//!
//! Invariants:
//! - Every write, ping included, has the `limits.write_timeout` deadline; a
//!   write past it, or an outbox overflow, ends the connection as a slow
//!   consumer.
//! - A connection that holds no subscription and no identity for
//!   `limits.subscribe_timeout`, counted from its opening or from the moment
//!   it last let go of them (unsubscribed, expired, switched off), is closed
//!   with 1008: an open socket that never subscribes costs the node memory
//!   and a file, and answering pings is not a reason to keep it. A
//!   connection that ends by itself ([`Wire::deadline`], a long-poll) needs
//!   no such deadline.
//! - A batch is written whole or not at all as far as the session knows: the
//!   live frames of a batch are reported written (or failed) once, after it.
//! - One wake-up writes at most `BATCHES_PER_TURN` outbox batches, then
//!   lets the stop signal, the client and the timers have their turn before
//!   it comes back for the rest: sustained fan-out starves none of them.
//! - Messages taken before the connection had to stop are said before the
//!   close, never silently dropped; on shutdown, what is queued is delivered
//!   first, then `reset` `shutdown`.
//! - The driver is generic over the wire (monomorphized, no `dyn`), holds one
//!   reusable message buffer and one timer, so an idle connection costs no
//!   more than its session, its socket and the loop's futures. Handling a
//!   client message is boxed: it is rare, and its future is large.
//! - Where the wire can be waited on without a future ([`Wire::parks`]:
//!   WebSocket on plain TCP), an idle connection has no task at all: the
//!   loop parks its state and ends the task, and the first source to fire
//!   (the client, the outbox, the next timer, the stop) spawns a new one
//!   that goes on where it stopped ([`super::parking`]).

use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use chouquette_core::clock::unix_now;
use chouquette_core::limits;
use chouquette_core::outbox::DirectSocket;
use chouquette_core::session::{Session, Stop, Verdict};
use chouquette_core::telemetry::CloseReason;
use chouquette_protocol::server::ErrorContext;
use chouquette_protocol::{CloseCode, ErrorCode, ResetReason, server};
use tokio::time::error::Elapsed;
use tokio::time::{Instant, sleep_until, timeout};

use super::parking::{Parking, Sleeper, Ticket};
use super::url;
use crate::gateway::{Gateway, Settings};

/// How long the last words and the close may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Past this many slots, the message buffer is let go after an outbox flush,
/// so a burst's buffer is not kept by an idle connection.
const KEPT_BUFFER: usize = 64;

/// Most batches written per wake-up of the loop before it checks the stop
/// signal, the client and the timers again.
const BATCHES_PER_TURN: usize = 4;

/// The socket failed or the client went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gone;

/// What a transport heard from its client.
#[derive(Debug)]
pub(crate) enum Inbound<T> {
    /// A text message: a protocol message for the session.
    Text(T),
    /// A binary message, which the protocol does not accept.
    Binary,
    /// A sign of life with nothing to handle (a pong).
    Heard,
    /// A ping, to answer with a pong carrying its payload.
    Ping(Box<[u8]>),
    /// The client said it closes: answer, completing the handshake.
    Closed,
    /// A message over the size limit.
    TooLarge,
    /// The client is gone.
    Gone,
}

/// How the connection says goodbye: its last messages, then its close.
#[derive(Debug)]
pub(crate) struct Goodbye<'a> {
    /// Said before the close (a `reset`, an error), in one write with it.
    pub last: &'a mut Vec<Bytes>,
    /// The session's resume cursor, for the transports that carry one.
    pub cursor: &'a str,
    /// The close code and reason; `None` when there is nothing to announce
    /// (the client closed first, or a long-poll answered).
    pub close: Option<(CloseCode, &'a str)>,
}

/// A transport's framing: all the driver needs from a socket.
///
/// Implementations only frame and send; deadlines, accounting and the choice
/// of when to write or close are the driver's.
pub(crate) trait Wire: Send + 'static {
    /// A client message's text, as the socket hands it over.
    type Text: Deref<Target = str> + Send;

    /// Most live frames taken from the outbox per write.
    const BATCH: usize;

    /// Whether writes carry the session's resume cursor (URL transports);
    /// when false the driver never encodes one.
    const CURSOR: bool;

    /// Writes every message of `batch` (and empties it) as one batch;
    /// `cursor` is the resume cursor after it when [`Wire::CURSOR`] is set.
    async fn write(&mut self, batch: &mut Vec<Bytes>, cursor: &str) -> Result<(), Gone>;

    /// Says the last messages and the close, in one write.
    async fn close(&mut self, goodbye: Goodbye<'_>) -> Result<(), Gone>;

    /// The next thing heard from the client. A transport without an inbound
    /// side resolves only when the client is gone (or never).
    async fn recv(&mut self) -> Inbound<Self::Text>;

    /// Whether the connection can wait without a task: [`Wire::poll_recv`]
    /// registers its waker with the socket and keeps no state of its own.
    fn parks(&self) -> bool {
        false
    }

    /// [`Wire::recv`] as a poll, for a connection that parks: pending means
    /// `cx`'s waker is woken when the client has more to say.
    fn poll_recv(&mut self, _cx: &mut Context<'_>) -> Poll<Inbound<Self::Text>> {
        Poll::Pending
    }

    /// Says why the connection failed, if the client broke the protocol,
    /// once the driver is done with it.
    async fn fail(&mut self) {}

    /// Keeps an idle connection alive (a ping, a comment line).
    async fn ping(&mut self) -> Result<(), Gone>;

    /// Answers a client's ping ([`Inbound::Ping`]).
    async fn pong(&mut self, _payload: Box<[u8]>) -> Result<(), Gone> {
        Ok(())
    }

    /// Writes what the fan-out left half written on the socket (see
    /// [`DirectSocket`]); called before anything else is written.
    async fn finish(&mut self) -> Result<(), Gone> {
        Ok(())
    }

    /// The socket the fan-out may write live messages into while the
    /// connection's task is parked, if the transport has one.
    fn direct(&self) -> Option<Arc<dyn DirectSocket>> {
        None
    }

    /// How often [`Wire::ping`] runs (zero: never).
    fn ping_interval(settings: &Settings) -> Duration;

    /// Silence after which the client counts as dead (zero: never); only
    /// for transports that hear their client.
    fn idle_timeout(_settings: &Settings) -> Duration {
        Duration::ZERO
    }

    /// When the connection ends anyway (a long-poll's wait).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Whether the connection has said all it will (a long-poll, once it
    /// has something to answer).
    fn done(&self) -> bool {
        false
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client closed without a close message, or the socket failed.
    Gone,
    /// The client sent a close message.
    ClientClosed,
    /// The node is stopping.
    Shutdown,
    /// Outbox overflow, or a write past its deadline.
    SlowConsumer,
    /// Past the bad-message limit.
    Misbehaving(CloseCode, &'static str),
    /// A message over the size limit.
    TooLarge,
    /// Nothing heard from the client for the idle timeout.
    Idle,
    /// An operator disconnected the user, with this reason.
    Disconnected(Box<str>),
    /// The transport said all it will ([`Wire::done`]).
    Answered,
    /// The transport's deadline passed ([`Wire::deadline`]).
    DeadlinePassed,
    /// No subscription and no identity for `subscribe_timeout`; the close
    /// reason says so.
    NothingHeld(Box<str>),
}

impl End {
    /// How telemetry counts this end, if the gateway closed the connection.
    fn close_reason(&self) -> Option<CloseReason> {
        match self {
            End::Shutdown => Some(CloseReason::Shutdown),
            End::SlowConsumer => Some(CloseReason::SlowConsumer),
            End::Misbehaving(..) => Some(CloseReason::Misbehaving),
            End::TooLarge => Some(CloseReason::TooLarge),
            End::Idle => Some(CloseReason::Idle),
            End::Disconnected(_) => Some(CloseReason::Disconnected),
            // Counted as `limited_total{limit="subscribe_timeout"}`.
            End::NothingHeld(_) => None,
            End::Gone | End::ClientClosed | End::Answered | End::DeadlinePassed => None,
        }
    }

    /// The close code and reason the client is told.
    fn close(&self) -> Option<(CloseCode, &str)> {
        match self {
            End::Shutdown => Some((CloseCode::GoingAway, "shutdown")),
            End::SlowConsumer => Some((CloseCode::TryAgainLater, "slow_consumer")),
            End::Misbehaving(code, reason) => Some((*code, reason)),
            End::TooLarge => Some((CloseCode::MessageTooBig, "message too big")),
            End::Idle => Some((CloseCode::GoingAway, "idle_timeout")),
            End::Disconnected(reason) | End::NothingHeld(reason) => {
                Some((CloseCode::PolicyViolation, reason))
            }
            End::Gone | End::ClientClosed | End::Answered | End::DeadlinePassed => None,
        }
    }
}

impl From<Stop> for End {
    fn from(stop: Stop) -> End {
        match stop {
            Stop::Overflowed => End::SlowConsumer,
            Stop::Disconnected(reason) => End::Disconnected(reason),
        }
    }
}

/// Runs a connection that may park ([`Wire::parks`]) until it ends: like
/// [`Driver::drive`], except that while idle it has no task. The future ends when
/// the connection ends or parks; a woken connection is handed to `resume`,
/// which spawns its [`Driver::run`].
pub(crate) fn drive_parked<W: Wire>(
    wire: W,
    session: Session,
    shared: Gateway,
    peer: Option<IpAddr>,
    opening: Vec<Bytes>,
    resume: Resume<W>,
) -> impl Future<Output = ()> {
    let parking = wire.parks().then(|| (shared.parking.clone(), resume));
    let mut driver = Box::new(Driver::new(wire, session, shared, peer, opening));
    driver.parking = parking;
    async move {
        if let Err(end) = driver.write().await {
            Box::pin(driver.finish(end)).await;
            return;
        }
        driver.run().await;
    }
}

/// How a write under the `write_timeout` deadline ended: a write past it
/// makes the client a slow consumer.
fn within_deadline(written: Result<Result<(), Gone>, Elapsed>) -> Result<(), End> {
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Gone)) => Err(End::Gone),
        Err(_) => Err(End::SlowConsumer),
    }
}

/// The instant a Unix time (seconds) is reached.
fn instant_at(unix: u64) -> Instant {
    let wait = unix.saturating_sub(unix_now());
    Instant::now() + Duration::from_secs(wait.min(365 * 24 * 3600))
}

/// A duration as a config value would say it: `30s`, `250ms`.
fn short(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What woke the loop.
enum Woke<T> {
    Stop,
    Outbox,
    Heard(Inbound<T>),
    Timer(Option<Instant>),
}

/// How a turn of the loop ended.
enum Turn<W: Wire> {
    /// The connection ends.
    End(End),
    /// The connection waits without a task: its state goes to the sleeper.
    Park(Arc<Sleeper<Driver<W>>>),
}

/// What registering a wait without a task found.
enum Parked<W: Wire> {
    /// Every source is pending: the connection may park.
    Waiting(Arc<Sleeper<Driver<W>>>, Ticket),
    /// The client said something meanwhile.
    Heard(Inbound<W::Text>),
    /// A source is ready (or the connection cannot park): wait in the
    /// `select!`, which finds it.
    Select,
}

/// What takes a parked connection up again (spawns its [`Driver::run`]).
type Resume<W> = fn(Box<Driver<W>>);

/// One running connection: its wire, its session, and the loop's state.
pub(crate) struct Driver<W: Wire> {
    wire: W,
    session: Session,
    shared: Gateway,
    peer: Option<IpAddr>,
    /// Messages to write next; empty between steps, reused across them.
    out: Vec<Bytes>,
    last_heard: Instant,
    last_ping: Instant,
    /// Since when the session has held no subscription and no identity;
    /// `None` while it holds one.
    bare_since: Option<Instant>,
    /// Frames were left in the outbox after a bounded flush: the outbox
    /// wakes the loop only when it goes from empty to not, so the loop
    /// comes back for them itself, after the other branches had a turn.
    more: bool,
    /// Whether the fan-out may write into the socket while the loop waits.
    direct: bool,
    /// Where the connection parks while idle, if it can, and what takes it
    /// up again.
    parking: Option<(Arc<Parking>, Resume<W>)>,
    /// Its place in the lot while parked.
    ticket: Option<Ticket>,
}

impl<W: Wire> Driver<W> {
    /// A connection's loop over `wire` and `session`, which says `opening`
    /// first (the replies to a subscription carried in the request).
    pub(crate) fn new(
        wire: W,
        session: Session,
        shared: Gateway,
        peer: Option<IpAddr>,
        opening: Vec<Bytes>,
    ) -> Driver<W> {
        let now = Instant::now();
        let outbox = session.outbox();
        let direct = wire.direct().map(|socket| outbox.attach(socket)).is_some();
        Driver {
            wire,
            session,
            shared,
            peer,
            out: opening,
            last_heard: now,
            last_ping: now,
            bare_since: Some(now),
            more: false,
            direct,
            parking: None,
            ticket: None,
        }
    }

    /// The wire, the session and the opening messages, for a transport
    /// that prepares them (subscribes, says its first words) before
    /// [`Driver::drive`]. The driver is built first and the preparation
    /// borrows from it, so a task holds each part once.
    pub(crate) fn parts(&mut self) -> (&mut W, &mut Session, &mut Vec<Bytes>) {
        (&mut self.wire, &mut self.session, &mut self.out)
    }

    /// The wire, once the connection is over.
    pub(crate) fn into_wire(self) -> W {
        self.wire
    }

    /// Runs the connection until it ends, in the caller's task: writes the
    /// opening messages, then serves the session, then says goodbye and
    /// ends the session.
    pub(crate) async fn drive(&mut self) {
        let end = match self.write().await {
            Ok(()) => loop {
                // Without a parking lot the loop never parks.
                if let Turn::End(end) = self.serve().await {
                    break end;
                }
            },
            Err(end) => end,
        };
        // Boxed: closing runs once, and its future would otherwise sit in
        // every idle connection's task.
        Box::pin(self.finish(end)).await;
    }

    /// Serves the connection until it ends (then says goodbye) or parks;
    /// parked, the state lives in its sleeper and the task ends.
    pub(crate) async fn run(mut self: Box<Self>) {
        loop {
            match self.serve().await {
                Turn::End(end) => {
                    Box::pin(self.finish(end)).await;
                    return;
                }
                Turn::Park(sleeper) => match sleeper.lay(self) {
                    // A source fired while it was parking: go on here.
                    Some(back) => self = back,
                    None => return,
                },
            }
        }
    }

    /// The loop: one `select!` over stop, outbox, client and the next timer,
    /// or, for a connection that parks, the same sources registered without
    /// a task ([`Driver::park`]). While it waits, a transport with a
    /// [`DirectSocket`] lets the fan-out write live events straight into it
    /// (the outbox is parked); once it wakes, it holds the outbox, so only
    /// the task writes until it waits again.
    async fn serve(&mut self) -> Turn<W> {
        if let (Some((parking, _)), Some(ticket)) = (&self.parking, self.ticket.take()) {
            parking.leave(ticket);
        }
        let mut stop = self.shared.shutdown.clone();
        let outbox = self.session.outbox().clone();
        loop {
            if self.wire.done() {
                return Turn::End(End::Answered);
            }
            self.note_holdings();
            let next = self.next_timer();
            if self.direct {
                outbox.park();
            }
            let heard = match self.park(next) {
                Parked::Waiting(sleeper, ticket) => {
                    self.ticket = Some(ticket);
                    return Turn::Park(sleeper);
                }
                Parked::Heard(inbound) => Some(inbound),
                Parked::Select => None,
            };
            let more = self.more;
            let woke = match heard {
                Some(inbound) => Woke::Heard(inbound),
                None => tokio::select! {
                    biased;
                    _ = stop.stopped() => Woke::Stop,
                    _ = outbox.ready(), if !more => Woke::Outbox,
                    inbound = self.wire.recv() => Woke::Heard(inbound),
                    _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => Woke::Timer(next),
                    () = std::future::ready(()), if more => Woke::Outbox,
                },
            };
            if self.direct {
                outbox.hold();
            }
            let step = match woke {
                Woke::Stop => Err(End::Shutdown),
                Woke::Outbox => Box::pin(self.flush_outbox()).await,
                Woke::Heard(inbound) => {
                    self.last_heard = Instant::now();
                    Box::pin(self.receive(inbound)).await.map(|()| more)
                }
                Woke::Timer(next) => {
                    let now = next.map_or_else(Instant::now, |at| at.max(Instant::now()));
                    Box::pin(self.on_timers(now)).await.map(|()| more)
                }
            };
            match step {
                Ok(left) => self.more = left,
                Err(end) => return Turn::End(end),
            }
        }
    }

    /// Registers the loop's sources without a task, for a connection that
    /// parks and has nothing to do: the lot (the next timer `next`, the
    /// stop), the outbox, the client, each with one sleeper's waker.
    fn park(&mut self, next: Option<Instant>) -> Parked<W> {
        let Some((parking, resume)) = &self.parking else {
            return Parked::Select;
        };
        if self.more {
            return Parked::Select;
        }
        let sleeper = Sleeper::new(*resume);
        let waker = Waker::from(sleeper.clone());
        let Some(ticket) = parking.enter(next, &waker) else {
            return Parked::Select;
        };
        if self.session.outbox().park_until_ready(&waker) {
            parking.leave(ticket);
            return Parked::Select;
        }
        match self.wire.poll_recv(&mut Context::from_waker(&waker)) {
            Poll::Ready(inbound) => {
                parking.leave(ticket);
                Parked::Heard(inbound)
            }
            Poll::Pending => {
                // An idle connection keeps no message buffer.
                self.out = Vec::new();
                Parked::Waiting(sleeper, ticket)
            }
        }
    }

    /// When the next ping is due, if the wire pings.
    fn next_ping(&self) -> Option<Instant> {
        let interval = W::ping_interval(&self.shared.settings);
        (!interval.is_zero()).then(|| self.last_ping + interval)
    }

    /// The earliest of the next ping, token expiry, the wire's deadline and
    /// the subscribe deadline. Only this instant is kept across the wait:
    /// what is due is read again on waking, which keeps the loop's future
    /// small.
    fn next_timer(&self) -> Option<Instant> {
        let expiry = self.session.next_expiry().map(instant_at);
        let held = self.subscribe_deadline();
        [self.next_ping(), expiry, self.wire.deadline(), held]
            .into_iter()
            .flatten()
            .min()
    }

    /// Starts the subscribe clock when the session comes to hold nothing,
    /// stops it when it holds a subscription or an identity. Read at every
    /// turn of the loop, so every way of letting go (unsubscribe, expiry, a
    /// switch, a refused resubscribe) is seen without each telling the driver.
    fn note_holdings(&mut self) {
        let holds = self.session.subscription_count() > 0 || self.session.identity().is_some();
        if holds {
            self.bare_since = None;
        } else if self.bare_since.is_none() {
            self.bare_since = Some(Instant::now());
        }
    }

    /// When a connection holding nothing is closed, if it is.
    fn subscribe_deadline(&self) -> Option<Instant> {
        let limit = self.shared.settings.subscribe_timeout;
        if limit.is_zero() || self.wire.deadline().is_some() {
            return None;
        }
        self.bare_since.map(|since| since + limit)
    }

    /// Writes the live frames waiting in the outbox, in batches, at most
    /// [`BATCHES_PER_TURN`] of them; says whether frames may be left. The
    /// bound keeps a busy outbox (sustained fan-out) from starving the stop
    /// signal, client messages and timers, which get their turn in between.
    async fn flush_outbox(&mut self) -> Result<bool, End> {
        // A frame the fan-out left half written goes before anything else.
        within_deadline(timeout(self.shared.settings.write_timeout, self.wire.finish()).await)?;
        if self.session.has_mail() {
            // Commands addressed to the user (backend subscriptions): rare,
            // and their future is large, so boxed like client messages.
            Box::pin(self.session.read_mail(&mut self.out)).await;
            self.write().await?;
        }
        let mut flushed = Ok(true);
        for _ in 0..BATCHES_PER_TURN {
            match self.session.take_live(&mut self.out, W::BATCH) {
                // What was taken before the stop stays in `out`: it is said
                // before the close.
                Err(stop) => return Err(stop.into()),
                Ok(0) => {
                    flushed = Ok(false);
                    break;
                }
                Ok(_) => {
                    let written = self.write().await;
                    self.session.written(written.is_ok());
                    if let Err(end) = written {
                        flushed = Err(end);
                        break;
                    }
                }
            }
        }
        if self.out.capacity() > KEPT_BUFFER {
            self.out = Vec::new();
        }
        flushed
    }

    /// Writes `out` (if anything is in it) within the write deadline, and
    /// empties it.
    async fn write(&mut self) -> Result<(), End> {
        let count = self.out.len();
        if count == 0 {
            return Ok(());
        }
        let cursor = self.cursor();
        let written = timeout(
            self.shared.settings.write_timeout,
            self.wire.write(&mut self.out, &cursor),
        )
        .await;
        self.out.clear();
        within_deadline(written)?;
        self.shared.node.telemetry().messages_out(count);
        Ok(())
    }

    /// The session's resume cursor, encoded only for transports that carry it.
    fn cursor(&self) -> String {
        if W::CURSOR {
            url::encode_cursor(self.session.positions())
        } else {
            String::new()
        }
    }

    /// Handles what the client sent, and writes the replies.
    async fn receive(&mut self, inbound: Inbound<W::Text>) -> Result<(), End> {
        let verdict = match inbound {
            Inbound::Gone => return Err(End::Gone),
            Inbound::Closed => return Err(End::ClientClosed),
            Inbound::TooLarge => return Err(End::TooLarge),
            Inbound::Heard => Verdict::Continue,
            Inbound::Ping(payload) => {
                // Boxed: client pings are rare, and inline the pong's
                // future would sit in every idle connection's task.
                let pong = timeout(self.shared.settings.write_timeout, self.wire.pong(payload));
                return within_deadline(Box::pin(pong).await);
            }
            // Boxed: handling a message is rare next to idling, and its future is
            // large; inline, it would sit in every idle connection's task.
            Inbound::Text(text) => Box::pin(self.session.handle(&text, &mut self.out)).await,
            Inbound::Binary => self.session.bad_message(
                "binary frames are not accepted: send JSON text",
                None,
                &mut self.out,
            ),
        };
        self.write().await?;
        match verdict {
            Verdict::Continue => Ok(()),
            Verdict::Close(code, reason) => {
                if reason == limits::ABUSE_CLOSE_REASON
                    && let Some(ip) = self.peer
                {
                    // The connection is closed; its address pays a share of
                    // its new-connection budget, not all of it: behind a NAT
                    // or a proxy the address is many clients (`abuse_cost`).
                    let key = limits::address_key(ip);
                    let addresses = &self.shared.node.limiters().addresses;
                    addresses.penalize(key, std::time::Instant::now());
                }
                Err(End::Misbehaving(code, reason))
            }
        }
    }

    /// Runs what is due at `now`: the deadline, the heartbeat, token expiry.
    async fn on_timers(&mut self, now: Instant) -> Result<(), End> {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.wire.deadline()) {
            return Err(End::DeadlinePassed);
        }
        if due(self.subscribe_deadline()) {
            self.shared
                .node
                .limiters()
                .counters
                .hit(limits::Limit::SubscribeTimeout);
            let limit = self.shared.settings.subscribe_timeout;
            let reason = format!("no subscription within {}", short(limit));
            return Err(End::NothingHeld(reason.into()));
        }
        if due(self.next_ping()) {
            let idle = W::idle_timeout(&self.shared.settings);
            if !idle.is_zero() && self.last_heard.elapsed() >= idle {
                return Err(End::Idle);
            }
            self.last_ping = Instant::now();
            within_deadline(timeout(self.shared.settings.write_timeout, self.wire.ping()).await)?;
        }
        if self
            .session
            .next_expiry()
            .is_some_and(|exp| exp <= unix_now())
        {
            self.session.expire(unix_now(), &mut self.out);
            self.write().await?;
        }
        Ok(())
    }

    /// Counts the end, delivers what is queued on shutdown, ends the session
    /// and says goodbye: the last messages and the close in one write.
    async fn finish(&mut self, end: End) {
        let telemetry = &self.shared.node.telemetry().clone();
        if let Some(reason) = end.close_reason() {
            telemetry.closed_by_gateway(reason);
        }
        match end {
            End::Gone => {
                self.session.end();
                // Boxed: it runs once, for a client that broke the protocol.
                let _ = timeout(GOODBYE_TIMEOUT, Box::pin(self.wire.fail())).await;
                return;
            }
            End::Shutdown => {
                // Deliver what is already queued, then say why we go.
                while let Ok(true) = self.flush_outbox().await {}
                self.out.push(server::reset(None, ResetReason::Shutdown));
            }
            End::TooLarge => self.out.push(self.too_large()),
            _ => {}
        }
        // The cursor is read before the session ends and lets go of its
        // subscriptions.
        let cursor = self.cursor();
        self.session.end();
        let count = self.out.len();
        let goodbye = Goodbye {
            last: &mut self.out,
            cursor: &cursor,
            close: end.close(),
        };
        if let Ok(Ok(())) = timeout(GOODBYE_TIMEOUT, self.wire.close(goodbye)).await {
            telemetry.messages_out(count);
        }
    }

    /// The error said before closing on a message over the size limit.
    fn too_large(&self) -> Bytes {
        let node = &self.shared.node;
        node.limiters().counters.hit(limits::Limit::FrameSize);
        node.telemetry().error(ErrorCode::BadMessage);
        let limit = self.shared.settings.max_frame_bytes;
        server::error(
            ErrorCode::BadMessage,
            &format!("frame larger than {limit} bytes"),
            ErrorContext::default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateway_closes_are_counted() {
        assert_eq!(End::Gone.close_reason(), None);
        assert_eq!(End::ClientClosed.close_reason(), None);
        assert_eq!(End::Answered.close_reason(), None);
        assert_eq!(End::Shutdown.close_reason(), Some(CloseReason::Shutdown));
        let disconnected = End::Disconnected("maintenance".into());
        assert_eq!(
            disconnected.close(),
            Some((CloseCode::PolicyViolation, "maintenance"))
        );
        assert_eq!(
            End::from(Stop::Overflowed).close_reason(),
            Some(CloseReason::SlowConsumer)
        );
        let bare = End::NothingHeld("no subscription within 30s".into());
        assert_eq!(
            bare.close(),
            Some((CloseCode::PolicyViolation, "no subscription within 30s"))
        );
    }

    #[test]
    fn deadlines_read_as_configured() {
        assert_eq!(short(Duration::from_secs(30)), "30s");
        assert_eq!(short(Duration::from_millis(250)), "250ms");
        assert_eq!(short(Duration::from_millis(1500)), "1500ms");
    }
}
