//! The demo backend's command route: the page asks its backend to unlock or
//! restart a point; the backend checks the user may see that point and
//! calls the device as any backend does, through the gateway's internal
//! API with the app's key (`POST /api/v1/devices/commands`,
//! docs/devices.md "Commands"). The gateway's answer goes back to the page
//! as it came: the point's `result` or `error`, `offline` at once, or a
//! timeout.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::APP;
use super::device::{RESTART, UNLOCK};
use crate::http_client::HttpClient;

/// How long the backend lets a point take to answer.
pub const TIMEOUT: &str = "5s";

/// `POST /api/command`'s body.
#[derive(Debug, Deserialize)]
pub struct CommandRequest {
    /// The demo user asking.
    pub user: String,
    /// The point, `B1`…
    pub borne: String,
    /// `unlock` or `restart`.
    pub command: String,
}

/// How the backend reaches the gateway's internal API.
#[derive(Debug, Default)]
pub struct Commander {
    /// The internal listener, known once the gateway is up.
    pub internal: OnceLock<SocketAddr>,
    /// The app's API key.
    pub api_key: String,
    client: HttpClient,
}

impl Commander {
    /// A commander with `api_key`; `internal` is set when the node is up.
    pub fn new(api_key: String) -> Commander {
        Commander {
            internal: OnceLock::new(),
            api_key,
            client: HttpClient::default(),
        }
    }

    /// Sends `request` to its point if `visible` says the user may see it.
    pub async fn send(&self, request: CommandRequest, visible: impl Fn(&str) -> bool) -> Response {
        let method = match request.command.as_str() {
            "unlock" => UNLOCK,
            "restart" => RESTART,
            _ => return refuse(StatusCode::BAD_REQUEST, "command: unlock or restart"),
        };
        if !visible(&request.borne) {
            return refuse(StatusCode::FORBIDDEN, "not your charging point");
        }
        let Some(internal) = self.internal.get() else {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "the gateway is starting");
        };
        let url = format!("http://{internal}/api/v1/devices/commands");
        let body =
            json!({"app_id": APP, "device": request.borne, "method": method, "timeout": TIMEOUT});
        match self
            .client
            .post_json(&url, &self.api_key, body.to_string().into_bytes())
            .await
        {
            Ok((status, text)) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                (status, Json(body)).into_response()
            }
            Err(e) => refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
        }
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({"error": why}))).into_response()
}
