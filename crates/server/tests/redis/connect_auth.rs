//! Connect auth by the backend across gateways on one Redis: a long-poll
//! keeps nothing between requests, so its next request may reach another
//! node, which authenticates it again and resumes its subscriptions (the
//! backend's and the stored grants read from Redis) from the cursor.

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chouquette_testkit::{API_KEY, APP, Backend, RedisServer, TestNode, redis_config_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Accepts `sessionid=good` as roger with a subscription to `bornes`
/// (alarms of B1); 401 otherwise.
fn backend() -> Router {
    Router::new().route(
        "/auth",
        post(async |_: HeaderMap, body: axum::body::Bytes| -> Response {
            let asked: Value = serde_json::from_slice(&body).unwrap_or_default();
            if asked["headers"]["cookie"] != "sessionid=good" {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            axum::Json(json!({"user_id": "roger", "subscriptions":
                {"bornes": {"filters": {"alarm": {"borne": "B1"}}}}}))
            .into_response()
        }),
    )
}

/// One `GET` on `node`'s public listener with roger's cookie; the JSON answer.
async fn poll(node: &TestNode, path: &str) -> Value {
    let mut stream = TcpStream::connect(node.running.public)
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\n{}: sessionid=good\r\nConnection: close\r\n\r\n",
        header::COOKIE
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("answer");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn classes(answer: &Value) -> Vec<&str> {
    answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["class"].as_str().expect("class"))
        .collect()
}

#[tokio::test]
async fn a_long_poll_resumes_on_another_node_authenticated_again() {
    let redis = RedisServer::start().await;
    let auth = Backend::start(backend()).await;
    let extra = format!("[apps.connect_auth]\nurl = \"{}/auth\"\n", auth.url());
    let a = TestNode::start(&redis_config_with(&redis.url(), "a", "", &extra)).await;
    let b = TestNode::start(&redis_config_with(&redis.url(), "b", "", &extra)).await;
    let grant = json!({"app_id": APP, "user": "roger", "channel": "alerts", "filters": {"*": {}}});
    let (status, _) = a.user_subscription("POST", Some(API_KEY), &grant).await;
    assert_eq!(status, 200);

    let first = poll(&a, "/poll?timeout=1").await;
    assert_eq!(
        classes(&first),
        ["connected", "ack", "subscribed"],
        "{first}"
    );
    let cursor = first["cursor"].as_str().expect("cursor");

    let b1 = a
        .publish("bornes", "alarm", &["borne:B1"], json!("b1"))
        .await;
    let fire = a.publish("alerts", "fire", &[], json!("fire")).await;
    let second = poll(&b, &format!("/poll?timeout=2&cursor={cursor}")).await;
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
}
