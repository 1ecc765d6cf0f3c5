//! The Mosquitto of a `--scenario devices` run: `/usr/sbin/mosquitto` on a
//! free loopback port, anonymous clients allowed, nothing persisted, its own
//! config in a temporary folder; killed and the folder deleted when dropped.
//! Its CPU time and memory are read from `/proc` like the gateway's.
//!
//! It inherits this process's open-file limit (raised to the hard limit by
//! `main`): 19,000 devices and the gateway's one connection fit under the
//! 20,000 files one process may hold here.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::procfs;

/// The broker binary (Debian package `mosquitto`).
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// QoS 1 messages Mosquitto should send one client (the gateway) before
/// waiting for its PUBACKs (default 20). Below the gateway source's queue
/// of 256, so its reading task would never block; wide enough that a flush
/// is not held to one round trip per 20 messages. Mosquitto 2.0.11 does
/// not hold to it while messages keep arriving (README, "Devices").
pub const MAX_INFLIGHT: u32 = 100;

/// QoS 1 messages Mosquitto queues for one client beyond its in-flight
/// window (default 1,000, over which it *drops* them). A flush of 3,600 and
/// a few seconds of 19,000 devices would go over the default; at this bound
/// (some 250 MB of small messages) the gateway would have to fall over 4
/// minutes behind 19,000 devices before one is dropped. A drop shows up as
/// `lost` in the report.
pub const MAX_QUEUED: u32 = 1_000_000;

/// A running broker.
#[derive(Debug)]
pub struct MqttServer {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl MqttServer {
    /// Writes the config, starts the broker and waits until it listens.
    pub async fn start() -> anyhow::Result<MqttServer> {
        if !std::path::Path::new(MOSQUITTO).exists() {
            bail!("{MOSQUITTO} not found (Debian package mosquitto)");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port")?
            .port();
        let dir = std::env::temp_dir().join(format!("chouquette-bench-mqtt-{port}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let config = dir.join("mosquitto.conf");
        std::fs::write(&config, config_text(port, running_as_root()))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {MOSQUITTO}"))?;
        let pid = child.id().context("mosquitto exited at once")?;
        let server = MqttServer {
            child,
            pid,
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on port {port}");
            }
            sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// CPU time used so far (user + system), seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        procfs::cpu_seconds(self.pid)
    }

    /// Resident memory now, bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        procfs::status_bytes(self.pid, "VmRSS")
    }
}

impl Drop for MqttServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The broker's config. Under root, Mosquitto would switch to the
/// `mosquitto` user; `user root` keeps it as it is.
fn config_text(port: u16, root: bool) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         max_inflight_messages {MAX_INFLIGHT}\nmax_queued_messages {MAX_QUEUED}\n\
         set_tcp_nodelay true\nlog_dest stderr\nlog_type error\n{}",
        if root { "user root\n" } else { "" }
    )
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_allows_a_flush_and_keeps_nothing() {
        let text = config_text(1884, false);
        assert!(text.starts_with("listener 1884 127.0.0.1\n"), "{text}");
        for line in [
            "allow_anonymous true",
            "persistence false",
            "max_inflight_messages 100",
            "max_queued_messages 1000000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(!text.contains("user root"));
        assert!(config_text(1884, true).contains("\nuser root\n"));
    }
}
