//! TLS on the public listener (`[listen.tls]`) over real loopback TLS:
//! wss subscribe and delivery, a certificate reload that new connections see
//! while open ones keep working, a bad reload that keeps the old pair,
//! handshakes that never block one another, and a start refused on a bad
//! pair. Certificates are made at test time with `openssl`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chouquette::config::{Config, ConfigError};
use chouquette::serve::{self, StartError};
use chouquette::tls::TlsError;
use chouquette_testkit::tls::{self, TestCert};
use chouquette_testkit::{BASE_CONFIG, TestNode};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A fresh folder for one test's certificates, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        Dir(crate::switches::temp_dir(name))
    }
}

impl std::ops::Deref for Dir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `[listen.tls]` table for `cert`, with `extra` keys.
fn tls_table(cert: &TestCert, extra: &str) -> String {
    format!(
        "[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
        cert.cert.display(),
        cert.key.display()
    )
}

/// A node serving `cert` on its public listener (files in `dir`).
async fn tls_node(cert: &TestCert, extra: &str) -> TestNode {
    TestNode::start(&format!("{}{BASE_CONFIG}", tls_table(cert, extra))).await
}

/// Subscribes `client` to borne B1's alarms, publishes one, and checks it
/// arrives: the connection is alive end to end.
async fn publish_and_receive<S>(
    node: &TestNode,
    client: &mut chouquette_testkit::WsClient<S>,
    status: &str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let offset = node
        .publish(
            "bornes",
            "alarm",
            &["borne:B1"],
            json!({ "status": status }),
        )
        .await;
    let data = client.recv().await;
    assert_eq!(data["class"], "data", "{data}");
    assert_eq!(data["offset"], offset, "{data}");
    assert_eq!(data["data"]["status"], status, "{data}");
}

#[tokio::test]
async fn tls_wss_subscribe_and_receive() {
    let dir = Dir::new("tls-wss");
    let cert = TestCert::generate(&dir, "one");
    let node = tls_node(&cert, "").await;
    let (mut client, presented) = tls::connect_wss(node.running.public, &cert).await;
    assert_eq!(presented, cert.der);
    assert_eq!(node.running.tls_fingerprint().map(|f| f.len()), Some(95));
    let (ack, _) = client
        .subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;
    assert!(ack["channels"]["bornes"].is_object(), "{ack}");
    publish_and_receive(&node, &mut client, "over wss").await;

    // Plain WebSocket on the TLS port gets no upgrade: the handshake fails
    // and is counted.
    let plain = tokio_tungstenite::connect_async(node.ws_url()).await;
    assert!(plain.is_err(), "plain ws accepted on a TLS listener");
    let deadline = Instant::now() + Duration::from_secs(5);
    while node
        .metric("chouquette_tls_handshake_failures_total{reason=\"error\"}")
        .await
        != Some(1.0)
    {
        assert!(Instant::now() < deadline, "failed handshake not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.running.shutdown().await;
}

#[tokio::test]
async fn tls_reload_serves_the_new_certificate_and_keeps_open_connections() {
    let dir = Dir::new("tls-reload");
    let first = TestCert::generate(&dir, "first");
    let second = TestCert::generate(&dir, "second");
    // The node reads `live.*`, which start as `first`.
    let live = TestCert {
        cert: dir.join("live.crt"),
        key: dir.join("live.key"),
        der: first.der.clone(),
    };
    first.copy_over(&live);
    let node = tls_node(&live, "").await;
    let before = node.running.tls_fingerprint();
    let (mut open, presented) = tls::connect_wss(node.running.public, &first).await;
    assert_eq!(presented, first.der);
    open.subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;

    second.copy_over(&live);
    node.running
        .reload_tls()
        .expect("reload accepts the new pair");
    assert_ne!(node.running.tls_fingerprint(), before);

    // New connections get the new certificate: a client trusting only the
    // old one is refused, one trusting only the new one gets it.
    assert!(
        tls::connect(node.running.public, &first).await.is_err(),
        "a new connection still got the old certificate"
    );
    let (mut fresh, presented) = tls::connect_wss(node.running.public, &second).await;
    assert_eq!(presented, second.der);
    fresh
        .subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;

    // The connection opened before the reload still works, both ways.
    publish_and_receive(&node, &mut open, "after reload").await;
    let data = fresh.recv().await;
    assert_eq!(data["data"]["status"], "after reload", "{data}");
    let (ack, _) = open.subscribe("other-channel", json!({"alarm": {}})).await;
    assert_eq!(ack["class"], "ack", "{ack}");

    assert_eq!(
        node.metric("chouquette_tls_reloads_total{result=\"ok\"}")
            .await,
        Some(1.0)
    );
    node.running.shutdown().await;
}

#[tokio::test]
async fn tls_bad_reload_keeps_the_old_certificate() {
    let dir = Dir::new("tls-bad-reload");
    let first = TestCert::generate(&dir, "first");
    let second = TestCert::generate(&dir, "second");
    let live = TestCert {
        cert: dir.join("live.crt"),
        key: dir.join("live.key"),
        der: first.der.clone(),
    };
    first.copy_over(&live);
    let node = tls_node(&live, "").await;
    let fingerprint = node.running.tls_fingerprint();

    // Half a rotation: the new certificate with the old key.
    std::fs::copy(&second.cert, &live.cert).unwrap();
    let mismatch = node.running.reload_tls().expect_err("mismatched pair");
    assert!(matches!(mismatch, TlsError::Mismatch { .. }), "{mismatch}");
    // A key file that is not PEM at all.
    std::fs::write(&live.key, "not a key\n").unwrap();
    let garbage = node.running.reload_tls().expect_err("garbage key");
    assert!(matches!(garbage, TlsError::Pem { .. }), "{garbage}");
    // A missing file.
    std::fs::remove_file(&live.key).unwrap();
    let missing = node.running.reload_tls().expect_err("missing key");
    assert!(matches!(missing, TlsError::Read { .. }), "{missing}");

    assert_eq!(node.running.tls_fingerprint(), fingerprint);
    let (mut client, presented) = tls::connect_wss(node.running.public, &first).await;
    assert_eq!(presented, first.der, "the old certificate is still served");
    client
        .subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;
    publish_and_receive(&node, &mut client, "still the old certificate").await;
    assert_eq!(
        node.metric("chouquette_tls_reloads_total{result=\"error\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        node.metric("chouquette_tls_reloads_total{result=\"ok\"}")
            .await,
        Some(0.0)
    );
    node.running.shutdown().await;
}

/// Opens a TCP connection that never starts its handshake.
async fn stalled(node: &TestNode) -> TcpStream {
    TcpStream::connect(node.running.public)
        .await
        .expect("tcp connect")
}

#[tokio::test]
async fn tls_a_stalled_handshake_delays_nobody_and_times_out() {
    let dir = Dir::new("tls-stall");
    let cert = TestCert::generate(&dir, "one");
    let node = tls_node(&cert, "handshake_timeout = \"1s\"").await;
    let mut silent = stalled(&node).await;

    // Another client completes its handshake and its WebSocket meanwhile.
    let started = Instant::now();
    let (mut client, _) = tls::connect_wss(node.running.public, &cert).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "a stalled handshake held up another client for {:?}",
        started.elapsed()
    );
    client
        .subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;

    // The stalled connection is dropped at the deadline, and counted.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the stalled connection is closed within the timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(
        node.metric("chouquette_tls_handshake_failures_total{reason=\"timeout\"}")
            .await,
        Some(1.0)
    );
    publish_and_receive(&node, &mut client, "after the timeout").await;
    node.running.shutdown().await;
}

#[tokio::test]
async fn tls_concurrent_handshakes_are_bounded() {
    let dir = Dir::new("tls-bound");
    let cert = TestCert::generate(&dir, "one");
    let node = tls_node(&cert, "handshake_timeout = \"1s\"\nmax_handshakes = 1").await;
    let _silent = stalled(&node).await;
    // Give the accept loop time to hand the only slot to the stalled one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The next client waits in the accept queue until the stalled
    // handshake's deadline frees the slot, then gets through.
    let started = Instant::now();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tls::connect(node.running.public, &cert),
    )
    .await
    .expect("served once the slot is free")
    .expect("handshake");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "a second handshake ran past max_handshakes = 1 ({:?})",
        started.elapsed()
    );
    drop(tls);
    node.running.shutdown().await;
}

fn config_problems(text: &str) -> Vec<(Option<usize>, String)> {
    match Config::from_toml(text, std::iter::empty()) {
        Err(ConfigError::Invalid(problems)) => {
            problems.into_iter().map(|p| (p.line, p.message)).collect()
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn tls_bad_files_are_config_problems_and_stop_the_start() {
    let dir = Dir::new("tls-config");
    let first = TestCert::generate(&dir, "first");
    let second = TestCert::generate(&dir, "second");
    let table = |cert: &Path, key: &Path, extra: &str| {
        format!(
            "[admin]\nkey = \"k\"\n\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
            cert.display(),
            key.display()
        )
    };
    // A good pair loads.
    Config::from_toml(&table(&first.cert, &first.key, ""), std::iter::empty())
        .expect("a good pair is a valid config");

    // Missing files: the line of the key that names them.
    let missing = dir.join("missing.pem");
    let p = config_problems(&table(&missing, &first.key, ""));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, Some(5), "{p:?}");
    assert!(p[0].1.contains("cannot read certificate"), "{p:?}");
    assert!(p[0].1.contains("missing.pem"), "{p:?}");
    let p = config_problems(&table(&first.cert, &missing, ""));
    assert_eq!(p[0].0, Some(6), "{p:?}");
    assert!(p[0].1.contains("cannot read key"), "{p:?}");

    // Not PEM, a key of another certificate, bad bounds.
    let junk = write(&dir, "junk.pem", "hello\n");
    let p = config_problems(&table(&junk, &first.key, ""));
    assert!(p[0].1.contains("no CERTIFICATE"), "{p:?}");
    let p = config_problems(&table(&first.cert, &junk, ""));
    assert!(p[0].1.contains("no PRIVATE KEY"), "{p:?}");
    let p = config_problems(&table(&first.cert, &second.key, ""));
    assert_eq!(p[0].0, Some(6), "{p:?}");
    assert!(p[0].1.contains("does not fit"), "{p:?}");
    let p = config_problems(&table(
        &first.cert,
        &first.key,
        "handshake_timeout = \"0s\"\nmax_handshakes = 0\n",
    ));
    assert_eq!(
        p.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [Some(7), Some(8)],
        "{p:?}"
    );
    let p = config_problems(&table(&first.cert, &first.key, "ciphers = \"all\"\n"));
    assert!(p[0].1.contains("ciphers"), "{p:?}");

    // A config that passed its check but whose files changed before the
    // start: the start is refused with the reason, nothing listens.
    let good = table(&first.cert, &first.key, "");
    let mut config = Config::from_toml(&good, std::iter::empty()).expect("valid");
    config.listen.public = "127.0.0.1:0".parse().unwrap();
    config.listen.internal = "127.0.0.1:0".parse().unwrap();
    if let Some(tls) = config.listen.tls.as_mut() {
        tls.key = second.key.clone();
    }
    match serve::start(config).await {
        Err(e @ StartError::Tls(TlsError::Mismatch { .. })) => {
            let reason = e.to_string();
            assert!(!reason.contains('\n'), "{reason}");
            assert!(reason.starts_with("TLS on the public listener"), "{reason}");
        }
        other => panic!("expected a TLS start error, got {other:?}"),
    }
}
