//! Transports: thin adapters between a socket and a [`Session`]. WebSocket,
//! SSE and long-polling share the session; only framing differs.
//!
//! [`Session`]: chouquette_core::session::Session

pub mod poll;
pub mod sse;
pub mod url;
pub mod ws;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use chouquette_core::clock::unix_now;
use tokio::time::Instant;

/// The client's address, when the listener records it (`ConnectInfo`); the
/// per-address connection limit applies only when it is known.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// The instant a Unix time (seconds) is reached.
pub(crate) fn deadline(unix: u64) -> Instant {
    let wait = unix.saturating_sub(unix_now());
    Instant::now() + Duration::from_secs(wait.min(365 * 24 * 3600))
}
