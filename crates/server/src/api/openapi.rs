//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of this
//! listener's routes, `docs/openapi.json` embedded at compile time so the
//! binary always serves the description of its own version.
//!
//! Open like `/metrics`: it describes routes, holds no secret, and a client
//! generator or a developer's browser should not need a key to read it. The
//! test `tests/gateway/openapi.rs` holds it to the router: every route
//! described, every described route served, every example valid.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The description, as kept in the repository.
pub const OPENAPI_JSON: &str = include_str!("../../../../docs/openapi.json");

/// The handler.
pub async fn openapi() -> Response {
    let mut response = OPENAPI_JSON.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
