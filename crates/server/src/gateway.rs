//! The gateway state every handler and transport shares: the node, the
//! transport settings, the stop signal, the admin state and the operator
//! actions. Defined below the handlers, the transports and `serve`, which
//! builds it, so that none of them imports another: it imports nothing from
//! `api`, `transport` or `serve`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use chouquette_core::limits::{Limit, address_key};
use chouquette_core::node::Node;
use chouquette_core::telemetry::CloseReason;

use crate::http_error::{error_response, too_many_requests};
use crate::operator::{AdminState, OperatorActions};
use crate::origins::Origins;
use crate::shutdown::Shutdown;

/// What every handler shares: the node, the transport settings, the stop
/// signal. One pointer: every connection keeps a clone (a parked one in its
/// few hundred bytes), so its parts sit behind one `Arc`.
#[derive(Debug, Clone)]
pub struct Gateway(Arc<GatewayParts>);

impl Gateway {
    /// The gateway over `parts`.
    pub fn new(parts: GatewayParts) -> Gateway {
        Gateway(Arc::new(parts))
    }
}

impl std::ops::Deref for Gateway {
    type Target = GatewayParts;

    fn deref(&self) -> &GatewayParts {
        &self.0
    }
}

/// What a [`Gateway`] holds.
#[derive(Debug)]
pub struct GatewayParts {
    /// The node.
    pub node: Arc<Node>,
    /// Transport settings.
    pub settings: Arc<Settings>,
    /// The stop signal and live connection count.
    pub shutdown: Shutdown,
    /// Publish body limit.
    pub max_publish_bytes: usize,
    /// The admin API's key, audit log and start time.
    pub admin: Arc<AdminState>,
    /// Kill switches and disconnects, here and on the other nodes.
    pub operator: Arc<OperatorActions>,
    /// The Postgres sources' state, for `/readyz` and `/metrics`.
    pub postgres: crate::source::postgres::Statuses,
    /// The MQTT sources' state, for `/readyz` and `/metrics`.
    pub mqtt: crate::source::mqtt::Statuses,
    /// The XMPP federation's state, for `/readyz`, `/metrics` and status.
    pub xmpp: crate::source::xmpp::Statuses,
    /// Every app's connect auth by its backend, checked at upgrades.
    pub connect_auth: Arc<crate::connect_auth::ConnectAuth>,
    /// Backend commands to devices (WebSocket, MQTT).
    pub device_commands: Arc<crate::device_commands::DeviceCommands>,
    /// The offline fallback of notifications, when an app configures one.
    pub fallback: Option<Arc<crate::fallback::Fallback>>,
    /// Idle WebSocket connections waiting without a task.
    pub(crate) parking: Arc<crate::transport::parking::Parking>,
}

impl Gateway {
    /// A response refusing a new client connection from `peer`: 503 when
    /// full or stopping, 429 with `Retry-After` when the address opens
    /// connections faster than `limits.new_connections_per_address`. Checked
    /// before any upgrade, so a refused attempt costs no session.
    pub fn refuse_connection(&self, peer: Option<IpAddr>) -> Option<Response> {
        if self.shutdown.is_stopping() {
            return Some(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the gateway is shutting down",
            ));
        }
        let open = usize::try_from(self.node.telemetry().connections()).unwrap_or(0);
        if open >= self.settings.max_connections {
            self.node.telemetry().closed_by_gateway(CloseReason::Full);
            return Some(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the gateway is at its connection limit",
            ));
        }
        let limiters = &self.node.limiters();
        let now = std::time::Instant::now();
        if let Some(peer) = peer
            && let Err(limited) = limiters.addresses.check(address_key(peer), now)
        {
            limiters.counters.hit(Limit::ConnectionsPerAddress);
            return Some(too_many_requests(
                "too many new connections from this address",
                limited,
            ));
        }
        None
    }
}

/// Settings the transports need, derived from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most open connections (WebSocket, SSE and waiting polls together).
    pub max_connections: usize,
    /// Largest WebSocket frame read.
    pub max_frame_bytes: usize,
    /// Deadline of one write batch.
    pub write_timeout: Duration,
    /// WebSocket ping period (zero: no pings).
    pub ping_interval: Duration,
    /// WebSocket silence after which the client is closed (zero: never).
    pub idle_timeout: Duration,
    /// Longest a connection may hold no subscription and no identity (zero:
    /// no limit).
    pub subscribe_timeout: Duration,
    /// Interval of SSE comment heartbeats.
    pub sse_heartbeat: Duration,
    /// Longest wait of one long-poll request.
    pub poll_wait: Duration,
    /// `[listen] allowed_origins`; none: no `Origin` check, no CORS.
    pub origins: Option<Origins>,
}
