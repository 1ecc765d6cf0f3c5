//! The one way a test's own server process (Mosquitto, Prosody, the SMTP
//! sink) is started and stopped: spawned to die with the test, waited for
//! until it accepts connections, killed at once (SIGKILL, what a crash
//! looks like to its clients) when the test asks.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Spawns `command`, killed when its handle is dropped, and waits until it
/// accepts connections on `port`; panics after `within` naming `what`
/// (and `hint`, e.g. where its log is).
pub(crate) async fn spawn_listening(
    mut command: Command,
    port: u16,
    within: Duration,
    what: &str,
    hint: &str,
) -> Child {
    let child = command
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts: {e}"));
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port}{hint}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

/// Kills the process in `child`, if any, and forgets it.
pub(crate) async fn kill(child: &mut Option<Child>) {
    if let Some(mut process) = child.take() {
        let _ = process.kill().await;
    }
}
