//! The gateway held to docs/protocol.md and docs/operations.md over real
//! loopback sockets: every test starts its own node on 127.0.0.1:0 and drives
//! it with real WebSocket and HTTP clients.
//!
//! Where a test must show that something was *not* delivered, it publishes a
//! marker on another channel afterwards and reads up to it: one connection's
//! messages follow publish order, so what has not arrived before the marker
//! never will. No test sleeps to synchronise.

#![allow(clippy::unwrap_used)]

#[path = "gateway/common.rs"]
mod common;

#[path = "gateway/address_penalty.rs"]
mod address_penalty;
#[path = "gateway/addresses.rs"]
mod addresses;
#[path = "gateway/admin.rs"]
mod admin;
#[path = "gateway/backend_quickstart.rs"]
mod backend_quickstart;
#[path = "gateway/backend_subscriptions.rs"]
mod backend_subscriptions;
#[path = "gateway/client_calls.rs"]
mod client_calls;
#[path = "gateway/client_publish.rs"]
mod client_publish;
#[path = "gateway/console.rs"]
mod console;
#[path = "gateway/demo.rs"]
mod demo;
#[path = "gateway/device_commands.rs"]
mod device_commands;

#[path = "gateway/connect_auth.rs"]
mod connect_auth;

#[path = "gateway/device_state.rs"]
mod device_state;

#[path = "gateway/devices.rs"]
mod devices;
#[path = "gateway/direct.rs"]
mod direct;
#[path = "gateway/edge.rs"]
mod edge;
#[path = "gateway/events.rs"]
mod events;
#[path = "gateway/fallback.rs"]
pub mod fallback;
#[path = "gateway/filters.rs"]
mod filters;
#[path = "gateway/health.rs"]
mod health;
#[path = "gateway/hostile.rs"]
mod hostile;
#[path = "gateway/idle.rs"]
mod idle;
#[path = "gateway/lattices.rs"]
mod lattices;
#[path = "gateway/limits.rs"]
mod limits;
#[path = "gateway/messages.rs"]
mod messages;
#[path = "gateway/notifications.rs"]
mod notifications;
#[path = "gateway/notify_only.rs"]
mod notify_only;
#[path = "gateway/openapi.rs"]
mod openapi;
#[path = "gateway/origins.rs"]
mod origins;
#[path = "gateway/parked.rs"]
mod parked;
#[path = "gateway/presence.rs"]
mod presence;
#[path = "gateway/publish_api.rs"]
mod publish_api;
#[path = "gateway/resume.rs"]
mod resume;
#[path = "gateway/rpc.rs"]
mod rpc;
#[path = "gateway/rpc_upgrades.rs"]
mod rpc_upgrades;
#[path = "gateway/shutdown.rs"]
mod shutdown;
#[path = "gateway/slow_consumer.rs"]
mod slow_consumer;
#[path = "gateway/subscribe.rs"]
mod subscribe;
#[path = "gateway/switches.rs"]
mod switches;
#[path = "gateway/tls.rs"]
mod tls;
#[path = "gateway/token_clock.rs"]
mod token_clock;
#[path = "gateway/tokens.rs"]
mod tokens;
#[path = "gateway/url_bodies.rs"]
mod url_bodies;
#[path = "gateway/url_transports.rs"]
mod url_transports;
