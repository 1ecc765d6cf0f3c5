//! The operator console (`GET /admin/`) and its data route (`GET /admin/stats`).
//!
//! The page, script and style sheet are embedded in the binary and served
//! without the admin key: they hold nothing secret, and a browser cannot
//! send a Bearer header when following a link. Every data call the page
//! makes carries the key the operator types into it. The page loads nothing
//! from the network beyond these three files (the Content-Security-Policy
//! says so), and may not be framed, so its kill-switch buttons cannot be
//! clicked through another site.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use chouquette_core::telemetry::Stats;
use serde::Serialize;

use super::{BrokerAnswer, Operator};
use crate::gateway::Gateway;

const INDEX_HTML: &str = include_str!("../../../assets/admin/index.html");
const CONSOLE_JS: &str = include_str!("../../../assets/admin/console.js");
const CONSOLE_CSS: &str = include_str!("../../../assets/admin/console.css");

/// Only this origin's own files; no inline script; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load: a new binary serves a new console at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /admin`: to the page, whose relative links need the slash.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/admin/")
}

/// `GET /admin/`: the console page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /admin/console.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// `GET /admin/console.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

#[derive(Serialize)]
struct StatsAnswer {
    node: Arc<str>,
    /// Milliseconds since start: the console divides counter differences by
    /// the difference of this, not by its own clock (requests queue).
    uptime_ms: u64,
    broker: BrokerAnswer,
    switches: usize,
    #[serde(flatten)]
    stats: Stats,
}

/// `GET /admin/stats`: every counter and histogram as JSON (the same
/// numbers as `/metrics`), for the console's charts and tables.
pub async fn stats(_: Operator, State(shared): State<Gateway>) -> Response {
    let node = &shared.node;
    Json(StatsAnswer {
        node: node.id().clone(),
        uptime_ms: u64::try_from(shared.admin.uptime().as_millis()).unwrap_or(u64::MAX),
        broker: BrokerAnswer::of(node),
        switches: node.switches().len(),
        stats: node.telemetry().stats(),
    })
    .into_response()
}
