//! WebSocket transport (`GET /ws`).
//!
//! One task per connection runs a single loop over: the stop signal, the
//! session's outbox (live events, written in batches: feed many frames, flush
//! once), the socket (client messages), and the next token expiry. Every
//! write has a deadline; a client that cannot take its frames in time, or
//! whose outbox overflows, is closed with 1013 `slow_consumer` and resumes
//! with `since` on reconnect.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chouquette_core::outbox::{Outbound, State as OutboxState};
use chouquette_core::session::{Session, Verdict, unix_now};
use chouquette_core::telemetry::CloseReason;
use chouquette_protocol::server::ErrorContext;
use chouquette_protocol::{CloseCode, ErrorCode, ResetReason, server};
use futures_util::SinkExt;
use tokio::time::{Instant, sleep_until, timeout};

use crate::serve::Shared;

/// Frames taken from the outbox per write batch.
const BATCH: usize = 256;

/// Why the connection loop ended.
enum End {
    /// The client closed, or the socket failed.
    Gone,
    /// The node is stopping.
    Shutdown,
    /// Outbox overflow or a write past its deadline.
    SlowConsumer,
    /// Past the bad-message limit.
    Misbehaving(CloseCode, &'static str),
    /// A frame over the hard limit.
    TooLarge,
}

/// Upgrades to WebSocket, unless the node is full or stopping.
pub async fn upgrade(State(shared): State<Shared>, ws: WebSocketUpgrade) -> Response {
    if let Some(refusal) = shared.refuse_connection() {
        return refusal;
    }
    let limits = &shared.settings;
    ws.read_buffer_size(4096)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(limits.max_frame_bytes.saturating_mul(4))
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| run(socket, shared))
        .into_response()
}

async fn run(mut socket: WebSocket, shared: Shared) {
    let _guard = shared.shutdown.connection();
    let mut stop = shared.shutdown.clone();
    let mut session = Session::new(shared.node.clone());
    let outbox = session.outbox().clone();
    let write_timeout = shared.settings.write_timeout;
    let mut replies: Vec<Bytes> = Vec::new();
    let end = loop {
        let expiry = session.next_expiry().map(deadline);
        tokio::select! {
            biased;
            _ = stop.stopped() => break End::Shutdown,
            _ = outbox.ready() => {
                if let Err(end) = flush_outbox(&mut socket, &mut session, &shared, write_timeout).await {
                    break end;
                }
            }
            message = socket.recv() => {
                let verdict = match message {
                    None | Some(Ok(Message::Close(_))) => break End::Gone,
                    Some(Err(e)) => break if is_capacity(e) { End::TooLarge } else { End::Gone },
                    Some(Ok(Message::Text(text))) => session.handle(text.as_str(), &mut replies).await,
                    Some(Ok(Message::Binary(_))) => {
                        session.bad_message("binary frames are not accepted: send JSON text", None, &mut replies)
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Verdict::Continue,
                };
                if let Err(end) = write(&mut socket, replies.drain(..), &shared, write_timeout).await {
                    break end;
                }
                if let Verdict::Close(code, reason) = verdict {
                    break End::Misbehaving(code, reason);
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
    finish(socket, session, end, &shared).await;
}

/// The instant a Unix time (seconds) is reached.
fn deadline(unix: u64) -> Instant {
    let wait = unix.saturating_sub(unix_now());
    Instant::now() + Duration::from_secs(wait.min(365 * 24 * 3600))
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
    shared: &Shared,
    limit: Duration,
) -> Result<(), End> {
    let outbox = session.outbox().clone();
    let mut batch: Vec<Outbound> = Vec::new();
    loop {
        batch.clear();
        if outbox.drain(&mut batch, BATCH) == OutboxState::Overflowed {
            return Err(End::SlowConsumer);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let frames: Vec<Bytes> = batch
            .drain(..)
            .filter(|item| session.admit(item))
            .map(|item| item.frame)
            .collect();
        write(socket, frames.into_iter(), shared, limit).await?;
    }
}

/// Feeds every frame, then flushes once, all within `limit`.
async fn write(
    socket: &mut WebSocket,
    frames: impl Iterator<Item = Bytes>,
    shared: &Shared,
    limit: Duration,
) -> Result<(), End> {
    let mut count = 0;
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

async fn finish(mut socket: WebSocket, mut session: Session, end: End, shared: &Shared) {
    let telemetry = &shared.node.telemetry;
    let short = Duration::from_secs(1);
    let (code, reason, last): (CloseCode, &str, Vec<Bytes>) = match end {
        End::Gone => {
            session.end();
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
        End::Misbehaving(code, reason) => {
            telemetry.closed_by_gateway(CloseReason::Misbehaving);
            (code, reason, Vec::new())
        }
        End::TooLarge => {
            telemetry.closed_by_gateway(CloseReason::TooLarge);
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
    let _ = write(&mut socket, last.into_iter(), shared, short).await;
    let close = Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from(reason),
    }));
    let _ = timeout(short, socket.send(close)).await;
}

/// Settings the transport needs, derived from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most open connections.
    pub max_connections: usize,
    /// Largest frame read.
    pub max_frame_bytes: usize,
    /// Deadline of one write batch.
    pub write_timeout: Duration,
}

/// Shared by reference so the handler state stays one pointer wide.
pub type SharedSettings = Arc<Settings>;
