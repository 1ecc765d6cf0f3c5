//! The sockets of `--scenario idle-abuse` that hold the gateway open without
//! using it, run in worker processes (each holds at most its share, under
//! the open-file limit):
//!
//! - `half-open`: TCP connected, then either nothing sent (even indexes) or
//!   a request line and a `Host` header with no blank line after them (odd
//!   indexes): the gateway's header-read deadline must close them.
//! - `never-subscribe`: a WebSocket upgraded that never subscribes nor
//!   connects, but answers pings: the subscribe deadline must close it.
//!
//! Each socket is opened once, then watched until the gateway closes it;
//! the time from opening to the close is recorded, so the report can put it
//! next to the configured deadline. Sockets come from their own source
//! addresses (127.0.1.x, 127.0.2.x, [`PER_SOURCE`] each), apart from the
//! subscribers', so a per-address cap counts them apart.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::histogram::AtomicHistogram;
use crate::pace;
use crate::wire::{HeldResults, Plan};

/// What a held socket does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Hold {
    /// TCP connected; nothing, or an unfinished request head, sent.
    HalfOpen,
    /// Upgraded to a WebSocket; never subscribes, answers pings.
    NeverSubscribe,
}

impl Hold {
    /// The report's name.
    pub fn name(self) -> &'static str {
        match self {
            Hold::HalfOpen => "half-open",
            Hold::NeverSubscribe => "never-subscribe",
        }
    }

    /// The source address of socket `index`: one /24 per kind.
    fn source(self, index: usize) -> SocketAddrV4 {
        let third = match self {
            Hold::HalfOpen => 1,
            Hold::NeverSubscribe => 2,
        };
        let host = (1 + index / PER_SOURCE).min(254) as u8;
        let port = 10_000 + (index % PER_SOURCE) as u16;
        SocketAddrV4::new(Ipv4Addr::new(127, 0, third, host), port)
    }
}

/// Held sockets per source address: few enough that a per-address
/// connection cap of a few hundred still admits them all.
pub const PER_SOURCE: usize = 200;

/// Limit on the TCP connect and on the upgrade.
const STEP: Duration = Duration::from_secs(10);

/// What one worker's held sockets saw.
#[derive(Debug, Default)]
pub struct Counters {
    opened: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    closed_1008: AtomicU64,
    time_to_close: AtomicHistogram,
}

impl Counters {
    /// A snapshot for the parent.
    pub fn results(&self, hold: Hold) -> HeldResults {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HeldResults {
            hold,
            opened: load(&self.opened),
            failed: load(&self.failed),
            closed: load(&self.closed),
            closed_1008: load(&self.closed_1008),
            histogram: self.time_to_close.snapshot(),
        }
    }

    /// Attempts that ended one way or the other.
    pub fn settled(&self) -> u64 {
        self.opened.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// Opens the plan's `count` sockets of kind `hold` at its rate; each task
/// then watches its socket until the gateway closes it.
pub async fn open_all(plan: Arc<Plan>, hold: Hold, counters: Arc<Counters>) {
    pace::paced(plan.connect_rate, plan.first, plan.count, |index| {
        tokio::spawn(hold_one(plan.target, hold, index, counters.clone()));
    })
    .await;
}

async fn hold_one(target: SocketAddr, hold: Hold, index: usize, counters: Arc<Counters>) {
    let Some(stream) = connect(target, hold.source(index)).await else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let opened = Instant::now();
    let closed_1008 = match hold {
        Hold::HalfOpen => half_open(stream, index, &counters).await,
        Hold::NeverSubscribe => never_subscribe(stream, target, &counters).await,
    };
    let Some(closed_1008) = closed_1008 else {
        return;
    };
    let micros = u64::try_from(opened.elapsed().as_micros()).unwrap_or(u64::MAX);
    counters.time_to_close.record(micros);
    counters.closed.fetch_add(1, Ordering::Relaxed);
    if closed_1008 {
        counters.closed_1008.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends nothing or an unfinished request head, then reads until the
/// gateway closes; `None` if the socket could not be set up.
async fn half_open(mut stream: TcpStream, index: usize, counters: &Counters) -> Option<bool> {
    if index % 2 == 1 {
        let partial = b"GET /ws HTTP/1.1\r\nHost: bench\r\n";
        if stream.write_all(partial).await.is_err() {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
    counters.opened.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 512];
    // Whatever the gateway says (a 408, say) before closing is read past.
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    Some(false)
}

/// Upgrades, then reads (which answers pings) until the gateway closes;
/// says whether the close was 1008. `None` if the upgrade failed.
async fn never_subscribe(
    stream: TcpStream,
    target: SocketAddr,
    counters: &Counters,
) -> Option<bool> {
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let url = format!("ws://{target}/ws");
    let upgrade = client_async_with_config(url, stream, Some(config));
    let Ok(Ok((mut ws, _))) = timeout(STEP, upgrade).await else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    counters.opened.fetch_add(1, Ordering::Relaxed);
    let mut policy = false;
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Close(frame) = message {
            policy = frame.is_some_and(|f| u16::from(f.code) == 1008);
            break;
        }
    }
    Some(policy)
}

/// Binds `source` (any port of its address if that one is taken), connects.
async fn connect(target: SocketAddr, source: SocketAddrV4) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.set_reuseaddr(true).ok()?;
    if socket.bind(source.into()).is_err() {
        socket
            .bind(SocketAddrV4::new(*source.ip(), 0).into())
            .ok()?;
    }
    match timeout(STEP, socket.connect(target)).await {
        Ok(Ok(stream)) => Some(stream),
        _ => {
            // Out of ports or backlog: let the kernel catch up.
            sleep(Duration::from_millis(1)).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_addresses() {
        assert_eq!(Hold::HalfOpen.source(0).to_string(), "127.0.1.1:10000");
        assert_eq!(
            Hold::HalfOpen.source(PER_SOURCE).to_string(),
            "127.0.1.2:10000"
        );
        assert_eq!(
            Hold::NeverSubscribe.source(5).to_string(),
            "127.0.2.1:10005"
        );
    }
}
