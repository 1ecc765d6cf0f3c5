//! Lattice updates on the internal listener (PROTOCOL.md section 10,
//! docs/lattices.md): `POST /api/v1/lattices` merges values into a
//! namespace of an app, shared and per user, and every subscriber on every
//! node is sent what changed.
//!
//! The caller is authenticated first, as on the other `/api/v1` routes (no
//! key 401, an unknown app or a wrong key the same 403 `not_allowed`).
//! Then: 400 `bad_message` for a malformed body, namespace or user id, or
//! a value that is not a lattice value (the message names the lattice and
//! key); 507 `too_large` when a bound would be passed (nothing merged);
//! 503 `unavailable` when the broker cannot merge. `200 {"changed":
//! {"shared": K, "users": U}}`: the shared keys that changed and the users
//! whose values changed (0 and 0 for an update already merged).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chouquette_core::broker::{BrokerError, UNAVAILABLE_MESSAGE};
use chouquette_core::lattice::{Bounds, Lattice, LatticeError};
use chouquette_core::lattice_feed::{MAX_USERS_PER_UPDATE, NamespaceValues, valid_namespace};
use chouquette_core::user_mail::MAX_USER_BYTES;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::app_request::{Refused, authenticated};
use crate::api::error_response;
use crate::gateway::Gateway;

/// The body, as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    app_id: String,
    namespace: String,
    #[serde(default)]
    shared: Option<Box<RawValue>>,
    #[serde(default)]
    users: BTreeMap<String, Box<RawValue>>,
}

/// A lattice error, told as the lattice it is about (`shared`, or
/// `users.<id>`): a bad value is the caller's mistake, a bound is not.
fn refused(lattice: &str, e: &LatticeError) -> Refused {
    match e {
        LatticeError::BadValue { .. } => Refused::Bad(format!("{lattice}: {e}")),
        _ => Refused::TooLarge(format!("{lattice}: {e}")),
    }
}

/// Reads the body and authenticates the caller for its app.
fn read(
    shared: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, String, NamespaceValues), Refused> {
    let (_, body) = authenticated(shared, headers, body)?;
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        Refused::Bad(format!(
            "body: expected {{\"app_id\", \"namespace\", \"shared\", \"users\"}} ({e})"
        ))
    })?;
    if !valid_namespace(&body.namespace) {
        return Err(Refused::Bad(
            "invalid namespace: 1 to 64 characters among letters, digits and _-.:@/".into(),
        ));
    }
    if body.users.len() > MAX_USERS_PER_UPDATE {
        return Err(Refused::Bad(format!(
            "at most {MAX_USERS_PER_UPDATE} users per update"
        )));
    }
    let bounds = Bounds::default();
    let mut update = NamespaceValues::default();
    if let Some(raw) = &body.shared {
        update.shared = Lattice::parse(raw.get(), &bounds).map_err(|e| refused("shared", &e))?;
    }
    for (user, raw) in &body.users {
        if user.is_empty() || user.len() > MAX_USER_BYTES {
            return Err(Refused::Bad(format!(
                "a user id must have 1 to {MAX_USER_BYTES} bytes"
            )));
        }
        let shown: String = user.chars().take(64).collect();
        let lattice = Lattice::parse(raw.get(), &bounds)
            .map_err(|e| refused(&format!("users.{shown}"), &e))?;
        update.users.insert(user.clone(), lattice);
    }
    Ok((body.app_id, body.namespace, update))
}

/// `POST /api/v1/lattices`.
pub async fn update(
    State(shared): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (app, namespace, update) = match read(&shared, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused.response(),
    };
    match shared.node.update_lattices(&app, &namespace, &update).await {
        Ok(change) => {
            let users = change.users.values().filter(|l| !l.is_empty()).count();
            let changed = serde_json::json!({"shared": change.shared.len(), "users": users});
            Json(serde_json::json!({ "changed": changed })).into_response()
        }
        Err(BrokerError::Lattice(e)) => refused(&e.lattice, &e.error).response(),
        Err(e @ (BrokerError::TooManyNamespaces(_) | BrokerError::TooManyLatticeUsers(_))) => {
            Refused::TooLarge(e.to_string()).response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "lattice update refused: the broker failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                UNAVAILABLE_MESSAGE,
            )
        }
    }
}
