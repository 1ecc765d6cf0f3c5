//! WebSocket transport (`GET /ws`): the upgrade, and the connection's
//! task.
//!
//! The gateway speaks RFC 6455 itself: [`handshake`] checks the upgrade
//! request and answers it, [`frame`] encodes and decodes frames, [`socket`]
//! writes them, and [`wire`] makes a connection the driver's
//! [`Wire`](super::driver::Wire). The connection runs the
//! [`driver`](super::driver) loop. Live messages are text frames written in
//! batches (many frames, one vectored write); on plain TCP the fan-out may
//! also write a live message straight into the socket while the task is
//! parked ([`chouquette_core::outbox::DirectSocket`]). The server pings every
//! `limits.ping_interval`, and any frame from the client counts as a sign of
//! life for the idle timeout. The last messages and the close frame go out
//! in one write. A client offering the `chouquette.v1` subprotocol
//! (`Sec-WebSocket-Protocol`) has it selected in the answer, as browsers
//! require; a client offering none is served all the same.

mod frame;
mod handshake;
mod socket;
mod wire;

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{RawQuery, Request, State};
use axum::response::Response;
use chouquette_core::connections::Transport;
use chouquette_core::session::Session;
use hyper::upgrade::OnUpgrade;

use super::auth::{self, Prepared};
use super::driver;
use crate::gateway::Gateway;
use handshake::Refused;
use wire::WsWire;

/// The smallest `limits.max_frame_bytes` the config accepts. Under it, a
/// subscribe carrying one ordinary token (a few hundred bytes to over a
/// KiB with its message) may not fit in a frame, which would leave a gateway
/// that accepts connections and can serve none of them.
pub const MIN_FRAME_BYTES: usize = 2049;

/// Upgrades to WebSocket: a valid upgrade request (else 400, 405 or 426),
/// unless the node is full or stopping, or connect auth applies (`?app=`,
/// see [`crate::connect_auth`]) and refuses.
pub async fn upgrade(
    State(shared): State<Gateway>,
    super::Peer(peer): super::Peer,
    RawQuery(query): RawQuery,
    mut request: Request,
) -> Response {
    let accepted = match handshake::check(request.method(), request.version(), request.headers()) {
        Ok(accepted) => accepted,
        Err(refused) => return refused.response(),
    };
    if request.extensions().get::<OnUpgrade>().is_none() {
        return Refused::NotUpgradable.response();
    }
    if let Some(refusal) = shared.refuse_connection(peer) {
        return refusal;
    }
    let app = app_param(query.as_deref());
    let none = BTreeMap::new();
    let prepared = match auth::prepare(
        &shared,
        Transport::Ws,
        peer,
        request.headers(),
        app.as_deref(),
        &none,
    )
    .await
    {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(run(on_upgrade, shared, peer, prepared));
    accepted.response()
}

/// The `app` query parameter, if any. The rest of the query is ignored, as
/// it always was on `/ws`, and so is a query that does not parse: without
/// `app`, the one app with connect auth still applies (never skipped).
fn app_param(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == "app").map(|(_, v)| v)
}

/// The connection's task, from the `101` on: the connection hyper hands
/// over becomes a [`WsWire`] and runs the driver. Built outside its `async`
/// block, which then holds each part once: every idle connection keeps this
/// future. A session accepted by connect auth comes `prepared`, with its
/// first messages.
fn run(
    on_upgrade: OnUpgrade,
    shared: Gateway,
    peer: Option<IpAddr>,
    prepared: Option<Prepared>,
) -> impl Future<Output = ()> {
    let guard = shared.shutdown.connection("websocket");
    let (session, opening) =
        prepared.unwrap_or_else(|| (Session::new(shared.node.clone(), Transport::Ws), Vec::new()));
    async move {
        // The session (dropped, hence ended) if the client left first.
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let limit = shared.settings.max_frame_bytes;
        let wire = WsWire::new(upgraded, limit, guard);
        driver::drive_parked(wire, session, shared, peer, opening, resume).await;
    }
}

/// Takes a parked connection up again, in a task of its own.
fn resume(driver: Box<driver::Driver<WsWire>>) {
    tokio::spawn(driver.run());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_parameter_is_read_and_the_rest_ignored() {
        assert_eq!(
            app_param(Some("x=1&app=bluelib")).as_deref(),
            Some("bluelib")
        );
        assert_eq!(app_param(Some("x=1")), None);
        assert_eq!(app_param(None), None);
    }

    /// The size of the future `f` returns, without calling it.
    fn output_size<F, A, B, C, D, R>(_: &F) -> usize
    where
        F: Fn(A, B, C, D) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every idle connection holds its task's future: it must not grow
    /// (test profile: 1,952 bytes before the driver; 1,704 with it and
    /// tungstenite, not counting axum's wrapper around it; 1,640 for the
    /// whole spawned task, the wait for the upgrade included, since the
    /// gateway frames WebSocket itself; 1,592 once a client ping is carried
    /// boxed; 1,040 once the driver is boxed to park, and the gateway one
    /// pointer). An idle connection on plain TCP has no task (it parks),
    /// but a busy or TLS one does.
    #[test]
    fn the_connection_task_stays_small() {
        let size = output_size(&run);
        eprintln!("WebSocket connection task: {size} bytes");
        assert!(size <= 1040, "{size} bytes");
    }
}
