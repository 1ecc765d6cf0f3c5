//! Server-Sent Events transport (`GET /sse?sub=<token>&sub=...` for a plain
//! `EventSource`, or `POST /sse` with the tokens in a JSON body, see
//! [`url`]): the request, and its [`Wire`].
//!
//! The same session and [`driver`](super::driver) loop as WebSocket; only
//! framing differs. Each message is one SSE event (`data:` one JSON object).
//! Every batch of messages ends with an `id:` line holding the resume cursor,
//! so a reconnecting `EventSource` sends it back as `Last-Event-ID` and
//! resumes exactly as `since` would. A connection lost in the middle of a
//! batch resumes from the batch's start: events may then repeat, never go
//! missing (clients drop offsets they have seen). Comment lines every
//! `transports.sse_heartbeat` keep proxies from closing an idle stream. The
//! stream has no inbound side: the client is gone when the body is dropped.

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use chouquette_core::connections::Transport;
use chouquette_core::session::Session;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::auth::{self, Prepared};
use super::driver::{self, Gone, Goodbye, Inbound, Wire};
use super::url::{self, UrlRequest};
use crate::api::error_response;
use crate::gateway::{Gateway, Settings};

/// Chunks buffered between the session task and the HTTP body.
const CHUNKS: usize = 8;

/// Tells the browser how long to wait before reconnecting.
const RETRY: &[u8] = b"retry: 2000\n\n";

/// Keeps proxies from closing an idle stream.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// Opens an event stream for the tokens of the query string, unless the
/// node is full or stopping.
pub async fn stream(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    open(shared, peer, &headers, url::Carried::Query(query)).await
}

/// Opens an event stream for the tokens of a JSON body (`POST`), unless the
/// node is full or stopping.
pub async fn stream_body(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    open(shared, peer, &headers, url::Carried::Body(body)).await
}

/// Runs connect auth when it applies (its refusal is the answer), then
/// starts the stream's task and answers with its body. `Last-Event-ID`,
/// which a reconnecting `EventSource` sends, wins over a `cursor`. Without
/// connect auth, a request needs tokens.
async fn open(
    shared: Gateway,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    carried: url::Carried,
) -> Response {
    let (mut request, no_tokens) = match url::accept(&shared, peer, carried).await {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal,
    };
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        request.cursor = Some(last.to_string());
    }
    let since = url::positions(&request);
    let app = request.app.as_deref();
    let prepared = match auth::prepare(&shared, Transport::Sse, peer, headers, app, &since).await {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal,
    };
    if prepared.is_none() && request.tokens.is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "bad_message", no_tokens);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS);
    tokio::spawn(run(shared, peer, request, tx, prepared));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The stream's task. Built outside its `async` block, which then holds each
/// part once: every idle stream keeps this future. A session accepted by
/// connect auth comes `prepared`, with its first messages.
fn run(
    shared: Gateway,
    peer: Option<IpAddr>,
    request: UrlRequest,
    tx: mpsc::Sender<Bytes>,
    prepared: Option<Prepared>,
) -> impl Future<Output = ()> {
    let guard = shared.shutdown.connection("sse");
    let (session, opening) = prepared.unwrap_or_else(|| {
        (
            Session::new(shared.node.clone(), Transport::Sse),
            Vec::new(),
        )
    });
    let write_timeout = shared.settings.write_timeout;
    let mut driver = driver::Driver::new(SseWire { tx }, session, shared, peer, opening);
    async move {
        let (wire, session, opening) = driver.parts();
        let retry = wire.send(Bytes::from_static(RETRY));
        if !matches!(timeout(write_timeout, retry).await, Ok(Ok(()))) {
            return;
        }
        // Boxed: subscribing runs once, and its future is large.
        Box::pin(url::subscribe_all(session, &request, opening)).await;
        drop(request);
        driver.drive().await;
        drop(guard);
    }
}

/// The body of an event stream as the driver's wire.
struct SseWire {
    tx: mpsc::Sender<Bytes>,
}

impl SseWire {
    async fn send(&self, chunk: Bytes) -> Result<(), Gone> {
        self.tx.send(chunk).await.map_err(|_| Gone)
    }
}

impl Wire for SseWire {
    type Text = Box<str>;

    const BATCH: usize = usize::MAX;

    const CURSOR: bool = true;

    async fn write(&mut self, batch: &mut Vec<Bytes>, cursor: &str) -> Result<(), Gone> {
        let chunk = events(batch, cursor);
        batch.clear();
        self.send(chunk).await
    }

    /// The last messages, if any, as one more batch; the stream then ends
    /// (SSE has no close message).
    async fn close(&mut self, goodbye: Goodbye<'_>) -> Result<(), Gone> {
        if goodbye.last.is_empty() {
            return Ok(());
        }
        self.write(goodbye.last, goodbye.cursor).await
    }

    async fn recv(&mut self) -> Inbound<Box<str>> {
        self.tx.closed().await;
        Inbound::Gone
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        self.send(Bytes::from_static(HEARTBEAT)).await
    }

    fn ping_interval(settings: &Settings) -> Duration {
        settings.sse_heartbeat
    }
}

/// Frames `messages` as SSE events, the cursor on the last one.
fn events(messages: &[Bytes], cursor: &str) -> Bytes {
    let size: usize = messages.iter().map(|m| m.len() + 8).sum::<usize>() + cursor.len() + 8;
    let mut out = BytesMut::with_capacity(size);
    for (i, m) in messages.iter().enumerate() {
        if i + 1 == messages.len() {
            out.put_slice(b"id: ");
            out.put_slice(cursor.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_slice(b"data: ");
        out.put_slice(m);
        out.put_slice(b"\n\n");
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_message_cursor_last() {
        let text = events(
            &[
                Bytes::from_static(b"{\"a\":1}"),
                Bytes::from_static(b"{\"b\":2}"),
            ],
            "CUR",
        );
        assert_eq!(
            &text[..],
            b"data: {\"a\":1}\n\nid: CUR\ndata: {\"b\":2}\n\n"
        );
    }

    /// The size of the future `f` returns, without calling it.
    fn output_size<F, A, B, C, D, E, R>(_: &F) -> usize
    where
        F: Fn(A, B, C, D, E) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every idle stream holds its task's future: it must not grow (test
    /// profile: 1,488 bytes before the driver, 1,208 with it; 1,304 once
    /// the driver owns its wire and session, built before the stream
    /// subscribes so the task holds the session once).
    #[test]
    fn the_stream_task_stays_small() {
        let size = output_size(&run);
        eprintln!("SSE stream task: {size} bytes");
        assert!(size <= 1304, "{size} bytes");
    }
}
