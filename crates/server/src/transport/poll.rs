//! Long-polling transport (`GET /poll?sub=<token>&cursor=<cursor>&timeout=<s>`).
//!
//! Stateless between requests: each request subscribes afresh, resumes from
//! the cursor exactly as `since` would, waits up to `transports.poll_wait`
//! (or the `timeout` asked for, if shorter) for something to say, and answers
//! `{"messages": [...], "cursor": "..."}`. The next request sends that
//! cursor back, so any node behind a load balancer can serve it. The first
//! request (no cursor) answers at once with snapshots and the `ack`; later
//! requests leave out the `ack`s, which only repeat what the client knows.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use chouquette_core::clock::unix_now;
use chouquette_core::connections::Transport;
use chouquette_core::session::Session;
use chouquette_protocol::{ResetReason, server};

use super::url;
use crate::api::error_response;
use crate::gateway::Gateway;

/// Answers one poll.
pub async fn poll(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refusal) = shared.refuse_connection(peer) {
        return refusal;
    }
    let request = match url::parse_query(query.as_deref()) {
        Ok(r) => r,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "bad_message", &message),
    };
    let _guard = shared.shutdown.connection("poll");
    let mut session = Session::new(shared.node.clone(), Transport::Poll);
    let mut messages = Vec::new();
    url::subscribe_all(&mut session, &request, &mut messages).await;
    if request.cursor.is_some() {
        messages.retain(|m| !server::is_ack(m));
    }
    if messages.is_empty() {
        let wait = request
            .wait_secs
            .map_or(shared.settings.poll_wait, Duration::from_secs)
            .min(shared.settings.poll_wait);
        wait_for_live(&shared, &mut session, &mut messages, wait).await;
    }
    shared.node.telemetry.messages_out(messages.len());
    let body = answer(&messages, &url::encode_cursor(session.positions()));
    // The answer is built: its live frames count as written now.
    session.written(true);
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn wait_for_live(
    shared: &Gateway,
    session: &mut Session,
    messages: &mut Vec<Bytes>,
    wait: Duration,
) {
    let outbox = session.outbox().clone();
    let mut stop = shared.shutdown.clone();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let expiry = session.next_expiry().map(super::deadline);
        tokio::select! {
            biased;
            _ = stop.stopped() => {
                messages.push(server::reset(None, ResetReason::Shutdown));
                return;
            }
            _ = outbox.ready() => {
                // Overflowed or disconnected: answer with what there is.
                if session.take_live(messages, usize::MAX).is_err() || !messages.is_empty() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(expiry.unwrap_or(deadline)), if expiry.is_some() => {
                session.expire(unix_now(), messages);
                if !messages.is_empty() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// `{"messages":[...],"cursor":"..."}` from already-serialized messages.
fn answer(messages: &[Bytes], cursor: &str) -> Bytes {
    let size: usize = messages.iter().map(|m| m.len() + 1).sum::<usize>() + cursor.len() + 32;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(b"{\"messages\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(m);
    }
    out.put_slice(b"],\"cursor\":");
    out.put_slice(serde_json::to_string(cursor).unwrap_or_default().as_bytes());
    out.put_u8(b'}');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_is_json() {
        let body = answer(
            &[
                Bytes::from_static(b"{\"a\":1}"),
                Bytes::from_static(b"{\"b\":2}"),
            ],
            "c",
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["messages"][1]["b"], 2);
        assert_eq!(v["cursor"], "c");
    }
}
