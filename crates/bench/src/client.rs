//! One load-generator connection: bind a source address, connect, upgrade
//! with small buffers, subscribe and wait for the ack; then read until the
//! connection ends, handing every text frame to a callback.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// An open, subscribed connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Tries per connection before giving up.
const ATTEMPTS: u32 = 6;
/// Limit on each step: TCP connect, upgrade, ack.
const STEP: Duration = Duration::from_secs(10);

/// How opening a connection ended.
pub enum Outcome {
    /// Subscribed.
    Subscribed(Box<Ws>),
    /// The gateway answered 503: it is full (a polite refusal).
    Refused,
    /// Failed on every try; the last reason.
    Failed(String),
}

/// Why one try failed.
enum TryError {
    Refused,
    Fatal(String),
    Retry(String),
}

/// Opens and subscribes a connection, retrying transient failures.
pub async fn open(target: SocketAddr, source: SocketAddrV4, subscribe: &str) -> Outcome {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            sleep(Duration::from_millis(250 * u64::from(attempt))).await;
        }
        match try_open(target, source, subscribe).await {
            Ok(ws) => return Outcome::Subscribed(Box::new(ws)),
            Err(TryError::Refused) => return Outcome::Refused,
            Err(TryError::Fatal(reason)) => return Outcome::Failed(reason),
            Err(TryError::Retry(reason)) => last = reason,
        }
    }
    Outcome::Failed(last)
}

/// Reads until the connection ends; `on_text` gets every text frame.
pub async fn read_all(mut ws: Ws, mut on_text: impl FnMut(&str)) {
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) => on_text(text.as_str()),
            Message::Close(_) => break,
            _ => {}
        }
    }
}

/// The clients' WebSocket settings: small buffers, as a phone would keep.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

async fn try_open(
    target: SocketAddr,
    source: SocketAddrV4,
    subscribe: &str,
) -> Result<Ws, TryError> {
    let stream = connect(target, source).await?;
    let url = format!("ws://{target}/ws");
    let upgrade = client_async_with_config(url, stream, Some(ws_config()));
    let mut ws = match timeout(STEP, upgrade).await {
        Err(_) => return Err(TryError::Retry("upgrade timed out".into())),
        Ok(Err(WsError::Http(response))) if response.status().as_u16() == 503 => {
            return Err(TryError::Refused);
        }
        Ok(Err(e)) => return Err(TryError::Retry(format!("upgrade: {e}"))),
        Ok(Ok((ws, _))) => ws,
    };
    ws.send(Message::text(subscribe))
        .await
        .map_err(|e| TryError::Retry(format!("send subscribe: {e}")))?;
    wait_ack(&mut ws).await?;
    Ok(ws)
}

/// [`connect`] for other clients of the bench; the error says what failed.
pub(crate) async fn tcp(target: SocketAddr, source: SocketAddrV4) -> Result<TcpStream, String> {
    connect(target, source).await.map_err(|e| match e {
        TryError::Refused => "refused".to_owned(),
        TryError::Fatal(reason) | TryError::Retry(reason) => reason,
    })
}

/// Binds `source` (any port of its address if that one is taken), connects.
async fn connect(target: SocketAddr, source: SocketAddrV4) -> Result<TcpStream, TryError> {
    let io = |what: &str, e: std::io::Error| TryError::Retry(format!("{what}: {e}"));
    let socket = TcpSocket::new_v4().map_err(|e| io("socket", e))?;
    socket.set_reuseaddr(true).map_err(|e| io("reuseaddr", e))?;
    if socket.bind(source.into()).is_err() {
        socket
            .bind(SocketAddrV4::new(*source.ip(), 0).into())
            .map_err(|e| io("bind", e))?;
    }
    let stream = timeout(STEP, socket.connect(target))
        .await
        .map_err(|_| TryError::Retry("connect timed out".into()))?
        .map_err(|e| io("connect", e))?;
    stream.set_nodelay(true).map_err(|e| io("nodelay", e))?;
    Ok(stream)
}

async fn wait_ack(ws: &mut Ws) -> Result<(), TryError> {
    loop {
        let message = match timeout(STEP, ws.next()).await {
            Err(_) => return Err(TryError::Retry("no ack".into())),
            Ok(None) => return Err(TryError::Retry("closed before ack".into())),
            Ok(Some(Err(e))) => return Err(TryError::Retry(format!("before ack: {e}"))),
            Ok(Some(Ok(m))) => m,
        };
        let Message::Text(text) = message else {
            continue;
        };
        let reply: Value = serde_json::from_str(text.as_str())
            .map_err(|e| TryError::Fatal(format!("reply is not JSON: {e}")))?;
        match reply["class"].as_str() {
            Some("ack") => return Ok(()),
            Some("error") => return Err(TryError::Fatal(format!("subscribe refused: {reply}"))),
            _ => continue,
        }
    }
}
