//! `serve` under systemd's `Type=notify` (deploy/chouquette.service): with
//! `NOTIFY_SOCKET` set it sends `READY=1` once it serves, and `STOPPING=1`
//! when asked to stop. systemd is played by a Unix datagram socket.

use std::process::Stdio;
use std::time::Duration;

use chouquette::http_client::HttpClient;
use chouquette_testkit::BASE_CONFIG;
use tokio::net::UnixDatagram;

use super::{Server, TempDir, bin, free_port};

async fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(20), socket.recv(&mut buf))
        .await
        .expect("a notification within 20 s")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn serve_tells_systemd_when_ready_and_when_stopping() {
    let dir = TempDir::new("systemd");
    let (public, internal) = (free_port(), free_port());
    let config = dir.file(
        "chouquette.toml",
        &format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\ninternal = \"127.0.0.1:{internal}\"\n{BASE_CONFIG}"
        ),
    );
    let socket_path = dir.0.join("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let stderr = dir.0.join("serve.stderr");
    let child = bin()
        .env("NOTIFY_SOCKET", &socket_path)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("serve starts");
    let mut server = Server { child, stderr };

    assert_eq!(next_state(&systemd).await, "READY=1", "{}", server.stderr());
    // Ready means serving: no retry needed on either listener.
    let http = HttpClient::default();
    let (status, body) = http
        .get(&format!("http://127.0.0.1:{internal}/readyz"), None)
        .await
        .expect("readyz answers at READY=1");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    tokio::net::TcpStream::connect(("127.0.0.1", public))
        .await
        .expect("the public listener is bound at READY=1");

    super::signal(&server, "TERM");
    assert_eq!(next_state(&systemd).await, "STOPPING=1");
    let status = server
        .exit_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running after SIGTERM: {}", server.stderr()));
    assert!(status.success(), "{status}: {}", server.stderr());
}
