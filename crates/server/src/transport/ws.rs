//! WebSocket transport (`GET /ws`).
//!
//! One task per connection runs a single loop over: the stop signal, the
//! session's outbox (live events, written in batches: feed many frames, flush
//! once), the socket (client messages), and the next token expiry. Every
//! write has a deadline; a client that cannot take its frames in time, or
//! whose outbox overflows, is closed with 1013 `slow_consumer` and resumes
//! with `since` on reconnect. An operator's disconnect closes with 1008 and
//! the operator's reason.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chouquette_core::clock::unix_now;
use chouquette_core::connections::Transport;
use chouquette_core::limits;
use chouquette_core::session::{Session, Stop, Verdict};
use chouquette_core::telemetry::CloseReason;
use chouquette_protocol::server::ErrorContext;
use chouquette_protocol::{CloseCode, ErrorCode, ResetReason, server};
use futures_util::SinkExt;
use tokio::time::{Instant, sleep_until, timeout};

use crate::gateway::Gateway;

/// Read buffer per connection: client messages are small (a subscribe with
/// its tokens is well under 1 KiB); larger ones are read in several chunks.
const READ_BUFFER: usize = 1024;

/// Frames taken from the outbox per write batch.
const BATCH: usize = 256;

/// Why the connection loop ended.
enum End {
    /// The client closed, or the socket failed.
    Gone,
    /// The client sent a close frame: answer it, completing the handshake.
    ClientClosed,
    /// The node is stopping.
    Shutdown,
    /// Outbox overflow or a write past its deadline.
    SlowConsumer,
    /// Past the bad-message limit.
    Misbehaving(CloseCode, &'static str),
    /// A frame over the hard limit.
    TooLarge,
    /// Nothing heard from the client for the idle timeout.
    Idle,
    /// An operator disconnected the user, with this reason.
    Disconnected(Box<str>),
}

/// Upgrades to WebSocket, unless the node is full or stopping.
pub async fn upgrade(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refusal) = shared.refuse_connection(peer) {
        return refusal;
    }
    let limits = &shared.settings;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(limits.max_frame_bytes.saturating_mul(4))
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| run(socket, shared, peer))
        .into_response()
}

async fn run(mut socket: WebSocket, shared: Gateway, peer: Option<std::net::IpAddr>) {
    let _guard = shared.shutdown.connection("websocket");
    let mut stop = shared.shutdown.clone();
    let mut session = Session::new(shared.node.clone(), Transport::Ws);
    let outbox = session.outbox().clone();
    let write_timeout = shared.settings.write_timeout;
    let mut replies: Vec<Bytes> = Vec::new();
    let mut heartbeat = Heartbeat::new(&shared.settings);
    let end = loop {
        let expiry = session.next_expiry().map(super::deadline);
        let next_ping = heartbeat.next_ping();
        tokio::select! {
            biased;
            _ = stop.stopped() => break End::Shutdown,
            _ = outbox.ready() => {
                if let Err(end) = flush_outbox(&mut socket, &mut session, &shared, write_timeout).await {
                    break end;
                }
            }
            message = socket.recv() => {
                heartbeat.heard();
                let verdict = match message {
                    None => break End::Gone,
                    Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    Some(Err(e)) => break if is_capacity(e) { End::TooLarge } else { End::Gone },
                    // Boxed: handling a message is rare next to idling, and its future is
                    // large; inline, it would sit in every idle connection's task.
                    Some(Ok(Message::Text(text))) => Box::pin(session.handle(text.as_str(), &mut replies)).await,
                    Some(Ok(Message::Binary(_))) => {
                        session.bad_message("binary frames are not accepted: send JSON text", None, &mut replies)
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Verdict::Continue,
                };
                if let Err(end) = write(&mut socket, replies.drain(..), &shared, write_timeout).await {
                    break end;
                }
                if let Verdict::Close(code, reason) = verdict {
                    if reason == limits::ABUSE_CLOSE_REASON && let Some(ip) = peer {
                        // Its reconnections get a cheap 429 for a while.
                        let key = limits::address_key(ip);
                        shared.node.limiters.addresses.penalize(key, std::time::Instant::now());
                    }
                    break End::Misbehaving(code, reason);
                }
            }
            _ = sleep_until(next_ping.unwrap_or_else(Instant::now)), if next_ping.is_some() => {
                if heartbeat.is_dead() {
                    break End::Idle;
                }
                heartbeat.pinged();
                let ping = socket.send(Message::Ping(Bytes::new()));
                if !matches!(timeout(write_timeout, ping).await, Ok(Ok(()))) {
                    break End::SlowConsumer;
                }
            }
            _ = sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                session.expire(unix_now(), &mut replies);
                if let Err(end) = write(&mut socket, replies.drain(..), &shared, write_timeout).await {
                    break end;
                }
            }
        }
    };
    Box::pin(finish(socket, session, end, &shared)).await;
}

/// Server pings, and the silence after which a client counts as dead.
struct Heartbeat {
    interval: Duration,
    idle: Duration,
    last_heard: Instant,
    last_ping: Instant,
}

impl Heartbeat {
    fn new(settings: &crate::gateway::Settings) -> Heartbeat {
        let now = Instant::now();
        Heartbeat {
            interval: settings.ping_interval,
            idle: settings.idle_timeout,
            last_heard: now,
            last_ping: now,
        }
    }

    /// When the next ping (and liveness check) is due, if pings are on.
    fn next_ping(&self) -> Option<Instant> {
        (!self.interval.is_zero()).then(|| self.last_ping + self.interval)
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    fn pinged(&mut self) {
        self.last_ping = Instant::now();
    }

    fn is_dead(&self) -> bool {
        !self.idle.is_zero() && self.last_heard.elapsed() >= self.idle
    }
}

fn is_capacity(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)))
}

/// Writes every live frame waiting in the outbox, in batches.
async fn flush_outbox(
    socket: &mut WebSocket,
    session: &mut Session,
    shared: &Gateway,
    limit: Duration,
) -> Result<(), End> {
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        match session.take_live(&mut frames, BATCH) {
            Err(Stop::Overflowed) => return Err(End::SlowConsumer),
            Err(Stop::Disconnected(reason)) => return Err(End::Disconnected(reason)),
            Ok(0) => return Ok(()),
            Ok(_) => {
                let written = write(socket, frames.drain(..), shared, limit).await;
                session.written(written.is_ok());
                written?;
            }
        }
    }
}

/// Feeds every frame, then flushes once, all within `limit`.
async fn write(
    socket: &mut WebSocket,
    frames: impl Iterator<Item = Bytes>,
    shared: &Gateway,
    limit: Duration,
) -> Result<(), End> {
    let mut count: usize = 0;
    let work = async {
        for frame in frames {
            let Ok(text) = Utf8Bytes::try_from(frame) else {
                continue; // every frame is serialized JSON; never taken
            };
            socket.feed(Message::Text(text)).await?;
            count += 1;
        }
        if count > 0 {
            socket.flush().await?;
        }
        Ok::<_, axum::Error>(count)
    };
    match timeout(limit, work).await {
        Ok(Ok(n)) => {
            shared.node.telemetry.messages_out(n);
            Ok(())
        }
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::SlowConsumer),
    }
}

async fn finish(mut socket: WebSocket, mut session: Session, end: End, shared: &Gateway) {
    let telemetry = &shared.node.telemetry;
    let short = Duration::from_secs(1);
    let disconnect_reason;
    let (code, reason, last): (CloseCode, &str, Vec<Bytes>) = match end {
        End::Gone => {
            session.end();
            return;
        }
        End::ClientClosed => {
            session.end();
            // The reply to the client's close frame is queued by the
            // WebSocket layer; flushing sends it, so the client sees a clean close.
            let _ = timeout(short, socket.flush()).await;
            return;
        }
        End::Shutdown => {
            telemetry.closed_by_gateway(CloseReason::Shutdown);
            // Deliver what is already queued, then say why we go.
            let _ = flush_outbox(
                &mut socket,
                &mut session,
                shared,
                shared.settings.write_timeout,
            )
            .await;
            let reset = server::reset(None, ResetReason::Shutdown);
            (CloseCode::GoingAway, "shutdown", vec![reset])
        }
        End::SlowConsumer => {
            telemetry.closed_by_gateway(CloseReason::SlowConsumer);
            (CloseCode::TryAgainLater, "slow_consumer", Vec::new())
        }
        End::Disconnected(reason) => {
            telemetry.closed_by_gateway(CloseReason::Disconnected);
            disconnect_reason = reason;
            (CloseCode::PolicyViolation, &*disconnect_reason, Vec::new())
        }
        End::Misbehaving(code, reason) => {
            telemetry.closed_by_gateway(CloseReason::Misbehaving);
            (code, reason, Vec::new())
        }
        End::Idle => {
            telemetry.closed_by_gateway(CloseReason::Idle);
            (CloseCode::GoingAway, "idle_timeout", Vec::new())
        }
        End::TooLarge => {
            telemetry.closed_by_gateway(CloseReason::TooLarge);
            let limit = limits::Limit::FrameSize;
            shared.node.limiters.counters.hit(limit);
            telemetry.error(ErrorCode::BadMessage);
            let limit = shared.settings.max_frame_bytes;
            let error = server::error(
                ErrorCode::BadMessage,
                &format!("frame larger than {limit} bytes"),
                ErrorContext::default(),
            );
            (CloseCode::MessageTooBig, "message too big", vec![error])
        }
    };
    session.end();
    // The last messages and the close frame go out in one flush: written
    // separately, the close frame could be held back (Nagle) and then lost
    // when the socket is reset because the client is still sending (e.g. the
    // rest of a frame over the size limit).
    let close = Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from(reason.to_string()),
    }));
    let frames = last
        .into_iter()
        .filter_map(|frame| Utf8Bytes::try_from(frame).ok().map(Message::Text))
        .chain(std::iter::once(close));
    let mut count: usize = 0;
    let work = async {
        for frame in frames {
            socket.feed(frame).await?;
            count += 1;
        }
        socket.flush().await
    };
    if let Ok(Ok(())) = timeout(short, work).await {
        telemetry.messages_out(count.saturating_sub(1));
    }
}
