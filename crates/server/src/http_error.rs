//! The JSON error answer of every HTTP route: `{"code": ..., "message": ...}`
//! (and `index` for a publish batch), with the status that goes with it.
//!
//! Defined below the API, the transports and the gateway state, which all
//! refuse requests the same way, so that none of them imports another for it.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chouquette_core::limits::Limited;
use serde::Serialize;

/// The body of an error answer.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
    /// The event of a batch the error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<usize>,
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
pub fn too_many_requests(message: &str, limited: Limited) -> Response {
    let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(limited.retry_after_secs()),
    );
    response
}
