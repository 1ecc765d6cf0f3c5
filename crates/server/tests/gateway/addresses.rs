//! The public listener under abuse (docs/operations.md "Limits",
//! docs/deployment.md "Behind a proxy"): sockets that never send a request
//! are closed after `header_read_timeout`, one address holds at most
//! `max_connections_per_address` sockets, and behind a trusted proxy those
//! limits key on the client the proxy names, never on the proxy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chouquette_testkit::{TestNode, WsClient, config_with};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const OPEN_METRIC: &str = "chouquette_limited_total{limit=\"open_connections_per_address\"}";

/// A node with `limits`, and `trusted_proxies` when given.
async fn node_with(limits: &str, trusted: Option<&str>) -> TestNode {
    let config = config_with(limits, "");
    match trusted {
        Some(list) => {
            TestNode::start(&format!("[listen]\ntrusted_proxies = {list}\n{config}")).await
        }
        None => TestNode::start(&config).await,
    }
}

/// Waits until the server closes `stream` (end of stream or reset); how long
/// that took, or `None` if it was still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + within).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A WebSocket upgrade to `node` with an `X-Forwarded-For` header.
async fn ws_forwarded_for(node: &TestNode, client: &str) -> Result<WsClient, tungstenite::Error> {
    let mut request = node.ws_url().into_client_request()?;
    request
        .headers_mut()
        .insert("x-forwarded-for", client.parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(WsClient::from_stream(stream))
}

/// A WebSocket upgrade over a socket that first sends `header` (a PROXY
/// protocol header).
async fn ws_after(
    addr: SocketAddr,
    header: &[u8],
) -> Result<WsClient<TcpStream>, tungstenite::Error> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(header).await?;
    let (stream, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp).await?;
    Ok(WsClient::from_stream(stream))
}

fn proxy_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&client);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&80u16.to_be_bytes());
    out
}

fn refused_with(result: Result<impl Sized, tungstenite::Error>, status: Option<u16>, what: &str) {
    match (result, status) {
        (Ok(_), _) => panic!("{what}: accepted"),
        (Err(tungstenite::Error::Http(r)), Some(s)) => assert_eq!(r.status().as_u16(), s, "{what}"),
        (Err(e), Some(s)) => panic!("{what}: expected HTTP {s}, got {e}"),
        (Err(_), None) => {}
    }
}

#[tokio::test]
async fn half_open_sockets_are_closed_after_header_deadline() {
    let node = node_with("header_read_timeout = \"1s\"", None).await;
    let addr = node.running.public;
    let mut silent = Vec::new();
    let mut partial = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
            .await
            .unwrap();
        partial.push(s);
    }
    // Meanwhile a normal client connects and is served.
    let mut client = node.client().await;
    let (ack, _) = client.subscribe("bornes", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack", "{ack}");
    for (i, s) in silent.iter_mut().chain(partial.iter_mut()).enumerate() {
        let took = closed_within(s, Duration::from_secs(5)).await;
        let took = took.unwrap_or_else(|| panic!("socket {i} still open after 5 s"));
        assert!(
            took < Duration::from_secs(3),
            "socket {i} closed after {took:?}"
        );
    }
    // Upgraded connections are past the deadline: the client is still served.
    let offset = node.publish("bornes", "k", &[], json!("after")).await;
    assert_eq!(client.recv().await["offset"], offset);
    node.running.shutdown().await;
}

#[tokio::test]
async fn kept_alive_connections_waiting_for_a_request_are_closed_after_header_deadline() {
    let node = node_with("header_read_timeout = \"1s\"", None).await;
    let addr = node.running.public;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /nothing-here HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 404");
    let took = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(took.is_some(), "an idle kept-alive connection stayed open");
    node.running.shutdown().await;
}

#[tokio::test]
async fn open_connections_per_address_refuse_one_over_the_cap_until_one_closes() {
    let node = node_with("max_connections_per_address = 3", None).await;
    let mut held = vec![node.client().await, node.client().await];
    // A socket that has sent nothing holds a place too.
    let bare = TcpStream::connect(node.running.public).await.unwrap();
    refused_with(
        tokio_tungstenite::connect_async(node.ws_url()).await,
        None,
        "fourth",
    );
    assert_eq!(node.metric(OPEN_METRIC).await, Some(1.0));
    // Existing connections are not affected.
    let (ack, _) = held[0].subscribe("bornes", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack");
    // Once one closes, its place is free again.
    held.pop().unwrap().close().await;
    drop(bare);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok((stream, _)) = tokio_tungstenite::connect_async(node.ws_url()).await {
            held.push(WsClient::from_stream(stream));
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.running.shutdown().await;
}

#[tokio::test]
async fn trusted_proxy_forwarded_for_is_what_the_per_address_limit_keys_on() {
    let node = node_with("max_connections_per_address = 1", Some("[\"127.0.0.1\"]")).await;
    let _a = ws_forwarded_for(&node, "203.0.113.1").await.unwrap();
    let mut b = ws_forwarded_for(&node, "10.9.9.9, 203.0.113.2")
        .await
        .unwrap();
    refused_with(
        ws_forwarded_for(&node, "203.0.113.1").await,
        Some(429),
        "a second connection of the first client",
    );
    assert_eq!(node.metric(OPEN_METRIC).await, Some(1.0));
    let (ack, _) = b.subscribe("bornes", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack");
    // SSE and long-poll go through the same accept loop and key on it too.
    let (status, _) = node.get_public("/poll?sub=junk&timeout=0").await;
    assert_ne!(status, 429, "the proxy's own address is not limited");
    node.running.shutdown().await;
}

#[tokio::test]
async fn trusted_proxy_forwarded_for_is_what_the_new_connection_rate_keys_on() {
    let limits = "new_connections_per_address = 1\nnew_connections_burst = 1";
    let node = node_with(limits, Some("[\"127.0.0.1\"]")).await;
    let _a = ws_forwarded_for(&node, "203.0.113.1").await.unwrap();
    refused_with(
        ws_forwarded_for(&node, "203.0.113.1").await,
        Some(429),
        "the same client again at once",
    );
    let _b = ws_forwarded_for(&node, "203.0.113.2").await.unwrap();
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"connections_per_address\"}")
            .await,
        Some(1.0)
    );
    node.running.shutdown().await;
}

/// H3: behind a trusted proxy, a client closed as abusive does not lock out
/// the other clients of that proxy: the penalty is its own address's.
#[tokio::test]
async fn a_penalized_client_behind_a_trusted_proxy_does_not_lock_out_the_others() {
    let limits = "client_messages_per_second = 1\nclient_messages_burst = 3\n\
                  max_rate_limited_messages = 1";
    let node = node_with(limits, Some("[\"127.0.0.1\"]")).await;
    let mut flooder = ws_forwarded_for(&node, "203.0.113.66").await.unwrap();
    let unsubscribe = json!({"class": "unsubscribe", "uuid": "u", "channels": ["x"]});
    let closed = loop {
        flooder.send_json(&unsubscribe).await;
        match flooder.next_within(Duration::from_secs(5)).await {
            Some(chouquette_testkit::Received::Json(_)) => {}
            Some(chouquette_testkit::Received::Closed(close)) => break close,
            None => panic!("neither an answer nor a close"),
        }
    };
    assert_eq!(closed.map(|(code, _)| code), Some(1008));
    // Another client behind the same proxy connects and is served.
    let mut other = ws_forwarded_for(&node, "203.0.113.67").await.unwrap();
    let (ack, _) = other.subscribe("bornes", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack");
    node.running.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let node = node_with("max_connections_per_address = 1", None).await;
    let _a = ws_forwarded_for(&node, "203.0.113.1").await.unwrap();
    refused_with(
        ws_forwarded_for(&node, "203.0.113.2").await,
        None,
        "another claimed client from the same peer",
    );
    assert_eq!(node.metric(OPEN_METRIC).await, Some(1.0));
    node.running.shutdown().await;
}

#[tokio::test]
async fn trusted_proxy_protocol_headers_name_the_client_per_connection() {
    let node = node_with(
        "max_connections_per_address = 1",
        Some("[\"127.0.0.0/8\", \"::1\"]"),
    )
    .await;
    let addr = node.running.public;
    let v1 = |ip: &str| format!("PROXY TCP4 {ip} 127.0.0.1 4000 80\r\n").into_bytes();
    let mut a = ws_after(addr, &v1("198.51.100.1")).await.unwrap();
    let _b = ws_after(addr, &v1("198.51.100.2")).await.unwrap();
    let _c = ws_after(addr, &proxy_v2([198, 51, 100, 3], 4001))
        .await
        .unwrap();
    refused_with(
        ws_after(addr, &v1("198.51.100.1")).await,
        None,
        "v1, same client",
    );
    refused_with(
        ws_after(addr, &proxy_v2([198, 51, 100, 3], 4002)).await,
        None,
        "v2, same client",
    );
    assert_eq!(node.metric(OPEN_METRIC).await, Some(2.0));
    // A malformed header from a trusted proxy closes the socket.
    refused_with(
        ws_after(addr, b"PROXY TCP4 nonsense\r\n").await,
        None,
        "bad v1",
    );
    let (ack, _) = a.subscribe("bornes", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack");
    node.running.shutdown().await;
}

#[tokio::test]
async fn proxy_protocol_header_from_an_untrusted_peer_is_a_bad_request() {
    let node = node_with("", None).await;
    let addr = node.running.public;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "PROXY TCP4 198.51.100.1 127.0.0.1 4000 80\r\nGET /ws HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let (status, _) = crate::common::read_response(&mut s).await;
    assert_eq!(status, 400);
    node.running.shutdown().await;
}

/// The next `data:` line of an SSE stream, as JSON.
async fn next_sse_data<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> serde_json::Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("an event in time")
            .expect("read")
            .expect("stream open");
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str(data).expect("JSON");
        }
    }
}

#[tokio::test]
async fn streams_and_long_polls_outlive_the_header_deadline() {
    use tokio::io::AsyncBufReadExt;
    let node = node_with("header_read_timeout = \"1s\"", None).await;
    let all = chouquette_testkit::token("bornes", json!({"*": {}}), 3600);
    let query = serde_urlencoded::to_string([("sub", all.as_str())]).unwrap();
    let mut tcp = TcpStream::connect(node.running.public).await.unwrap();
    let request =
        format!("GET /sse?{query} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(tcp).lines();
    assert_eq!(next_sse_data(&mut lines).await["class"], "ack");
    // A long-poll that waits past the deadline: the first answers the
    // subscribe at once, the second waits with its cursor.
    let (_, first) = node.poll(&[&all], None, 0).await;
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let started = Instant::now();
    let (status, answer) = node.poll(&[&all], Some(&cursor), 2).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}: {answer}",
        started.elapsed()
    );
    let offset = node.publish("bornes", "k", &[], json!("late")).await;
    assert_eq!(next_sse_data(&mut lines).await["offset"], offset);
    node.running.shutdown().await;
}

mod over_tls {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use chouquette_testkit::BASE_CONFIG;
    use chouquette_testkit::tls::{self, TestCert};
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::TlsConnector;

    use super::*;

    /// A folder for one test's certificate, removed afterwards.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("chouquette-addr-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn tls_node(cert: &TestCert, listen: &str, limits: &str) -> TestNode {
        TestNode::start(&format!(
            "[listen]\n{listen}\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n[limits]\n{limits}\n{BASE_CONFIG}",
            cert.cert.display(),
            cert.key.display()
        ))
        .await
    }

    /// A WebSocket over TLS over `tcp` (which may have sent a PROXY header).
    async fn wss_over(
        tcp: TcpStream,
        cert: &TestCert,
    ) -> Result<WsClient<tokio_rustls::client::TlsStream<TcpStream>>, tungstenite::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(cert.der.clone())).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let port = tcp.peer_addr()?.port();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (stream, _) =
            tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), tls).await?;
        Ok(WsClient::from_stream(stream))
    }

    #[tokio::test]
    async fn tls_connections_silent_after_the_handshake_are_closed_after_header_deadline() {
        let dir = Dir::new("deadline");
        let cert = TestCert::generate(dir.path(), "one");
        let node = tls_node(&cert, "", "header_read_timeout = \"1s\"").await;
        let mut silent = tls::connect(node.running.public, &cert).await.unwrap();
        let (mut client, _) = tls::connect_wss(node.running.public, &cert).await;
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "still open: {read:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let (ack, _) = client.subscribe("bornes", json!({"*": {}})).await;
        assert_eq!(ack["class"], "ack");
        node.running.shutdown().await;
    }

    #[tokio::test]
    async fn tls_proxy_header_before_the_handshake_names_the_client() {
        let dir = Dir::new("proxy");
        let cert = TestCert::generate(dir.path(), "one");
        let node = tls_node(
            &cert,
            "trusted_proxies = [\"127.0.0.1\"]",
            "max_connections_per_address = 1",
        )
        .await;
        let addr = node.running.public;
        let behind = |client: &'static str| async move {
            let mut tcp = TcpStream::connect(addr).await?;
            let header = format!("PROXY TCP4 {client} 127.0.0.1 5000 443\r\n");
            tcp.write_all(header.as_bytes()).await?;
            Ok::<_, tungstenite::Error>(tcp)
        };
        let mut a = wss_over(behind("192.0.2.10").await.unwrap(), &cert)
            .await
            .unwrap();
        let _b = wss_over(behind("192.0.2.11").await.unwrap(), &cert)
            .await
            .unwrap();
        let again = match behind("192.0.2.10").await {
            Ok(tcp) => wss_over(tcp, &cert).await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(
            again.is_err(),
            "a second connection of 192.0.2.10 was let in"
        );
        assert_eq!(node.metric(OPEN_METRIC).await, Some(1.0));
        let (ack, _) = a.subscribe("bornes", json!({"*": {}})).await;
        assert_eq!(ack["class"], "ack");
        node.running.shutdown().await;
    }
}
