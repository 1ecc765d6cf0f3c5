//! Server-Sent Events transport (`GET /sse?sub=<token>&sub=...`).
//!
//! The same session as WebSocket; only framing differs. Each message is one
//! SSE event (`data:` one JSON object). Every batch of messages ends with an
//! `id:` line holding the resume cursor, so a reconnecting `EventSource`
//! sends it back as `Last-Event-ID` and resumes exactly as `since` would. A
//! connection lost in the middle of a batch resumes from the batch's start:
//! events may then repeat, never go missing (clients drop offsets they have
//! seen). Comment lines every `transports.sse_heartbeat` keep proxies from
//! closing an idle stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use chouquette_core::clock::unix_now;
use chouquette_core::connections::Transport;
use chouquette_core::session::{Session, Stop};
use chouquette_core::telemetry::{CloseReason, Telemetry};
use chouquette_protocol::{ResetReason, server};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use super::url::{self, UrlRequest};
use crate::api::error_response;
use crate::gateway::Gateway;

/// Chunks buffered between the session task and the HTTP body.
const CHUNKS: usize = 8;

/// Opens an event stream, unless the node is full or stopping.
pub async fn stream(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refusal) = shared.refuse_connection(peer) {
        return refusal;
    }
    let mut request = match url::parse_query(query.as_deref()) {
        Ok(r) => r,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "bad_message", &message),
    };
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        request.cursor = Some(last.to_string());
    }
    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS);
    tokio::spawn(run(shared, request, tx));
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

struct Sender {
    tx: mpsc::Sender<Bytes>,
    limit: Duration,
    telemetry: Arc<Telemetry>,
}

impl Sender {
    /// Sends a batch with the session's cursor; false when the client is gone or too slow.
    /// The live frames in it are reported to the session as written (or not).
    async fn batch(&self, session: &mut Session, messages: &mut Vec<Bytes>) -> bool {
        if messages.is_empty() {
            return true;
        }
        let chunk = events(messages, &url::encode_cursor(session.positions()));
        let count = messages.len();
        messages.clear();
        let sent = self.chunk(chunk).await;
        if sent {
            self.telemetry.messages_out(count);
        }
        session.written(sent);
        sent
    }

    async fn chunk(&self, chunk: Bytes) -> bool {
        matches!(timeout(self.limit, self.tx.send(chunk)).await, Ok(Ok(())))
    }
}

async fn run(shared: Gateway, request: UrlRequest, tx: mpsc::Sender<Bytes>) {
    let _guard = shared.shutdown.connection("sse");
    let mut stop = shared.shutdown.clone();
    let mut session = Session::new(shared.node.clone(), Transport::Sse);
    let outbox = session.outbox().clone();
    let telemetry = shared.node.telemetry.clone();
    let sender = Sender {
        tx,
        limit: shared.settings.write_timeout,
        telemetry: telemetry.clone(),
    };
    let heartbeat = shared.settings.sse_heartbeat;
    let mut messages = Vec::new();
    // Tell the browser how long to wait before reconnecting.
    if !sender.chunk(Bytes::from_static(b"retry: 2000\n\n")).await {
        return;
    }
    url::subscribe_all(&mut session, &request, &mut messages).await;
    if !sender.batch(&mut session, &mut messages).await {
        return;
    }
    let mut next_beat = Instant::now() + heartbeat;
    loop {
        let expiry = session.next_expiry().map(super::deadline);
        tokio::select! {
            biased;
            _ = stop.stopped() => {
                let _ = session.take_live(&mut messages, usize::MAX);
                messages.push(server::reset(None, ResetReason::Shutdown));
                let _ = sender.batch(&mut session, &mut messages).await;
                break;
            }
            _ = outbox.ready() => {
                match session.take_live(&mut messages, usize::MAX) {
                    Err(Stop::Disconnected(_)) => {
                        telemetry.closed_by_gateway(CloseReason::Disconnected);
                        break;
                    }
                    Err(Stop::Overflowed) => {
                        telemetry.closed_by_gateway(CloseReason::SlowConsumer);
                        break;
                    }
                    Ok(_) if !sender.batch(&mut session, &mut messages).await => {
                        telemetry.closed_by_gateway(CloseReason::SlowConsumer);
                        break;
                    }
                    Ok(_) => {}
                }
            }
            _ = sleep_until(next_beat) => {
                if !sender.chunk(Bytes::from_static(b": heartbeat\n\n")).await {
                    break;
                }
                next_beat = Instant::now() + heartbeat;
            }
            _ = sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                session.expire(unix_now(), &mut messages);
                if !sender.batch(&mut session, &mut messages).await {
                    break;
                }
            }
            _ = sender.tx.closed() => break,
        }
    }
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
}
