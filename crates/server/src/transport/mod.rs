//! Transports: thin adapters between a socket and a [`Session`]. WebSocket,
//! SSE and long-polling share the session and one connection loop
//! (`driver`); each supplies only its request handling and its framing
//! (a `driver::Wire`).
//!
//! [`Session`]: chouquette_core::session::Session

pub(crate) mod auth;
pub mod cors;
pub(crate) mod driver;
pub(crate) mod parking;
pub mod poll;
pub mod sse;
pub mod url;
pub mod ws;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

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
