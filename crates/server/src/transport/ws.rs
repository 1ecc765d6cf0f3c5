//! WebSocket transport (`GET /ws`): the upgrade, and its [`Wire`].
//!
//! The connection runs the [`driver`](super::driver) loop; this file only
//! says how messages become frames. Live messages are text frames written in
//! batches (feed many, flush once); the server pings every
//! `limits.ping_interval`, and any frame from the client counts as a sign of
//! life for the idle timeout. The last messages and the close frame go out
//! in one flush. A client offering the `chouquette.v1` subprotocol
//! (`Sec-WebSocket-Protocol`) has it selected in the answer, as browsers
//! require; a client offering none is served all the same.

use std::net::IpAddr;
use std::time::Duration;

use std::collections::BTreeMap;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chouquette_core::connections::Transport;
use chouquette_core::session::Session;
use futures_util::SinkExt;

use super::auth::{self, Prepared};
use super::driver::{self, Gone, Goodbye, Inbound, Wire};
use crate::gateway::{Gateway, Settings};

/// Read buffer per connection, and the most read per system call. Every
/// idle connection keeps its buffer (tungstenite never gives it back), sized
/// to the largest frame it received: starting at 256 bytes instead of
/// 1 KiB saved ~500 bytes per idle subscribed connection (crates/bench
/// README, "Memory per idle connection"). Client messages are rare and
/// small; a larger one is read in several chunks.
const READ_BUFFER: usize = 256;

/// Bytes gathered before the socket is written to (many small frames of a
/// batch go out in one write).
const WRITE_BUFFER: usize = 8 * 1024;

/// Room for what a `data` message adds around its `data`: names, keywords
/// (at most 64 of 512 bytes, each escaped up to six times over), the
/// envelope. Bounded by the event's field limits, whatever the payload.
const ENVELOPE_ROOM: usize = 256 * 1024;

/// Most bytes the WebSocket layer may hold unwritten: one write buffer plus
/// the largest message the gateway can have to send. It is independent of
/// `max_frame_bytes`, which bounds what the client sends. Every source's
/// events have their `data` bounded by `max_publish_bytes` (the ingest
/// pipeline refuses larger ones), and `data` is kept as raw JSON, so an
/// outgoing message is at most that plus [`ENVELOPE_ROOM`]. Over this,
/// tungstenite would refuse the frame (`WriteBufferFull`) and the connection
/// could not say it, neither live nor on replay. Memory stays bounded: the
/// sink flushes before taking another message once the write buffer is full.
fn max_write_buffer(max_publish_bytes: usize) -> usize {
    max_publish_bytes
        .saturating_add(ENVELOPE_ROOM)
        .saturating_add(WRITE_BUFFER)
}

/// The smallest `limits.max_frame_bytes` the config accepts. Under it, a
/// subscribe carrying one ordinary token (a few hundred bytes to over a
/// KiB with its message) may not fit in a frame, which would leave a gateway
/// that accepts connections and can serve none of them.
pub const MIN_FRAME_BYTES: usize = 2049;

/// Upgrades to WebSocket, unless the node is full or stopping, or connect
/// auth applies (`?app=`, see [`crate::connect_auth`]) and refuses.
pub async fn upgrade(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refusal) = shared.refuse_connection(peer) {
        return refusal;
    }
    let app = app_param(query.as_deref());
    let none = BTreeMap::new();
    let prepared = match auth::prepare(
        &shared,
        Transport::Ws,
        peer,
        &headers,
        app.as_deref(),
        &none,
    )
    .await
    {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal,
    };
    let limits = &shared.settings;
    // Selected only when the client offers it; a client offering nothing
    // (or only other names) is served without the header, as before.
    ws.protocols([chouquette_protocol::PROTOCOL_NAME])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max_write_buffer(shared.max_publish_bytes))
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| run(socket, shared, peer, prepared))
        .into_response()
}

/// The `app` query parameter, if any. The rest of the query is ignored, as
/// it always was on `/ws`, and so is a query that does not parse: without
/// `app`, the one app with connect auth still applies (never skipped).
fn app_param(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == "app").map(|(_, v)| v)
}

/// The connection's task. Built outside its `async` block, which then holds
/// each part once: every idle connection keeps this future. A session
/// accepted by connect auth comes `prepared`, with its first messages.
fn run(
    socket: WebSocket,
    shared: Gateway,
    peer: Option<IpAddr>,
    prepared: Option<Prepared>,
) -> impl Future<Output = ()> {
    let guard = shared.shutdown.connection("websocket");
    let (mut session, opening) =
        prepared.unwrap_or_else(|| (Session::new(shared.node.clone(), Transport::Ws), Vec::new()));
    let mut wire = WsWire { socket };
    async move {
        driver::drive(&mut wire, &mut session, &shared, peer, opening).await;
        drop(guard);
    }
}

/// A WebSocket as the driver's wire.
struct WsWire {
    socket: WebSocket,
}

impl WsWire {
    /// Queues `messages` as text frames, without flushing.
    async fn feed(&mut self, messages: &mut Vec<Bytes>) -> Result<(), axum::Error> {
        for message in messages.drain(..) {
            let Ok(text) = Utf8Bytes::try_from(message) else {
                continue; // every message is serialized JSON; never taken
            };
            self.socket.feed(Message::Text(text)).await?;
        }
        Ok(())
    }
}

impl Wire for WsWire {
    type Text = Utf8Bytes;

    const BATCH: usize = 256;

    const CURSOR: bool = false;

    async fn write(&mut self, batch: &mut Vec<Bytes>, _cursor: &str) -> Result<(), Gone> {
        self.feed(batch).await.map_err(|_| Gone)?;
        self.socket.flush().await.map_err(|_| Gone)
    }

    async fn close(&mut self, goodbye: Goodbye<'_>) -> Result<(), Gone> {
        // Written separately, the close frame could be held back (Nagle) and
        // then lost when the socket is reset because the client is still
        // sending (e.g. the rest of a frame over the size limit).
        self.feed(goodbye.last).await.map_err(|_| Gone)?;
        if let Some((code, reason)) = goodbye.close {
            let frame = CloseFrame {
                code: code.code(),
                reason: Utf8Bytes::from(reason),
            };
            self.socket
                .feed(Message::Close(Some(frame)))
                .await
                .map_err(|_| Gone)?;
        }
        // Without a close of ours, this sends the WebSocket layer's reply to
        // the client's close frame, so the client sees a clean close.
        self.socket.flush().await.map_err(|_| Gone)
    }

    async fn recv(&mut self) -> Inbound<Utf8Bytes> {
        match self.socket.recv().await {
            None => Inbound::Gone,
            Some(Err(e)) if is_capacity(&e) => Inbound::TooLarge,
            Some(Err(_)) => Inbound::Gone,
            Some(Ok(Message::Text(text))) => Inbound::Text(text),
            Some(Ok(Message::Binary(_))) => Inbound::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Heard,
            Some(Ok(Message::Close(_))) => Inbound::Closed,
        }
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        let ping = Message::Ping(Bytes::new());
        self.socket.send(ping).await.map_err(|_| Gone)
    }

    fn ping_interval(settings: &Settings) -> Duration {
        settings.ping_interval
    }

    fn idle_timeout(settings: &Settings) -> Duration {
        settings.idle_timeout
    }
}

/// Whether a read failed on the size limit.
fn is_capacity(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|e| e.downcast_ref::<tokio_tungstenite::tungstenite::Error>())
        .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_parameter_is_read_and_the_rest_ignored() {
        assert_eq!(
            app_param(Some("x=1&app=bluelib")).as_deref(),
            Some("bluelib")
        );
        assert_eq!(app_param(Some("x=1")), None);
        assert_eq!(app_param(None), None);
    }

    /// The size of the future `f` returns, without calling it.
    fn output_size<F, A, B, C, D, R>(_: &F) -> usize
    where
        F: Fn(A, B, C, D) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every idle connection holds its task's future: it must not grow
    /// (test profile: 1,952 bytes before the driver, 1,432 with it).
    #[test]
    fn the_connection_task_stays_small() {
        let size = output_size(&run);
        eprintln!("WebSocket connection task: {size} bytes");
        assert!(size <= 1952, "{size} bytes");
    }
}
