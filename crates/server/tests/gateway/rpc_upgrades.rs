//! Backends upgraded under connected clients (docs/rpc.md, "Backend
//! upgrades"): a call that never reached a backend is sent again until its
//! route's timeout, so a restart costs a pause rather than an error; a call
//! that may have reached it goes again only on a route marked idempotent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chouquette_testkit::{APP, Backend, SECRET, TestNode, WsClient, claims, config_with, sign};
use serde_json::{Value, json};

/// Requests seen per route.
type Seen = Arc<Mutex<HashMap<String, usize>>>;

/// Answers `POST /rpc/{route}` 200 with the number of requests the route
/// has seen, except, when `fail_first`, the first request of each route:
/// 503 (a backend still starting behind its proxy).
fn counting_backend(seen: Seen, fail_first: bool) -> Router {
    async fn answer(
        State((seen, fail_first)): State<(Seen, bool)>,
        Path(route): Path<String>,
    ) -> Response {
        let n = {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(route).or_default();
            *n += 1;
            *n
        };
        if fail_first && n == 1 {
            (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
        } else {
            axum::Json(json!({"attempt": n})).into_response()
        }
    }
    Router::new()
        .route("/rpc/{route}", post(answer))
        .with_state((seen, fail_first))
}

async fn connected(node: &TestNode) -> WsClient {
    let mut client = node.client().await;
    let mut c = claims("", json!({}), 3600);
    c["sub"] = json!("roger");
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": sign(&c, SECRET)}))
        .await;
    assert_eq!(client.recv().await["class"], "ack");
    client
}

async fn call(client: &mut WsClient, id: &str, method: &str) -> Value {
    client
        .send_json(&json!({"class": "call", "id": id, "method": method, "args": [], "kwargs": {}}))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["id"], id, "{answer}");
    answer
}

#[tokio::test]
async fn a_call_sent_while_its_backend_restarts_is_answered_once_it_is_back() {
    // Its port must still be free when the backend comes back: see
    // `QUIET_LOOPBACK`.
    let ip = chouquette_testkit::QUIET_LOOPBACK;
    let port = chouquette_testkit::free_port_on(ip);
    let routes = format!(
        "[[apps.rpc]]\nprefix = \"chat.\"\nurl = \"http://{ip}:{port}/rpc/chat\"\ntimeout = \"10s\"\n"
    );
    let node = TestNode::start(&config_with("", &routes)).await;
    let mut client = connected(&node).await;
    client
        .send_json(
            &json!({"class": "call", "id": "1", "method": "chat.send", "args": [], "kwargs": {}}),
        )
        .await;
    // The backend is down for a while (being upgraded), then back on its port.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = Seen::default();
    let addr = (ip, port).into();
    let _backend = Backend::start_on(addr, counting_backend(seen.clone(), false)).await;
    let answer = client.recv().await;
    assert_eq!(answer["class"], "result", "{answer}");
    assert_eq!(answer["id"], "1");
    assert_eq!(
        seen.lock().unwrap()["chat"],
        1,
        "sent once to the new backend"
    );
}

#[tokio::test]
async fn only_an_idempotent_route_sends_a_call_again_after_a_503() {
    let seen = Seen::default();
    let backend = Backend::start(counting_backend(seen.clone(), true)).await;
    let url = backend.url();
    let routes = format!(
        "[[apps.rpc]]\nprefix = \"safe.\"\nurl = \"{url}/rpc/safe\"\nidempotent = true\n\
         [[apps.rpc]]\nprefix = \"unsafe.\"\nurl = \"{url}/rpc/unsafe\"\n"
    );
    let node = TestNode::start(&config_with("", &routes)).await;
    let mut client = connected(&node).await;

    let answer = call(&mut client, "1", "safe.read").await;
    assert_eq!(answer["class"], "result", "{answer}");
    assert_eq!(answer["result"], json!({"attempt": 2}));

    let answer = call(&mut client, "2", "unsafe.write").await;
    assert_eq!(answer["code"], "backend_error", "{answer}");
    assert_eq!(seen.lock().unwrap()["unsafe"], 1, "never sent twice");
}

#[tokio::test]
async fn a_backend_that_stays_down_is_backend_unavailable_at_the_routes_timeout() {
    // Nothing may answer on its port meanwhile: see `QUIET_LOOPBACK`.
    let ip = chouquette_testkit::QUIET_LOOPBACK;
    let port = chouquette_testkit::free_port_on(ip);
    let routes = format!(
        "[[apps.rpc]]\nprefix = \"\"\nurl = \"http://{ip}:{port}/rpc\"\ntimeout = \"600ms\"\n"
    );
    let node = TestNode::start(&config_with("", &routes)).await;
    let mut client = connected(&node).await;
    let started = std::time::Instant::now();
    let answer = call(&mut client, "1", "anything").await;
    assert_eq!(answer["code"], "backend_unavailable", "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "tried again within the timeout, then gave up: {waited:?}"
    );
}
