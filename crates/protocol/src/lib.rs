//! Chouquette wire protocol, version 1.
//!
//! Everything that crosses the wire between a client and the gateway is
//! defined here once: the client messages the gateway accepts
//! ([`client`]), the messages it sends ([`server`]), and the error, reset and
//! close codes ([`codes`]) shared by the server, the docs and the clients.
//! The crate does no I/O; it is fuzzed through [`client::parse`].

pub mod client;
pub mod codes;
pub mod server;

pub use client::{ChannelRequest, ClientMessage, ParseError, Since};
pub use codes::{CloseCode, ErrorCode, ResetReason};

/// The protocol name clients may ask for as a WebSocket subprotocol.
pub const PROTOCOL_NAME: &str = "chouquette.v1";
