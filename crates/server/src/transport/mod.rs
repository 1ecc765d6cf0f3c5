//! Transports: thin adapters between a socket and a [`Session`].
//!
//! [`Session`]: chouquette_core::session::Session

pub mod ws;
