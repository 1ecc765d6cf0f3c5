//! `POST /api/v1/publish`: one event (an object) or a batch (an array).
//!
//! Every event is checked (shape, app, API key, names, bounds) before any is
//! published, so a bad batch publishes nothing. Answers `{"epoch","offset"}`
//! per event, or a JSON error: 400 `bad_message`, 401/403 `not_allowed`,
//! 404 `unknown_app`, 413 `bad_message` (body too large), 429
//! `rate_limited` with `Retry-After` (the app's `publishes_per_second`; every
//! event of a batch counts, nothing of it is published), 503 `unavailable`
//! (never accepted-then-dropped), 507 when a channel bound is hit.
//!
//! `POST /admin/publish` runs the same code with the admin key standing in
//! for every app's API key ([`Caller::Admin`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chouquette_core::broker::BrokerError;
use chouquette_core::node::PublishError;
use chouquette_core::publication::NewEvent;
use serde_json::value::RawValue;

use super::{ErrorBody, bearer, error_response, too_many_requests};
use crate::gateway::Gateway;

fn indexed(status: StatusCode, code: &str, message: &str, index: usize) -> Response {
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

/// On whose authority events are published.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// A backend, with this key: it must be the API key of every event's app.
    Backend(&'a str),
    /// An operator, already authorized by the admin key.
    Admin,
}

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
        shared.node.telemetry.publish_rejected();
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
        shared.node.telemetry.publish_rejected();
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
    for (index, event) in events.iter().enumerate() {
        let Some(app) = shared.node.apps.get(&event.app_id) else {
            return indexed(StatusCode::NOT_FOUND, "unknown_app", "unknown app", index);
        };
        if let Caller::Backend(key) = caller
            && !app.accepts_api_key(key)
        {
            return indexed(
                StatusCode::FORBIDDEN,
                "not_allowed",
                "wrong API key for this app",
                index,
            );
        }
    }
    if let Caller::Backend(_) = caller
        && let Some(refusal) = rate_limit(shared, &events)
    {
        return refusal;
    }
    match shared.node.publish(events).await {
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

/// Takes each app's publish tokens for its events in the batch (operators'
/// test publishes are not limited); the 429 answer when one app is over.
fn rate_limit(shared: &Gateway, events: &[NewEvent]) -> Option<Response> {
    let mut per_app: Vec<(&str, u32)> = Vec::new();
    for event in events {
        match per_app.iter_mut().find(|(app, _)| *app == &*event.app_id) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => per_app.push((&event.app_id, 1)),
        }
    }
    let now = std::time::Instant::now();
    let limiters = &shared.node.limiters;
    for (app, n) in per_app {
        if let Err(limited) = limiters.publish(app, n, now) {
            limiters
                .counters
                .hit(chouquette_core::limits::Limit::Publishes);
            let message = format!("app `{app}` publishes faster than its limit");
            return Some(too_many_requests(&message, limited));
        }
    }
    None
}

fn publish_error(e: PublishError) -> Response {
    let message = e.to_string();
    match e {
        PublishError::UnknownApp { index, .. } => {
            indexed(StatusCode::NOT_FOUND, "unknown_app", &message, index)
        }
        PublishError::Invalid { index, .. } => {
            indexed(StatusCode::BAD_REQUEST, "bad_message", &message, index)
        }
        PublishError::Broker(failure) => {
            let status = match failure.error {
                BrokerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INSUFFICIENT_STORAGE,
            };
            let body = serde_json::json!({
                "code": "unavailable",
                "message": message,
                "published": failure.published,
            });
            (status, Json(body)).into_response()
        }
        _ => error_response(StatusCode::INTERNAL_SERVER_ERROR, "unavailable", &message),
    }
}
