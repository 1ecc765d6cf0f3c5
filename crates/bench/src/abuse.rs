//! The abusive client of `--scenario abuse`, run in its own worker process
//! from its own source address (127.0.0.250, as if from another machine):
//!
//! - `flood`: subscribes, then sends small valid messages as fast as the
//!   socket takes them while reading the replies; when the gateway closes it
//!   (rate limit), it reconnects at once and floods again.
//! - `reconnect`: opens a WebSocket, subscribes, waits for the ack, closes,
//!   and starts over, never backing off (a refused upgrade is retried at once).
//! - `burn`: the control; spins on one core and never connects.
//!
//! It counts what it did and what the gateway refused, for the report.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::wire::AbuseResults;

/// What the abusive client does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Abuse {
    /// Sends messages as fast as it can, reconnecting when closed.
    Flood,
    /// Connects, subscribes and closes in a loop.
    Reconnect,
    /// The control: burns one core without touching the gateway, to tell
    /// the cost of sharing the machine's cores from the gateway's own.
    Burn,
}

/// The abuser's source address: apart from the subscribers' (127.0.0.2 and up).
pub const ABUSER_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 250);

/// The abuser's counters.
#[derive(Debug, Default)]
pub struct Counters {
    messages: AtomicU64,
    rate_limited: AtomicU64,
    connections: AtomicU64,
    refused: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    /// A snapshot for the parent.
    pub fn results(&self) -> AbuseResults {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AbuseResults {
            messages: load(&self.messages),
            rate_limited: load(&self.rate_limited),
            connections: load(&self.connections),
            refused: load(&self.refused),
            closed: load(&self.closed),
            failed: load(&self.failed),
        }
    }
}

/// Runs `abuse` against `target` until the task is dropped.
pub async fn run(abuse: Abuse, target: SocketAddr, subscribe: Arc<str>, counters: Arc<Counters>) {
    loop {
        match abuse {
            Abuse::Flood => flood_once(target, &subscribe, &counters).await,
            Abuse::Reconnect => reconnect_once(target, &subscribe, &counters).await,
            Abuse::Burn => burn().await,
        }
    }
}

/// Source ports cycle over this range: binding port 0 makes the kernel scan
/// every port bound on the address, which slowed the loop to a crawl.
const PORTS: std::ops::Range<u16> = 20_000..60_000;

async fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let span = u64::from(PORTS.end - PORTS.start);
    let port = PORTS.start + (NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    // Reset on close: no TIME_WAIT left behind to block the port's reuse.
    // Deprecated for a non-zero linger, which blocks the thread on drop; a
    // zero linger resets at once.
    #[allow(deprecated)]
    socket.set_linger(Some(std::time::Duration::ZERO))?;
    socket.bind(SocketAddrV4::new(ABUSER_SOURCE, port).into())?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Upgrades, counting refusals; `None` when refused or failed.
async fn open(target: SocketAddr, counters: &Counters) -> Option<WebSocketStream<TcpStream>> {
    let stream = match connect(target).await {
        Ok(s) => s,
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            // Out of ports or similar: let the kernel catch up.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            return None;
        }
    };
    match client_async(format!("ws://{target}/ws"), stream).await {
        Ok((ws, _)) => {
            counters.connections.fetch_add(1, Ordering::Relaxed);
            Some(ws)
        }
        Err(WsError::Http(_)) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Spins for a millisecond, then lets the runtime's other tasks run.
async fn burn() {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1);
    let mut x: u64 = 1;
    while std::time::Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
    tokio::task::yield_now().await;
}

fn is_rate_limited(text: &str) -> bool {
    text.contains("\"rate_limited\"")
}

async fn flood_once(target: SocketAddr, subscribe: &str, counters: &Counters) {
    let Some(ws) = open(target, counters).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    if tx.send(Message::text(subscribe)).await.is_err() {
        return;
    }
    let reader = async {
        while let Some(Ok(message)) = rx.next().await {
            match message {
                Message::Text(t) if is_rate_limited(t.as_str()) => {
                    counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        counters.closed.fetch_add(1, Ordering::Relaxed);
    };
    let writer = async {
        let message = r#"{"class":"unsubscribe","channels":["nothing"]}"#;
        loop {
            if tx.send(Message::text(message)).await.is_err() {
                break;
            }
            counters.messages.fetch_add(1, Ordering::Relaxed);
        }
        // The write side failed: wait for the reader to see the end.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

async fn reconnect_once(target: SocketAddr, subscribe: &str, counters: &Counters) {
    let Some(mut ws) = open(target, counters).await else {
        return;
    };
    if ws.send(Message::text(subscribe)).await.is_err() {
        return;
    }
    counters.messages.fetch_add(1, Ordering::Relaxed);
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(t) = message {
            if is_rate_limited(t.as_str()) {
                counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            if t.as_str().contains("\"ack\"") || t.as_str().contains("\"error\"") {
                break;
            }
        }
    }
    let _ = ws.close(None).await;
}
