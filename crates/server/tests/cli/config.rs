//! Configurations `check-config` used to call "ok" although `serve` then
//! failed, went silent or half-worked, and environment overrides that
//! changed secrets. Each is refused (or read right) before anything binds.

use super::*;

/// The good file of `check_config_accepts_a_good_file`, with `extra` lines
/// in `[limits]` and `[log]` sections put before the apps.
fn config(listen: &str, extra: &str) -> String {
    format!("[listen]\n{listen}\n{extra}\n{BASE_CONFIG}")
}

#[test]
fn check_config_refuses_listeners_that_cannot_both_bind() {
    let dir = TempDir::new("same-addr");
    let same = config(
        "public = \"127.0.0.1:18080\"\ninternal = \"127.0.0.1:18080\"",
        "",
    );
    let p = check_problems(&dir, "same.toml", &same);
    assert!(
        p.iter()
            .any(|(l, m)| *l == 3 && m.contains("listen.internal")),
        "{p:?}"
    );
    let wildcard = config(
        "public = \"0.0.0.0:18080\"\ninternal = \"127.0.0.1:18080\"",
        "",
    );
    let p = check_problems(&dir, "wildcard.toml", &wildcard);
    assert!(p.iter().any(|(l, _)| *l == 3), "{p:?}");
}

#[tokio::test]
async fn serve_refuses_listeners_that_cannot_both_bind_in_one_line() {
    let dir = TempDir::new("same-serve");
    let port = free_port();
    let same = config(
        &format!("public = \"127.0.0.1:{port}\"\ninternal = \"127.0.0.1:{port}\""),
        "",
    );
    let path = dir.file("same.toml", &same);
    let mut server = Server::start(&dir, &path);
    let status = server
        .exit_within(Duration::from_secs(10))
        .await
        .expect("serve must not start");
    assert!(!status.success(), "{status}");
    let lines = lines_of(&server.stderr());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(!lines[0].contains("already in use"), "{lines:?}");
}

#[test]
fn check_config_refuses_a_log_level_that_silences_everything() {
    let dir = TempDir::new("log-level");
    for bad in ["verbose", "info,verbose", "chouquette=loud", ""] {
        let text = config("", &format!("[log]\nlevel = \"{bad}\"\n"));
        let p = check_problems(&dir, "bad.toml", &text);
        assert!(
            p.iter().any(|(l, m)| *l == 4 && m.contains("log.level")),
            "{bad}: {p:?}"
        );
    }
    for good in [
        "debug",
        "WARN",
        "info,chouquette=debug",
        "chouquette::api=trace",
    ] {
        let path = dir.file(
            "good.toml",
            &config(
                "public = \"127.0.0.1:18080\"\ninternal = \"127.0.0.1:18081\"",
                &format!("[log]\nlevel = \"{good}\"\n"),
            ),
        );
        let output = bin().arg("check-config").arg(&path).output().expect("runs");
        assert!(output.status.success(), "{good}: {output:?}");
    }
}

#[tokio::test]
async fn a_missing_config_file_is_reported_once() {
    let dir = TempDir::new("missing");
    let missing = dir.0.join("missing.toml");
    let checked = bin()
        .arg("check-config")
        .arg(&missing)
        .output()
        .expect("runs");
    let mut server = Server::start(&dir, &missing);
    server
        .exit_within(Duration::from_secs(10))
        .await
        .expect("serve must not start");
    let served = server.stderr();
    for reason in [one_line_failure(&checked), served.trim().to_string()] {
        assert_eq!(reason.matches("No such file").count(), 1, "{reason}");
        assert_eq!(reason.matches("missing.toml").count(), 1, "{reason}");
    }
}

#[test]
fn check_config_refuses_a_frame_limit_websocket_upgrades_cannot_use() {
    let dir = TempDir::new("frame");
    let text = config(
        "",
        "[limits]\nmax_message_bytes = 1024\nmax_frame_bytes = 2048\n",
    );
    let p = check_problems(&dir, "small.toml", &text);
    assert!(
        p.iter()
            .any(|(l, m)| *l == 5 && m.contains("at least 2049")),
        "{p:?}"
    );
}

#[tokio::test]
async fn the_smallest_frame_limit_accepted_still_upgrades() {
    let dir = TempDir::new("frame-min");
    let (public, internal) = (free_port(), free_port());
    let text = config(
        &format!("public = \"127.0.0.1:{public}\"\ninternal = \"127.0.0.1:{internal}\""),
        "[limits]\nmax_message_bytes = 1024\nmax_frame_bytes = 2049\n",
    );
    let path = dir.file("min.toml", &text);
    let server = Server::start(&dir, &path);
    wait_ready(&server, internal).await;
    let mut client = WsClient::connect(&format!("ws://127.0.0.1:{public}/ws")).await;
    let (ack, _) = client.subscribe("bornes", json!({"alarm": {}})).await;
    assert!(ack["channels"]["bornes"].is_object(), "{ack}");
}

/// Waits until the server's `/readyz` answers 200.
async fn wait_ready(server: &Server, internal: u16) {
    let http = HttpClient::default();
    let readyz = format!("http://127.0.0.1:{internal}/readyz");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http.get(&readyz, None).await, Ok((200, _))) {
        assert!(Instant::now() < deadline, "not ready: {}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn secrets_from_the_environment_are_strings() {
    let dir = TempDir::new("env-secrets");
    let (public, internal) = (free_port(), free_port());
    let text = config(
        &format!("public = \"127.0.0.1:{public}\"\ninternal = \"127.0.0.1:{internal}\""),
        "",
    );
    let path = dir.file("env.toml", &text);
    let stderr = dir.0.join("serve.stderr");
    let child = bin()
        .args(["serve", "--config"])
        .arg(&path)
        .env("CHOUQUETTE_APPS__0__API_KEY", "\"007\"")
        .env("CHOUQUETTE_APPS__0__SECRETS", "0042, other")
        .env("CHOUQUETTE_ADMIN__KEY", "123456")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("serve starts");
    let server = Server { child, stderr };
    wait_ready(&server, internal).await;

    // The quoted key keeps its quotes; the file's key is replaced.
    let publish = |key: &str| {
        bin()
            .env("CHOUQUETTE_API_KEY", key)
            .args(["publish", "--app", "bluelib", "--channel", "bornes"])
            .args(["--event-kind", "alarm", "--keyword", "borne:B1"])
            .args(["--url", &format!("http://127.0.0.1:{internal}")])
            .output()
            .expect("runs")
    };
    assert!(publish("\"007\"").status.success());
    assert!(!publish("007").status.success());
    assert!(!publish(chouquette_testkit::API_KEY).status.success());

    // An all-digit secret, from a comma-separated list, signs tokens.
    let claims = chouquette_testkit::claims("bornes", json!({"alarm": {}}), 60);
    let token = chouquette_testkit::sign(&claims, "0042");
    let mut client = WsClient::connect(&format!("ws://127.0.0.1:{public}/ws")).await;
    client
        .send_json(&chouquette_testkit::subscribe("bornes", &token))
        .await;
    let (ack, _) = client.recv_until("ack").await;
    assert!(ack["channels"]["bornes"].is_object(), "{ack}");

    let (status, _) = HttpClient::default()
        .get(
            &format!("http://127.0.0.1:{internal}/admin/switches"),
            Some("123456"),
        )
        .await
        .expect("admin answers");
    assert_eq!(status, 200);
}

#[test]
fn check_config_refuses_proxy_routes_that_could_not_work() {
    let dir = TempDir::new("proxy");
    let routes = "[[proxy]]\nprefix = \"api\"\nurl = \"http://127.0.0.1:9000\"\n\n\
                  [[proxy]]\nprefix = \"/ws/x/\"\nurl = \"https://b.example/\"\n\n\
                  [[proxy]]\nprefix = \"/v/\"\nurl = \"http://127.0.0.1:9000/v2\"\ntimeout = \"0s\"\n";
    let p = check_problems(&dir, "proxy.toml", &format!("{routes}\n{BASE_CONFIG}"));
    let at = |line: usize, needle: &str| p.iter().any(|(l, m)| *l == line && m.contains(needle));
    assert!(at(2, "must start and end with `/`"), "{p:?}");
    assert!(at(6, "under a gateway transport"), "{p:?}");
    assert!(at(7, "TLS to backends is not supported"), "{p:?}");
    assert!(at(11, "must end with `/`"), "{p:?}");
    assert!(at(10, "timeout must be more than 0s"), "{p:?}");
}

#[test]
fn check_config_refuses_bad_trusted_proxies_and_no_header_deadline_at_their_lines() {
    let dir = TempDir::new("trusted-proxies");
    let text = config(
        "trusted_proxies = [\n  \"10.0.0.0/8\",\n  \"not-an-ip\",\n  \"10.0.0.0/40\",\n  \"::1\",\n]",
        "[limits]\nheader_read_timeout = \"0s\"\nmax_connections_per_address = 0\n",
    );
    let p = check_problems(&dir, "proxies.toml", &text);
    for (line, what) in [
        (4, "not-an-ip"),
        (5, "10.0.0.0/40"),
        (9, "header_read_timeout"),
    ] {
        assert!(
            p.iter().any(|(l, m)| *l == line && m.contains(what)),
            "{what} at line {line}: {p:?}"
        );
    }
    assert_eq!(p.len(), 3, "{p:?}");
}
