//! `chouquette demo`: the charging-point supervision demo on embedded
//! defaults. One process runs the gateway, a simulated backend (it signs
//! subscriptions, exactly the Webchouquette flow) and a simulated fleet of
//! about 200 charging points, and serves the dashboard.
//!
//! Each charging point is a device of the gateway (`device.rs`, and
//! docs/devices.md): a WebSocket client over loopback that publishes its own
//! status, alarms and telemetry, pinned to its keywords, and answers the
//! backend's commands (`commands.rs`: unlock, restart). The app has
//! `[apps.devices]` on the demo's channel, so the dashboard shows each
//! point's liveness; now and then a point other than B1 goes silent, then
//! offline, then comes back ([`Liveness`]).
//!
//! Two users: "Roger" may see only borne B1 and its critical alarms; "VB"
//! sees everything. The page asks the backend's `/api/get_subscription` for
//! its subscribe message and forwards it to the gateway unchanged, and
//! `/api/connect_token` for its identity: the backend notifies both users
//! (`notices.rs`), and the page shows their notifications with an
//! acknowledge button and the count of a grouped one.

pub mod commands;
pub mod device;
pub mod fleet;
pub mod mqtt_device;
pub mod notices;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chouquette_core::clock::unix_now;
use chouquette_core::node::Node;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::serve::{self, Running, StartError};
use crate::static_files::file_response;
use commands::{CommandRequest, Commander};
use device::{Link, Order};
use fleet::{Fleet, Rng};
use mqtt_device::Broker;

/// The demo's app id.
pub const APP: &str = "bluelib";
/// The demo's channel (the points' events and their liveness).
pub const CHANNEL: &str = "bornes";
/// Charging points simulated.
pub const FLEET_SIZE: usize = 200;
/// Events per second one point may publish (and messages it may send):
/// above what B1 gets at the demo's highest rate (10,000/s, 1 in 8 for B1).
const POINT_RATE: u32 = 2000;

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
    /// Charging points simulated (the dashboard expects [`FLEET_SIZE`]).
    pub fleet_size: usize,
    /// The app's secret; a fresh random one when `None` (tests set theirs
    /// to sign tokens of their own).
    pub secret: Option<String>,
    /// The points' heartbeat and outages.
    pub liveness: Liveness,
    /// Points talk MQTT through this broker instead of WebSocket.
    pub mqtt: Option<MqttDemo>,
}

/// `chouquette demo --mqtt URL`: the broker the points and the gateway's
/// MQTT source share.
#[derive(Debug, Clone)]
pub struct MqttDemo {
    /// `mqtt://[user:password@]host[:port]`: the gateway's source logs in
    /// with the URL's credentials.
    pub url: String,
    /// The points' password, each logging in with its id (a broker with
    /// per-device accounts); none: anonymous.
    pub device_password: Option<String>,
}

/// The gateway's MQTT source for the points (`mqtt_device.rs` has the
/// topics): status and alarms with their value as a topic level, so the
/// keywords the filters need come from the topic.
pub fn mqtt_section(url: &str) -> String {
    let topic = |filter: &str, kind: &str, keywords: &str, extra: &str| {
        format!(
            "[[mqtt.topics]]\nfilter = \"{filter}\"\napp = \"{APP}\"\nchannel = \"{CHANNEL}\"\n\
             event_kind = \"{kind}\"\nkeywords = {keywords}\ndevice = \"{{1}}\"\n{extra}"
        )
    };
    let time = "time_field = \"time\"\n";
    [
        format!("[[mqtt]]\nurl = {url:?}\n"),
        topic(
            "devices/+/status/+",
            "status",
            r#"["borne:{1}", "status:{3}"]"#,
            &format!("key = \"borne:{{1}}\"\n{time}"),
        ),
        topic(
            "devices/+/alarm/+",
            "alarm",
            r#"["borne:{1}", "level:{3}"]"#,
            time,
        ),
        topic("devices/+/telemetry", "telemetry", r#"["borne:{1}"]"#, time),
        topic("devices/+/state", "state", "[]", "format = \"status\"\n"),
        format!(
            "[[mqtt.commands]]\napp = \"{APP}\"\ncommand_topic = \"devices/{{device}}/commands\"\n\
             reply_topic = \"devices/{{device}}/replies\"\n"
        ),
    ]
    .concat()
}

impl DemoOptions {
    /// The demo's defaults on these listeners at this rate.
    pub fn new(public: SocketAddr, internal: SocketAddr, rate: f64) -> DemoOptions {
        DemoOptions {
            public,
            internal,
            rate,
            fleet_size: FLEET_SIZE,
            secret: None,
            liveness: Liveness::default(),
            mqtt: None,
        }
    }
}

/// How the points show liveness: each reports telemetry every
/// `telemetry_every`; every `outage_every` (the first after a quarter of
/// it) one point other than B1 says nothing for `mute` (announced silent
/// past `silent_after`), then drops its connection for `cut` (offline),
/// then comes back (online).
#[derive(Debug, Clone)]
pub struct Liveness {
    /// `[apps.devices] silent_after`.
    pub silent_after: Duration,
    /// Each point's telemetry period; below `silent_after`.
    pub telemetry_every: Duration,
    /// Time between two outages.
    pub outage_every: Duration,
    /// How long a point in an outage keeps its connection and says nothing.
    pub mute: Duration,
    /// How long its connection then stays cut.
    pub cut: Duration,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            silent_after: Duration::from_secs(20),
            telemetry_every: Duration::from_secs(10),
            outage_every: Duration::from_secs(60),
            mute: Duration::from_secs(25),
            cut: Duration::from_secs(15),
        }
    }
}

/// A user of the demo and what its backend lets it see.
fn filters_for(user: &str) -> Option<Value> {
    match user {
        "roger" => Some(json!({
            "status": {"borne": "B1"},
            "alarm": {"borne": "B1", "level": "critical"},
            "device_online": {"device": "B1"},
            "device_silent": {"device": "B1"},
            "device_offline": {"device": "B1"},
        })),
        "vb" => Some(json!({"*": {}})),
        _ => None,
    }
}

#[derive(Deserialize)]
struct UserQuery {
    user: String,
}

/// Who may command (and see) point `uid`.
fn may_see(user: &str, uid: &str) -> bool {
    user == "vb" || (user == "roger" && uid == "B1")
}

struct Backend {
    secret: String,
    fleet: Arc<Mutex<Fleet>>,
    commander: Commander,
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
            "vb" | "roger" => fleet
                .bornes()
                .iter()
                .filter(|b| may_see(user, &b.uid))
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
    let command = backend.clone();
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
            "/api/command",
            post(move |Json(request): Json<CommandRequest>| async move {
                let user = request.user.clone();
                command
                    .commander
                    .send(request, |uid| may_see(&user, uid))
                    .await
            }),
        )
        .route(
            "/api/bornes",
            get(move |Query(q): Query<UserQuery>| async move { backend.bornes(&q.user) }),
        )
}

fn demo_config(options: &DemoOptions, secret: &str, api_key: &str) -> Config {
    let mut config = Config::default();
    config.listen.public = options.public;
    config.listen.internal = options.internal;
    config.apps.push(crate::config::AppConfig {
        id: APP.into(),
        secrets: vec![secret.into()],
        api_key: Some(api_key.into()),
        allow_tokens_without_exp: false,
        channel_defaults: Default::default(),
        limits: crate::config::AppLimitsConfig {
            client_messages_per_second: Some(POINT_RATE),
            client_messages_burst: Some(2 * POINT_RATE),
            client_publishes_per_second: Some(POINT_RATE),
            client_publish_burst: Some(2 * POINT_RATE),
            ..Default::default()
        },
        rpc: Vec::new(),
        connect_auth: None,
        // Liveness on the points' own channel: one subscription shows both.
        devices: Some(crate::config::DevicesConfig {
            channel: CHANNEL.into(),
            silent_after: options.liveness.silent_after,
            max_devices: options.fleet_size.max(1),
            webhook: None,
        }),
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

/// Steps the fleet at `rate` per second and hands each change to its
/// point, which reports it; the backend notifies critical alarms on B1.
async fn simulate(node: Arc<Node>, fleet: Arc<Mutex<Fleet>>, points: Points, rate: f64) {
    let period = Duration::from_secs_f64(1.0 / rate.clamp(0.1, 10_000.0));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let change = fleet.lock().unwrap_or_else(|p| p.into_inner()).step();
        let at = SystemTime::now();
        if let Some(point) = points.get(change.uid()) {
            let order = Order::Report {
                change: change.clone(),
                at,
            };
            if point.try_send(order).is_err() {
                tracing::debug!(
                    borne = change.uid(),
                    "demo point's queue full: change dropped"
                );
            }
        }
        notices::alarm(&node, &change).await;
    }
}

/// Each point's orders, by uid.
type Points = Arc<HashMap<String, mpsc::Sender<Order>>>;

/// Every `outage_every`, one point other than B1 goes through an outage.
async fn outages(points: Points, liveness: Liveness) {
    let mut uids: Vec<&String> = points.keys().filter(|u| *u != "B1").collect();
    uids.sort();
    if uids.is_empty() {
        return;
    }
    let mut rng = Rng::new(unix_now());
    let first = tokio::time::Instant::now() + liveness.outage_every / 4;
    let mut tick = tokio::time::interval_at(first, liveness.outage_every);
    loop {
        tick.tick().await;
        let uid = uids[rng.below(uids.len())];
        let order = Order::Outage {
            mute: liveness.mute,
            cut: liveness.cut,
        };
        if let Some(point) = points.get(uid) {
            let _ = point.try_send(order);
        }
    }
}

/// Why the demo did not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The gateway did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// `--mqtt` is not a usable broker URL.
    #[error("--mqtt: {0}")]
    Mqtt(String),
}

/// Starts the demo; the fleet runs until the returned node stops.
pub async fn start(options: DemoOptions) -> Result<Running, DemoError> {
    let secret = options
        .secret
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let api_key = uuid::Uuid::new_v4().simple().to_string();
    let fleet = Arc::new(Mutex::new(Fleet::new(options.fleet_size, unix_now())));
    let backend = Arc::new(Backend {
        secret: secret.clone(),
        fleet: fleet.clone(),
        commander: Commander::new(api_key.clone()),
    });
    let mut config = demo_config(&options, &secret, &api_key);
    let broker = match &options.mqtt {
        Some(mqtt) => {
            config.sources = toml::from_str(&mqtt_section(&mqtt.url))
                .map_err(|e| DemoError::Mqtt(e.to_string()))?;
            let broker = Broker::from_url(&mqtt.url, mqtt.device_password.clone())
                .ok_or_else(|| DemoError::Mqtt(format!("not mqtt://host[:port]: {}", mqtt.url)))?;
            Some(Arc::new(broker))
        }
        None => None,
    };
    let for_routes = backend.clone();
    let running = serve::start_with(config, move |_| Some(routes(for_routes))).await?;
    let _ = backend.commander.internal.set(running.internal);
    let link = Arc::new(Link {
        url: format!("ws://{}/ws", running.public),
        secret,
        fleet: fleet.clone(),
        telemetry_every: options.liveness.telemetry_every,
    });
    let uids: Vec<String> = fleet
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .bornes()
        .iter()
        .map(|b| b.uid.clone())
        .collect();
    let mut points = HashMap::new();
    for uid in uids {
        let (orders, inbox) = mpsc::channel(device::QUEUE);
        let point = match &broker {
            Some(broker) => tokio::spawn(mqtt_device::run(
                uid.clone(),
                link.clone(),
                broker.clone(),
                inbox,
            )),
            None => tokio::spawn(device::run(uid.clone(), link.clone(), inbox)),
        };
        running.on_stop(point);
        points.insert(uid, orders);
    }
    let points = Arc::new(points);
    let simulator = simulate(running.node.clone(), fleet, points.clone(), options.rate);
    running.on_stop(tokio::spawn(simulator));
    running.on_stop(tokio::spawn(outages(points, options.liveness.clone())));
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
        let any = "127.0.0.1:0".parse().expect("addr");
        let options = DemoOptions::new(any, any, 1.0);
        let config = demo_config(&options, secret, "key");
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
