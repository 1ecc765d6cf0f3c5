//! The edge server: `[[proxy]]` routes to a real backend on loopback and
//! `[static]` files, beside the gateway's own transports (docs/edge.md).

use std::time::{Duration, Instant};

use chouquette_testkit::{Backend, TestNode, config_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::raw_http;

/// A page folder for one test, removed when dropped.
struct Site(std::path::PathBuf);

impl Site {
    fn new(index: &str) -> Site {
        let dir =
            std::env::temp_dir().join(format!("chouquette-edge-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), index).unwrap();
        Site(dir)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node whose public listener proxies `routes` (prefix, url, timeout)
/// and serves `site`.
async fn edge_node(routes: &[(&str, &str, &str)], site: Option<&Site>) -> TestNode {
    let mut toml = String::new();
    for (prefix, url, timeout) in routes {
        toml.push_str(&format!(
            "[[proxy]]\nprefix = \"{prefix}\"\nurl = \"{url}\"\ntimeout = \"{timeout}\"\n\n"
        ));
    }
    if let Some(site) = site {
        toml.push_str(&format!(
            "[static]\ndir = {:?}\n\n",
            site.0.display().to_string()
        ));
    }
    toml.push_str(&config_with("", ""));
    TestNode::start(&toml).await
}

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

#[tokio::test]
async fn a_proxy_route_reaches_its_backend_with_forwarded_headers_it_can_trust() {
    let backend = Backend::echo().await;
    let v2 = format!("{}/two/", backend.url());
    let node = edge_node(
        &[("/api/", &backend.url(), "5s"), ("/api/v2/", &v2, "5s")],
        None,
    )
    .await;
    let head = "GET /api/items?page=2 HTTP/1.1\r\nCookie: sessionid=abc\r\n\
                X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
                X-Private: secret\r\nConnection: close, X-Private";
    let (status, body) = raw_http(node.running.public, head, b"").await;
    assert_eq!(status, 200, "{body}");
    let seen = json_body(&body);
    assert_eq!(seen["uri"], "/api/items?page=2");
    let headers = &seen["headers"];
    assert_eq!(headers["cookie"], "sessionid=abc", "cookies pass");
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "the client's address, not its claim"
    );
    assert_eq!(headers["x-forwarded-host"], node.running.public.to_string());
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers.get("x-private"),
        None,
        "a header `Connection` names is hop-by-hop"
    );
    assert_eq!(headers["host"], backend.addr.to_string());

    // The longest prefix wins, and its URL's path replaces the prefix.
    let (status, body) = raw_http(node.running.public, "GET /api/v2/x HTTP/1.1", b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_body(&body)["uri"], "/two/x");
}

#[tokio::test]
async fn static_files_and_the_transports_stay_beside_the_proxy() {
    let backend = Backend::echo().await;
    let site = Site::new("<h1>the page</h1>");
    let node = edge_node(&[("/api/", &backend.url(), "5s")], Some(&site)).await;
    assert_eq!(
        node.get_public("/").await,
        (200, "<h1>the page</h1>".into())
    );
    assert_eq!(node.get_public("/missing.js").await.0, 404);
    assert_eq!(
        node.get_public("/apix").await.0,
        404,
        "not under the prefix"
    );
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    node.publish("bornes", "alarm", &["borne:B1"], json!(1))
        .await;
    assert_eq!(client.recv_until("data").await.0["data"], 1);
}

#[tokio::test]
async fn a_large_upload_and_a_streamed_answer_pass_through_unbuffered() {
    let backend = Backend::echo().await;
    let node = edge_node(&[("/api/", &backend.url(), "5s")], None).await;
    let upload = vec![b'x'; 5 * 1024 * 1024];
    let (status, body) = raw_http(node.running.public, "POST /api/upload HTTP/1.1", &upload).await;
    assert_eq!(status, 200);
    assert_eq!(json_body(&body)["body_len"], upload.len());

    // `first` arrives while the backend still waits to send `second`.
    let mut stream = TcpStream::connect(node.running.public).await.unwrap();
    let request = format!(
        "GET /api/stream HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        node.running.public
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("first") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a chunk within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before `first`: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "`first` came only after {:?}: the answer was buffered",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&seen).contains("second"));
}

#[tokio::test]
async fn a_backend_down_slow_or_tricked_gets_a_distinct_answer() {
    let backend = Backend::echo().await;
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let node = edge_node(
        &[("/api/", &backend.url(), "500ms"), ("/down/", &down, "5s")],
        None,
    )
    .await;
    let public = node.running.public;
    assert_eq!(raw_http(public, "GET /down/x HTTP/1.1", b"").await.0, 502);
    let started = Instant::now();
    assert_eq!(raw_http(public, "GET /api/slow HTTP/1.1", b"").await.0, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        raw_http(public, "GET /api/../admin HTTP/1.1", b"").await.0,
        400
    );
    assert_eq!(
        raw_http(public, "GET /api/%2e%2e/admin HTTP/1.1", b"")
            .await
            .0,
        400
    );
    let upgrade = "GET /api/socket HTTP/1.1\r\nUpgrade: websocket";
    assert_eq!(raw_http(public, upgrade, b"").await.0, 501);
    // The backend still serves after all that.
    assert_eq!(raw_http(public, "GET /api/ok HTTP/1.1", b"").await.0, 200);
}
