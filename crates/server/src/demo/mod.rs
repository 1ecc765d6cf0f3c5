//! `chouquette demo`: the charging-point supervision demo on embedded
//! defaults. One process runs the gateway, a simulated backend (it signs
//! subscriptions, exactly the Webchouquette flow) and a simulated fleet of
//! about 200 charging points, and serves the dashboard.
//!
//! Two users: "Roger" may see only borne B1 and its critical alarms; "VB"
//! sees everything. The page asks the backend's `/api/get_subscription` for
//! its subscribe message and forwards it to the gateway unchanged, and
//! `/api/connect_token` for its identity: the backend notifies both users
//! (`notices.rs`), and the page shows their notifications with an
//! acknowledge button and the count of a grouped one.

pub mod fleet;
pub mod notices;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chouquette_core::clock::unix_now;
use chouquette_core::node::Node;
use chouquette_core::publication::NewEvent;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::config::Config;
use crate::serve::{self, Running, StartError};
use crate::static_files::file_response;
use fleet::{Change, Fleet};

/// The demo's app id.
pub const APP: &str = "bluelib";
/// The demo's channel.
pub const CHANNEL: &str = "bornes";
/// Charging points simulated.
pub const FLEET_SIZE: usize = 200;

const INDEX_HTML: &str = include_str!("../../assets/demo/index.html");
const DEMO_JS: &str = include_str!("../../assets/demo/demo.js");
const DEMO_CSS: &str = include_str!("../../assets/demo/demo.css");
const CLIENT_JS: &str = include_str!("../../../../clients/js/dist/chouquette.js");

/// Where the demo listens and how busy its fleet is.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Public listener (page, backend, gateway transports).
    pub public: SocketAddr,
    /// Internal listener (publish API, metrics).
    pub internal: SocketAddr,
    /// Fleet changes per second.
    pub rate: f64,
}

/// A user of the demo and what its backend lets it see.
fn filters_for(user: &str) -> Option<Value> {
    match user {
        "roger" => Some(json!({
            "status": {"borne": "B1"},
            "alarm": {"borne": "B1", "level": "critical"},
        })),
        "vb" => Some(json!({"*": {}})),
        _ => None,
    }
}

#[derive(Deserialize)]
struct UserQuery {
    user: String,
}

struct Backend {
    secret: String,
    fleet: Mutex<Fleet>,
}

impl Backend {
    /// `GET /api/get_subscription?user=`: the subscribe message, signed here.
    fn subscription(&self, user: &str) -> Response {
        let Some(filters) = filters_for(user) else {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "unknown user"})),
            )
                .into_response();
        };
        let claims = json!({
            "app_id": APP, "channel": CHANNEL, "filters": filters,
            "sub": user, "exp": unix_now() + 600,
        });
        let token = chouquette_core::token::sign(&claims, self.secret.as_bytes());
        Json(
            json!({"class": "subscribe", "app_id": APP, "channels": {CHANNEL: {"filters": token}}}),
        )
        .into_response()
    }

    /// `GET /api/connect_token?user=`: the page's identity (`connect`),
    /// signed here; needed for its notifications.
    fn connect_token(&self, user: &str) -> Response {
        if filters_for(user).is_none() {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "unknown user"})),
            )
                .into_response();
        }
        let claims = json!({"app_id": APP, "sub": user, "exp": unix_now() + 600});
        let token = chouquette_core::token::sign(&claims, self.secret.as_bytes());
        Json(json!({"app_id": APP, "token": token})).into_response()
    }

    /// `GET /api/bornes?user=`: the current state, as the backend's REST API
    /// would give it after a `reset`; Roger only sees B1.
    fn bornes(&self, user: &str) -> Response {
        let fleet = self.fleet.lock().unwrap_or_else(|p| p.into_inner());
        let visible: Vec<_> = match user {
            "vb" => fleet.bornes().to_vec(),
            "roger" => fleet
                .bornes()
                .iter()
                .filter(|b| b.uid == "B1")
                .cloned()
                .collect(),
            _ => {
                return (
                    StatusCode::FORBIDDEN,
                    Json(json!({"error": "unknown user"})),
                )
                    .into_response();
            }
        };
        Json(visible).into_response()
    }
}

fn routes(backend: Arc<Backend>) -> Router {
    let sub = backend.clone();
    let connect = backend.clone();
    Router::new()
        .route(
            "/",
            get(|| async { file_response("index.html", INDEX_HTML) }),
        )
        .route(
            "/demo.js",
            get(|| async { file_response("demo.js", DEMO_JS) }),
        )
        .route(
            "/demo.css",
            get(|| async { file_response("demo.css", DEMO_CSS) }),
        )
        .route(
            "/chouquette.js",
            get(|| async { file_response("chouquette.js", CLIENT_JS) }),
        )
        .route(
            "/api/get_subscription",
            get(move |Query(q): Query<UserQuery>| async move { sub.subscription(&q.user) }),
        )
        .route(
            "/api/connect_token",
            get(move |Query(q): Query<UserQuery>| async move { connect.connect_token(&q.user) }),
        )
        .route(
            "/api/bornes",
            get(move |Query(q): Query<UserQuery>| async move { backend.bornes(&q.user) }),
        )
}

fn demo_config(options: &DemoOptions, secret: &str) -> Config {
    let mut config = Config::default();
    config.listen.public = options.public;
    config.listen.internal = options.internal;
    config.apps.push(crate::config::AppConfig {
        id: APP.into(),
        secrets: vec![secret.into()],
        api_key: Some(uuid::Uuid::new_v4().simple().to_string()),
        allow_tokens_without_exp: false,
        channel_defaults: Default::default(),
        limits: Default::default(),
        rpc: Vec::new(),
        connect_auth: None,
        devices: None,
        messages: Default::default(),
        // A constant checked by a test: never the default in practice.
        notifications: toml::from_str(notices::CONFIG).unwrap_or_default(),
        channels: [(
            CHANNEL.to_string(),
            crate::config::ChannelConfig {
                history: Some(2000),
                keep_state: Some(true),
                ..Default::default()
            },
        )]
        .into(),
    });
    config
}

fn event(change: &Change) -> Option<NewEvent> {
    let (kind, keywords, key, data) = match change {
        Change::Status(b) => (
            "status",
            vec![
                format!("borne:{}", b.uid),
                format!("status:{}", b.status),
                format!("city:{}", b.city),
            ],
            Some(format!("borne:{}", b.uid)),
            serde_json::to_string(b).ok()?,
        ),
        Change::Alarm {
            uid,
            level,
            message,
        } => (
            "alarm",
            vec![format!("borne:{uid}"), format!("level:{level}")],
            None,
            json!({"uid": uid, "level": level, "message": message}).to_string(),
        ),
    };
    Some(NewEvent {
        app_id: APP.into(),
        channel: CHANNEL.into(),
        event_kind: kind.into(),
        keywords,
        key,
        data: RawValue::from_string(data).ok()?,
        id: None,
        time: None,
    })
}

/// Publishes the fleet's changes at `rate` per second until the node stops.
async fn simulate(node: Arc<Node>, backend: Arc<Backend>, rate: f64) {
    let period = Duration::from_secs_f64(1.0 / rate.clamp(0.1, 10_000.0));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let change = backend
            .fleet
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .step();
        let Some(event) = event(&change) else {
            continue;
        };
        if let Err(e) = node.publish(vec![event]).await {
            tracing::warn!(error = %e, "demo publish refused");
        }
        notices::alarm(&node, &change).await;
    }
}

/// Starts the demo; the fleet runs until the returned node stops.
pub async fn start(options: DemoOptions) -> Result<Running, StartError> {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let backend = Arc::new(Backend {
        secret: secret.clone(),
        fleet: Mutex::new(Fleet::new(FLEET_SIZE, unix_now())),
    });
    let config = demo_config(&options, &secret);
    let for_routes = backend.clone();
    let running = serve::start_with(config, move |_| Some(routes(for_routes))).await?;
    // Publish every point's state once, so snapshots fill the table at once.
    let initial: Vec<NewEvent> = backend
        .fleet
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .bornes()
        .iter()
        .filter_map(|b| event(&Change::Status(b.clone())))
        .collect();
    if let Err(e) = running.node.publish(initial).await {
        tracing::warn!(error = %e, "demo initial state refused");
    }
    let simulator = tokio::spawn(simulate(running.node.clone(), backend, options.rate));
    running.on_stop(simulator);
    let reports = tokio::spawn(notices::reports(running.node.clone()));
    running.on_stop(reports);
    Ok(running)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_demo_groups_alarms_and_reports() {
        let secret = "s";
        let options = DemoOptions {
            public: "127.0.0.1:0".parse().expect("addr"),
            internal: "127.0.0.1:0".parse().expect("addr"),
            rate: 1.0,
        };
        let config = demo_config(&options, secret);
        let policy = config.apps[0].notifications.policy();
        assert_eq!(policy.max_pending, 100);
        assert_eq!(
            policy.groups.get(notices::REPORT_KIND),
            Some(&notices::REPORT_WINDOW)
        );
        assert_eq!(
            policy.groups.get(notices::ALARM_KIND),
            Some(&Duration::from_secs(30))
        );
    }
}
