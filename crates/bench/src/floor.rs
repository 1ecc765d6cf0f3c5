//! The floor (`--server floor`): what one TCP write per delivery costs on
//! this machine, with nothing else. A minimal WebSocket server speaking just
//! enough of the protocol for the bench's own clients: it upgrades, answers
//! a subscribe with an `ack` and registers the socket under the first
//! channel named; `POST /api/v1/publish` serializes each event once as a
//! `data` message, frames it once (a server frame is unmasked, so the bytes
//! are the same for every subscriber) and writes it with one non-blocking
//! `write` per subscriber, straight from the thread handling the publish.
//!
//! No token check, no filter, no offsets kept, no outbox: a write the socket
//! cannot take whole leaves its rest in that subscriber's `pending` bytes,
//! which later publishes append to and a 1 ms flusher retries, so nothing is
//! lost or reordered. A subscriber whose pending bytes pass
//! [`MAX_PENDING`] is dropped (its socket closed), which the bench counts
//! as a dropped connection. The whole server runs on one thread.

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Bytes a subscriber may have waiting before it is dropped.
const MAX_PENDING: usize = 16 << 20;
/// Largest upgrade request head or subscribe frame read.
const MAX_HANDSHAKE: usize = 16 << 10;
/// Time a client has to upgrade and subscribe.
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// How often bytes left over by a full socket are retried.
const FLUSH_EVERY: Duration = Duration::from_millis(1);

/// One subscribed socket.
struct Subscriber {
    stream: std::net::TcpStream,
    /// Frame bytes the socket did not take yet, in order.
    pending: Vec<u8>,
}

impl Subscriber {
    /// Sends `frame` (after any pending bytes); false when the socket is
    /// gone or too far behind.
    fn deliver(&mut self, frame: &[u8]) -> bool {
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(frame);
            return self.pending.len() <= MAX_PENDING;
        }
        match self.stream.write(frame) {
            Ok(n) => {
                self.pending.extend_from_slice(&frame[n..]);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.pending.extend_from_slice(frame);
                true
            }
            Err(_) => false,
        }
    }

    /// Retries the pending bytes; false when the socket is gone.
    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        match self.stream.write(&self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
                if self.pending.is_empty() {
                    self.pending = Vec::new();
                }
                true
            }
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    }
}

/// Subscribers by channel, and the offsets handed out.
#[derive(Default)]
struct Channels {
    subscribers: HashMap<String, Vec<Subscriber>>,
    offset: u64,
    /// Some subscriber may have pending bytes (the flusher's cue).
    behind: bool,
}

type Shared = Arc<Mutex<Channels>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Channels> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the floor until killed.
pub fn main(public: SocketAddr, internal: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(public, internal))
}

async fn serve(public: SocketAddr, internal: SocketAddr) -> anyhow::Result<()> {
    let shared = Shared::default();
    let public = TcpListener::bind(public)
        .await
        .with_context(|| format!("cannot listen on {public}"))?;
    let internal = TcpListener::bind(internal)
        .await
        .with_context(|| format!("cannot listen on {internal}"))?;
    tokio::spawn(accept(public, shared.clone()));
    tokio::spawn(flusher(shared.clone()));
    let api = Router::new()
        .route("/readyz", get(|| async { "ok" }))
        .route("/api/v1/publish", post(publish))
        .with_state(shared);
    axum::serve(internal, api)
        .await
        .context("internal listener failed")
}

async fn accept(listener: TcpListener, shared: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Ok(Ok((channel, subscriber))) = timeout(HANDSHAKE_TIME, handshake(stream)).await
            {
                lock(&shared)
                    .subscribers
                    .entry(channel)
                    .or_default()
                    .push(subscriber);
            }
        });
    }
}

/// Upgrades, reads the subscribe, answers its ack; returns the channel.
async fn handshake(mut stream: TcpStream) -> anyhow::Result<(String, Subscriber)> {
    stream.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        read_more(&mut stream, &mut buffer).await?;
    };
    let key = websocket_key(&buffer[..head_end]).context("no Sec-WebSocket-Key")?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(answer.as_bytes()).await?;
    buffer.drain(..head_end);
    let text = loop {
        if let Some(text) = client_text_frame(&buffer)? {
            break text;
        }
        read_more(&mut stream, &mut buffer).await?;
    };
    let subscribe: Value = serde_json::from_slice(&text).context("subscribe is not JSON")?;
    let channel = subscribe["channels"]
        .as_object()
        .and_then(|c| c.keys().next().cloned())
        .context("subscribe names no channel")?;
    let ack = json!({"class": "ack", "ref": subscribe["uuid"], "channels": {&channel: {}}});
    stream.write_all(&frame(ack.to_string().as_bytes())).await?;
    let stream = stream.into_std()?;
    Ok((
        channel,
        Subscriber {
            stream,
            pending: Vec::new(),
        },
    ))
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<()> {
    if buffer.len() >= MAX_HANDSHAKE {
        bail!("handshake too long");
    }
    if stream.read_buf(buffer).await? == 0 {
        bail!("closed during the handshake");
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn websocket_key(head: &[u8]) -> Option<String> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    })
}

/// The payload of the first frame in `bytes` if it is whole (a masked,
/// unfragmented client frame), unmasked; `None` if more bytes are needed.
fn client_text_frame(bytes: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let (Some(&first), Some(&second)) = (bytes.first(), bytes.get(1)) else {
        return Ok(None);
    };
    if first != 0x81 || second & 0x80 == 0 {
        bail!("expected one masked text frame");
    }
    let (len, at) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => bail!("subscribe frame too long"),
        n => (usize::from(n), 2),
    };
    let Some(mask) = bytes.get(at..at + 4) else {
        return Ok(None);
    };
    let Some(payload) = bytes.get(at + 4..at + 4 + len) else {
        return Ok(None);
    };
    Ok(Some(
        payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect(),
    ))
}

/// An unmasked server text frame around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// `POST /api/v1/publish`: an event or an array of them; each is framed
/// once and written to its channel's subscribers before the answer.
async fn publish(State(shared): State<Shared>, body: Bytes) -> (StatusCode, String) {
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".into());
    };
    let events = match parsed {
        Value::Array(events) => events,
        event => vec![event],
    };
    let mut channels = lock(&shared);
    let mut answers = Vec::with_capacity(events.len());
    for event in &events {
        channels.offset += 1;
        let offset = channels.offset;
        let channel = event["channel"].as_str().unwrap_or_default();
        let message = json!({"class": "data", "channel": channel, "offset": offset,
            "event_kind": event["event_kind"], "keywords": event["keywords"],
            "data": event["data"]});
        let bytes = frame(message.to_string().as_bytes());
        let mut behind = false;
        if let Some(subscribers) = channels.subscribers.get_mut(channel) {
            subscribers.retain_mut(|s| {
                let kept = s.deliver(&bytes);
                behind |= !s.pending.is_empty();
                kept
            });
        }
        channels.behind |= behind;
        answers.push(json!({"offset": offset}));
    }
    (StatusCode::OK, Value::Array(answers).to_string())
}

/// Retries the bytes full sockets left over.
async fn flusher(shared: Shared) {
    let mut ticks = tokio::time::interval(FLUSH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut channels = lock(&shared);
        if !channels.behind {
            continue;
        }
        let mut behind = false;
        for subscribers in channels.subscribers.values_mut() {
            subscribers.retain_mut(|s| {
                let kept = s.flush();
                behind |= !s.pending.is_empty();
                kept
            });
        }
        channels.behind = behind;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_by_length() {
        assert_eq!(frame(b"hi"), [0x81, 2, b'h', b'i']);
        let long = frame(&[0; 300]);
        assert_eq!(&long[..4], [0x81, 126, 1, 44]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn reads_a_masked_client_frame() {
        let mask = [1, 2, 3, 4];
        let masked: Vec<u8> = b"hello"
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        let mut bytes = vec![0x81, 0x80 | 5];
        bytes.extend_from_slice(&mask);
        bytes.extend_from_slice(&masked);
        assert_eq!(client_text_frame(&bytes[..7]).expect("part"), None);
        assert_eq!(
            client_text_frame(&bytes).expect("whole"),
            Some(b"hello".to_vec())
        );
    }
}
