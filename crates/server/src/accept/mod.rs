//! The public listener's accept loop, ours rather than `axum::serve`'s, so
//! that what a client may hold before it has said anything is bounded:
//!
//! - **Header deadline.** A connection that has not sent a complete request
//!   head within `[limits] header_read_timeout` is closed (hyper's HTTP/1
//!   deadline, which also bounds a kept-alive connection waiting for its
//!   next request). With TLS it counts from the end of the handshake, which
//!   has its own deadline; a PROXY header has to arrive within it too.
//! - **Open connections per address.** At most
//!   `[limits] max_connections_per_address` sockets open at once per client
//!   address (IPv6: per /64), from accept to close, upgraded ones included.
//! - **Penalty.** Sockets of an address serving a penalty (closed as
//!   abusive) are dropped as soon as accepted, before any byte is read.
//! - **Trusted proxies.** For a peer in `[listen] trusted_proxies` the
//!   client is the one its PROXY header or `X-Forwarded-For` names
//!   (`client_address.rs`); every per-address limit keys on that client,
//!   and handlers see it as `ConnectInfo<SocketAddr>`.
//!
//! Stopping: accepting ends at once, each connection is told to finish its
//! current request and close (hyper's graceful shutdown), and the loop's
//! future ends when they have; `serve.rs` bounds the whole by the grace time.

mod client_address;
mod connection;
pub(crate) mod held;
pub mod proxy_protocol;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chouquette_core::limits::{Limit, OpenGuard, OpenPerKey, address_key};
use chouquette_core::node::Node;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use client_address::{BadNetwork, TrustedProxies};

use crate::shutdown::Shutdown;
use crate::tls::Handshakes;

/// What the public listener is configured with.
#[derive(Debug, Clone)]
pub struct PublicSettings {
    /// Longest wait for a complete request head (`[limits]
    /// header_read_timeout`); zero: no deadline (refused by check-config).
    pub header_read_timeout: Duration,
    /// Sockets one address may hold open at once (0: no limit).
    pub max_connections_per_address: usize,
    /// `[listen] trusted_proxies`.
    pub trusted_proxies: TrustedProxies,
    /// TLS, when `[listen.tls]` is set.
    pub tls: Option<Handshakes>,
}

/// Everything a connection task needs, shared by all of them.
struct Public {
    app: TowerToHyperService<Router>,
    node: Arc<Node>,
    trusted: TrustedProxies,
    open: Arc<OpenPerKey<IpAddr>>,
    header_read_timeout: Duration,
    tls: Option<Handshakes>,
    http: http1::Builder,
}

/// How a socket was let in at accept.
enum Admission {
    /// A client connecting directly, with its place in the count.
    Direct(OpenGuard<IpAddr>),
    /// A trusted proxy: who the client is comes next (PROXY header or
    /// `X-Forwarded-For`), and so does the count.
    Proxied,
}

impl Public {
    /// Lets a socket from `ip` in, or counts why not: a penalty first (it
    /// costs nothing to check), then the open-connections bound.
    fn admit(&self, ip: IpAddr) -> Option<OpenGuard<IpAddr>> {
        let limiters = self.node.limiters();
        let key = address_key(ip);
        if limiters
            .addresses
            .penalized(&key, std::time::Instant::now())
        {
            limiters.counters.hit(Limit::ConnectionsPerAddress);
            return None;
        }
        let guard = self.open.open(key);
        if guard.is_none() {
            limiters.counters.hit(Limit::OpenConnectionsPerAddress);
            tracing::debug!(%ip, "refused: too many open connections from this address");
        }
        guard
    }

    fn admit_peer(&self, peer: SocketAddr) -> Option<Admission> {
        if self.trusted.trusts(peer.ip()) {
            return Some(Admission::Proxied);
        }
        self.admit(peer.ip()).map(Admission::Direct)
    }
}

/// Serves `app` on `listener` until `stop` (see the module doc).
pub async fn serve_public(
    listener: TcpListener,
    app: Router,
    node: Arc<Node>,
    settings: PublicSettings,
    mut stop: Shutdown,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new());
    let deadline = settings.header_read_timeout;
    http.header_read_timeout((!deadline.is_zero()).then_some(deadline));
    let public = Arc::new(Public {
        app: TowerToHyperService::new(app),
        node,
        trusted: settings.trusted_proxies,
        open: OpenPerKey::new(settings.max_connections_per_address),
        header_read_timeout: deadline,
        tls: settings.tls,
        http,
    });
    // Every connection task holds a sender: when all are gone, all ended.
    let (alive, mut ended) = mpsc::channel::<()>(1);
    loop {
        let slot = match &public.tls {
            Some(tls) => tokio::select! {
                slot = tls.slot() => slot,
                () = stop.stopped() => break,
            },
            None => None,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = stop.stopped() => break,
        };
        // Events are small and latency-bound: never hold them back for Nagle.
        let _ = tcp.set_nodelay(true);
        let Some(admission) = public.admit_peer(peer) else {
            continue;
        };
        let task = connection::Task {
            public: public.clone(),
            peer,
            admission,
            slot,
            stop: stop.clone(),
            _alive: alive.clone(),
        };
        tokio::spawn(task.run(tcp));
    }
    drop(listener);
    drop(alive);
    let _ = ended.recv().await;
}

/// After a failed accept: errors about one connection are skipped; others
/// (out of file descriptors) are logged and retried a second later rather
/// than spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept on the public listener failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
