//! Browsers on other origins (`[listen] allowed_origins`): CORS with
//! preflight on `/sse` and `/poll`, the `Origin` of `/ws` upgrades checked,
//! and nothing of it without the key. Raw HTTP over loopback, so that every
//! response header is seen as a browser would see it.

use chouquette::config::{Config, ConfigError};
use chouquette_testkit::{BASE_CONFIG, TestNode, token};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PAGE: &str = "http://localhost:18500";
const FOREIGN: &str = "http://evil.example:18500";

async fn with_origins() -> TestNode {
    let config = format!(
        "[listen]\nallowed_origins = [\"{PAGE}\", \"https://app.example.com\"]\n{BASE_CONFIG}"
    );
    TestNode::start(&config).await
}

/// One request's status line and headers (names in lower case).
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_cors(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.starts_with("access-control-"))
    }
}

/// Sends `method path` with `extra` header lines; reads the head only (an
/// SSE stream stays open behind it, and is dropped with the socket).
async fn request(node: &TestNode, method: &str, path: &str, extra: &[String]) -> Head {
    let mut stream = TcpStream::connect(node.running.public).await.unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("Connection: close\r\n\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Head { status, headers }
}

fn origin(o: &str) -> String {
    format!("Origin: {o}")
}

fn ws_upgrade(o: Option<&str>) -> Vec<String> {
    let mut lines = vec![
        "Upgrade: websocket".to_string(),
        "Connection: Upgrade".to_string(),
        "Sec-WebSocket-Version: 13".to_string(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_string(),
    ];
    lines.extend(o.map(origin));
    lines
}

fn sse_path() -> String {
    let t = token("bornes", json!({}), 3600);
    format!("/sse?sub={t}")
}

#[tokio::test]
async fn cross_origin_preflight_of_sse_and_poll_is_answered_204_with_methods_and_headers() {
    let node = with_origins().await;
    for path in ["/sse", "/poll"] {
        let head = request(
            &node,
            "OPTIONS",
            path,
            &[
                origin(PAGE),
                "Access-Control-Request-Method: POST".into(),
                "Access-Control-Request-Headers: content-type, last-event-id".into(),
            ],
        )
        .await;
        assert_eq!(head.status, 204, "{path}");
        assert_eq!(
            head.get("access-control-allow-origin"),
            Some(PAGE),
            "{path}"
        );
        let methods = head.get("access-control-allow-methods").unwrap();
        assert!(methods.contains("GET"), "{path}: {methods}");
        // Tokens go in a JSON body (`POST`), out of URLs and proxy logs.
        assert!(methods.contains("POST"), "{path}: {methods}");
        let allowed = head
            .get("access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("authorization"), "{path}: {allowed}");
        assert!(allowed.contains("last-event-id"), "{path}: {allowed}");
        assert!(allowed.contains("content-type"), "{path}: {allowed}");
        assert!(head.get("access-control-max-age").is_some(), "{path}");
        assert_eq!(head.get("vary"), Some("Origin"), "{path}");
    }
}

#[tokio::test]
async fn cross_origin_sse_and_poll_from_a_listed_origin_name_it_in_allow_origin() {
    let node = with_origins().await;
    let t = token("bornes", json!({}), 3600);
    for path in [sse_path(), format!("/poll?sub={t}&timeout=0")] {
        let head = request(&node, "GET", &path, &[origin(PAGE)]).await;
        assert_eq!(head.status, 200, "{path}");
        assert_eq!(
            head.get("access-control-allow-origin"),
            Some(PAGE),
            "{path}"
        );
        assert_eq!(head.get("vary"), Some("Origin"), "{path}");
    }
    // Another spelling of a listed origin is the same origin.
    let head = request(
        &node,
        "GET",
        &sse_path(),
        &[origin("https://APP.example.com:443")],
    )
    .await;
    assert!(head.get("access-control-allow-origin").is_some());
}

#[tokio::test]
async fn cross_origin_requests_from_an_unlisted_origin_get_no_cors_headers() {
    let node = with_origins().await;
    let head = request(&node, "GET", &sse_path(), &[origin(FOREIGN)]).await;
    assert!(!head.has_cors(), "{:?}", head.headers);
    let preflight = request(
        &node,
        "OPTIONS",
        "/poll",
        &[origin(FOREIGN), "Access-Control-Request-Method: GET".into()],
    )
    .await;
    assert_eq!(preflight.status, 403);
    assert!(!preflight.has_cors(), "{:?}", preflight.headers);
    // Without `Origin` (not a browser): served as before, no CORS headers.
    let plain = request(&node, "GET", &sse_path(), &[]).await;
    assert_eq!(plain.status, 200);
    assert!(!plain.has_cors());
}

#[tokio::test]
async fn cross_origin_ws_upgrade_from_an_unlisted_origin_is_refused_403() {
    let node = with_origins().await;
    let foreign = request(&node, "GET", "/ws", &ws_upgrade(Some(FOREIGN))).await;
    assert_eq!(foreign.status, 403);
    let listed = request(&node, "GET", "/ws", &ws_upgrade(Some(PAGE))).await;
    assert_eq!(listed.status, 101);
    let no_origin = request(&node, "GET", "/ws", &ws_upgrade(None)).await;
    assert_eq!(no_origin.status, 101, "non-browser clients send no Origin");
}

#[tokio::test]
async fn cross_origin_without_allowed_origins_nothing_is_checked_or_added() {
    let node = TestNode::base().await;
    let sse = request(&node, "GET", &sse_path(), &[origin(FOREIGN)]).await;
    assert_eq!(sse.status, 200);
    assert!(!sse.has_cors(), "{:?}", sse.headers);
    assert_eq!(sse.get("vary"), None);
    let preflight = request(&node, "OPTIONS", "/poll", &[origin(FOREIGN)]).await;
    assert_eq!(preflight.status, 405, "as before the key existed");
    let ws = request(&node, "GET", "/ws", &ws_upgrade(Some(FOREIGN))).await;
    assert_eq!(ws.status, 101);
}

#[test]
fn cross_origin_a_bad_allowed_origin_is_a_config_problem_at_its_line() {
    let config = format!(
        "[listen]\nallowed_origins = [\n  \"https://ok.example\",\n  \"https://bad.example/app\",\n]\n{BASE_CONFIG}"
    );
    let problems = match Config::from_toml(&config, std::iter::empty()) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("a path is not an origin, got {other:?}"),
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].line, Some(4), "{problems:?}");
    assert!(
        problems[0].message.contains("allowed_origins"),
        "{problems:?}"
    );
}
