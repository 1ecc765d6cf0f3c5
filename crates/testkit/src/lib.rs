//! Test helpers, kept as product code: spawn a node on 127.0.0.1:0, drive it
//! with a real WebSocket client, publish through the real HTTP API.
//!
//! A crate of its own, a dev-dependency only, so none of it is in the
//! shipped `chouquette` library or binary. It drives the gateway through its
//! public library API (`config`, `serve`, `http_client`) like any embedder;
//! [`BASE_CONFIG`] is the one config the tests build on, the gateway's own
//! config tests included.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use chouquette::config::Config;
use chouquette::http_client::HttpClient;
use chouquette::serve::{self, Running};

mod backend;
mod lattice_view;
pub use lattice_view::LatticeView;
mod mosquitto;
pub use mosquitto::{MQTT_GATEWAY_USER, MQTT_PASSWORD, MosquittoServer};
mod postgres;
mod process;
pub use postgres::{PG_DATABASE, PG_ROLE, PostgresServer};
mod prosody;
pub use prosody::{PROSODY, ProsodyServer};
mod redis;
mod smtp;
pub use backend::{Backend, echo_router};
pub use redis::{
    QUIET_LOOPBACK, RedisServer, answers_ping, free_port, free_port_on, redis_config,
    redis_config_with,
};
pub use smtp::{SMTP_PASSWORD, SMTP_USER, SmtpServer};
pub mod tls;

/// App id of [`BASE_CONFIG`].
pub const APP: &str = "bluelib";
/// Current secret of [`BASE_CONFIG`].
pub const SECRET: &str = "s3cret-current";
/// Previous (still accepted) secret of [`BASE_CONFIG`].
pub const OLD_SECRET: &str = "s3cret-previous";
/// API key of [`BASE_CONFIG`].
pub const API_KEY: &str = "pub-key";
/// Admin key of [`BASE_CONFIG`].
pub const ADMIN_KEY: &str = "admin-key";

/// A config with one app, `bornes` keeping state and 1000 events of history.
pub const BASE_CONFIG: &str = r#"
[admin]
key = "admin-key"

[[apps]]
id = "bluelib"
secrets = ["s3cret-current", "s3cret-previous"]
api_key = "pub-key"

[apps.channels.bornes]
history = 1000
keep_state = true

[[apps]]
id = "other"
secrets = ["other-secret"]
api_key = "other-key"
"#;

/// A config like [`BASE_CONFIG`] with a `[limits]` body and extra TOML for
/// the [`APP`] app (e.g. `[apps.channels.short]` tables), for tests that
/// need other limits or channel policies.
pub fn config_with(limits: &str, app_extra: &str) -> String {
    // `app_extra` tables belong to the first app: they go before the second.
    let second = "\n[[apps]]\nid = \"other\"";
    let (first, rest) = BASE_CONFIG
        .split_once(second)
        .expect("BASE_CONFIG has the `other` app");
    format!("[limits]\n{limits}\n{first}\n{app_extra}\n{second}{rest}")
}

/// Channel every [`WsClient::join_sync`] client listens to for markers.
pub const SYNC_CHANNEL: &str = "_sync";
/// Event kind of markers on [`SYNC_CHANNEL`].
pub const MARKER_KIND: &str = "marker";

/// A node running in this process on loopback.
#[derive(Debug)]
pub struct TestNode {
    /// The running node.
    pub running: Running,
    http: HttpClient,
}

impl TestNode {
    /// Starts a node from TOML; listeners are forced onto 127.0.0.1:0.
    pub async fn start(toml: &str) -> TestNode {
        let mut config = Config::from_toml(toml, std::iter::empty()).expect("test config is valid");
        config.listen.public = SocketAddr::from(([127, 0, 0, 1], 0));
        config.listen.internal = SocketAddr::from(([127, 0, 0, 1], 0));
        config.shutdown.grace = Duration::from_secs(5);
        let running = serve::start(config).await.expect("node starts");
        TestNode {
            running,
            http: HttpClient::default(),
        }
    }

    /// Starts a node with [`BASE_CONFIG`].
    pub async fn base() -> TestNode {
        TestNode::start(BASE_CONFIG).await
    }

    /// `ws://` URL of the public listener.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.running.public)
    }

    /// `http://` base URL of the internal listener.
    pub fn internal_url(&self) -> String {
        format!("http://{}", self.running.internal)
    }

    /// Connects a WebSocket client.
    pub async fn client(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
    }

    /// POSTs a raw publish body with `key`; returns status and parsed body.
    pub async fn publish_raw(&self, key: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}/api/v1/publish", self.internal_url());
        let (status, text) = self
            .http
            .post_json(&url, key, body.to_string().into_bytes())
            .await
            .expect("publish request");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a backend-driven subscription request (`POST` subscribes,
    /// `DELETE` revokes) with `key` (none: no `Authorization`); returns the
    /// status and parsed body.
    pub async fn user_subscription(
        &self,
        method: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let url = format!("{}/api/v1/subscriptions", self.internal_url());
        let (status, text) = self
            .http
            .send_json(method, &url, key, body.to_string().into_bytes())
            .await
            .expect("subscriptions request");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POSTs a lattice update (`/api/v1/lattices`) with `key` (none: no
    /// `Authorization`); returns the status and parsed body.
    pub async fn lattice_update(&self, key: Option<&str>, body: &Value) -> (u16, Value) {
        self.api_post("/api/v1/lattices", key, body).await
    }

    /// POSTs `body` to `path` (`/api/v1/...`) of the internal listener with
    /// `key` (none: no `Authorization`); returns the status and parsed body
    /// (a string when it is not JSON).
    pub async fn api_post(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.internal_url());
        let (status, text) = self
            .http
            .send_json("POST", &url, key, body.to_string().into_bytes())
            .await
            .expect("internal API request");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Publishes one event on [`APP`]; panics unless accepted. Returns the offset.
    pub async fn publish(&self, channel: &str, kind: &str, keywords: &[&str], data: Value) -> u64 {
        let body = json!({"app_id": APP, "channel": channel, "event_kind": kind,
                          "keywords": keywords, "data": data});
        let (status, answer) = self.publish_raw(API_KEY, &body).await;
        assert_eq!(status, 200, "publish refused: {answer}");
        answer["offset"].as_u64().expect("offset")
    }

    /// Publishes one event object (any app, key [`API_KEY`]); panics unless
    /// accepted. Returns the epoch and offset.
    pub async fn publish_event(&self, event: &Value) -> (String, u64) {
        let (status, answer) = self.publish_raw(API_KEY, event).await;
        assert_eq!(status, 200, "publish refused: {answer}");
        position(&answer)
    }

    /// Publishes a batch (a JSON array) with [`API_KEY`]; panics unless
    /// accepted. Returns each event's epoch and offset, in order.
    pub async fn publish_batch(&self, events: &[Value]) -> Vec<(String, u64)> {
        let (status, answer) = self
            .publish_raw(API_KEY, &Value::from(events.to_vec()))
            .await;
        assert_eq!(status, 200, "batch refused: {answer}");
        answer
            .as_array()
            .expect("a batch is answered by an array")
            .iter()
            .map(position)
            .collect()
    }

    /// Publishes a marker on [`SYNC_CHANNEL`]; returns its offset. Delivery to
    /// one connection follows publish order, so once a client has read the
    /// marker it has read everything published before it.
    pub async fn publish_marker(&self) -> u64 {
        let body = json!({"app_id": APP, "channel": SYNC_CHANNEL, "event_kind": MARKER_KIND,
                          "keywords": [], "data": null});
        self.publish_event(&body).await.1
    }

    /// The value of one series in `GET /metrics` (`name` or `name{labels}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "metrics: {text}");
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    /// GETs an admin path with `key` (none: no `Authorization`); status and JSON body.
    pub async fn admin_get_with(&self, key: Option<&str>, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.internal_url());
        let (status, text) = self.http.get(&url, key).await.expect("admin get");
        (status, parse_body(text))
    }

    /// GETs an admin path with [`ADMIN_KEY`].
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.admin_get_with(Some(ADMIN_KEY), path).await
    }

    /// POSTs a JSON body to an admin path with `key`; status and JSON body.
    pub async fn admin_post_with(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.internal_url());
        let (status, text) = self
            .http
            .post_json(&url, key, body.to_string().into_bytes())
            .await
            .expect("admin post");
        (status, parse_body(text))
    }

    /// POSTs a JSON body to an admin path with [`ADMIN_KEY`].
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.admin_post_with(ADMIN_KEY, path, body).await
    }

    /// GETs a path (with its query) on the public listener.
    pub async fn get_public(&self, path_and_query: &str) -> (u16, String) {
        self.http
            .get(
                &format!("http://{}{path_and_query}", self.running.public),
                None,
            )
            .await
            .expect("get")
    }

    /// One long-poll: `/poll?sub=..&cursor=..&timeout=..`; the parsed answer.
    pub async fn poll(
        &self,
        tokens: &[&str],
        cursor: Option<&str>,
        timeout_secs: u64,
    ) -> (u16, Value) {
        let mut query: Vec<(&str, &str)> = tokens.iter().map(|t| ("sub", *t)).collect();
        if let Some(c) = cursor {
            query.push(("cursor", c));
        }
        let timeout = timeout_secs.to_string();
        query.push(("timeout", &timeout));
        let query = serde_urlencoded::to_string(&query).expect("query");
        let (status, body) = self.get_public(&format!("/poll?{query}")).await;
        (status, parse_body(body))
    }

    /// GETs a path on the internal listener.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.http
            .get(&format!("{}{path}", self.internal_url()), None)
            .await
            .expect("get")
    }
}

fn parse_body(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn position(answer: &Value) -> (String, u64) {
    (
        answer["epoch"].as_str().expect("epoch").to_string(),
        answer["offset"].as_u64().expect("offset"),
    )
}

/// Subscription claims for [`APP`], expiring `ttl_secs` from now.
pub fn claims(channel: &str, filters: Value, ttl_secs: i64) -> Value {
    let exp = chouquette_core::clock::unix_now() as i64 + ttl_secs;
    json!({"app_id": APP, "channel": channel, "filters": filters, "exp": exp})
}

/// Signs any claims as an HS256 JWT with `secret`.
pub fn sign(claims: &Value, secret: &str) -> String {
    chouquette_core::token::sign(claims, secret.as_bytes())
}

/// Signs subscription claims for [`APP`] with [`SECRET`].
pub fn token(channel: &str, filters: Value, ttl_secs: i64) -> String {
    sign(&claims(channel, filters, ttl_secs), SECRET)
}

/// A subscribe message for one channel of [`APP`].
pub fn subscribe(channel: &str, token: &str) -> Value {
    json!({"class": "subscribe", "app_id": APP, "uuid": "sub-1",
           "channels": {channel: {"filters": token}}})
}

/// A WebSocket test client: plain TCP by default, or any stream (over TLS
/// see [`tls::connect_wss`]) with the same helpers.
#[derive(Debug)]
pub struct WsClient<S = MaybeTlsStream<TcpStream>> {
    stream: WebSocketStream<S>,
}

/// What a client read.
#[derive(Debug)]
pub enum Received {
    /// A JSON text message.
    Json(Value),
    /// A close frame (code, reason), or the end of the stream.
    Closed(Option<(u16, String)>),
}

impl WsClient {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> WsClient {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        WsClient { stream }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> WsClient<S> {
    /// Wraps a WebSocket already open over any stream.
    pub fn from_stream(stream: WebSocketStream<S>) -> WsClient<S> {
        WsClient { stream }
    }

    /// Sends a JSON message.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    /// Sends any frame, returning the error instead of panicking (for
    /// tests where the gateway may close the connection mid-send).
    pub async fn try_send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.stream.send(message).await
    }

    /// The underlying stream, for tests that need raw access.
    pub fn stream_mut(&mut self) -> &mut WebSocketStream<S> {
        &mut self.stream
    }

    /// Closes the connection (close handshake, best effort).
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.stream.send(Message::binary(data)).await.expect("send");
    }

    /// Next message within `wait`, or `None` on timeout.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        // One deadline for the whole wait: control frames (the gateway's
        // pings) are skipped without restarting the clock.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Received::Closed(None)),
                Ok(Some(Ok(m))) => m,
            };
            match message {
                Message::Text(t) => {
                    return Some(Received::Json(
                        serde_json::from_str(t.as_str()).expect("server sends JSON"),
                    ));
                }
                Message::Close(frame) => {
                    return Some(Received::Closed(frame.map(
                        |CloseFrame { code, reason }| (u16::from(code), reason.to_string()),
                    )));
                }
                _ => continue,
            }
        }
    }

    /// Next JSON message within 5 s; panics otherwise.
    pub async fn recv(&mut self) -> Value {
        match self.next_within(Duration::from_secs(5)).await {
            Some(Received::Json(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Reads messages until one of `class`; returns it and those before it.
    pub async fn recv_until(&mut self, class: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let m = self.recv().await;
            if m["class"] == class {
                return (m, before);
            }
            before.push(m);
        }
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(m) = self.next_within(wait).await {
            panic!("expected silence, got {m:?}");
        }
    }

    /// Waits for the close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next_within(Duration::from_secs(10)).await {
                Some(Received::Closed(c)) => return c,
                Some(Received::Json(_)) => continue,
                None => panic!("connection not closed"),
            }
        }
    }

    /// Gives the connection the `connect` identity `user` of [`APP`];
    /// panics unless acknowledged.
    pub async fn identify(&mut self, user: &str) {
        let mut c = claims("", json!({}), 3600);
        c["sub"] = json!(user);
        let token = sign(&c, SECRET);
        self.send_json(&json!({"class": "connect", "app_id": APP, "token": token}))
            .await;
        let (ack, before) = self.recv_until("ack").await;
        assert!(before.is_empty(), "before the connect ack: {before:?}");
        assert!(ack["ref"].is_null() || ack["ref"].is_string(), "{ack}");
    }

    /// Subscribes to [`SYNC_CHANNEL`] for markers ([`TestNode::publish_marker`]).
    pub async fn join_sync(&mut self) {
        let (ack, before) = self
            .subscribe(SYNC_CHANNEL, json!({ MARKER_KIND: {} }))
            .await;
        assert!(before.is_empty(), "{before:?}");
        assert!(ack["channels"][SYNC_CHANNEL].is_object(), "{ack}");
    }

    /// Reads until the marker at `offset` (see [`TestNode::publish_marker`]);
    /// returns every other message received before it.
    pub async fn until_marker(&mut self, offset: u64) -> Vec<Value> {
        let mut before = Vec::new();
        loop {
            let m = self.recv().await;
            if m["class"] == "data" && m["channel"] == SYNC_CHANNEL {
                let got = m["offset"].as_u64().expect("offset");
                assert!(got <= offset, "marker {got} overtook marker {offset}");
                if got == offset {
                    return before;
                }
            } else {
                before.push(m);
            }
        }
    }

    /// Subscribes to one channel and returns the ack (and what came before it).
    pub async fn subscribe(&mut self, channel: &str, filters: Value) -> (Value, Vec<Value>) {
        let tok = token(channel, filters, 3600);
        self.send_json(&subscribe(channel, &tok)).await;
        self.recv_until("ack").await
    }
}

/// Polls `check` every 25 ms until it holds (true) or `limit` passes
/// (false): for what a test cannot wait for by a message (a metric, a
/// readiness answer, a process).
pub async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
