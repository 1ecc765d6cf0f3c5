//! The offline fallback of notifications (docs/notifications.md "Offline
//! fallback") against a real SMTP server (aiosmtpd, `scripts/smtp_sink.py`)
//! and a real webhook backend, on the memory broker;
//! `tests/redis/fallback.rs` crosses nodes.
//!
//! "Nothing more was sent" is shown without sleeping: with `period = "1s"`
//! each user is checked again a second after their digest, and a test
//! waits until the fallback's own counter of checks says that happened.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use chouquette_core::rpc::signature::{REPLAY_WINDOW_SECS, verify};
use chouquette_testkit::{
    API_KEY, APP, Backend, SECRET, SMTP_PASSWORD, SMTP_USER, SmtpServer, TestNode, WsClient,
    config_with, eventually,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// `[apps.notifications.fallback]` by e-mail to `smtp` (plain, no AUTH),
/// `after = 1s`, `period = 1s`, with templates of the test's own.
pub fn email_fallback(port: u16) -> String {
    format!(
        "[apps.notifications.fallback]\nafter = \"1s\"\nperiod = \"1s\"\n\
         [apps.notifications.fallback.email]\nhost = \"127.0.0.1\"\nport = {port}\n\
         tls = \"none\"\nfrom = \"Bluelib <noreply@bluelib.example>\"\n\
         to = \"{{user}}@users.example\"\n\
         subject = \"Bluelib: {{count}} unread for {{user}}\"\n\
         item = \"* {{title}} [{{kind}}] {{link}}\\n\"\n"
    )
}

fn notification(users: &[&str], title: &str) -> Value {
    json!({"app_id": APP, "users": users, "kind": "comment", "title": title,
           "body": "b", "link": "/posts/7"})
}

async fn notify(node: &TestNode, body: &Value) -> String {
    let (status, answer) = node.api_post("/api/v1/notify", Some(API_KEY), body).await;
    assert_eq!(status, 200, "{answer}");
    answer["id"].as_str().expect("id").to_string()
}

async fn counter(node: &TestNode, name: &str) -> f64 {
    node.metric(&format!("chouquette_fallback_{name}_total"))
        .await
        .unwrap_or(0.0)
}

/// Waits until `smtp` has `n` mails; returns them.
async fn mails(smtp: &SmtpServer, n: usize) -> Vec<Value> {
    let arrived = eventually(WAIT, async || smtp.mails().len() >= n).await;
    let mails = smtp.mails();
    assert!(arrived, "expected {n} mails, got {mails:?}");
    mails
}

/// Waits until the fallback checked users at least `n` times.
async fn checked(node: &TestNode, n: f64) {
    assert!(
        eventually(WAIT, async || counter(node, "checks").await >= n).await,
        "checks: {}",
        counter(node, "checks").await
    );
}

async fn tab(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.identify(user).await;
    client
}

#[tokio::test]
async fn a_user_offline_past_after_gets_one_email_listing_the_pending_ones() {
    let smtp = SmtpServer::start().await;
    let node = TestNode::start(&config_with("", &email_fallback(smtp.port()))).await;
    let first = notify(&node, &notification(&["roger"], "First comment")).await;
    let second = notify(&node, &notification(&["roger"], "Second comment")).await;

    let mail = mails(&smtp, 1).await.remove(0);
    assert_eq!(mail["to"], "roger@users.example", "{mail}");
    assert_eq!(mail["rcpt_tos"], json!(["roger@users.example"]));
    assert_eq!(mail["from"], "Bluelib <noreply@bluelib.example>");
    assert_eq!(mail["subject"], "Bluelib: 2 unread for roger");
    let body = mail["body"].as_str().expect("body");
    assert!(body.starts_with("Hello roger,"), "{body}");
    let first_at = body
        .find("* First comment [comment] /posts/7\n")
        .unwrap_or_else(|| panic!("{body:?}"));
    let second_at = body
        .find("* Second comment [comment] /posts/7\n")
        .unwrap_or_else(|| panic!("{body:?}"));
    assert!(first_at < second_at, "oldest first: {body}");

    // Checked again a period later: nothing new, no second mail.
    checked(&node, 2.0).await;
    assert_eq!(smtp.mails().len(), 1, "{:?}", smtp.mails());
    assert_eq!(counter(&node, "digests").await, 1.0);
    assert_eq!(counter(&node, "notifications").await, 2.0);

    // Still pending (keep_pending defaults to true): a connect delivers them.
    let mut client = tab(&node, "roger").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = client.recv().await;
        if m["class"] == "notification" {
            got.push(m["id"].as_str().expect("id").to_string());
        }
    }
    assert_eq!(got, [first, second]);

    // A new one while roger is connected: never mailed.
    let third = notify(&node, &notification(&["roger"], "Third")).await;
    let (m, _) = client.recv_until("notification").await;
    assert_eq!(m["id"], third.as_str());
    let before = counter(&node, "checks").await;
    checked(&node, before + 1.0).await;
    assert_eq!(smtp.mails().len(), 1);
}

#[tokio::test]
async fn a_user_connected_within_after_gets_no_email_while_an_offline_one_does() {
    let smtp = SmtpServer::start().await;
    let node = TestNode::start(&config_with("", &email_fallback(smtp.port()))).await;
    let _roger = tab(&node, "roger").await;
    notify(&node, &notification(&["roger", "lucie"], "Hello both")).await;

    let mail = mails(&smtp, 1).await.remove(0);
    assert_eq!(mail["to"], "lucie@users.example", "{mail}");
    assert!(
        eventually(WAIT, async || counter(&node, "deferred").await >= 1.0).await,
        "roger's check was put off"
    );
    checked(&node, 3.0).await;
    let to: Vec<Value> = smtp.mails().iter().map(|m| m["to"].clone()).collect();
    assert_eq!(to, [json!("lucie@users.example")]);
}

#[tokio::test]
async fn smtp_down_then_up_sends_the_digest_later_once() {
    let mut smtp = SmtpServer::start().await;
    let node = TestNode::start(&config_with("", &email_fallback(smtp.port()))).await;
    smtp.kill().await;
    notify(&node, &notification(&["roger"], "While the relay is down")).await;
    assert!(
        eventually(WAIT, async || counter(&node, "failures").await >= 1.0).await,
        "the failed send is counted"
    );
    assert!(smtp.mails().is_empty());
    smtp.restart().await;

    let mail = mails(&smtp, 1).await.remove(0);
    assert_eq!(mail["subject"], "Bluelib: 1 unread for roger");
    let checks = counter(&node, "checks").await;
    checked(&node, checks + 1.0).await;
    assert_eq!(smtp.mails().len(), 1, "{:?}", smtp.mails());
    assert_eq!(counter(&node, "digests").await, 1.0);
}

#[tokio::test]
async fn starttls_and_auth_plain_are_used_when_configured() {
    let smtp = SmtpServer::start_secure().await;
    let ca = smtp.cert.as_ref().expect("a certificate").cert.display();
    let extra = format!(
        "[apps.notifications.fallback]\nafter = \"1s\"\n\
         [apps.notifications.fallback.email]\nhost = \"localhost\"\nport = {}\n\
         tls = \"starttls\"\nca_file = \"{ca}\"\nusername = \"{SMTP_USER}\"\n\
         password = \"{SMTP_PASSWORD}\"\nfrom = \"noreply@bluelib.example\"\n\
         to = \"{{user}}@users.example\"\n",
        smtp.port()
    );
    let node = TestNode::start(&config_with("", &extra)).await;
    notify(&node, &notification(&["roger"], "Secret")).await;
    let mail = mails(&smtp, 1).await.remove(0);
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["authenticated"], true, "{mail}");
    assert_eq!(mail["subject"], "1 unread notification(s)");
    assert!(mail["body"].as_str().expect("body").contains("- Secret\n"));
}

#[tokio::test]
async fn a_wrong_smtp_password_is_retried_and_counted_never_sent() {
    let smtp = SmtpServer::start_secure().await;
    let ca = smtp.cert.as_ref().expect("a certificate").cert.display();
    let extra = format!(
        "[apps.notifications.fallback]\nafter = \"1s\"\n\
         [apps.notifications.fallback.email]\nhost = \"localhost\"\nport = {}\n\
         tls = \"starttls\"\nca_file = \"{ca}\"\nusername = \"{SMTP_USER}\"\n\
         password = \"wrong\"\nfrom = \"noreply@bluelib.example\"\n",
        smtp.port()
    );
    let node = TestNode::start(&config_with("", &extra)).await;
    notify(&node, &notification(&["roger@users.example"], "x")).await;
    assert!(
        eventually(WAIT, async || counter(&node, "failures").await >= 2.0).await,
        "failures counted and retried"
    );
    assert!(smtp.mails().is_empty());
}

type Calls = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

#[tokio::test]
async fn the_webhook_variant_posts_a_signed_digest_once() {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let router = Router::new().route(
        "/offline",
        post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push((headers, body));
                "ok"
            }
        }),
    );
    let backend = Backend::start(router).await;
    let extra = format!(
        "[apps.notifications.fallback]\nafter = \"1s\"\nperiod = \"1s\"\n\
         [apps.notifications.fallback.webhook]\nurl = \"{}/offline\"\n",
        backend.url()
    );
    let node = TestNode::start(&config_with("", &extra)).await;
    let id = notify(&node, &notification(&["roger"], "By webhook")).await;
    assert!(
        eventually(WAIT, async || !calls.lock().expect("lock").is_empty()).await,
        "the backend was called"
    );
    checked(&node, 2.0).await;
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "once");
    let (headers, body) = &calls[0];
    let signature = headers["x-chouquette-signature"].to_str().expect("ascii");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    verify(SECRET.as_bytes(), signature, body, now, REPLAY_WINDOW_SECS)
        .expect("signed with the app's first secret");
    let body: Value = serde_json::from_slice(body).expect("JSON");
    assert_eq!(body["app_id"], APP);
    assert_eq!(body["user_id"], "roger");
    let sent = &body["notifications"][0];
    assert_eq!(sent["class"], "notification");
    assert_eq!(sent["id"], id.as_str());
    assert_eq!(sent["title"], "By webhook");
    assert_eq!(body["notifications"].as_array().expect("list").len(), 1);
}

#[tokio::test]
async fn a_user_to_user_message_to_an_offline_user_is_mailed_too() {
    let smtp = SmtpServer::start().await;
    let extra = format!(
        "[apps.messages]\nper_second = 0\n{}",
        email_fallback(smtp.port())
    );
    let node = TestNode::start(&config_with("", &extra)).await;
    let mut ana = super::messages::sender(&node, "ana", json!({"users": ["roger"]})).await;
    ana.send_json(
        &json!({"class": "message", "uuid": "m1", "to": ["roger"], "kind": "chat",
                          "title": "Lunch?", "body": "at noon", "link": "/chat/1"}),
    )
    .await;
    let answer = ana.recv().await;
    assert_eq!(answer["class"], "ack", "{answer}");

    let mail = mails(&smtp, 1).await.remove(0);
    assert_eq!(mail["to"], "roger@users.example", "{mail}");
    assert_eq!(mail["subject"], "Bluelib: 1 unread for roger");
    let body = mail["body"].as_str().expect("body");
    assert!(body.contains("* Lunch? [chat] /chat/1\n"), "{body}");
}
