//! The internal listener: publish API, admin API, health and metrics.
//!
//! `/api/v1/...` requires `Authorization: Bearer <api_key>` of the app named
//! in the request; `/admin/...` the admin key (see `admin`); `/metrics`,
//! `/healthz` and `/readyz` are open on this listener, which must not be
//! exposed publicly.

pub mod admin;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::gateway::Gateway;

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
}

/// A JSON error answer: `{"code": ..., "message": ...}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            code,
            message,
            index: None,
        }),
    )
        .into_response()
}

/// A JSON error answer about the event at `index` of a batch:
/// `{"code": ..., "message": ..., "index": ...}`.
pub(crate) fn error_at(status: StatusCode, code: &str, message: &str, index: usize) -> Response {
    (
        status,
        Json(ErrorBody {
            code,
            message,
            index: Some(index),
        }),
    )
        .into_response()
}

/// 429 `rate_limited` with `Retry-After` (whole seconds): a limit refused
/// the request; the client may retry after that long.
pub fn too_many_requests(message: &str, limited: chouquette_core::limits::Limited) -> Response {
    let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(limited.retry_after_secs()),
    );
    response
}

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
    } else if !shared.node.broker.connected() {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "broker not connected",
        )
    } else {
        ok().into_response()
    }
}

async fn metrics(State(shared): State<Gateway>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = shared.node.telemetry.render();
            shared.node.limiters.counters.render(&mut text);
            text
        },
    )
        .into_response()
}

/// Plain-text 200, for health routes.
fn ok() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}
