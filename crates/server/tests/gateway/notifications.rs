//! Notifications to users (PROTOCOL.md section 8, docs/notifications.md):
//! `POST /api/v1/notify`, delivery to every connection of the user, the
//! acknowledgement over WebSocket and `POST /notifications/ack`, pending
//! ones at connect, bounds, idempotency, grouping and the kill switch. On
//! the memory broker; `tests/redis/notifications.rs` crosses nodes.
//!
//! To show that nothing more arrives, a test sends a probe (an
//! acknowledgement of an unknown id) and reads up to its `ack`: the
//! connection reads its user's mail before the next client message, so a
//! notification sent before the probe arrives before its answer.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chouquette_testkit::{
    API_KEY, APP, Backend, SECRET, TestNode, WsClient, claims, config_with, eventually, sign,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::raw_http;

fn notification(users: &[&str], kind: &str, title: &str) -> Value {
    json!({"app_id": APP, "users": users, "kind": kind, "title": title, "body": "b",
           "link": "/posts/7", "data": {"post": 7}})
}

/// POSTs `body` to `/api/v1/notify`; panics unless 200. Returns the id.
async fn notify(node: &TestNode, body: &Value) -> String {
    let (status, answer) = node.api_post("/api/v1/notify", Some(API_KEY), body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("n-"), "{id}");
    id
}

/// A tab of `user`, with its `connect` acknowledged.
async fn tab(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.identify(user).await;
    client
}

/// Every message before the answer to a probe (see the module docs).
async fn drain(client: &mut WsClient) -> Vec<Value> {
    client
        .send_json(&json!({"class": "notification_ack", "ids": ["n-probe"], "uuid": "probe"}))
        .await;
    loop {
        let (ack, before) = client.recv_until("ack").await;
        if ack["ref"] == "probe" {
            return before;
        }
    }
}

fn ids(messages: &[Value], class: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["class"] == class)
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

async fn ack(client: &mut WsClient, ids: &[&str]) {
    client
        .send_json(&json!({"class": "notification_ack", "ids": ids, "uuid": "a1"}))
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert_eq!(ack["ref"], "a1", "{ack}");
    assert!(
        before.iter().all(|m| m["class"] == "notification_acked"),
        "{before:?}"
    );
}

#[tokio::test]
async fn two_tabs_get_it_an_ack_on_one_removes_it_for_both_and_it_never_comes_back() {
    let node = TestNode::base().await;
    let mut tabs = [tab(&node, "roger").await, tab(&node, "roger").await];
    let mut other = tab(&node, "vb").await;
    let id = notify(&node, &notification(&["roger"], "comment", "New comment")).await;
    for t in &mut tabs {
        let (n, before) = t.recv_until("notification").await;
        assert!(before.is_empty(), "{before:?}");
        assert_eq!(
            (
                &n["id"],
                &n["kind"],
                &n["title"],
                &n["body"],
                &n["link"],
                &n["data"]
            ),
            (
                &json!(id),
                &json!("comment"),
                &json!("New comment"),
                &json!("b"),
                &json!("/posts/7"),
                &json!({"post": 7})
            ),
            "{n}"
        );
        assert!(
            n["created"].as_str().is_some_and(|c| c.ends_with('Z')),
            "{n}"
        );
        assert!(n["uuid"].is_string() && n["timestamp"].is_string(), "{n}");
        assert!(n.get("grouped").is_none(), "{n}");
    }
    assert!(
        drain(&mut other).await.is_empty(),
        "another user gets nothing"
    );

    let [first, second] = &mut tabs;
    ack(first, &[&id]).await;
    let (acked, _) = second.recv_until("notification_acked").await;
    assert_eq!(acked["ids"], json!([id]), "{acked}");

    // Reconnecting: nothing pending.
    let mut again = tab(&node, "roger").await;
    assert!(ids(&drain(&mut again).await, "notification").is_empty());
    assert_eq!(
        node.metric("chouquette_notifications_acked_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn pending_ones_arrive_oldest_first_at_connect_and_the_oldest_are_dropped_past_the_bound() {
    let node = TestNode::start(&config_with("", "[apps.notifications]\nmax_pending = 3\n")).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(notify(&node, &notification(&["roger"], "x", &format!("n{i}"))).await);
    }
    let mut client = tab(&node, "roger").await;
    let got = drain(&mut client).await;
    assert_eq!(ids(&got, "notification"), sent[2..], "{got:?}");
    assert_eq!(
        node.metric("chouquette_notifications_dropped_total").await,
        Some(2.0)
    );
    // Not acknowledged: delivered again at the next connect.
    let mut again = tab(&node, "roger").await;
    assert_eq!(ids(&drain(&mut again).await, "notification"), sent[2..]);
}

#[tokio::test]
async fn a_repeated_idempotency_id_answers_the_first_id_and_stores_nothing_more() {
    let node = TestNode::base().await;
    let mut body = notification(&["roger", "roger", "vb"], "x", "once");
    body["id"] = json!("order-42");
    let first = notify(&node, &body).await;
    assert_eq!(notify(&node, &body).await, first);
    for user in ["roger", "vb"] {
        let mut client = tab(&node, user).await;
        assert_eq!(
            ids(&drain(&mut client).await, "notification"),
            std::slice::from_ref(&first)
        );
    }
    assert_eq!(
        node.metric("chouquette_notifications_accepted_total").await,
        Some(2.0)
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_their_codes() {
    let node = TestNode::start(&config_with("max_publish_bytes = 1000", "")).await;
    let good = notification(&["roger"], "x", "t");
    let post =
        async |key: Option<&str>, body: &Value| node.api_post("/api/v1/notify", key, body).await;
    assert_eq!(post(None, &good).await.0, 401);
    assert_eq!(post(Some("wrong"), &good).await.0, 403);
    let mut wrong_app = good.clone();
    wrong_app["app_id"] = json!("other");
    assert_eq!(post(Some(API_KEY), &wrong_app).await.0, 403);
    let users: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    for (field, value) in [
        ("users", json!([])),
        ("users", json!(users)),
        ("users", json!([""])),
        ("kind", json!("")),
        ("kind", json!("k".repeat(65))),
        ("title", json!("t".repeat(1025))),
        ("body", json!("b".repeat(8193))),
        ("link", json!("l".repeat(2049))),
        ("id", json!("")),
        ("surprise", json!(1)),
    ] {
        let mut body = good.clone();
        body[field] = value;
        let (status, answer) = post(Some(API_KEY), &body).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["code"], "bad_message", "{answer}");
    }
    let mut big = good.clone();
    big["data"] = json!("d".repeat(1000));
    assert_eq!(post(Some(API_KEY), &big).await.0, 413);

    // Without identity, over WebSocket; and bad acknowledgements.
    let mut anonymous = node.client().await;
    anonymous
        .send_json(&json!({"class": "notification_ack", "ids": ["n-1"]}))
        .await;
    let error = anonymous.recv().await;
    assert_eq!(
        (&error["class"], &error["code"]),
        (&json!("error"), &json!("not_allowed"))
    );
    let mut client = tab(&node, "roger").await;
    for bad in [
        json!({"class": "notification_ack", "ids": []}),
        json!({"class": "notification_ack", "ids": ["x".repeat(65)]}),
        json!({"class": "notification_ack"}),
    ] {
        client.send_json(&bad).await;
        let error = client.recv().await;
        assert_eq!(error["code"], "bad_message", "{error}");
    }
    // The public acknowledgement needs a connect token.
    let (status, _) = public_ack(node.running.public, None, r#"{"ids":["n-1"]}"#).await;
    assert_eq!(status, 401);
    let (status, _) = public_ack(node.running.public, Some("junk"), r#"{"ids":["n-1"]}"#).await;
    assert_eq!(status, 401);
    let token = connect_token("roger");
    let (status, _) = public_ack(node.running.public, Some(&token), r#"{"ids":[]}"#).await;
    assert_eq!(status, 400);
    let (status, answer) =
        public_ack(node.running.public, Some(&token), r#"{"ids":["n-1"]}"#).await;
    assert_eq!((status, answer), (200, json!({"acked": 0})));
}

fn connect_token(user: &str) -> String {
    let mut c = claims("", json!({}), 3600);
    c["sub"] = json!(user);
    sign(&c, SECRET)
}

/// `POST /notifications/ack` on the public listener.
async fn public_ack(addr: SocketAddr, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut head = "POST /notifications/ack HTTP/1.1\r\nContent-Type: application/json".to_string();
    if let Some(token) = token {
        head.push_str(&format!("\r\nAuthorization: Bearer {token}"));
    }
    let (status, text) = raw_http(addr, &head, body.as_bytes()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An SSE stream, read message by message.
struct Sse {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Sse {
    async fn open(addr: SocketAddr, path: &str) -> Sse {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nCookie: sessionid=roger\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.expect("read").expect("status line");
        assert!(status.contains(" 200 "), "{status}");
        Sse { lines }
    }

    async fn next(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .expect("a message in time")
                .expect("read")
                .expect("stream open");
            if let Some(data) = line.strip_prefix("data: ") {
                return serde_json::from_str(data).expect("JSON message");
            }
        }
    }

    async fn next_of(&mut self, class: &str) -> Value {
        loop {
            let m = self.next().await;
            if m["class"] == class {
                return m;
            }
        }
    }
}

#[tokio::test]
async fn an_sse_client_with_connect_auth_gets_pending_and_live_ones_and_acks_by_post() {
    // The backend knows every session as roger's.
    let backend = Backend::start(Router::new().route(
        "/auth",
        post(|| async { axum::Json(json!({"user_id": "roger"})) }),
    ))
    .await;
    let extra = format!("[apps.connect_auth]\nurl = \"{}/auth\"\n", backend.url());
    let node = TestNode::start(&config_with("", &extra)).await;
    let early = notify(&node, &notification(&["roger"], "x", "while away")).await;

    let mut sse = Sse::open(node.running.public, &format!("/sse?app_id={APP}")).await;
    assert_eq!(sse.next().await["class"], "connected");
    assert_eq!(sse.next_of("notification").await["id"], json!(early));
    let live = notify(&node, &notification(&["roger"], "x", "live")).await;
    assert_eq!(sse.next_of("notification").await["id"], json!(live));

    // A tab of the same user (identified by connect auth too).
    let mut tab = tab_authenticated(&node).await;
    let body = json!({"ids": [early, live]}).to_string();
    let (status, answer) =
        public_ack(node.running.public, Some(&connect_token("roger")), &body).await;
    assert_eq!((status, answer), (200, json!({"acked": 2})));
    let acked = sse.next_of("notification_acked").await;
    assert_eq!(acked["ids"], json!([early, live]));
    let (acked, _) = tab.recv_until("notification_acked").await;
    assert_eq!(acked["ids"], json!([early, live]));
    let mut again = tab_authenticated(&node).await;
    assert!(ids(&drain(&mut again).await, "notification").is_empty());
}

/// A WebSocket client the backend identified as roger at the upgrade.
async fn tab_authenticated(node: &TestNode) -> WsClient {
    let mut client = node.client().await;
    let (connected, before) = client.recv_until("connected").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(connected["user"], "roger");
    client
}

#[tokio::test]
async fn a_burst_of_one_kind_is_one_notification_then_one_group_and_acking_the_group_acks_all() {
    // Long enough for the 21 requests of the burst under a loaded machine.
    let extra = "[[apps.notifications.group]]\nkind = \"comment\"\nwindow = \"1500ms\"\n";
    let node = TestNode::start(&config_with("", extra)).await;
    let mut client = tab(&node, "roger").await;
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(
            notify(
                &node,
                &notification(&["roger"], "comment", &format!("c{i}")),
            )
            .await,
        );
    }
    let other = notify(&node, &notification(&["roger"], "like", "ungrouped")).await;
    let (first, _) = client.recv_until("notification").await;
    assert_eq!(first["id"], json!(sent[0]), "the first at once");
    assert!(first.get("grouped").is_none(), "{first}");
    let (like, _) = client.recv_until("notification").await;
    assert_eq!(like["id"], json!(other), "another kind is not held back");
    // At the window's end: one message for the 19 others.
    let (group, before) = client.recv_until("notification").await;
    assert!(before.is_empty(), "{before:?}");
    let grouped = &group["grouped"];
    assert_eq!(grouped["count"], 19, "{group}");
    assert_eq!(grouped["ids"], json!(sent[1..]), "{group}");
    assert_eq!(group["id"], json!(sent[1]));
    assert_eq!(group["title"], "c19", "the texts are the last one's");
    assert!(
        grouped["first"].is_string() && grouped["last"].is_string(),
        "{group}"
    );

    ack(&mut client, &[group["id"].as_str().unwrap()]).await;
    let mut again = tab(&node, "roger").await;
    let pending = ids(&drain(&mut again).await, "notification");
    assert_eq!(
        pending,
        [sent[0].clone(), other],
        "the group's 19 went with one ack"
    );
}

#[tokio::test]
async fn the_kill_switch_holds_delivery_back_and_loses_nothing_when_lifted() {
    let node = TestNode::base().await;
    let mut client = tab(&node, "roger").await;
    let switch = json!({"scope": "notifications", "app": APP, "enabled": false});
    let (status, answer) = node.admin_post("/admin/switches", &switch).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = client.recv_until("notification_status").await;
    assert_eq!(status["status"], "disabled", "{status}");

    let held = notify(&node, &notification(&["roger"], "x", "held")).await;
    assert!(ids(&drain(&mut client).await, "notification").is_empty());
    // The app carries on: events still flow, and a new connection is told.
    client.join_sync().await;
    let marker = node.publish_marker().await;
    client.until_marker(marker).await;
    let mut late = node.client().await;
    late.identify("roger").await;
    let (status, _) = late.recv_until("notification_status").await;
    assert_eq!(status["status"], "disabled");

    let mut lift = switch.clone();
    lift["enabled"] = json!(true);
    let (code, answer) = node.admin_post("/admin/switches", &lift).await;
    assert_eq!(code, 200, "{answer}");
    for c in [&mut client, &mut late] {
        let (status, _) = c.recv_until("notification_status").await;
        assert_eq!(status["status"], "enabled");
        let (n, _) = c.recv_until("notification").await;
        assert_eq!(n["id"], json!(held));
    }
    assert!(
        eventually(Duration::from_secs(5), async || {
            node.metric("chouquette_notifications_delivered_total")
                .await
                == Some(2.0)
        })
        .await
    );
}

#[tokio::test]
async fn the_python_example_notifies_and_a_retry_with_its_id_notifies_nobody_twice() {
    let node = TestNode::base().await;
    let mut roger = tab(&node, "roger").await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python/notify.py"
    );
    let run = |key: &str| {
        tokio::process::Command::new("python3")
            .arg(script)
            .args(["--url", &node.internal_url(), "--key", key, "--app", APP])
            .args([
                "--kind",
                "comment",
                "--title",
                "New comment",
                "--link",
                "/posts/7",
            ])
            .args(["--data", r#"{"post": 7}"#, "--id", "comment-1234", "roger"])
            .output()
    };
    let output = run(API_KEY).await.expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON answer");
    let (n, _) = roger.recv_until("notification").await;
    assert_eq!(
        (&n["id"], &n["title"], &n["link"], &n["data"]),
        (
            &answer["id"],
            &json!("New comment"),
            &json!("/posts/7"),
            &json!({"post": 7})
        )
    );
    // The retry: the same id, nothing sent.
    let output = run(API_KEY).await.expect("python3 runs");
    let again: Value = serde_json::from_slice(&output.stdout).expect("JSON answer");
    assert_eq!(again, answer);
    assert!(ids(&drain(&mut roger).await, "notification").is_empty());
    // Refused: exit 1 and the gateway's code.
    let output = run("wrong").await.expect("python3 runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not_allowed"),
        "{output:?}"
    );
}

#[tokio::test]
async fn pending_ones_expire_after_expire_after_and_are_counted() {
    let node = TestNode::start(&config_with(
        "",
        "[apps.notifications]\nexpire_after = \"1s\"\n",
    ))
    .await;
    let id = notify(&node, &notification(&["roger"], "x", "short-lived")).await;
    let mut client = tab(&node, "roger").await;
    assert_eq!(ids(&drain(&mut client).await, "notification"), [id]);
    // Read again (each connect reads the list) until it is gone.
    assert!(
        eventually(Duration::from_secs(5), async || {
            let mut again = tab(&node, "roger").await;
            ids(&drain(&mut again).await, "notification").is_empty()
        })
        .await
    );
    assert_eq!(
        node.metric("chouquette_notifications_expired_total").await,
        Some(1.0)
    );
}
