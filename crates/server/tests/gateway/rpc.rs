//! docs/rpc.md over real sockets: clients `call` methods over WebSocket,
//! the gateway routes them by prefix to a real axum backend on loopback,
//! which checks the signature of every request it gets and answers as each
//! method asks; every way a backend can answer (or not) has its own code,
//! and the connection keeps delivering events while a call is pending.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chouquette_core::clock::unix_now;
use chouquette_core::rpc::signature::{REPLAY_WINDOW_SECS, SIGNATURE_HEADER, verify};
use chouquette_testkit::{APP, Backend, SECRET, TestNode, WsClient, claims, config_with, sign};
use serde_json::{Value, json};

/// A request's signature header and body.
type Signed = (String, Vec<u8>);

/// What the backend saw last (the signature header and the body), and how
/// many `very_slow` calls it saw dropped before answering.
#[derive(Clone, Default)]
struct Seen {
    last: Arc<Mutex<Option<Signed>>>,
    dropped: Arc<AtomicUsize>,
}

/// Counts a `very_slow` call dropped before it answered.
struct Unanswered(Arc<AtomicUsize>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The largest answer the test gateways forward (`max_publish_bytes`).
const MAX_ANSWER: usize = 16 * 1024;

/// Answers `POST /rpc/{route}` by the method's last part, after checking
/// the signature (401 `bad_signature` when it does not verify):
/// `echo` → what it got and the route; `refuse` → 404 with a code;
/// `refuse_plain` → 403 text; `crash` → 500; `html` → 200 not JSON;
/// `huge` → JSON over [`MAX_ANSWER`]; `slow` → echo after 1.5 s;
/// `very_slow` → echo after 10 s, counted in `dropped` if cancelled before.
fn rpc_backend(seen: Seen) -> Router {
    Router::new()
        .route("/rpc/{route}", post(answer))
        .with_state(seen)
}

async fn answer(
    State(seen): State<Seen>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    *seen.last.lock().unwrap() = Some((signature.clone(), body.to_vec()));
    let checked = verify(
        SECRET.as_bytes(),
        &signature,
        &body,
        unix_now(),
        REPLAY_WINDOW_SECS,
    );
    if checked.is_err() {
        let refusal = json!({"code": "bad_signature"});
        return (StatusCode::UNAUTHORIZED, axum::Json(refusal)).into_response();
    }
    let call: Value = serde_json::from_slice(&body).unwrap();
    let method = call["method"].as_str().unwrap_or("").to_string();
    let echo = axum::Json(json!({"route": route, "got": call}));
    match method.rsplit('.').next().unwrap_or("") {
        "refuse" => {
            let body = json!({"code": "no_such_room", "message": "no room 7"});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
        "refuse_plain" => (StatusCode::FORBIDDEN, "nope, at 10.1.2.3").into_response(),
        "crash" => (StatusCode::INTERNAL_SERVER_ERROR, "db at 10.1.2.3 down").into_response(),
        "html" => "<html>hello</html>".into_response(),
        "huge" => axum::Json(json!({"blob": "x".repeat(MAX_ANSWER)})).into_response(),
        "very_slow" => {
            let unanswered = Unanswered(seen.dropped.clone());
            tokio::time::sleep(Duration::from_secs(10)).await;
            std::mem::forget(unanswered);
            echo.into_response()
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            echo.into_response()
        }
        _ => echo.into_response(),
    }
}

/// A backend, and a gateway whose app routes `chat.`, `chat.admin.`, `""`
/// (the default), `slow.` (300 ms timeout) and `down.` (nothing listens;
/// tried again until its 500 ms timeout).
struct Setup {
    node: TestNode,
    seen: Seen,
    _backend: Backend,
}

async fn setup(limits: &str, app_limits: &str, default_route: bool) -> Setup {
    let seen = Seen::default();
    let backend = Backend::start(rpc_backend(seen.clone())).await;
    let url = backend.url();
    let down = chouquette_testkit::free_port();
    let mut routes = format!(
        r#"
[[apps.rpc]]
prefix = "chat."
url = "{url}/rpc/chat"
timeout = "5s"

[[apps.rpc]]
prefix = "chat.admin."
url = "{url}/rpc/admin"

[[apps.rpc]]
prefix = "slow."
url = "{url}/rpc/slow"
timeout = "300ms"

[[apps.rpc]]
prefix = "down."
url = "http://127.0.0.1:{down}/rpc"
timeout = "500ms"
"#
    );
    if default_route {
        routes.push_str(&format!(
            "\n[[apps.rpc]]\nprefix = \"\"\nurl = \"{url}/rpc/default\"\n"
        ));
    }
    let limits = format!("max_publish_bytes = {MAX_ANSWER}\n{limits}");
    let node = TestNode::start(&config_with(&limits, &format!("{app_limits}\n{routes}"))).await;
    Setup {
        node,
        seen,
        _backend: backend,
    }
}

/// A client with the identity of `user` (groups `staff`).
async fn connected(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    let mut c = claims("", json!({}), 3600);
    c["sub"] = json!(user);
    c["groups"] = json!(["staff"]);
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": sign(&c, SECRET)}))
        .await;
    assert_eq!(client.recv().await["class"], "ack");
    client
}

fn call(id: &str, method: &str) -> Value {
    json!({"class": "call", "id": id, "method": method, "args": [1, "two"], "kwargs": {"k": true}})
}

/// Sends a call and reads its answer (`result` or `error`).
async fn answer_to(client: &mut WsClient, id: &str, method: &str) -> Value {
    client.send_json(&call(id, method)).await;
    let answer = client.recv().await;
    assert_eq!(answer["id"], id, "{answer}");
    answer
}

#[tokio::test]
async fn a_call_reaches_its_backend_signed_with_the_callers_identity() {
    let s = setup("", "", true).await;
    let mut client = connected(&s.node, "roger").await;
    let answer = answer_to(&mut client, "7", "chat.send_message").await;
    assert_eq!(answer["class"], "result", "{answer}");
    let got = &answer["result"]["got"];
    assert_eq!(answer["result"]["route"], "chat");
    assert_eq!(got["method"], "chat.send_message");
    assert_eq!(got["args"], json!([1, "two"]));
    assert_eq!(got["kwargs"], json!({"k": true}));
    assert_eq!(
        got["user"],
        json!({"app_id": APP, "user_id": "roger", "groups": ["staff"]})
    );
    let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "exactly method, args, kwargs, user: {got}");

    // The backend's check fails for a body changed in transit.
    let (signature, body) = s.seen.last.lock().unwrap().clone().unwrap();
    let now = unix_now();
    assert!(
        verify(
            SECRET.as_bytes(),
            &signature,
            &body,
            now,
            REPLAY_WINDOW_SECS
        )
        .is_ok()
    );
    let tampered = String::from_utf8(body).unwrap().replace("roger", "admin");
    let check = verify(SECRET.as_bytes(), &signature, tampered.as_bytes(), now, 300);
    assert!(check.is_err(), "a tampered body must not verify");
    let replayed = verify(
        SECRET.as_bytes(),
        &signature,
        tampered.as_bytes(),
        now + 3600,
        300,
    );
    assert!(replayed.is_err());
}

#[tokio::test]
async fn the_longest_prefix_wins_and_the_empty_prefix_takes_the_rest() {
    let s = setup("", "", true).await;
    let mut client = connected(&s.node, "roger").await;
    for (method, route) in [
        ("chat.admin.kick", "admin"),
        ("chat.send", "chat"),
        ("billing.pay", "default"),
    ] {
        let answer = answer_to(&mut client, method, method).await;
        assert_eq!(answer["result"]["route"], route, "{method}: {answer}");
    }
}

#[tokio::test]
async fn a_method_no_route_matches_is_unavailable_and_a_call_needs_an_identity() {
    let s = setup("", "", false).await;
    let mut anonymous = s.node.client().await;
    let answer = answer_to(&mut anonymous, "1", "chat.send").await;
    assert_eq!(
        (answer["class"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("not_allowed"))
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("connect first"),
        "{answer}"
    );

    let mut client = connected(&s.node, "roger").await;
    let answer = answer_to(&mut client, "2", "billing.pay").await;
    assert_eq!(answer["code"], "unavailable", "{answer}");
    let refused = s
        .node
        .metric("chouquette_rpc_refused_total{reason=\"no_route\"}")
        .await;
    assert_eq!(refused, Some(1.0));
}

#[tokio::test]
async fn every_kind_of_backend_failure_has_its_own_code_and_no_backend_detail() {
    let s = setup("", "", true).await;
    let mut client = connected(&s.node, "roger").await;
    let refused = answer_to(&mut client, "a", "chat.refuse").await;
    assert_eq!(
        (refused["code"].as_str(), refused["message"].as_str()),
        (Some("no_such_room"), Some("no room 7"))
    );
    for (method, code) in [
        ("chat.refuse_plain", "call_refused"),
        ("chat.crash", "backend_error"),
        ("chat.html", "bad_backend_answer"),
        ("chat.huge", "backend_answer_too_large"),
        ("down.anything", "backend_unavailable"),
        ("slow.slow", "backend_timeout"),
    ] {
        let answer = answer_to(&mut client, method, method).await;
        assert_eq!(
            (answer["class"].as_str(), answer["code"].as_str()),
            (Some("error"), Some(code)),
            "{method}: {answer}"
        );
        assert!(!answer.to_string().contains("10.1.2.3"), "{answer}");
        assert!(!answer.to_string().contains("127.0.0.1"), "{answer}");
    }
    let series =
        "chouquette_rpc_calls_total{app=\"bluelib\",route=\"chat.\",outcome=\"backend_error\"}";
    assert_eq!(s.node.metric(series).await, Some(1.0));
    let series = "chouquette_rpc_call_seconds_count{app=\"bluelib\",route=\"chat.\"}";
    assert_eq!(s.node.metric(series).await, Some(5.0));
}

#[tokio::test]
async fn events_keep_arriving_while_a_call_waits_on_a_slow_backend() {
    let s = setup("", "", true).await;
    let mut client = connected(&s.node, "roger").await;
    client.join_sync().await;
    client.send_json(&call("slow-1", "chat.slow")).await;
    let marker = s.node.publish_marker().await;
    let before = client.until_marker(marker).await;
    assert!(before.iter().all(|m| m["class"] != "result"), "{before:?}");
    let (result, _) = client.recv_until("result").await;
    assert_eq!(result["id"], "slow-1");
}

#[tokio::test]
async fn a_closed_connection_cancels_its_calls_to_backends() {
    let s = setup("", "", true).await;
    let mut client = connected(&s.node, "roger").await;
    client.send_json(&call("v1", "chat.very_slow")).await;
    // The request is at the backend once a later call is answered.
    assert_eq!(
        answer_to(&mut client, "e1", "chat.echo").await["class"],
        "result"
    );
    client.close().await;
    // Well before the route's 5 s timeout would drop it anyway.
    for _ in 0..40 {
        if s.seen.dropped.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the backend request outlived its connection");
}

#[tokio::test]
async fn calls_past_the_in_flight_limit_are_rate_limited_at_once() {
    let s = setup("max_calls_in_flight = 2", "", true).await;
    let mut client = connected(&s.node, "roger").await;
    for id in ["s1", "s2", "s3"] {
        client.send_json(&call(id, "chat.slow")).await;
    }
    let first = client.recv().await;
    assert_eq!(
        (first["id"].as_str(), first["code"].as_str()),
        (Some("s3"), Some("rate_limited")),
        "{first}"
    );
    let mut ids = vec![
        client.recv().await["id"].clone(),
        client.recv().await["id"].clone(),
    ];
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(ids, [json!("s1"), json!("s2")]);
    // Answered calls free their places.
    let answer = answer_to(&mut client, "s4", "chat.echo").await;
    assert_eq!(answer["class"], "result", "{answer}");
}

#[tokio::test]
async fn calls_past_the_apps_rate_are_rate_limited_with_their_id() {
    let app_limits = "[apps.limits]\ncalls_per_second = 1\ncalls_burst = 2\n";
    let s = setup("", app_limits, true).await;
    let mut client = connected(&s.node, "roger").await;
    assert_eq!(
        answer_to(&mut client, "r1", "chat.echo").await["class"],
        "result"
    );
    let mut other = connected(&s.node, "mireille").await;
    assert_eq!(
        answer_to(&mut other, "r2", "chat.echo").await["class"],
        "result"
    );
    let third = answer_to(&mut client, "r3", "chat.echo").await;
    assert_eq!(third["code"], "rate_limited", "{third}");
}

const PYTHON_BACKEND: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/python/rpc_backend.py"
);

/// docs/rpc.md's Python backend, run as written: it verifies each call's
/// signature and answers; a request it cannot verify gets 401.
#[tokio::test]
async fn the_python_rpc_backend_verifies_the_caller_and_answers() {
    let port = chouquette_testkit::free_port();
    let _python = tokio::process::Command::new("python3")
        .arg(PYTHON_BACKEND)
        .args(["--port", &port.to_string()])
        .env("CHOUQUETTE_SECRET", SECRET)
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let url = format!("http://127.0.0.1:{port}/chouquette/rpc");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the Python RPC backend did not start");
    let route = format!("[[apps.rpc]]\nprefix = \"chat.\"\nurl = \"{url}\"\n");
    let node = TestNode::start(&config_with("", &route)).await;
    let mut client = connected(&node, "roger").await;
    client
        .send_json(
            &json!({"class": "call", "id": 1, "method": "chat.send_message",
                           "args": ["lobby"], "kwargs": {"text": "hi"}}),
        )
        .await;
    let answer = client.recv().await;
    let expected = json!({"sent": true, "room": "lobby", "text": "hi", "by": "roger"});
    assert_eq!(
        (&answer["id"], &answer["result"]),
        (&json!(1), &expected),
        "{answer}"
    );
    let answer = answer_to(&mut client, "2", "chat.nope").await;
    assert_eq!(answer["code"], "unknown_method", "{answer}");

    // A request signed for another body is refused by the backend.
    let body = r#"{"method":"chat.whoami","args":[],"kwargs":{},"user":{"app_id":"bluelib","user_id":"admin","groups":[]}}"#;
    let signature = chouquette_core::rpc::signature::sign(SECRET.as_bytes(), unix_now(), b"{}");
    let head = format!(
        "POST /chouquette/rpc HTTP/1.1\r\nContent-Type: application/json\r\n\
         X-Chouquette-Signature: {signature}"
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _) = crate::common::raw_http(addr, &head, body.as_bytes()).await;
    assert_eq!(status, 401);
}
