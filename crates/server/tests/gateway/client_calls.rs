//! Backends calling a user's connections (docs/rpc.md "Calls to clients")
//! and publishing to one user (docs/protocol.md "Messages to a user"), on
//! the memory broker; `tests/redis/client_calls.rs` crosses nodes.

use std::time::{Duration, Instant};

use chouquette_testkit::{API_KEY, APP, TestNode, WsClient, config_with, eventually};
use serde_json::{Value, json};

const CALLS: &str = "/api/v1/calls";
const SEND: &str = "/api/v1/users/send";

/// A client with the identity `user`, listening for markers.
async fn identified(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.join_sync().await;
    client.identify(user).await;
    client
}

/// A call request to `user`.
fn call_to(user: &str, method: &str, timeout: &str) -> Value {
    json!({"app_id": APP, "user": user, "method": method, "args": [1, "two"],
           "kwargs": {"level": 3}, "timeout": timeout})
}

/// POSTs `body` to the calls route with the app's key.
async fn call(node: &TestNode, body: Value) -> (u16, Value) {
    node.api_post(CALLS, Some(API_KEY), &body).await
}

/// Reads up to the next `call`; asserts its shape; returns its id.
async fn expect_call(client: &mut WsClient, method: &str) -> Value {
    let (call, before) = client.recv_until("call").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(call["method"], method, "{call}");
    assert_eq!(call["args"], json!([1, "two"]));
    assert_eq!(call["kwargs"], json!({"level": 3}));
    assert!(call["uuid"].is_string() && call["timestamp"].is_string());
    assert!(call["id"].is_string(), "{call}");
    call["id"].clone()
}

/// `chouquette_client_calls_total` of `outcome`.
async fn outcomes(node: &TestNode, outcome: &str) -> Option<f64> {
    node.metric(&format!(
        r#"chouquette_client_calls_total{{outcome="{outcome}"}}"#
    ))
    .await
}

/// Whether `chouquette_client_call_answers_ignored_total` reaches `n`: an
/// answer is counted once the session has read it, which a marker written
/// to the client does not wait for.
async fn ignored(node: &TestNode, n: f64) -> bool {
    let series = "chouquette_client_call_answers_ignored_total";
    eventually(Duration::from_secs(5), async || {
        node.metric(series).await == Some(n)
    })
    .await
}

/// Asserts the client got nothing (no error either) before a marker.
async fn nothing_before_marker(node: &TestNode, client: &mut WsClient) {
    let marker = node.publish_marker().await;
    assert_eq!(client.until_marker(marker).await, Vec::<Value>::new());
}

#[tokio::test]
async fn the_clients_result_goes_back_to_the_backend() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let backend = call(&node, call_to("roger", "device.status", "5s"));
    let client = async {
        let id = expect_call(&mut roger, "device.status").await;
        roger
            .send_json(&json!({"class": "result", "id": id, "result": {"battery": 87}}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, client);
    assert_eq!((status, body), (200, json!({"result": {"battery": 87}})));
    assert_eq!(outcomes(&node, "result").await, Some(1.0));
    // The result is passed through as the client wrote it, even a number
    // no f64 holds.
    let backend = call(&node, call_to("roger", "device.status", "5s"));
    let client = async {
        let id = expect_call(&mut roger, "device.status").await;
        let answer = format!(r#"{{"class":"result","id":{id},"result":{{"big":1e400}}}}"#);
        roger.send_text(&answer).await;
    };
    let ((status, body), ()) = tokio::join!(backend, client);
    assert_eq!((status, body), (200, json!(r#"{"result":{"big":1e400}}"#)));
    assert_eq!(
        node.metric("chouquette_client_calls_pending").await,
        Some(0.0)
    );
    // No answer to the client's result: the next thing it sees is a marker.
    nothing_before_marker(&node, &mut roger).await;
}

#[tokio::test]
async fn the_clients_error_goes_back_with_its_code_and_message() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let backend = call(&node, call_to("roger", "device.reboot", "5s"));
    let client = async {
        let id = expect_call(&mut roger, "device.reboot").await;
        roger
            .send_json(&json!({"class": "error", "id": id, "code": "busy",
                               "message": "updating firmware"}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, client);
    let expected = json!({"error": {"code": "busy", "message": "updating firmware"}});
    assert_eq!((status, body), (200, expected));
    assert_eq!(outcomes(&node, "error").await, Some(1.0));
}

#[tokio::test]
async fn a_call_nobody_answers_times_out_and_a_late_answer_is_ignored() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let backend = call(&node, call_to("roger", "device.status", "300ms"));
    let client = expect_call(&mut roger, "device.status");
    let ((status, body), id) = tokio::join!(backend, client);
    assert_eq!((status, &body["code"]), (504, &json!("timeout")), "{body}");
    assert_eq!(outcomes(&node, "timeout").await, Some(1.0));
    assert_eq!(
        node.metric("chouquette_client_calls_pending").await,
        Some(0.0)
    );
    roger
        .send_json(&json!({"class": "result", "id": id, "result": "too late"}))
        .await;
    nothing_before_marker(&node, &mut roger).await;
    assert!(ignored(&node, 1.0).await);
}

#[tokio::test]
async fn a_user_without_connections_is_not_connected_at_once() {
    let node = TestNode::base().await;
    // Another user's connection does not count.
    let _vb = identified(&node, "vb").await;
    let started = Instant::now();
    let (status, body) = node
        .api_post(
            CALLS,
            Some(API_KEY),
            &call_to("roger", "device.status", "30s"),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("not_connected")),
        "{body}"
    );
    // At once: not after the call's timeout, not after the wait for
    // nodes that do not answer (the memory broker is one node).
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcomes(&node, "not_connected").await, Some(1.0));
}

#[tokio::test]
async fn every_tab_gets_the_call_and_the_first_answer_wins() {
    let node = TestNode::base().await;
    let mut tab_1 = identified(&node, "roger").await;
    let mut tab_2 = identified(&node, "roger").await;
    let backend = call(&node, call_to("roger", "ui.confirm", "5s"));
    let clients = async {
        let id_1 = expect_call(&mut tab_1, "ui.confirm").await;
        let id_2 = expect_call(&mut tab_2, "ui.confirm").await;
        assert_eq!(id_1, id_2, "one call, one id");
        tab_2
            .send_json(&json!({"class": "result", "id": id_2, "result": "tab 2"}))
            .await;
        id_1
    };
    let ((status, body), id) = tokio::join!(backend, clients);
    assert_eq!((status, body), (200, json!({"result": "tab 2"})));
    tab_1
        .send_json(&json!({"class": "result", "id": id, "result": "tab 1"}))
        .await;
    nothing_before_marker(&node, &mut tab_1).await;
    assert!(ignored(&node, 1.0).await);
    assert_eq!(outcomes(&node, "result").await, Some(1.0));
}

#[tokio::test]
async fn answers_to_unknown_ids_are_ignored_and_counted() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    for answer in [
        json!({"class": "result", "id": "1-nope", "result": 1}),
        json!({"class": "result", "id": 7, "result": 1}),
        json!({"class": "error", "id": "2-nope", "code": "busy"}),
    ] {
        roger.send_json(&answer).await;
    }
    nothing_before_marker(&node, &mut roger).await;
    assert!(ignored(&node, 3.0).await);
    // Another connection's call id is not this one's to answer.
    let mut vb = identified(&node, "vb").await;
    let backend = call(&node, call_to("roger", "device.status", "500ms"));
    let clients = async {
        let id = expect_call(&mut roger, "device.status").await;
        vb.send_json(&json!({"class": "result", "id": id, "result": "not mine"}))
            .await;
    };
    let ((status, _), ()) = tokio::join!(backend, clients);
    assert_eq!(status, 504);
    assert!(ignored(&node, 4.0).await);
}

#[tokio::test]
async fn an_answer_over_the_message_limit_is_refused_and_the_call_times_out() {
    let node = TestNode::start(&config_with("max_message_bytes = 4096", "")).await;
    let mut roger = identified(&node, "roger").await;
    let backend = call(&node, call_to("roger", "device.dump", "1s"));
    let client = async {
        let id = expect_call(&mut roger, "device.dump").await;
        let big = "x".repeat(5000);
        roger
            .send_json(&json!({"class": "result", "id": id, "result": big}))
            .await;
        let error = roger.recv().await;
        assert_eq!(
            (&error["class"], &error["code"]),
            (&json!("error"), &json!("bad_message"))
        );
        // A bad code is refused too, and names nothing of the call.
        roger
            .send_json(&json!({"class": "error", "id": id, "code": "not a code"}))
            .await;
        let error = roger.recv().await;
        assert_eq!(error["code"], "bad_message", "{error}");
    };
    let ((status, _), ()) = tokio::join!(backend, client);
    assert_eq!(status, 504);
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_sent() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let bad = [
        json!({"app_id": APP, "user": "roger"}),
        json!({"app_id": APP, "user": "roger", "method": ""}),
        json!({"app_id": APP, "user": "roger", "method": "a b"}),
        json!({"app_id": APP, "user": "roger", "method": "m", "args": {}}),
        json!({"app_id": APP, "user": "roger", "method": "m", "timeout": "0s"}),
        json!({"app_id": APP, "user": "roger", "method": "m", "timeout": "61s"}),
        json!({"app_id": APP, "user": "roger", "method": "m", "timeout": "soon"}),
        json!({"app_id": APP, "user": "", "method": "m"}),
        json!({"app_id": APP, "user": 7, "method": "m"}),
        json!({"app_id": APP, "user": "x".repeat(257), "method": "m"}),
    ];
    for body in &bad {
        let (status, answer) = node.api_post(CALLS, Some(API_KEY), body).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("bad_message")),
            "{body}"
        );
    }
    let bad_sends = [
        json!({"app_id": APP, "user": "roger"}),
        json!({"app_id": APP, "user": "roger", "event_kind": "*bad*"}),
        json!({"app_id": APP, "user": "", "event_kind": "k"}),
    ];
    for body in &bad_sends {
        let (status, answer) = node.api_post(SEND, Some(API_KEY), body).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("bad_message")),
            "{body}"
        );
    }
    nothing_before_marker(&node, &mut roger).await;
}

#[tokio::test]
async fn the_apps_api_key_is_required() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let call = call_to("roger", "device.status", "1s");
    let send = json!({"app_id": APP, "user": "roger", "event_kind": "k", "data": 1});
    for path in [CALLS, SEND] {
        let body = if path == CALLS { &call } else { &send };
        let (status, answer) = node.api_post(path, None, body).await;
        assert_eq!(
            (status, &answer["code"]),
            (401, &json!("not_allowed")),
            "{path}"
        );
        for key in ["wrong", "other-key"] {
            let (status, answer) = node.api_post(path, Some(key), body).await;
            assert_eq!(
                (status, &answer["code"]),
                (403, &json!("not_allowed")),
                "{path}"
            );
        }
        let mut unknown = body.clone();
        unknown["app_id"] = json!("nope");
        let (status, _) = node.api_post(path, Some(API_KEY), &unknown).await;
        assert_eq!(status, 403, "{path}");
    }
    nothing_before_marker(&node, &mut roger).await;
}

#[tokio::test]
async fn a_message_to_a_user_reaches_each_of_its_connections_and_no_one_else() {
    let node = TestNode::base().await;
    let mut roger_1 = identified(&node, "roger").await;
    let mut roger_2 = identified(&node, "roger").await;
    let mut vb = identified(&node, "vb").await;
    let body = json!({"app_id": APP, "user": "roger", "event_kind": "chat.typing",
                      "data": {"room": "lobby"}});
    let (status, answer) = node.api_post(SEND, Some(API_KEY), &body).await;
    assert_eq!(
        (status, answer),
        (200, json!({"connections": 2, "nodes": 1}))
    );
    let mut uuids = Vec::new();
    for client in [&mut roger_1, &mut roger_2] {
        let (message, before) = client.recv_until("message").await;
        assert!(before.is_empty(), "{before:?}");
        assert_eq!(message["event_kind"], "chat.typing");
        assert_eq!(message["data"], json!({"room": "lobby"}));
        assert!(message["timestamp"].is_string());
        uuids.push(message["uuid"].clone());
    }
    assert_eq!(uuids[0], uuids[1], "serialized once");
    nothing_before_marker(&node, &mut vb).await;
    // A user with no connection: sent to nobody, still a 200.
    let body = json!({"app_id": APP, "user": "nobody", "event_kind": "k"});
    let (status, answer) = node.api_post(SEND, Some(API_KEY), &body).await;
    assert_eq!(
        (status, answer),
        (200, json!({"connections": 0, "nodes": 1}))
    );
}

const PYTHON_CALLER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/python/call_client.py"
);

/// Runs `examples/python/call_client.py` against `node` with `args` after
/// the connection options; returns its exit status and its output (JSON).
async fn python_caller(node: &TestNode, user: &str, args: &[&str]) -> (i32, Value) {
    let output = tokio::process::Command::new("python3")
        .arg(PYTHON_CALLER)
        .args([
            "--api",
            &node.internal_url(),
            "--key",
            API_KEY,
            "--app",
            APP,
        ])
        .args(["--user", user])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout.into()));
    (output.status.code().unwrap_or(-1), printed)
}

#[tokio::test]
async fn the_python_example_calls_a_connected_client_and_sends_it_a_message() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let caller = python_caller(
        &node,
        "roger",
        &[
            "call",
            "device.status",
            "--args",
            "[1, \"two\"]",
            "--kwargs",
            "{\"level\": 3}",
        ],
    );
    let client = async {
        let id = expect_call(&mut roger, "device.status").await;
        roger
            .send_json(&json!({"class": "result", "id": id, "result": {"battery": 87}}))
            .await;
    };
    let ((status, printed), ()) = tokio::join!(caller, client);
    assert_eq!((status, printed), (0, json!({"result": {"battery": 87}})));
    let caller = python_caller(
        &node,
        "roger",
        &[
            "call",
            "device.status",
            "--args",
            "[1, \"two\"]",
            "--kwargs",
            "{\"level\": 3}",
        ],
    );
    let client = async {
        let id = expect_call(&mut roger, "device.status").await;
        roger
            .send_json(&json!({"class": "error", "id": id, "code": "busy", "message": "later"}))
            .await;
    };
    let ((status, printed), ()) = tokio::join!(caller, client);
    assert_eq!(
        (status, printed),
        (2, json!({"error": {"code": "busy", "message": "later"}}))
    );
    let (status, printed) = python_caller(&node, "nobody", &["call", "device.status"]).await;
    assert_eq!((status, printed), (3, json!({"not_connected": "nobody"})));
    let sent = ["send", "chat.typing", "--data", "{\"room\": \"lobby\"}"];
    let (status, printed) = python_caller(&node, "roger", &sent).await;
    assert_eq!(
        (status, printed),
        (0, json!({"connections": 1, "nodes": 1}))
    );
    let (message, _) = roger.recv_until("message").await;
    assert_eq!(message["data"], json!({"room": "lobby"}));
}

#[tokio::test]
async fn calls_waiting_for_one_user_are_bounded() {
    let node = TestNode::base().await;
    let mut roger = identified(&node, "roger").await;
    let max = chouquette_core::user_calls::MAX_PENDING_PER_USER;
    // `max` calls nobody answers, waiting together.
    let waiting = futures_util::future::join_all(
        (0..max).map(|_| call(&node, call_to("roger", "device.status", "3s"))),
    );
    let over = async {
        let pending = "chouquette_client_calls_pending";
        let full = eventually(Duration::from_secs(5), async || {
            node.metric(pending).await == Some(max as f64)
        })
        .await;
        assert!(full, "{max} calls never waited together");
        let refused = call(&node, call_to("roger", "device.status", "3s")).await;
        // Another user is not held back by roger's calls.
        let other = call(&node, call_to("vb", "device.status", "3s")).await;
        (refused, other)
    };
    let (answers, ((status, body), (other, _))) = tokio::join!(waiting, over);
    assert_eq!(
        (status, &body["code"]),
        (429, &json!("rate_limited")),
        "{body}"
    );
    assert_eq!(other, 404);
    assert!(
        answers.iter().all(|(status, _)| *status == 504),
        "{answers:?}"
    );
    assert_eq!(outcomes(&node, "busy").await, Some(1.0));
    // Each waiting call reached roger's connection once; the refused one
    // never did.
    let mut ids = Vec::new();
    for _ in 0..max {
        ids.push(expect_call(&mut roger, "device.status").await);
    }
    ids.sort_by_key(ToString::to_string);
    ids.dedup();
    assert_eq!(ids.len(), max);
    nothing_before_marker(&node, &mut roger).await;
}
