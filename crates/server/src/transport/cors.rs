//! Browsers on other origins: CORS for `/sse` and `/poll`, and the `Origin`
//! check of `/ws` upgrades, both driven by `[listen] allowed_origins`.
//!
//! Invariants: without the key nothing here changes a request or a response
//! (no `Origin` is read, no header is added, `OPTIONS` stays `405`). With
//! it, only a listed origin gets `Access-Control-Allow-Origin`, always
//! naming that origin (never `*`, so a credentialed request works too);
//! every answer says `Vary: Origin` so caches keep the variants apart. A
//! request without `Origin` is not a cross-origin browser request and
//! passes as before. This runs once per request, never per delivery.

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ALLOW, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::gateway::Gateway;
use crate::http_error::error_response;
use crate::origins::Origins;

/// Methods a page may use on `/sse` and `/poll`: `POST` carries the tokens
/// in a JSON body (which makes the browser send a preflight).
const METHODS: &str = "GET, POST, OPTIONS";
/// Request headers a page may send: the token as a bearer, the SSE resume
/// header, and the ones fetch adds or a page commonly sets (`Content-Type`
/// for the JSON body).
const HEADERS: &str = "Authorization, Last-Event-ID, Accept, Content-Type, Cache-Control";
/// Response headers a page may read beyond the safelisted ones.
const EXPOSED: &str = "Retry-After";
/// How long a browser may reuse a preflight answer (seconds): ten minutes,
/// Chromium's own ceiling at the time of writing.
const MAX_AGE: &str = "600";

/// Middleware of `/sse` and `/poll`: answers the preflight itself, and adds
/// `Access-Control-Allow-Origin` to the transport's answer for a listed
/// origin.
pub async fn cors(State(shared): State<Gateway>, request: Request, next: Next) -> Response {
    let Some(origins) = &shared.settings.origins else {
        return next.run(request).await;
    };
    let allowed = allowed_origin(origins, request.headers());
    if request.method() == Method::OPTIONS {
        return preflight(allowed, request.headers().contains_key(ORIGIN));
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
    response
}

/// Middleware of `/ws`: a browser's upgrade from an origin not listed is
/// refused with `403` before any upgrade or session (WebSocket has no CORS:
/// the server is the only one who can say no).
pub async fn check_ws_origin(
    State(shared): State<Gateway>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origins) = &shared.settings.origins
        && request.headers().contains_key(ORIGIN)
        && allowed_origin(origins, request.headers()).is_none()
    {
        return error_response(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin is not in the gateway's listen.allowed_origins",
        );
    }
    next.run(request).await
}

/// The request's `Origin`, when it is present and listed.
fn allowed_origin(origins: &Origins, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    origins
        .allows(origin.to_str().ok()?)
        .then(|| origin.clone())
}

/// The answer to `OPTIONS`: `204` with what the page may use for a listed
/// origin; `403` without CORS headers for another origin (the browser then
/// stops before sending the request); `204` with `Allow` for a client that
/// sent no `Origin`.
fn preflight(allowed: Option<HeaderValue>, has_origin: bool) -> Response {
    let mut response = match (allowed, has_origin) {
        (Some(origin), _) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let h = response.headers_mut();
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            h.insert(
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(HEADERS),
            );
            h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
            response
        }
        (None, true) => error_response(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin is not in the gateway's listen.allowed_origins",
        ),
        (None, false) => StatusCode::NO_CONTENT.into_response(),
    };
    let h = response.headers_mut();
    h.insert(ALLOW, HeaderValue::from_static(METHODS));
    h.append(VARY, HeaderValue::from_static("Origin"));
    response
}
