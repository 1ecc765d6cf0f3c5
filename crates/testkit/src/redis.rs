//! A `redis-server` of the test's own, on a free loopback port, that the
//! test may kill and restart; and configs of nodes that share it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{BASE_CONFIG, config_with};

/// A Redis server process, killed when dropped. Nothing is kept on disk.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
    /// Its working folder: a replica's full sync writes an RDB file there,
    /// which must not be loaded by another test's server.
    dir: PathBuf,
}

/// A port the kernel just said was free.
pub fn free_port() -> u16 {
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

/// A loopback address no test connects from or listens on but those that
/// take a port here with [`free_port_on`]: a test whose server must leave
/// its port and come back to it (a backend restarting) finds it still free.
/// On `127.0.0.1` the freed port is in the ephemeral range, where any other
/// test's outgoing connection may take it as its source port meanwhile.
pub const QUIET_LOOPBACK: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 7);

/// A port the kernel just said was free on `ip`.
pub fn free_port_on(ip: std::net::Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether something answers `PING` with `+PONG` on `port`.
pub async fn answers_ping(port: u16) -> bool {
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_millis(500),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"+PONG\r\n"
    )
}

impl RedisServer {
    /// Starts `redis-server` on a free port; panics (the test fails) when it
    /// cannot, e.g. when Redis is not installed.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chq-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder for redis-server");
        let mut server = RedisServer {
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            dir,
        };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(self.port).await {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL): what a crash looks like to clients.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill().await;
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`BASE_CONFIG`] for a node named `node_id` on the Redis at `url`, with
/// short timeouts so that tests see losses and returns quickly.
pub fn redis_config(url: &str, node_id: &str) -> String {
    format!("{}{BASE_CONFIG}", redis_header(url, node_id))
}

/// Like [`redis_config`], with [`config_with`]'s `limits` and `app_extra`.
pub fn redis_config_with(url: &str, node_id: &str, limits: &str, app_extra: &str) -> String {
    format!(
        "{}{}",
        redis_header(url, node_id),
        config_with(limits, app_extra)
    )
}

fn redis_header(url: &str, node_id: &str) -> String {
    format!(
        "[node]\nid = \"{node_id}\"\n\n[broker]\nkind = \"redis\"\nurl = \"{url}\"\n\
         connect_timeout = \"1s\"\ncommand_timeout = \"1s\"\nreconnect_max = \"500ms\"\n\
         inbox_claim_after = \"2s\"\ntopic_sweep = \"1s\"\n"
    )
}
