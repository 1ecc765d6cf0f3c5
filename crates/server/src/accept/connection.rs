//! One accepted socket, from its admission to its close: the PROXY header
//! of a trusted proxy, the TLS handshake, then HTTP/1.1 with upgrades under
//! the header deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use chouquette_core::limits::{Limit, address_key};
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::held::{Held, Place};
use super::proxy_protocol::{self, MAX_HEADER, Parsed};
use super::{Admission, Public};
use crate::http_error::error_response;
use crate::shutdown::Shutdown;

/// A connection task's inputs.
pub(super) struct Task {
    pub(super) public: Arc<Public>,
    pub(super) peer: SocketAddr,
    pub(super) admission: Admission,
    /// The TLS handshake slot, released once the handshake ends.
    pub(super) slot: Option<OwnedSemaphorePermit>,
    pub(super) stop: Shutdown,
    /// Dropped when the task ends (see `serve_public`).
    pub(super) _alive: mpsc::Sender<()>,
}

/// Who the client of a connection is.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// Known for the whole connection (the peer, or a PROXY header's).
    Fixed(SocketAddr),
    /// Named by each request's `X-Forwarded-For` (a trusted proxy's peer).
    PerRequest,
}

impl Task {
    pub(super) async fn run(mut self, mut tcp: TcpStream) {
        let place: Place = Arc::new(Mutex::new(None));
        let (client, ahead) = match std::mem::replace(&mut self.admission, Admission::Proxied) {
            Admission::Direct(guard) => {
                *place.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
                (Client::Fixed(self.peer), Vec::new())
            }
            Admission::Proxied => {
                let deadline = self.public.header_read_timeout;
                let Some((source, ahead)) = read_proxy_header(&mut tcp, self.peer, deadline).await
                else {
                    return;
                };
                match source {
                    Some(source) => {
                        let Some(guard) = self.public.admit(source.ip()) else {
                            return;
                        };
                        *place.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
                        (Client::Fixed(source), ahead)
                    }
                    None => (Client::PerRequest, ahead),
                }
            }
        };
        let io = Held::new(tcp, ahead, place.clone());
        match self.public.tls.clone() {
            Some(tls) => {
                let Some(tls_io) = tls.handshake(io, self.peer).await else {
                    return;
                };
                self.slot = None;
                self.serve_http(tls_io, client, place).await;
            }
            None => self.serve_http(io, client, place).await,
        }
    }

    /// HTTP/1.1 with upgrades until the client leaves, the header deadline
    /// passes, or the node stops (then the current request is finished).
    async fn serve_http<I>(mut self, io: I, client: Client, place: Place)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let public = self.public.clone();
        let peer = self.peer;
        let service =
            hyper::service::service_fn(move |req| public.request(req, peer, client, &place));
        let conn = self
            .public
            .http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut conn = pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = self.stop.stopped() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "public connection ended");
        }
    }
}

impl Public {
    /// One request: who its client is, its place in the count when that is
    /// per request, then the routes.
    fn request(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        client: Client,
        place: &Place,
    ) -> impl Future<Output = Result<Response, Infallible>> + use<> {
        let client = match client {
            Client::Fixed(client) => client,
            Client::PerRequest => {
                let client = self.trusted.forwarded_client(peer, req.headers());
                if !self.take_place(client, place) {
                    let refused = error_response(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "too many open connections from this address",
                    );
                    return Either::Left(std::future::ready(Ok(refused)));
                }
                client
            }
        };
        req.extensions_mut().insert(ConnectInfo(client));
        Either::Right(self.app.call(req))
    }

    /// Moves the connection's place in the count to `client`'s address (a
    /// proxy's kept-alive connection may carry several clients in turn);
    /// false over the bound (counted; the request gets HTTP 429).
    fn take_place(&self, client: SocketAddr, place: &Place) -> bool {
        let key = address_key(client.ip());
        let mut held = place.lock().unwrap_or_else(PoisonError::into_inner);
        if held.as_ref().is_some_and(|g| g.key() == Some(&key)) {
            return true;
        }
        *held = None;
        if let Some(guard) = self.open.open(key) {
            *held = Some(guard);
            return true;
        }
        self.node
            .limiters()
            .counters
            .hit(Limit::OpenConnectionsPerAddress);
        false
    }
}

/// Reads a trusted proxy's PROXY header, if it sends one, within
/// `deadline`: the client it names (none when the header names nobody or
/// there is no header) and the bytes read past it. `None`: the socket is to
/// be closed (malformed header, end of stream, deadline).
async fn read_proxy_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    deadline: Duration,
) -> Option<(Option<SocketAddr>, Vec<u8>)> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        loop {
            match proxy_protocol::parse(&buf) {
                Ok(Parsed::Incomplete) => {}
                Ok(Parsed::Absent) => return Some((None, buf)),
                Ok(Parsed::Header { source, len }) => {
                    return Some((source, buf.get(len..).unwrap_or_default().to_vec()));
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "closed: bad PROXY header");
                    return None;
                }
            }
            if buf.len() >= MAX_HEADER {
                return None;
            }
            let mut chunk = [0u8; 512];
            let room = MAX_HEADER.saturating_sub(buf.len()).clamp(1, chunk.len());
            match tcp.read(&mut chunk[..room]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
    };
    if deadline.is_zero() {
        return read.await;
    }
    tokio::time::timeout(deadline, read).await.ok().flatten()
}
