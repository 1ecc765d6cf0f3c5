//! The Chouquette gateway: configuration, listeners, transports and the
//! internal API around [`chouquette_core`].
//!
//! [`serve::start`] runs a node from a [`config::Config`]; the `chouquette`
//! binary is a thin command line over this library.

pub mod accept;
pub mod api;
pub mod audit;
pub mod broker;
pub mod cli;
pub mod config;
pub mod connect_auth;
pub mod demo;
pub mod dev;
pub mod device_commands;
pub mod devices;
pub mod edge;
pub mod fallback;
pub mod gateway;
pub mod http_client;
pub mod http_error;
pub mod logging;
pub mod operator;
pub mod origins;
pub mod reverse_proxy;
pub mod rpc;
#[cfg(unix)]
pub mod sd_notify;
pub mod serve;
pub mod shutdown;
pub mod source;
pub mod static_files;
pub mod tls;
pub mod transport;
