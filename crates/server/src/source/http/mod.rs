//! The HTTP source, `POST /api/v1/publish`: one event (an object) or a
//! batch (an array), submitted to the ingest pipeline as one group.
//!
//! Every event is checked (shape, app, API key, rate, names, bounds) before
//! any is published, so a bad batch publishes nothing. Answers `{"epoch","offset"}`
//! per event, or a JSON error: 400 `bad_message`, 401/403 `not_allowed`
//! (403 for an unknown app as for a wrong key, same message, so app ids
//! cannot be listed without a key), 404 `unknown_app` (admin only), 413 `bad_message` (body too large), 429
//! `rate_limited` with `Retry-After` (the app's `publishes_per_second`; every
//! event of a batch counts, nothing of it is published), 503 `unavailable`
//! (never accepted-then-dropped), 507 when a channel bound is hit.
//!
//! `POST /admin/publish` runs the same code with the admin key standing in
//! for every app's API key ([`Caller::Trusted`], not rate limited).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chouquette_core::broker::UNAVAILABLE_MESSAGE;
use chouquette_core::ingest::{self, PublishError, Refusal};
use chouquette_core::publication::{NewEvent, Position};
use serde_json::value::RawValue;

pub use chouquette_core::ingest::Caller;

use crate::api::{bearer, error_at, error_response, too_many_requests};
use crate::gateway::Gateway;

/// Parses the body as one event or an array of events; says which it was.
fn parse(body: &[u8]) -> Result<(Vec<NewEvent>, bool), String> {
    let raw: &RawValue =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    if raw.get().starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        let events = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                serde_json::from_str(item.get()).map_err(|e| format!("event {i}: {e}"))
            })
            .collect::<Result<Vec<NewEvent>, String>>()?;
        Ok((events, true))
    } else {
        let event = serde_json::from_str(raw.get()).map_err(|e| format!("event: {e}"))?;
        Ok((vec![event], false))
    }
}

/// The handler.
pub async fn publish(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(key) = bearer(&headers) else {
        shared.node.telemetry().publish_rejected();
        return error_response(
            StatusCode::UNAUTHORIZED,
            "not_allowed",
            "missing `Authorization: Bearer <api key>`",
        );
    };
    publish_as(&shared, Caller::Backend(key), body).await
}

/// Publishes `body` on behalf of `caller`; counts refusals.
pub async fn publish_as(
    shared: &Gateway,
    caller: Caller<'_>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = match body {
        Ok(body) => answer(shared, caller, &body).await,
        Err(rejection) => error_response(rejection.status(), "bad_message", &rejection.body_text()),
    };
    if !response.status().is_success() {
        shared.node.telemetry().publish_rejected();
    }
    response
}

async fn answer(shared: &Gateway, caller: Caller<'_>, body: &[u8]) -> Response {
    if body.len() > shared.max_publish_bytes {
        let message = format!("body larger than {} bytes", shared.max_publish_bytes);
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, "bad_message", &message);
    }
    let (events, batch) = match parse(body) {
        Ok(parsed) => parsed,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "bad_message", &message),
    };
    match ingest::publish(&shared.node, caller, events).await {
        Ok(positions) if batch => Json(positions).into_response(),
        Ok(positions) => match positions.into_iter().next() {
            Some(p) => Json(p).into_response(),
            None => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unavailable",
                "nothing published",
            ),
        },
        Err(e) => publish_error(e),
    }
}

fn publish_error(e: PublishError) -> Response {
    let message = e.to_string();
    match e {
        PublishError::Refused {
            index,
            refusal,
            published,
        } => refused(index, refusal, published, &message),
        PublishError::Unavailable { published, .. } => {
            // The broker's error text is for the log, not for backends.
            tracing::warn!(error = %message, "publish refused: the broker is unavailable");
            let message = format!(
                "{UNAVAILABLE_MESSAGE} (after {} published)",
                published.len()
            );
            stopped(StatusCode::SERVICE_UNAVAILABLE, &message, published)
        }
        _ => error_response(StatusCode::INTERNAL_SERVER_ERROR, "unavailable", &message),
    }
}

/// The answer to a refused event; `message` names it.
fn refused(index: usize, refusal: Refusal, published: Vec<Position>, message: &str) -> Response {
    match refusal {
        Refusal::UnknownApp(_) => {
            error_at(StatusCode::NOT_FOUND, "unknown_app", "unknown app", index)
        }
        Refusal::WrongKey => error_at(StatusCode::FORBIDDEN, "not_allowed", WRONG_KEY, index),
        Refusal::RateLimited { limited, .. } => too_many_requests(&refusal.to_string(), limited),
        Refusal::Invalid(_) => error_at(StatusCode::BAD_REQUEST, "bad_message", message, index),
        refusal if refusal.by_broker() => {
            let message = format!("{refusal} (after {} published)", published.len());
            stopped(StatusCode::INSUFFICIENT_STORAGE, &message, published)
        }
        _ => error_response(StatusCode::INTERNAL_SERVER_ERROR, "unavailable", message),
    }
}

/// The one message for an unknown app and a wrong key: a backend must not
/// be able to tell them apart (app ids are not listed without credentials).
const WRONG_KEY: &str = "unknown app or wrong API key";

/// The broker stopped the batch: what went out before it, and why not more.
fn stopped(status: StatusCode, message: &str, published: Vec<Position>) -> Response {
    let body = serde_json::json!({
        "code": "unavailable",
        "message": message,
        "published": published,
    });
    (status, Json(body)).into_response()
}
