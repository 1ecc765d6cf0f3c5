//! Connect auth by the backend (PROTOCOL.md section 10, docs/connect-auth.md)
//! over real sockets: at the upgrade of `/ws`, `/sse` and `/poll` the
//! gateway asks a real axum backend on loopback, which checks the signature
//! and the session cookie; its answer gives the connection an identity and
//! subscriptions, or refuses the upgrade with its status (401, 403) or 503
//! for every way a backend can fail.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chouquette_core::clock::unix_now;
use chouquette_core::rpc::signature::{REPLAY_WINDOW_SECS, SIGNATURE_HEADER, verify};
use chouquette_testkit::{API_KEY, APP, Backend, SECRET, TestNode, WsClient, config_with};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::raw_http;

/// The signature header and body of the last auth request the backend got.
type Seen = Arc<Mutex<Option<(String, Vec<u8>)>>>;

/// The cookie the backend knows as roger's session.
const GOOD: &str = "sessionid=good";

/// What the backend answers roger: an identity and one subscription.
fn roger() -> Value {
    json!({"user_id": "roger", "groups": ["vb"],
           "subscriptions": {"bornes": {"filters": {"alarm": {"borne": "B1"}}}}})
}

/// `POST /auth/{mode}` checks the signature (400 when it does not verify),
/// records the request, then answers as `mode` says: `session` by the
/// cookie forwarded (good: [`roger`]; `sessionid=banned`: 403; else 401),
/// `crash` 500, `html` a page, `huge` JSON over 64 KiB, `slow` after 3 s,
/// `bad_channel` / `bad_filters` / `too_many` an unusable answer, `ana` an
/// identity for the `other` app. `POST /rpc` answers the caller's `user`.
fn backend(seen: Seen) -> Router {
    Router::new()
        .route("/auth/{mode}", post(auth))
        .route("/rpc", post(rpc))
        .with_state(seen)
}

fn verified(headers: &HeaderMap, body: &[u8]) -> bool {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    verify(
        SECRET.as_bytes(),
        signature,
        body,
        unix_now(),
        REPLAY_WINDOW_SECS,
    )
    .is_ok()
}

async fn auth(
    State(seen): State<Seen>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    *seen.lock().unwrap() = Some((signature, body.to_vec()));
    let secret_ok = if mode == "ana" {
        true // signed with the other app's secret
    } else {
        verified(&headers, &body)
    };
    if !secret_ok {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    let answer = |v: Value| axum::Json(v).into_response();
    match mode.as_str() {
        "session" => match request["headers"]["cookie"].as_str() {
            Some(c) if c.contains(GOOD) => answer(roger()),
            Some(c) if c.contains("sessionid=banned") => StatusCode::FORBIDDEN.into_response(),
            _ => StatusCode::UNAUTHORIZED.into_response(),
        },
        "crash" => (StatusCode::INTERNAL_SERVER_ERROR, "db down").into_response(),
        "html" => "<html>login</html>".into_response(),
        "huge" => answer(json!({"user_id": "roger", "groups": ["x".repeat(70_000)]})),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            answer(roger())
        }
        "bad_channel" => {
            answer(json!({"user_id": "roger", "subscriptions": {"no spaces": {"filters": {}}}}))
        }
        "bad_filters" => {
            answer(json!({"user_id": "roger", "subscriptions": {"bornes": {"filters": 3}}}))
        }
        "too_many" => answer(json!({"user_id": "roger", "subscriptions": {
            "a": {"filters": {}}, "b": {"filters": {}}, "c": {"filters": {}}}})),
        "ana" => answer(json!({"user_id": "ana"})),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn rpc(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !verified(&headers, &body) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let call: Value = serde_json::from_slice(&body).unwrap();
    axum::Json(json!({"user": call["user"]})).into_response()
}

/// A backend, and a gateway whose app `bluelib` authenticates connections
/// at `/auth/{mode}` (timeout 500 ms, two subscriptions per connection)
/// and routes every call to `/rpc`.
struct Setup {
    node: TestNode,
    seen: Seen,
    _backend: Backend,
}

async fn setup(mode: &str) -> Setup {
    setup_with(mode, "").await
}

/// [`setup`] with more `[apps.limits]` keys.
async fn setup_with(mode: &str, app_limits: &str) -> Setup {
    let seen = Seen::default();
    let backend = Backend::start(backend(seen.clone())).await;
    let url = backend.url();
    let extra = format!(
        "[apps.limits]\nmax_subscriptions_per_connection = 2\n{app_limits}\n\
         [apps.connect_auth]\nurl = \"{url}/auth/{mode}\"\ntimeout = \"500ms\"\n\
         [[apps.rpc]]\nprefix = \"\"\nurl = \"{url}/rpc\"\n"
    );
    let node = TestNode::start(&config_with("", &extra)).await;
    Setup {
        node,
        seen,
        _backend: backend,
    }
}

/// A WebSocket upgrade to `/ws{query}` with `headers`: the client, or the
/// HTTP status of the refusal.
async fn ws(
    node: &TestNode,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Result<WsClient, u16> {
    let mut request = format!("{}{query}", node.ws_url())
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, value.parse().expect("header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, _)) => Ok(WsClient::from_stream(stream)),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// One HTTP request to the public listener with a `Cookie`; status and
/// body (parsed when JSON).
async fn public(node: &TestNode, method_path: &str, cookie: &str, body: &str) -> (u16, Value) {
    let head =
        format!("{method_path} HTTP/1.1\r\nCookie: {cookie}\r\nContent-Type: application/json");
    let (status, text) = raw_http(node.running.public, &head, body.as_bytes()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn classes(answer: &Value) -> Vec<String> {
    answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["class"].as_str().expect("class").to_string())
        .collect()
}

/// An SSE stream open with a `Cookie`, read event by event.
struct Sse {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Sse {
    async fn open(addr: SocketAddr, path: &str, cookie: &str) -> Sse {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.expect("read").expect("status line");
        assert!(status.contains(" 200 "), "{status}");
        Sse { lines }
    }

    /// The next message (a `data:` line), skipping everything else.
    async fn next(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .expect("an event in time")
                .expect("read")
                .expect("stream open");
            if let Some(data) = line.strip_prefix("data: ") {
                return serde_json::from_str(data).expect("JSON event");
            }
        }
    }
}

/// What the backend saw last: the request body, after checking that its
/// signature verifies with the app's first secret.
fn last_request(seen: &Seen) -> Value {
    let (signature, body) = seen.lock().unwrap().clone().expect("a request");
    verify(
        SECRET.as_bytes(),
        &signature,
        &body,
        unix_now(),
        REPLAY_WINDOW_SECS,
    )
    .expect("the signature verifies");
    serde_json::from_slice(&body).expect("JSON body")
}

#[tokio::test]
async fn websocket_accepted_says_connected_first_then_serves_the_subscriptions() {
    let s = setup("session").await;
    let headers = [
        ("cookie", GOOD),
        ("authorization", "Bearer abc"),
        ("x-secret-header", "not for the backend"),
    ];
    let mut client = ws(&s.node, "", &headers).await.expect("accepted");
    let connected = client.recv().await;
    assert_eq!(connected["class"], "connected", "{connected}");
    assert_eq!(connected["user"], "roger");
    assert_eq!(connected["app_id"], APP);
    assert_eq!(connected["groups"], json!(["vb"]));
    let ack = client.recv().await;
    assert_eq!(ack["class"], "ack", "{ack}");
    assert!(ack["channels"]["bornes"]["epoch"].is_string(), "{ack}");

    // Only cookie and authorization are forwarded, with the address the
    // limits see; the body is signed with the app's first secret.
    let request = last_request(&s.seen);
    assert_eq!(
        request,
        json!({"app_id": APP, "transport": "ws", "address": "127.0.0.1",
               "headers": {"cookie": GOOD, "authorization": "Bearer abc"}})
    );

    // The backend's filter applies: B2 is not delivered, B1 is.
    s.node
        .publish("bornes", "alarm", &["borne:B2"], json!({}))
        .await;
    let b1 = s
        .node
        .publish("bornes", "alarm", &["borne:B1"], json!({"n": 1}))
        .await;
    let data = client.recv().await;
    assert_eq!(
        (&data["class"], &data["offset"]),
        (&json!("data"), &json!(b1)),
        "{data}"
    );

    // The identity is usable: a call carries it to the RPC backend.
    client
        .send_json(&json!({"class": "call", "id": 1, "method": "whoami", "args": []}))
        .await;
    let result = client.recv_until("result").await.0;
    assert_eq!(
        result["result"]["user"],
        json!({"app_id": APP, "user_id": "roger", "groups": ["vb"]}),
        "{result}"
    );
    let accepted = format!("chouquette_connect_auth_total{{app=\"{APP}\",outcome=\"accepted\"}}");
    assert_eq!(s.node.metric(&accepted).await, Some(1.0));
}

#[tokio::test]
async fn stored_backend_subscriptions_apply_to_a_connect_auth_connection() {
    let s = setup("session").await;
    let grant = json!({"app_id": APP, "user": "roger", "channel": "alerts", "filters": {"*": {}}});
    let (status, _) = s
        .node
        .user_subscription("POST", Some(API_KEY), &grant)
        .await;
    assert_eq!(status, 200);
    let mut client = ws(&s.node, "", &[("cookie", GOOD)])
        .await
        .expect("accepted");
    assert_eq!(client.recv().await["class"], "connected");
    let (subscribed, _) = client.recv_until("subscribed").await;
    assert_eq!(subscribed["channel"], "alerts", "{subscribed}");
    let offset = s.node.publish("alerts", "fire", &[], json!({})).await;
    let data = client.recv().await;
    assert_eq!(
        (&data["channel"], &data["offset"]),
        (&json!("alerts"), &json!(offset))
    );
}

#[tokio::test]
async fn sse_accepted_streams_connected_then_events() {
    let s = setup("session").await;
    let mut stream = Sse::open(s.node.running.public, "/sse", GOOD).await;
    let connected = stream.next().await;
    assert_eq!(
        (&connected["class"], &connected["user"]),
        (&json!("connected"), &json!("roger"))
    );
    assert_eq!(stream.next().await["class"], "ack");
    assert_eq!(last_request(&s.seen)["transport"], "sse");
    let b1 = s
        .node
        .publish("bornes", "alarm", &["borne:B1"], json!({}))
        .await;
    let data = stream.next().await;
    assert_eq!(data["offset"], json!(b1), "{data}");

    // POST /sse too, its body without tokens.
    let (status, _) = public(&s.node, "POST /sse", "sessionid=nobody", "{}").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn long_poll_is_authenticated_at_each_request_and_resumes_from_its_cursor() {
    let s = setup("session").await;
    // A stored grant, too: it resumes from the cursor like the answer's
    // subscriptions.
    let grant = json!({"app_id": APP, "user": "roger", "channel": "alerts", "filters": {"*": {}}});
    let (status, _) = s
        .node
        .user_subscription("POST", Some(API_KEY), &grant)
        .await;
    assert_eq!(status, 200);
    let (status, first) = public(&s.node, "GET /poll?timeout=1", GOOD, "").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        classes(&first),
        ["connected", "ack", "subscribed"],
        "{first}"
    );
    assert_eq!(last_request(&s.seen)["transport"], "poll");
    let cursor = first["cursor"].as_str().expect("cursor").to_string();
    *s.seen.lock().unwrap() = None;

    // Published between polls: the next poll gets them, without
    // `connected`, `ack` or `subscribed`.
    let b1 = s
        .node
        .publish("bornes", "alarm", &["borne:B1"], json!({}))
        .await;
    let fire = s.node.publish("alerts", "fire", &[], json!({})).await;
    let body = json!({"cursor": cursor, "timeout": 1}).to_string();
    let (status, second) = public(&s.node, "POST /poll", GOOD, &body).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(classes(&second), ["data", "data"], "{second}");
    let got: Vec<(&Value, &Value)> = second["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (&m["channel"], &m["offset"]))
        .collect();
    assert_eq!(
        got,
        [
            (&json!("bornes"), &json!(b1)),
            (&json!("alerts"), &json!(fire))
        ],
        "{second}"
    );

    // Nothing new: the poll waits its timeout and answers nothing.
    let path = format!(
        "GET /poll?timeout=1&cursor={}",
        second["cursor"].as_str().expect("cursor")
    );
    let (status, third) = public(&s.node, &path, GOOD, "").await;
    assert_eq!((status, classes(&third)), (200, vec![]), "{third}");
    assert!(s.seen.lock().unwrap().is_some(), "authenticated again");

    // The session ended: the next request is refused.
    let path = format!(
        "GET /poll?timeout=1&cursor={}",
        second["cursor"].as_str().expect("cursor")
    );
    let (status, refused) = public(&s.node, &path, "sessionid=expired", "").await;
    assert_eq!(
        (status, &refused["code"]),
        (401, &json!("unauthorized")),
        "{refused}"
    );
}

#[tokio::test]
async fn refusals_of_the_backend_refuse_the_upgrade_with_their_status() {
    let s = setup("session").await;
    assert_eq!(ws(&s.node, "", &[]).await.err(), Some(401));
    assert_eq!(
        ws(&s.node, "", &[("cookie", "sessionid=banned")])
            .await
            .err(),
        Some(403)
    );
    let (status, body) = public(&s.node, "GET /sse", "sessionid=banned", "").await;
    assert_eq!(
        (status, &body["code"]),
        (403, &json!("not_allowed")),
        "{body}"
    );
    let (status, body) = public(&s.node, "GET /poll", "x=y", "").await;
    assert_eq!(
        (status, &body["code"]),
        (401, &json!("unauthorized")),
        "{body}"
    );
    for (outcome, n) in [("unauthorized", 2.0), ("forbidden", 2.0)] {
        let series =
            format!("chouquette_connect_auth_total{{app=\"{APP}\",outcome=\"{outcome}\"}}");
        assert_eq!(s.node.metric(&series).await, Some(n), "{series}");
    }
}

#[tokio::test]
async fn a_backend_down_slow_failing_or_answering_nonsense_is_503() {
    let down = chouquette_testkit::free_port();
    let cases = [
        ("crash", "bad_status"),
        ("html", "bad_answer"),
        ("huge", "bad_answer"),
        ("slow", "timeout"),
        ("bad_channel", "bad_answer"),
        ("bad_filters", "bad_answer"),
        ("too_many", "bad_answer"),
    ];
    for (mode, outcome) in cases {
        let s = setup(mode).await;
        assert_eq!(
            ws(&s.node, "", &[("cookie", GOOD)]).await.err(),
            Some(503),
            "{mode}"
        );
        let (status, body) = public(&s.node, "GET /poll", GOOD, "").await;
        assert_eq!(
            (status, &body["code"]),
            (503, &json!("unavailable")),
            "{mode}: {body}"
        );
        let series =
            format!("chouquette_connect_auth_total{{app=\"{APP}\",outcome=\"{outcome}\"}}");
        assert_eq!(s.node.metric(&series).await, Some(2.0), "{mode}: {series}");
    }
    let extra = format!("[apps.connect_auth]\nurl = \"http://127.0.0.1:{down}/auth\"\n");
    let node = TestNode::start(&config_with("", &extra)).await;
    assert_eq!(ws(&node, "", &[("cookie", GOOD)]).await.err(), Some(503));
    let series = format!("chouquette_connect_auth_total{{app=\"{APP}\",outcome=\"unreachable\"}}");
    assert_eq!(node.metric(&series).await, Some(1.0));
}

#[tokio::test]
async fn the_app_is_chosen_by_query_or_as_the_only_one_with_connect_auth() {
    // Only bluelib: chosen without ?app; `other` has no connect auth and
    // is served as before (tokens); an unknown app is 400.
    let s = setup("session").await;
    assert_eq!(ws(&s.node, "?app=bluelib", &[]).await.err(), Some(401));
    let mut plain = ws(&s.node, "?app=other", &[])
        .await
        .expect("no connect auth");
    plain.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(ws(&s.node, "?app=nope", &[]).await.err(), Some(400));
    let (status, body) = public(&s.node, "GET /sse?app=other", "", "").await;
    assert_eq!(status, 400, "no connect auth, no token: {body}");

    // Both apps: one must be named.
    let seen = Seen::default();
    let backend = Backend::start(backend(seen.clone())).await;
    let url = backend.url();
    let config = format!(
        "{}\n[apps.connect_auth]\nurl = \"{url}/auth/ana\"\n",
        config_with(
            "",
            &format!("[apps.connect_auth]\nurl = \"{url}/auth/session\"\n")
        )
    );
    let node = TestNode::start(&config).await;
    let (status, body) = public(&node, "GET /poll", GOOD, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("?app="),
        "{body}"
    );
    let mut ana = ws(&node, "?app=other", &[]).await.expect("accepted");
    let connected = ana.recv().await;
    assert_eq!(
        (&connected["user"], &connected["app_id"]),
        (&json!("ana"), &json!("other"))
    );
    let mut roger = ws(&node, "?app=bluelib", &[("cookie", GOOD)])
        .await
        .expect("accepted");
    assert_eq!(roger.recv().await["user"], "roger");
}

const PYTHON_BACKEND: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/python/connect_auth_backend.py"
);

/// docs/connect-auth.md's Python backend, run as written: it verifies the
/// gateway's signature, finds the session by its cookie and answers.
#[tokio::test]
async fn the_python_connect_auth_backend_accepts_a_session_and_refuses_the_rest() {
    let port = chouquette_testkit::free_port();
    let _python = tokio::process::Command::new("python3")
        .arg(PYTHON_BACKEND)
        .args(["--port", &port.to_string()])
        .env("CHOUQUETTE_SECRET", SECRET)
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let up = chouquette_testkit::eventually(Duration::from_secs(5), async || {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    assert!(up, "the Python backend did not start");
    let url = format!("http://127.0.0.1:{port}/chouquette/auth");
    let extra = format!("[apps.connect_auth]\nurl = \"{url}\"\n");
    let node = TestNode::start(&config_with("", &extra)).await;
    // The example's one session: `sessionid=demo-roger`.
    let mut client = ws(&node, "", &[("cookie", "theme=dark; sessionid=demo-roger")])
        .await
        .expect("accepted");
    let connected = client.recv().await;
    assert_eq!(
        (&connected["class"], &connected["user"]),
        (&json!("connected"), &json!("roger"))
    );
    assert_eq!(client.recv().await["class"], "ack");
    assert_eq!(
        ws(&node, "", &[("cookie", "sessionid=forged")]).await.err(),
        Some(401)
    );

    // A request signed for another body is refused by the backend.
    let body = r#"{"app_id":"bluelib","transport":"ws","address":null,"headers":{"cookie":"sessionid=demo-roger"}}"#;
    let signature = chouquette_core::rpc::signature::sign(SECRET.as_bytes(), unix_now(), b"{}");
    let head = format!(
        "POST /chouquette/auth HTTP/1.1\r\nContent-Type: application/json\r\n\
         X-Chouquette-Signature: {signature}"
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _) = raw_http(addr, &head, body.as_bytes()).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_per_user_connection_limit_counts_connect_auth_connections() {
    let s = setup_with("session", "max_connections_per_user = 1").await;
    let mut first = ws(&s.node, "", &[("cookie", GOOD)])
        .await
        .expect("accepted");
    assert_eq!(first.recv().await["class"], "connected");
    assert_eq!(ws(&s.node, "", &[("cookie", GOOD)]).await.err(), Some(429));
    let (status, body) = public(&s.node, "GET /poll?timeout=1", GOOD, "").await;
    assert_eq!(
        (status, &body["code"]),
        (429, &json!("rate_limited")),
        "{body}"
    );
    let series = format!("chouquette_connect_auth_total{{app=\"{APP}\",outcome=\"user_limit\"}}");
    assert_eq!(s.node.metric(&series).await, Some(2.0));

    // The first connection gone, its place is free again.
    first.close().await;
    let freed = chouquette_testkit::eventually(Duration::from_secs(5), async || {
        ws(&s.node, "", &[("cookie", GOOD)]).await.is_ok()
    })
    .await;
    assert!(freed, "the user's connection was not released");
}
