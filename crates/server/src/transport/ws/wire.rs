//! A WebSocket connection as the driver's [`Wire`]: the read half and its
//! [`Decoder`], the write half ([`Writer`]), and what the connection must
//! remember between calls (bytes read past the last message, the client's
//! close, a protocol failure to announce).
//!
//! Reading never writes: a client's ping is handed to the driver, which
//! answers it through [`Wire::pong`]; its close, through [`Wire::close`].
//! Each read goes into a buffer on the stack of the poll that reads it, so
//! an idle connection holds no read buffer.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use chouquette_core::outbox::DirectSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf, ReadHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use super::frame::{CLOSE, Decoder, Event, MAX_CONTROL, PING, PONG, Violation};
use super::socket::{TcpSocket, Writer};
use crate::accept::held::{Held, Place};
use crate::gateway::Settings;
use crate::shutdown::ConnectionGuard;
use crate::transport::driver::{Gone, Goodbye, Inbound, Wire};

/// Most bytes read per system call, into the reading poll's stack. A
/// client's messages are small (subscribe, ack); a larger one takes several
/// reads, its frame kept by the decoder meanwhile.
const READ_CHUNK: usize = 4096;

/// Where the client's bytes come from.
#[derive(Debug)]
enum Reader {
    /// Plain TCP.
    Tcp(OwnedReadHalf),
    /// Any other stream (TLS).
    Stream(ReadHalf<TokioIo<Upgraded>>),
}

impl Reader {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Reader::Tcp(half) => std::pin::Pin::new(half).poll_read(cx, buf),
            Reader::Stream(half) => std::pin::Pin::new(half).poll_read(cx, buf),
        }
    }
}

/// How the client said it closes, for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientClose {
    /// Not (yet).
    Open,
    /// With this status code, echoed.
    Code(u16),
    /// Without a code: the reply carries none either.
    Bare,
}

/// A WebSocket connection, server side.
#[derive(Debug)]
pub(crate) struct WsWire {
    reader: Reader,
    writer: Writer,
    decoder: Decoder,
    /// Bytes read but not decoded yet: what arrived with the upgrade
    /// request, or past the last event of a read. Empty (no allocation)
    /// otherwise.
    unread: Bytes,
    client_close: ClientClose,
    /// The close code of a protocol failure, said once the driver is done.
    failed: Option<u16>,
    /// A write was cut inside a frame: the stream cannot carry another.
    torn: bool,
    /// The connection's place in the per-address count (plain TCP, whose
    /// `Held` wrapper is taken apart): kept as long as the socket.
    _place: Option<Place>,
    /// The connection's count among the node's live connections.
    _live: ConnectionGuard,
}

impl WsWire {
    /// The connection hyper hands over after the `101`: plain TCP is split
    /// into halves, its write half shared with the fan-out; anything else
    /// (TLS) is served through its generic I/O. `limit` bounds a message.
    pub(crate) fn new(upgraded: Upgraded, limit: usize, live: ConnectionGuard) -> WsWire {
        match upgraded.downcast::<TokioIo<Held<TcpStream>>>() {
            Ok(parts) => {
                let (tcp, ahead, place) = parts.io.into_inner().into_parts();
                let unread = joined(parts.read_buf, ahead);
                WsWire::tcp(tcp, unread, Some(place), limit, live)
            }
            Err(upgraded) => {
                let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                let (reader, writer) = (Reader::Stream(read), Writer::Stream(write));
                WsWire::with(reader, writer, Bytes::new(), None, limit, live)
            }
        }
    }

    /// A plain TCP connection whose first bytes are `unread`.
    fn tcp(
        tcp: TcpStream,
        unread: Bytes,
        place: Option<Place>,
        limit: usize,
        live: ConnectionGuard,
    ) -> WsWire {
        let (read, write) = tcp.into_split();
        let writer = Writer::Tcp(Arc::new(TcpSocket::new(write)));
        WsWire::with(Reader::Tcp(read), writer, unread, place, limit, live)
    }

    fn with(
        reader: Reader,
        writer: Writer,
        unread: Bytes,
        place: Option<Place>,
        limit: usize,
        live: ConnectionGuard,
    ) -> WsWire {
        WsWire {
            reader,
            writer,
            decoder: Decoder::new(limit),
            unread,
            client_close: ClientClose::Open,
            failed: None,
            torn: false,
            _place: place,
            _live: live,
        }
    }

    /// What the driver hears of an event.
    fn heard(&mut self, event: Event) -> Inbound<String> {
        match event {
            Event::Text(text) => Inbound::Text(text),
            Event::Binary => Inbound::Binary,
            Event::Ping(payload) => Inbound::Ping(payload),
            Event::Pong => Inbound::Heard,
            Event::Close(code) => {
                self.client_close = code.map_or(ClientClose::Bare, ClientClose::Code);
                Inbound::Closed
            }
        }
    }

    /// What the driver hears of a violation: too large is its to close
    /// (1009); any other is remembered for [`WsWire::fail`].
    fn violated(&mut self, violation: Violation) -> Inbound<String> {
        tracing::debug!(error = %violation, "WebSocket client failed");
        self.unread = Bytes::new();
        match violation.close_code() {
            None => Inbound::TooLarge,
            Some(code) => {
                self.failed = Some(code);
                Inbound::Gone
            }
        }
    }

    /// Writes `texts` then `control`, after what the fan-out left half
    /// written.
    async fn send(&mut self, texts: &[Bytes], control: Option<(u8, &[u8])>) -> Result<(), Gone> {
        self.writer.finish().await.map_err(|_| Gone)?;
        if self.torn {
            return Err(Gone);
        }
        self.writer
            .write(texts, control, &mut self.torn)
            .await
            .map_err(|_| Gone)
    }
}

/// `first` then `then`, without a copy when `then` is empty. Nothing at
/// all is a fresh empty `Bytes`: an empty slice of hyper's read buffer
/// would keep that whole buffer (kilobytes) for the connection's life.
fn joined(first: Bytes, then: Vec<u8>) -> Bytes {
    if then.is_empty() {
        return if first.is_empty() {
            Bytes::new()
        } else {
            first
        };
    }
    let mut all = Vec::with_capacity(first.len() + then.len());
    all.extend_from_slice(&first);
    all.extend_from_slice(&then);
    Bytes::from(all)
}

/// A close frame's payload: the code, then as much of `reason` as fits in
/// a control frame, cut on a character boundary.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.get(..end).unwrap_or_default().as_bytes());
    payload
}

impl Wire for WsWire {
    type Text = String;

    const BATCH: usize = 256;

    const CURSOR: bool = false;

    async fn write(&mut self, batch: &mut Vec<Bytes>, _cursor: &str) -> Result<(), Gone> {
        let written = self.send(batch, None).await;
        batch.clear();
        written
    }

    async fn close(&mut self, goodbye: Goodbye<'_>) -> Result<(), Gone> {
        // One vectored write: a close frame written apart could be held back
        // (Nagle) and lost when the socket is reset because the client is
        // still sending (e.g. the rest of a frame over the size limit).
        let payload = match (goodbye.close, self.client_close) {
            (Some((code, reason)), _) => Some(close_payload(code.code(), reason)),
            (None, ClientClose::Code(code)) => Some(code.to_be_bytes().to_vec()),
            (None, ClientClose::Bare) => Some(Vec::new()),
            (None, ClientClose::Open) => None,
        };
        let control = payload.as_deref().map(|p| (CLOSE, p));
        let written = self.send(goodbye.last, control).await;
        goodbye.last.clear();
        written?;
        self.writer.shutdown().await.map_err(|_| Gone)
    }

    async fn recv(&mut self) -> Inbound<String> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn parks(&self) -> bool {
        // tokio keeps the read waker of a plain TCP socket; a TLS stream's
        // reads go through a lock and buffers that are not ours to register.
        matches!(self.reader, Reader::Tcp(_))
    }

    /// The next event, reading when what is buffered holds none.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound<String>> {
        if self.failed.is_some() {
            return Poll::Ready(Inbound::Gone);
        }
        if !self.unread.is_empty() {
            let mut input = self.unread.as_ref();
            let decoded = self.decoder.decode(&mut input);
            let taken = self.unread.len() - input.len();
            self.unread.advance(taken);
            if self.unread.is_empty() {
                self.unread = Bytes::new();
            }
            match decoded {
                Ok(None) => {}
                Ok(Some(event)) => return Poll::Ready(self.heard(event)),
                Err(violation) => return Poll::Ready(self.violated(violation)),
            }
        }
        loop {
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            if ready!(self.reader.poll_read(cx, &mut buf)).is_err() || buf.filled().is_empty() {
                return Poll::Ready(Inbound::Gone);
            }
            let mut input = buf.filled();
            match self.decoder.decode(&mut input) {
                Ok(None) => {}
                Ok(Some(event)) => {
                    if !input.is_empty() {
                        self.unread = Bytes::copy_from_slice(input);
                    }
                    return Poll::Ready(self.heard(event));
                }
                Err(violation) => return Poll::Ready(self.violated(violation)),
            }
        }
    }

    /// Announces a protocol failure heard by [`Wire::recv`] (close 1002 or
    /// 1007), once the driver has ended the connection as gone: reading
    /// never writes, and the driver's goodbye does not run for a gone client.
    async fn fail(&mut self) {
        let Some(code) = self.failed.take() else {
            return;
        };
        if self.writer.finish().await.is_err() || self.torn {
            return;
        }
        let payload = code.to_be_bytes();
        let frame = Some((CLOSE, payload.as_slice()));
        if self.writer.write(&[], frame, &mut self.torn).await.is_ok() {
            let _ = self.writer.shutdown().await;
        }
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        self.send(&[], Some((PING, &[]))).await
    }

    async fn pong(&mut self, payload: Box<[u8]>) -> Result<(), Gone> {
        // The decoder refuses pings over 125 bytes: the pong is a control
        // frame too.
        self.send(&[], Some((PONG, &payload))).await
    }

    async fn finish(&mut self) -> Result<(), Gone> {
        self.writer.finish().await.map_err(|_| Gone)
    }

    fn direct(&self) -> Option<Arc<dyn DirectSocket>> {
        self.writer.direct()
    }

    fn ping_interval(settings: &Settings) -> Duration {
        settings.ping_interval
    }

    fn idle_timeout(settings: &Settings) -> Duration {
        settings.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_close_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(100);
        let payload = close_payload(1008, &reason);
        assert!(payload.len() <= MAX_CONTROL, "{}", payload.len());
        assert_eq!(&payload[..2], &1008u16.to_be_bytes());
        let text = std::str::from_utf8(&payload[2..]).expect("UTF-8");
        assert_eq!(text, "é".repeat(61));
        assert_eq!(close_payload(1001, "shutdown")[2..], *b"shutdown");
    }

    #[test]
    fn bytes_read_ahead_come_first() {
        assert_eq!(joined(Bytes::from_static(b"ab"), b"cd".to_vec()), "abcd");
        assert_eq!(joined(Bytes::from_static(b"ab"), Vec::new()), "ab");
        // An empty view of a large buffer is not kept: its storage goes.
        let mut big = bytes::BytesMut::with_capacity(8192);
        big.extend_from_slice(b"request");
        let _request = big.split_to(7);
        let empty_view = big.freeze();
        let view_at = empty_view.as_ptr();
        assert!(empty_view.is_empty());
        let kept = joined(empty_view, Vec::new());
        assert!(kept.is_empty());
        assert_ne!(kept.as_ptr(), view_at, "a fresh empty Bytes, not the view");
    }

    /// A masked client frame.
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= 125);
        let mask = [0x5a, 0x01, 0xc3, 0x7e];
        let mut out = vec![b0, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// A connection's count, for a wire made outside a gateway.
    pub(super) fn live() -> ConnectionGuard {
        let (_trigger, shutdown) = crate::shutdown::Shutdown::new(Default::default());
        shutdown.connection("test")
    }

    /// A wire on the server side of a loopback pair whose first bytes are
    /// `unread`, and the client's side.
    async fn connected(unread: &'static [u8]) -> (WsWire, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let wire = WsWire::tcp(server, Bytes::from_static(unread), None, 1024, live());
        (wire, client)
    }

    /// Everything the client reads until the server's FIN.
    async fn read_all(client: &mut TcpStream) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut all))
            .await
            .expect("FIN within 10 s")
            .expect("read");
        all
    }

    #[tokio::test]
    async fn a_dropped_recv_loses_nothing_and_a_close_is_echoed() {
        use tokio::io::AsyncWriteExt;
        // A ping that came with the upgrade request, before any read.
        let (mut wire, mut client) = connected(&[0x89, 0x80, 1, 2, 3, 4]).await;
        assert!(matches!(wire.recv().await, Inbound::Ping(p) if p.is_empty()));

        let mut bytes = client_frame(0x01, b"hel");
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, b"lo"));
        bytes.extend(client_frame(0x88, &[0x03, 0xe8]));
        // Half of it, then recv is dropped (as the driver's select! does
        // when another branch wins) while waiting for the rest.
        let (first, second) = bytes.split_at(9);
        client.write_all(first).await.expect("write");
        let waited = tokio::time::timeout(Duration::from_millis(100), wire.recv()).await;
        assert!(waited.is_err(), "nothing whole yet");
        client.write_all(second).await.expect("write");
        assert!(matches!(wire.recv().await, Inbound::Ping(p) if &*p == b"p"));
        assert!(matches!(wire.recv().await, Inbound::Text(t) if t == "hello"));
        assert!(matches!(wire.recv().await, Inbound::Closed));

        // The driver's goodbye for a client that closed: its code echoed.
        let mut last = vec![Bytes::from_static(b"{}")];
        let goodbye = Goodbye {
            last: &mut last,
            cursor: "",
            close: None,
        };
        wire.close(goodbye).await.expect("close");
        assert_eq!(
            read_all(&mut client).await,
            [0x81, 2, b'{', b'}', 0x88, 2, 0x03, 0xe8]
        );
    }

    #[tokio::test]
    async fn pings_pongs_and_a_protocol_failure_closed_with_1002() {
        use tokio::io::AsyncWriteExt;
        let (mut wire, mut client) = connected(b"").await;
        client
            .write_all(&client_frame(0x8A, b"x"))
            .await
            .expect("write");
        assert!(matches!(wire.recv().await, Inbound::Heard));
        wire.ping().await.expect("ping");
        wire.pong(Box::from(&b"ab"[..])).await.expect("pong");
        // An unmasked frame: gone for the driver, then closed with 1002.
        client
            .write_all(&[0x81, 0x02, b'h', b'i'])
            .await
            .expect("write");
        assert!(matches!(wire.recv().await, Inbound::Gone));
        wire.fail().await;
        assert_eq!(
            read_all(&mut client).await,
            [0x89, 0, 0x8A, 2, b'a', b'b', 0x88, 2, 0x03, 0xea]
        );
    }

    #[tokio::test]
    async fn over_the_limit_is_too_large_for_the_driver() {
        use tokio::io::AsyncWriteExt;
        let (mut wire, mut client) = connected(b"").await;
        // 2,000 bytes announced, over the 1,024 of the wire: refused at
        // the header.
        let head = [0x81, 0xfe, 0x07, 0xd0, 1, 2, 3, 4];
        client.write_all(&head).await.expect("write");
        assert!(matches!(wire.recv().await, Inbound::TooLarge));
    }
}

#[cfg(test)]
mod upgrade_tests {
    use std::sync::Mutex;

    use axum::http::{Request, Response, StatusCode};
    use hyper::body::Incoming;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::oneshot;

    use super::*;

    /// What the server saw of the upgraded connection.
    type Seen = (bool, Option<String>);

    /// A hyper HTTP/1 server over the accept loop's `Held<TcpStream>`
    /// (as `accept/connection.rs` serves it), whose one request is
    /// upgraded into a [`WsWire`]; reports whether it has a direct socket
    /// and the first text it hears.
    async fn serve_one(listener: tokio::net::TcpListener, seen: oneshot::Sender<Seen>) {
        let (tcp, _) = listener.accept().await.expect("accept");
        let place: Place = Arc::new(Mutex::new(None));
        // Bytes read ahead (as after a PROXY header) come first.
        let ahead = b"GET / HTTP/1.1\r\n".to_vec();
        let io = Held::new(tcp, ahead, place);
        let seen = Mutex::new(Some(seen));
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let on_upgrade = hyper::upgrade::on(&mut request);
            let seen = seen.lock().ok().and_then(|mut s| s.take());
            tokio::spawn(async move {
                let upgraded = on_upgrade.await.expect("upgraded");
                let mut wire = WsWire::new(upgraded, 1024, super::tests::live());
                let direct = wire.direct().is_some();
                let text = match wire.recv().await {
                    Inbound::Text(text) => Some(text),
                    _ => None,
                };
                if let Some(seen) = seen {
                    let _ = seen.send((direct, text));
                }
            });
            let mut response = Response::new(http_body_util::Empty::<Bytes>::new());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert("upgrade", "websocket".parse().expect("value"));
            headers.insert("connection", "upgrade".parse().expect("value"));
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await;
    }

    #[tokio::test]
    async fn a_plain_tcp_upgrade_gets_a_direct_socket_and_keeps_early_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(serve_one(listener, tx));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        // The request (its first line came "ahead"), and a frame in the
        // same write: hyper reads it with the request, and hands it over
        // in the upgrade's `read_buf`.
        let mut bytes = b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
        let mask = [7, 7, 7, 7];
        bytes.extend_from_slice(&[0x81, 0x85]);
        bytes.extend_from_slice(&mask);
        bytes.extend(b"early".iter().map(|b| b ^ 7));
        client.write_all(&bytes).await.expect("write");
        let (direct, text) = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("upgraded within 10 s")
            .expect("reported");
        assert!(
            direct,
            "plain TCP is taken out of hyper with a direct socket"
        );
        assert_eq!(text.as_deref(), Some("early"));
    }
}
