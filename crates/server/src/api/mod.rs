//! The internal listener: publish API, admin API, health and metrics.
//!
//! `/api/v1/...` requires `Authorization: Bearer <api_key>` of the app named
//! in the request; `/admin/...` the admin key (see `admin`); `/metrics`,
//! `/healthz`, `/readyz` and `/api/v1/openapi.json` are open on this
//! listener, which must not be exposed publicly. Every route is described in
//! `docs/openapi.json` (served by `openapi`); a route added here without a
//! description fails `tests/gateway/openapi.rs`.

pub mod admin;
pub(crate) mod app_request;
pub mod devices;
pub mod lattices;
pub mod notify;
pub mod openapi;
pub mod subscriptions;
pub mod users;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::gateway::Gateway;
pub(crate) use crate::http_error::error_at;
pub use crate::http_error::{error_response, too_many_requests};

/// The key of an `Authorization: Bearer <key>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The internal router.
pub fn router(shared: Gateway) -> Router {
    let body_limit = DefaultBodyLimit::max(shared.max_publish_bytes);
    Router::new()
        .route(
            "/api/v1/publish",
            post(crate::source::http::publish).layer(body_limit),
        )
        .route(
            "/api/v1/subscriptions",
            post(subscriptions::subscribe)
                .delete(subscriptions::unsubscribe)
                .layer(body_limit),
        )
        .route("/api/v1/calls", post(users::call).layer(body_limit))
        .route("/api/v1/users/send", post(users::send).layer(body_limit))
        .route(
            "/api/v1/devices/commands",
            post(devices::command).layer(body_limit),
        )
        .route("/api/v1/lattices", post(lattices::update).layer(body_limit))
        .route(
            "/api/v1/notify",
            post(notify::notify).layer(DefaultBodyLimit::max(notify::body_limit(
                shared.max_publish_bytes,
            ))),
        )
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .merge(admin::router(body_limit))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn healthz() -> impl IntoResponse {
    ok()
}

async fn readyz(State(shared): State<Gateway>) -> Response {
    if shared.shutdown.is_stopping() {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down",
        )
    } else if !shared.node.broker().connected() {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "broker not connected",
        )
    } else {
        // A source that is down does not make the node unready: clients are
        // still served, with every other source's events, and a load
        // balancer taking every node out because a database is down would
        // only add an outage. Its state is said here and in the metrics
        // (`chouquette_postgres_up`), which is where to alert on it.
        let mut body = String::from("ok\n");
        for why in shared
            .postgres
            .problems()
            .into_iter()
            .chain(shared.mqtt.problems())
            .chain(shared.xmpp.problems())
        {
            body.push_str(&why);
            body.push('\n');
        }
        (StatusCode::OK, body).into_response()
    }
}

async fn metrics(State(shared): State<Gateway>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = shared.node.telemetry().render();
            shared.node.limiters().counters.render(&mut text);
            shared.postgres.render(&mut text);
            shared.mqtt.render(&mut text);
            shared.xmpp.render(&mut text);
            shared.parking.render(&mut text);
            shared.node.rpc().render(&mut text);
            shared.connect_auth.render(&mut text);
            shared.node.hub().calls().render(&mut text);
            shared.device_commands.render(&mut text);
            shared.node.notifier().render(&mut text);
            shared.node.devices().render(&mut text);
            if let Some(fallback) = &shared.fallback {
                fallback.render(&mut text);
            }
            text
        },
    )
        .into_response()
}

/// Plain-text 200, for health routes.
fn ok() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}
