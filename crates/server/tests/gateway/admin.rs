//! The admin API (docs/admin.md): authorization, status, connection listings,
//! disconnects, test publishes and the audit log.

use std::time::Duration;

use chouquette::audit::fingerprint;
use chouquette_testkit::{ADMIN_KEY, API_KEY, APP, SECRET, TestNode, WsClient, claims, sign};
use serde_json::{Value, json};

use crate::common::{event, raw_http, subscribe_msg};
use crate::switches::{admin_config, temp_dir};

fn user_token(channel: &str, user: &str) -> String {
    let mut c = claims(channel, json!({"*": {}}), 3600);
    c["sub"] = json!(user);
    sign(&c, SECRET)
}

async fn subscribed(node: &TestNode, channel: &str, user: &str) -> WsClient {
    let mut client = node.client().await;
    client
        .send_json(&subscribe_msg(
            "s",
            APP,
            &[(channel, &user_token(channel, user))],
        ))
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert!(
        before.is_empty() && ack["channels"][channel].is_object(),
        "{ack}"
    );
    client
}

async fn connected_as(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    let mut c = claims("", json!({}), 3600);
    c["sub"] = json!(user);
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": sign(&c, SECRET)}))
        .await;
    assert_eq!(client.recv().await["class"], "ack");
    client
}

/// Polls `GET path` until `check` holds (connections close asynchronously).
async fn eventually(node: &TestNode, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let (status, body) = node.admin_get(path).await;
        assert_eq!(status, 200, "{body}");
        if check(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path} never reached the expected state");
}

#[tokio::test]
async fn every_route_needs_the_admin_key() {
    let node = TestNode::base().await;
    for path in [
        "/admin/status",
        "/admin/switches",
        "/admin/connections?app=bluelib&user=u",
    ] {
        let (status, body) = node.admin_get_with(None, path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["code"], "not_allowed");
        let (status, _) = node.admin_get_with(Some("admin-kez"), path).await;
        assert_eq!(status, 403, "{path}");
        // An app's API key is not the admin key.
        let (status, _) = node.admin_get_with(Some(API_KEY), path).await;
        assert_eq!(status, 403, "{path}");
    }
    let body = json!({"scope": "global", "enabled": false});
    for path in ["/admin/switches", "/admin/disconnect", "/admin/publish"] {
        let (status, _) = node.admin_post_with("wrong", path, &body).await;
        assert_eq!(status, 403, "{path}");
        let head = format!("POST {path} HTTP/1.1\r\nContent-Type: application/json");
        let (status, _) = raw_http(node.running.internal, &head, body.to_string().as_bytes()).await;
        assert_eq!(status, 401, "{path}");
    }
    let (_, list) = node.admin_get("/admin/switches").await;
    assert_eq!(
        list["switches"],
        json!([]),
        "refused requests changed nothing"
    );
    assert_eq!(
        node.metric("chouquette_admin_denied_total").await,
        Some(15.0)
    );
}

#[tokio::test]
async fn without_an_admin_key_the_routes_are_off() {
    let config = chouquette_testkit::BASE_CONFIG.replace("key = \"admin-key\"", "");
    let node = TestNode::start(&config).await;
    let (status, body) = node.admin_get("/admin/status").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("[admin] key"),
        "{body}"
    );
}

#[tokio::test]
async fn status_shape_and_counts() {
    let config = format!(
        "[node]\nid = \"gw-test\"\n{}",
        chouquette_testkit::BASE_CONFIG
    );
    let node = TestNode::start(&config).await;
    let mut a = subscribed(&node, "bornes", "roger").await;
    a.subscribe("alarms", json!({"*": {}})).await;
    let mut b = node.client().await;
    let token = {
        let mut c = claims("x", json!({"*": {}}), 3600);
        c["app_id"] = json!("other");
        sign(&c, "other-secret")
    };
    b.send_json(&subscribe_msg("s", "other", &[("x", &token)]))
        .await;
    b.recv_until("ack").await;
    let _c = connected_as(&node, "vb").await;

    let (status, s) = node.admin_get("/admin/status").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["node"], "gw-test");
    assert!(s["uptime_s"].is_u64(), "{s}");
    assert_eq!(s["broker"], json!({"kind": "memory", "connected": true}));
    assert_eq!(s["connections"], 3);
    assert_eq!(s["subscriptions"], 3);
    assert_eq!(
        s["apps"][APP],
        json!({"connections": 2, "subscriptions": 2})
    );
    assert_eq!(
        s["apps"]["other"],
        json!({"connections": 1, "subscriptions": 1})
    );

    a.close().await;
    let s = eventually(&node, "/admin/status", |s| s["connections"] == 2).await;
    assert_eq!(s["subscriptions"], 1);
    assert_eq!(
        s["apps"][APP],
        json!({"connections": 1, "subscriptions": 0})
    );
    assert_eq!(
        node.metric("chouquette_app_connections{app=\"bluelib\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn disconnect_closes_that_users_connections_only() {
    let node = TestNode::base().await;
    let mut by_token = subscribed(&node, "bornes", "roger").await;
    let mut by_identity = connected_as(&node, "roger").await;
    let mut other_user = subscribed(&node, "bornes", "vb").await;
    // Roger of another app is someone else.
    let mut other_app = node.client().await;
    let mut c = claims("bornes", json!({"*": {}}), 3600);
    c["app_id"] = json!("other");
    c["sub"] = json!("roger");
    other_app
        .send_json(&subscribe_msg(
            "s",
            "other",
            &[("bornes", &sign(&c, "other-secret"))],
        ))
        .await;
    other_app.recv_until("ack").await;
    // An SSE stream of roger's: the request ends when the stream does.
    let sse_head = format!("GET /sse?sub={} HTTP/1.1", user_token("alarms", "roger"));
    let public = node.running.public;
    let sse = tokio::spawn(async move { raw_http(public, &sse_head, b"").await });

    let listed = eventually(&node, "/admin/connections?app=bluelib&user=roger", |l| {
        l["connections"].as_array().is_some_and(|c| c.len() == 3)
    })
    .await;
    let conns = listed["connections"].as_array().unwrap();
    let transports: Vec<&str> = conns
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    assert_eq!(
        transports.iter().filter(|t| **t == "ws").count(),
        2,
        "{listed}"
    );
    assert!(transports.contains(&"sse"), "{listed}");
    for c in conns {
        assert_eq!(c["node"], listed["node"]);
        humantime::parse_rfc3339(c["since"].as_str().unwrap()).expect("since is RFC 3339");
    }
    let subs: Vec<&Value> = conns.iter().map(|c| &c["subscriptions"]).collect();
    assert!(
        subs.contains(&&json!(["bornes"])) && subs.contains(&&json!([])),
        "{listed}"
    );
    assert!(subs.contains(&&json!(["alarms"])), "{listed}");

    let reason = "é".repeat(100); // 200 bytes: cut to 120
    let (status, answer) = node
        .admin_post(
            "/admin/disconnect",
            &json!({"app": APP, "user": "roger", "reason": reason}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"disconnected": 3, "nodes": 1}));
    for client in [&mut by_token, &mut by_identity] {
        let (code, why) = client.expect_close().await.expect("a close frame");
        assert_eq!(code, 1008);
        assert_eq!(why, "é".repeat(60));
    }
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), sse)
        .await
        .expect("the SSE stream ends")
        .expect("task");
    assert_eq!(status, 200);
    // Everyone else still receives.
    let offset = node.publish("bornes", "k", &[], json!(1)).await;
    assert_eq!(other_user.recv().await["offset"], offset);
    let empty = eventually(&node, "/admin/connections?app=bluelib&user=roger", |l| {
        l["connections"] == json!([])
    })
    .await;
    assert_eq!(empty["connections"], json!([]));
    let (status, _) = node
        .admin_post(
            "/admin/disconnect",
            &json!({"app": "nope", "user": "roger"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = node
        .admin_post("/admin/disconnect", &json!({"app": APP}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = node.admin_get("/admin/connections?app=bluelib").await;
    assert_eq!(status, 400);
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"disconnected\"}")
            .await,
        Some(3.0)
    );
    other_app.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn test_publish_uses_the_admin_key() {
    let node = TestNode::base().await;
    let mut client = subscribed(&node, "bornes", "roger").await;
    let body = event("bornes", "test", &["borne:B1"], json!({"hello": 1}));
    let (status, answer) = node.admin_post("/admin/publish", &body).await;
    assert_eq!(status, 200, "{answer}");
    let m = client.recv().await;
    assert_eq!(m["offset"], answer["offset"]);
    assert_eq!(m["data"], json!({"hello": 1}));
    // The app's key does not open the admin route, nor the admin key the app's.
    let (status, _) = node.admin_post_with(API_KEY, "/admin/publish", &body).await;
    assert_eq!(status, 403);
    let (status, _) = node.publish_raw(ADMIN_KEY, &body).await;
    assert_eq!(status, 403);
    let (status, answer) = node
        .admin_post("/admin/publish", &json!({"app_id": APP}))
        .await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn every_action_is_audited() {
    let dir = temp_dir("audit");
    let path = dir.join("audit.jsonl");
    let config = admin_config(&format!("audit_file = {:?}", path.display().to_string()));
    let node = TestNode::start(&config).await;
    let body = json!({"scope": "user", "user": "roger", "enabled": false});
    assert_eq!(node.admin_post("/admin/switches", &body).await.0, 200);
    let body = json!({"app": APP, "user": "roger", "reason": "bye"});
    assert_eq!(node.admin_post("/admin/disconnect", &body).await.0, 200);
    let publish = event("bornes", "test", &[], json!(null));
    assert_eq!(node.admin_post("/admin/publish", &publish).await.0, 200);
    // Reads are not actions; refused requests are not the key holder's.
    node.admin_get("/admin/status").await;
    node.admin_post_with("wrong", "/admin/disconnect", &body)
        .await;

    let text = std::fs::read_to_string(&path).expect("audit file");
    assert!(!text.contains(ADMIN_KEY), "the key itself is never written");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["switch_off", "disconnect", "publish"]);
    for line in &lines {
        assert_eq!(line["who"], fingerprint(ADMIN_KEY));
        assert_eq!(line["who"].as_str().unwrap().len(), 32);
        assert!(line.get("operator").is_none(), "no X-Operator sent: {line}");
        assert!(
            line["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        humantime::parse_rfc3339(line["at"].as_str().unwrap()).expect("at is RFC 3339");
    }
    assert_eq!(
        lines[0]["detail"]["switch"],
        json!({"scope": "user", "user": "roger"})
    );
    assert_eq!(lines[1]["detail"]["reason"], "bye");
    assert_eq!(lines[2]["detail"]["events"][0]["channel"], "bornes");
    assert_eq!(
        node.metric("chouquette_admin_actions_total{action=\"publish\"}")
            .await,
        Some(1.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 10: the audit log's "who" was 32 bits of an unsalted hash of the
/// admin key, naming no one. An `X-Operator` header names the operator in
/// the audit line (as given, self-declared); a bad one is refused.
#[tokio::test]
async fn the_audit_line_names_the_operator() {
    let dir = temp_dir("audit-operator");
    let path = dir.join("audit.jsonl");
    let config = admin_config(&format!("audit_file = {:?}", path.display().to_string()));
    let node = TestNode::start(&config).await;
    let body = json!({"app": APP, "user": "roger", "reason": "bye"}).to_string();
    let post = |operator: &str| {
        format!(
            "POST /admin/disconnect HTTP/1.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nX-Operator: {operator}"
        )
    };
    let addr = node.running.internal;
    let (status, answer) = raw_http(addr, &post("alice (on call)"), body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let too_long = "a".repeat(65);
    let (status, answer) = raw_http(addr, &post(&too_long), body.as_bytes()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("bad_message"), "{answer}");

    let text = std::fs::read_to_string(&path).expect("audit file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "the refused request is not audited: {text}");
    assert_eq!(lines[0]["operator"], "alice (on call)");
    assert_eq!(lines[0]["who"], fingerprint(ADMIN_KEY));
    let _ = std::fs::remove_dir_all(dir);
}
