//! Long-polling transport (`GET /poll?sub=<token>&cursor=<cursor>&timeout=<s>`,
//! or `POST /poll` with the same in a JSON body, see [`url`]): the request,
//! and its [`Wire`].
//!
//! Stateless between requests: each request subscribes afresh, resumes from
//! the cursor exactly as `since` would, waits up to `transports.poll_wait`
//! (or the `timeout` asked for, if shorter) for something to say, and answers
//! `{"messages": [...], "cursor": "..."}`. The next request sends that
//! cursor back, so any node behind a load balancer can serve it. The first
//! request (no cursor) answers at once with snapshots and the `ack`; later
//! requests leave out the `ack`s, which only repeat what the client knows.
//! The wait is the [`driver`](super::driver) loop: the wire collects the
//! first batch it is given and is then done.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use chouquette_core::connections::Transport;
use chouquette_core::session::Session;
use chouquette_protocol::server;
use tokio::time::Instant;

use super::auth;
use super::driver::{self, Gone, Goodbye, Inbound, Wire};
use super::url;
use crate::api::error_response;
use crate::gateway::{Gateway, Settings};

/// Answers one poll whose tokens are in the query string.
pub async fn poll(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    answer_poll(shared, peer, &headers, url::Carried::Query(query)).await
}

/// Answers one poll whose tokens are in a JSON body (`POST`).
pub async fn poll_body(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer_poll(shared, peer, &headers, url::Carried::Body(body)).await
}

/// Runs connect auth when it applies (each request again: nothing is kept
/// between requests), subscribes, waits for something to say, and answers.
/// Later requests (with a cursor) leave out `connected`, the `ack`s and the
/// grants' `subscribed`, which only repeat what the client knows and would
/// end the wait at once.
async fn answer_poll(
    shared: Gateway,
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    carried: url::Carried,
) -> Response {
    let (request, no_tokens) = match url::accept(&shared, peer, carried).await {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal,
    };
    let since = url::positions(&request);
    let app = request.app.as_deref();
    let prepared = match auth::prepare(&shared, Transport::Poll, peer, headers, app, &since).await {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal,
    };
    if prepared.is_none() && request.tokens.is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "bad_message", no_tokens);
    }
    let wait = request
        .wait_secs
        .map_or(shared.settings.poll_wait, Duration::from_secs)
        .min(shared.settings.poll_wait);
    let _guard = shared.shutdown.connection("poll");
    let (mut session, mut opening) = prepared.unwrap_or_else(|| {
        (
            Session::new(shared.node.clone(), Transport::Poll),
            Vec::new(),
        )
    });
    url::subscribe_all(&mut session, &request, &mut opening).await;
    if request.cursor.is_some() {
        opening.retain(|m| {
            !server::is_ack(m) && !server::is_connected(m) && !server::is_subscribed(m)
        });
    }
    let wire = PollWire {
        messages: Vec::new(),
        cursor: String::new(),
        deadline: Instant::now() + wait,
    };
    let mut driver = driver::Driver::new(wire, session, shared.clone(), peer, opening);
    driver.drive().await;
    let wire = driver.into_wire();
    let mut response = (StatusCode::OK, answer(&wire.messages, &wire.cursor)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// One poll's answer being collected, as the driver's wire.
struct PollWire {
    /// Every message written, in order.
    messages: Vec<Bytes>,
    /// The cursor after the last write or the goodbye.
    cursor: String,
    /// When the poll answers, even with nothing.
    deadline: Instant,
}

impl Wire for PollWire {
    type Text = Box<str>;

    const BATCH: usize = usize::MAX;

    const CURSOR: bool = true;

    async fn write(&mut self, batch: &mut Vec<Bytes>, cursor: &str) -> Result<(), Gone> {
        self.messages.append(batch);
        cursor.clone_into(&mut self.cursor);
        Ok(())
    }

    async fn close(&mut self, goodbye: Goodbye<'_>) -> Result<(), Gone> {
        self.write(goodbye.last, goodbye.cursor).await
    }

    /// A poll has no inbound side; a client that leaves drops the request.
    async fn recv(&mut self) -> Inbound<Box<str>> {
        std::future::pending().await
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        Ok(())
    }

    fn ping_interval(_settings: &Settings) -> Duration {
        Duration::ZERO
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    fn done(&self) -> bool {
        !self.messages.is_empty()
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
