//! The `chouquette` binary as an operator drives it (docs/operations.md
//! "Running"): exit 0 on success, non-zero with a one-line reason on stderr.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chouquette::http_client::HttpClient;
use chouquette_testkit::{BASE_CONFIG, WsClient};
use serde_json::{Value, json};

#[path = "cli/config.rs"]
mod config;
#[path = "cli/dev.rs"]
mod dev;
#[path = "cli/systemd.rs"]
mod systemd;

fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chouquette"));
    for var in ["CHOUQUETTE_SECRET", "CHOUQUETTE_API_KEY", "RUST_LOG"] {
        command.env_remove(var);
    }
    command
}

/// A fresh directory for one test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "chouquette-cli-{}-{name}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The non-empty lines of `text`.
fn lines_of(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn stderr_lines(output: &Output) -> Vec<String> {
    lines_of(&String::from_utf8_lossy(&output.stderr))
}

/// Asserts a failure with exactly one non-empty line on stderr; returns it.
fn one_line_failure(output: &Output) -> String {
    assert!(!output.status.success(), "{output:?}");
    let lines = stderr_lines(output);
    assert_eq!(lines.len(), 1, "expected a one-line reason: {lines:?}");
    lines[0].clone()
}

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// base64url (no padding) decoding, for reading the claims of a token.
fn b64url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            other => panic!("not base64url: {other}"),
        }
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (value(*c) << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("three parts");
    serde_json::from_slice(&b64url_decode(part)).expect("JSON part")
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = TempDir::new("good");
    let config = format!(
        "[listen]\npublic = \"127.0.0.1:18080\"\ninternal = \"127.0.0.1:18081\"\n{BASE_CONFIG}"
    );
    let path = dir.file("good.toml", &config);
    let output = bin().arg("check-config").arg(&path).output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    assert!(stderr_lines(&output).is_empty(), "{output:?}");
}

/// Runs check-config on `content`; returns the `(line, message)` of every
/// `FILE:LINE: message` line it printed.
fn check_problems(dir: &TempDir, name: &str, content: &str) -> Vec<(usize, String)> {
    let path = dir.file(name, content);
    let output = bin().arg("check-config").arg(&path).output().expect("runs");
    assert!(!output.status.success(), "{output:?}");
    let prefix = format!("{}:", path.display());
    let problems: Vec<(usize, String)> = stderr_lines(&output)
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (line, message) = rest.split_once(": ")?;
            Some((line.parse().ok()?, message.to_string()))
        })
        .collect();
    assert!(!problems.is_empty(), "no FILE:LINE: lines in {output:?}");
    problems
}

#[test]
fn check_config_names_the_line_of_each_problem() {
    let dir = TempDir::new("bad");
    let unknown = "[listen]\npublic = \"127.0.0.1:8080\"\n\nbogus_key = 1\n";
    let p = check_problems(&dir, "unknown.toml", unknown);
    assert_eq!(p[0].0, 4, "{p:?}");
    assert!(p[0].1.contains("bogus_key"), "{p:?}");

    let bad_value = "# comment\n[limits]\noutbox_capacity = 64\nwrite_timeout = \"soon\"\n";
    let p = check_problems(&dir, "value.toml", bad_value);
    assert_eq!(p[0].0, 4, "{p:?}");

    // Both in one file: every line printed points at one of them.
    let both = format!("{bad_value}\n[listen]\nnope = true\n");
    let p = check_problems(&dir, "both.toml", &both);
    for (line, message) in &p {
        assert!([4, 7].contains(line), "line {line}: {message}");
    }

    // Problems found after parsing are each reported, each with its line.
    let semantic = "[limits]\nmax_message_bytes = 4096\nmax_frame_bytes = 1024\n\n[[apps]]\nid = \"a\"\nsecrets = []\n";
    let p = check_problems(&dir, "semantic.toml", semantic);
    let lines: Vec<usize> = p.iter().map(|(l, _)| *l).collect();
    assert!(lines.contains(&3), "{p:?}");
    assert!(lines.contains(&6), "{p:?}");
}

/// docs/configuration.md: check-config "prints every problem as
/// `FILE:LINE: message`": type errors in two sections are both reported,
/// each at its line.
#[test]
fn check_config_reports_every_type_error_in_one_pass() {
    let dir = TempDir::new("every");
    let both = "# comment\n[limits]\noutbox_capacity = 64\nwrite_timeout = \"soon\"\n\n[listen]\nnope = true\n";
    let p = check_problems(&dir, "both.toml", both);
    let lines: Vec<usize> = p.iter().map(|(l, _)| *l).collect();
    assert!(lines.contains(&4) && lines.contains(&7), "{p:?}");
}

#[test]
fn token_without_the_secret_fails_with_a_one_line_reason() {
    let output = bin()
        .args(["token", "--app", "bluelib", "--channel", "bornes"])
        .args(["--filters", "{\"alarm\": {}}"])
        .output()
        .expect("runs");
    let reason = one_line_failure(&output);
    assert!(reason.contains("CHOUQUETTE_SECRET"), "{reason}");
    assert!(output.stdout.is_empty(), "{output:?}");

    let bad_filters = bin()
        .env("CHOUQUETTE_SECRET", "s")
        .args(["token", "--app", "bluelib", "--channel", "bornes"])
        .args(["--filters", "{not json"])
        .output()
        .expect("runs");
    one_line_failure(&bad_filters);
}

#[tokio::test]
async fn token_prints_a_jwt_the_gateway_accepts() {
    let output = bin()
        .env("CHOUQUETTE_SECRET", chouquette_testkit::SECRET)
        .args(["token", "--app", "bluelib", "--channel", "bornes"])
        .args(["--filters", "{\"alarm\": {\"borne\": \"B1\"}}"])
        .args(["--sub", "roger", "--groups", "g1,g2", "--ttl", "2m"])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let jwt = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_string();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    assert_eq!(jwt_part(&jwt, 0)["alg"], "HS256");
    let claims = jwt_part(&jwt, 1);
    assert_eq!(claims["app_id"], "bluelib");
    assert_eq!(claims["channel"], "bornes");
    assert_eq!(claims["filters"], json!({"alarm": {"borne": "B1"}}));
    assert_eq!(claims["sub"], "roger");
    assert_eq!(claims["groups"], json!(["g1", "g2"]));
    let exp = claims["exp"].as_u64().expect("exp");
    let now = chouquette_core::clock::unix_now();
    assert!(
        (now + 100..=now + 130).contains(&exp),
        "exp {exp}, now {now}"
    );

    let node = chouquette_testkit::TestNode::base().await;
    let mut client = node.client().await;
    client
        .send_json(&chouquette_testkit::subscribe("bornes", &jwt))
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["class"], "ack", "{ack}");
    node.publish("bornes", "alarm", &["borne:B2"], json!(2))
        .await;
    node.publish("bornes", "alarm", &["borne:B1"], json!(1))
        .await;
    assert_eq!(client.recv().await["data"], 1);
    node.running.shutdown().await;
}

/// A `serve` process, killed if the test ends before it exits.
struct Server {
    child: Child,
    stderr: PathBuf,
}

impl Server {
    fn start(dir: &TempDir, config: &Path) -> Server {
        let stderr = dir.0.join("serve.stderr");
        let child = bin()
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("serve starts");
        Server { child, stderr }
    }

    /// Waits up to `limit` for the process to exit.
    async fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn serve_publish_and_stop_on_sigterm() {
    let dir = TempDir::new("serve");
    let (public, internal) = (free_port(), free_port());
    let config = dir.file(
        "chouquette.toml",
        &format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\ninternal = \"127.0.0.1:{internal}\"\n{BASE_CONFIG}"
        ),
    );
    let mut server = Server::start(&dir, &config);

    // Ready when /readyz answers 200 (no message to wait for: poll).
    let http = HttpClient::default();
    let readyz = format!("http://127.0.0.1:{internal}/readyz");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = http.get(&readyz, None).await {
            break;
        }
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            panic!("serve exited with {status}: {}", server.stderr());
        }
        assert!(Instant::now() < deadline, "not ready: {}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = http
        .get(&format!("http://127.0.0.1:{internal}/healthz"), None)
        .await
        .expect("healthz");
    assert_eq!(status, 200);

    let mut client = WsClient::connect(&format!("ws://127.0.0.1:{public}/ws")).await;
    let (ack, _) = client
        .subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;
    let epoch = ack["channels"]["bornes"]["epoch"].clone();

    let url = format!("http://127.0.0.1:{internal}");
    let publish = |key: Option<&str>| {
        let mut command = bin();
        if let Some(key) = key {
            command.env("CHOUQUETTE_API_KEY", key);
        }
        command
            .args(["publish", "--app", "bluelib", "--channel", "bornes"])
            .args(["--event-kind", "alarm", "--keyword", "borne:B1"])
            .args(["--keyword", "level:critical", "--key", "borne:B1"])
            .args(["--data", "{\"uid\": \"B1\", \"status\": \"oh, oh...\"}"])
            .args(["--url", &url])
            .output()
            .expect("runs")
    };
    let output = publish(Some("pub-key"));
    assert!(output.status.success(), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(answer["offset"], 1, "{answer}");
    assert_eq!(answer["epoch"], epoch, "{answer}");
    assert_eq!(
        answer.as_object().expect("object").len(),
        2,
        "{{epoch, offset}}: {answer}"
    );
    let data = client.recv().await;
    assert_eq!(data["offset"], 1, "{data}");
    assert_eq!(data["keywords"], json!(["borne:B1", "level:critical"]));
    assert_eq!(data["data"]["status"], "oh, oh...");

    // `--id`: the same event sent twice is published once.
    let with_id = || {
        bin()
            .env("CHOUQUETTE_API_KEY", "pub-key")
            .args(["publish", "--app", "bluelib", "--channel", "bornes"])
            .args(["--event-kind", "alarm", "--keyword", "borne:B1"])
            .args(["--id", "cli-retry-1", "--url", &url])
            .output()
            .expect("runs")
    };
    let (first, again) = (with_id(), with_id());
    assert!(
        first.status.success() && again.status.success(),
        "{again:?}"
    );
    let first: Value = serde_json::from_slice(&first.stdout).expect("JSON");
    let again: Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(again["offset"], first["offset"], "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(client.recv().await["offset"], first["offset"]);

    let refused = publish(Some("wrong-key"));
    let reason = one_line_failure(&refused);
    assert!(reason.contains("403"), "{reason}");
    one_line_failure(&publish(None));

    let pid = server.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    // Clients are told, then the process exits 0.
    let (reset, _) = client.recv_until("reset").await;
    assert_eq!(reset["reason"], "shutdown", "{reset}");
    let (code, _) = client.expect_close().await.expect("close frame");
    assert_eq!(code, 1001);
    let status = server
        .exit_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM: {}", server.stderr()));
    assert!(status.success(), "{status}: {}", server.stderr());
}

#[tokio::test]
async fn serve_refuses_a_bad_config_with_a_one_line_reason() {
    let dir = TempDir::new("refuse");
    let port = free_port();
    let bad = dir.file(
        "bad.toml",
        &format!("[listen]\npublic = \"127.0.0.1:{port}\"\nwhat = 1\n"),
    );
    let missing = dir.0.join("missing.toml");
    for config in [bad, missing] {
        let mut server = Server::start(&dir, &config);
        let status = server
            .exit_within(Duration::from_secs(10))
            .await
            .expect("serve must not start on a bad config");
        assert!(!status.success(), "{status}");
        let lines = lines_of(&server.stderr());
        assert_eq!(lines.len(), 1, "{lines:?}");
        // Nothing listens on the configured port.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a half-started gateway listens"
        );
    }
}

/// One series of `GET /metrics` on `internal`.
async fn metric(http: &HttpClient, internal: u16, series: &str) -> Option<f64> {
    let (_, text) = http
        .get(&format!("http://127.0.0.1:{internal}/metrics"), None)
        .await
        .ok()?;
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Waits up to 10 s for `series` to read `value` (a signal is handled
/// asynchronously: poll rather than sleep a guessed time).
async fn await_metric(http: &HttpClient, internal: u16, series: &str, value: f64, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(http, internal, series).await != Some(value) {
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value}: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(server: &Server, name: &str) {
    let pid = server.child.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

#[tokio::test]
async fn serve_over_tls_reloads_the_certificate_on_sighup() {
    use chouquette_testkit::tls::{self, TestCert};

    let dir = TempDir::new("tls");
    let first = TestCert::generate(&dir.0, "first");
    let second = TestCert::generate(&dir.0, "second");
    let live = TestCert {
        cert: dir.0.join("live.crt"),
        key: dir.0.join("live.key"),
        der: first.der.clone(),
    };
    first.copy_over(&live);
    let (public, internal) = (free_port(), free_port());
    let tls_table = format!(
        "[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        live.cert.display(),
        live.key.display()
    );
    let config = dir.file(
        "chouquette.toml",
        &format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\ninternal = \"127.0.0.1:{internal}\"\n\n{tls_table}{BASE_CONFIG}"
        ),
    );
    let check = bin()
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("runs");
    assert!(check.status.success(), "{check:?}");
    let server = Server::start(&dir, &config);
    let http = HttpClient::default();
    let series = |result: &str| format!("chouquette_tls_reloads_total{{result=\"{result}\"}}");
    await_metric(&http, internal, &series("ok"), 0.0, &server).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], public));

    let (mut open, presented) = tls::connect_wss(addr, &first).await;
    assert_eq!(presented, first.der);
    open.subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;

    // Renewal on disk, then SIGHUP: new connections get the new certificate.
    second.copy_over(&live);
    signal(&server, "HUP");
    await_metric(&http, internal, &series("ok"), 1.0, &server).await;
    let (_, presented) = tls::connect_wss(addr, &second).await;
    assert_eq!(presented, second.der);
    assert!(tls::connect(addr, &first).await.is_err());

    // A broken file on the next SIGHUP: logged, counted, old pair kept,
    // the process keeps serving.
    std::fs::write(&live.key, "not a key\n").expect("write");
    signal(&server, "HUP");
    await_metric(&http, internal, &series("error"), 1.0, &server).await;
    let (_, presented) = tls::connect_wss(addr, &second).await;
    assert_eq!(presented, second.der);
    assert!(
        server.stderr().contains("TLS certificate reload refused"),
        "{}",
        server.stderr()
    );

    // The connection opened before both reloads still gets events.
    let body = json!({"app_id": "bluelib", "channel": "bornes", "event_kind": "alarm",
                      "keywords": ["borne:B1"], "data": {"status": "still here"}});
    let (status, answer) = http
        .post_json(
            &format!("http://127.0.0.1:{internal}/api/v1/publish"),
            "pub-key",
            body.to_string().into_bytes(),
        )
        .await
        .expect("publish");
    assert_eq!(status, 200, "{answer}");
    let data = open.recv().await;
    assert_eq!(data["data"]["status"], "still here", "{data}");

    let mut server = server;
    signal(&server, "TERM");
    let status = server
        .exit_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM: {}", server.stderr()));
    assert!(status.success(), "{status}: {}", server.stderr());
}

#[tokio::test]
async fn tls_files_are_checked_by_check_config_and_serve() {
    use chouquette_testkit::tls::TestCert;

    let dir = TempDir::new("tls-check");
    let first = TestCert::generate(&dir.0, "first");
    let second = TestCert::generate(&dir.0, "second");
    let port = free_port();
    let table = |cert: &Path, key: &Path| {
        format!(
            "[listen]\npublic = \"127.0.0.1:{port}\"\n\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let missing = dir.0.join("missing.crt");
    let problems = check_problems(&dir, "missing.toml", &table(&missing, &first.key));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, 5, "{problems:?}");
    assert!(
        problems[0].1.contains("cannot read certificate"),
        "{problems:?}"
    );

    // A key that is not the certificate's: serve refuses with one line,
    // and nothing listens.
    let config = dir.file("mismatch.toml", &table(&first.cert, &second.key));
    let mut server = Server::start(&dir, &config);
    let status = server
        .exit_within(Duration::from_secs(10))
        .await
        .expect("serve must not start on a mismatched pair");
    assert!(!status.success(), "{status}");
    let lines = lines_of(&server.stderr());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("does not fit"), "{lines:?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Logs at `trace`, in JSON, while every kind of credential goes by: a
/// subscription token (good and forged), the app secret behind it, the API
/// key (good and wrong) and the admin key (good and wrong). None of them
/// may appear in a log line.
#[tokio::test]
async fn no_secret_or_token_reaches_the_logs_even_at_trace() {
    let dir = TempDir::new("nosecrets");
    let (public, internal) = (free_port(), free_port());
    let config = dir.file(
        "chouquette.toml",
        &format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\ninternal = \"127.0.0.1:{internal}\"\n\
             [log]\nformat = \"json\"\nlevel = \"trace\"\n{BASE_CONFIG}"
        ),
    );
    let mut server = Server::start(&dir, &config);
    let http = HttpClient::default();
    let base = format!("http://127.0.0.1:{internal}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(
        http.get(&format!("{base}/readyz"), None).await,
        Ok((200, _))
    ) {
        assert!(Instant::now() < deadline, "not ready: {}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let good = chouquette_testkit::token("bornes", json!({"alarm": {}}), 600);
    let forged = chouquette_testkit::sign(
        &chouquette_testkit::claims("bornes", json!({"*": {}}), 600),
        "not-the-secret-0123456789",
    );
    let mut client = WsClient::connect(&format!("ws://127.0.0.1:{public}/ws")).await;
    for (i, token) in [&good, &forged].into_iter().enumerate() {
        client
            .send_json(
                &json!({"class": "subscribe", "app_id": "bluelib", "uuid": format!("s{i}"),
                               "channels": {"bornes": {"filters": token}}}),
            )
            .await;
        client.recv().await;
    }
    let sse = format!("http://127.0.0.1:{public}/sse?app_id=bluelib&channel=bornes&token={good}");
    // An SSE stream does not end: read it for a moment.
    let _ = tokio::time::timeout(Duration::from_millis(500), http.get(&sse, None)).await;
    let event = json!({"app_id": "bluelib", "channel": "bornes", "event_kind": "alarm"});
    for key in ["pub-key", "wrong-api-key-0123456789"] {
        let body = event.to_string().into_bytes();
        let _ = http
            .post_json(&format!("{base}/api/v1/publish"), key, body)
            .await;
    }
    let _ = http
        .get(&format!("{base}/admin/status"), Some("admin-key"))
        .await;
    let _ = http
        .get(
            &format!("{base}/admin/status"),
            Some("wrong-admin-key-0123456789"),
        )
        .await;
    client.close().await;
    let pid = server.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    server.exit_within(Duration::from_secs(10)).await;

    let logs = server.stderr();
    assert!(
        logs.contains(r#""level":"DEBUG""#),
        "debug logging is on: {logs}"
    );
    let signature = |t: &str| t.rsplit('.').next().unwrap_or_default().to_string();
    for secret in [
        good.as_str(),
        &signature(&good),
        forged.as_str(),
        &signature(&forged),
        "s3cret-current",
        "s3cret-previous",
        "not-the-secret-0123456789",
        "pub-key",
        "wrong-api-key-0123456789",
        "admin-key",
        "wrong-admin-key-0123456789",
    ] {
        assert!(!logs.contains(secret), "`{secret}` is in the logs:\n{logs}");
    }
}

/// `token --ttl 0s` used to print a token already expired and exit 0.
#[test]
fn token_with_a_ttl_under_one_second_is_refused() {
    for ttl in ["0s", "500ms"] {
        let output = bin()
            .env("CHOUQUETTE_SECRET", "s")
            .args(["token", "--app", "bluelib", "--channel", "bornes"])
            .args(["--filters", "{}", "--ttl", ttl])
            .output()
            .expect("runs");
        let reason = one_line_failure(&output);
        assert!(reason.contains("--ttl must be at least 1s"), "{reason}");
        assert!(output.stdout.is_empty(), "{output:?}");
    }
}

/// `publish` to a gateway that is not there used to say only "request
/// failed: client error (Connect)": the reason names the address it tried.
#[test]
fn publish_to_an_unreachable_gateway_names_the_address_tried() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let output = bin()
        .env("CHOUQUETTE_API_KEY", "pub-key")
        .args(["publish", "--app", "bluelib", "--channel", "bornes"])
        .args(["--event-kind", "alarm", "--url", &url])
        .output()
        .expect("runs");
    let reason = one_line_failure(&output);
    assert!(
        reason.contains(&format!("{url}/api/v1/publish")),
        "{reason}"
    );
    assert!(reason.contains("--url"), "{reason}");
}
