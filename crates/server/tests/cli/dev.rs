//! `chouquette dev ./public /api/=URL`: a development gateway in one line,
//! driven as a developer would: the printed URL and secrets are used, the
//! page is edited while it runs, the backend answers through the proxy.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;

use chouquette_testkit::{APP, Backend, claims, sign, subscribe};

use super::*;

/// Reads the child's stdout lines on a thread, so the test can wait for
/// them with a deadline.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The lines printed until the publish API's, within ten seconds.
fn banner(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("publish API")) {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("dev printed only {seen:?} ({e})"),
        }
    }
    seen
}

/// The value after `export NAME=` in the banner.
fn exported(banner: &[String], name: &str) -> String {
    let prefix = format!("export {name}=");
    banner
        .iter()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {banner:?}"))
        .to_string()
}

#[tokio::test]
async fn dev_serves_the_page_its_backend_and_push_on_one_origin() {
    let backend = Backend::echo().await;
    let site = TempDir::new("dev-site");
    site.file("index.html", "version 1");
    let (public, internal) = (free_port(), free_port());
    let mut child = bin()
        .arg("dev")
        .arg(&site.0)
        .arg(format!("/api/={}", backend.url()))
        .args(["--app", APP])
        .args(["--public", &format!("127.0.0.1:{public}")])
        .args(["--internal", &format!("127.0.0.1:{internal}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dev starts");
    let lines = stdout_lines(&mut child);
    let banner = banner(&lines);
    assert!(
        banner[0].contains(&format!("http://127.0.0.1:{public}/")),
        "{banner:?}"
    );
    let secret = exported(&banner, "CHOUQUETTE_SECRET");
    let api_key = exported(&banner, "CHOUQUETTE_API_KEY");

    let http = HttpClient::default();
    let page = format!("http://127.0.0.1:{public}/");
    assert_eq!(
        http.get(&page, None).await.unwrap(),
        (200, "version 1".into())
    );
    site.file("index.html", "version 2");
    assert_eq!(
        http.get(&page, None).await.unwrap(),
        (200, "version 2".into()),
        "an edit shows at the next load"
    );
    let (status, body) = http
        .get(&format!("http://127.0.0.1:{public}/api/hello"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["uri"],
        "/api/hello"
    );

    // The printed secret signs tokens, the printed key publishes.
    let mut client = WsClient::connect(&format!("ws://127.0.0.1:{public}/ws")).await;
    let token = sign(&claims("news", json!({"*": {}}), 60), &secret);
    client.send_json(&subscribe("news", &token)).await;
    let (ack, _) = client.recv_until("ack").await;
    assert!(ack["channels"]["news"].is_object(), "{ack}");
    let event = json!({"app_id": APP, "channel": "news", "event_kind": "post", "data": "hi"});
    let (status, _) = http
        .post_json(
            &format!("http://127.0.0.1:{internal}/api/v1/publish"),
            &api_key,
            event.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(client.recv_until("data").await.0["data"], "hi");

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "dev did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn dev_refuses_a_route_without_a_prefix_or_a_missing_folder() {
    let output = bin()
        .args([
            "dev",
            "/nonexistent-chouquette-folder",
            "http://127.0.0.1:1",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let reason = one_line_failure(&output);
    assert!(reason.contains("PREFIX=URL"), "{reason}");
    let output = bin()
        .args([
            "dev",
            "/nonexistent-chouquette-folder",
            "api=http://127.0.0.1:1",
        ])
        .output()
        .expect("runs");
    let reason = one_line_failure(&output);
    assert!(reason.contains("is not a folder"), "{reason}");
    assert!(reason.contains("must start and end with `/`"), "{reason}");
}
