//! The Redis the gateways share in `--broker redis` runs: a `redis-server`
//! child on a free loopback port, nothing kept on disk, killed when dropped.
//! Its CPU time is read like the gateways', for "Redis CPU per delivery".

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::procfs;

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts it and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port")?
            .port();
        let dir = std::env::temp_dir().join(format!("chouquette-bench-redis-{port}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start redis-server (Debian package redis-server)")?;
        let pid = child.id().context("redis-server exited at once")?;
        let server = RedisServer {
            child,
            pid,
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers().await {
            if Instant::now() > deadline {
                bail!("redis-server did not answer on port {port}");
            }
            sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }

    async fn answers(&self) -> bool {
        let Ok(Ok(mut stream)) = timeout(
            Duration::from_millis(500),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        else {
            return false;
        };
        let mut pong = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && matches!(
                timeout(Duration::from_millis(500), stream.read_exact(&mut pong)).await,
                Ok(Ok(_))
            )
            && &pong == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `used_memory` of `INFO memory`, in bytes (what Redis holds, data and
    /// overhead, without the allocator's fragmentation).
    pub async fn used_memory(&self) -> anyhow::Result<u64> {
        let info = timeout(Duration::from_secs(5), self.info_memory())
            .await
            .context("INFO memory: no answer within 5 s")??;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory has no used_memory")
    }

    /// The payload of `INFO memory` (a RESP bulk string: `$<len>\r\n<payload>\r\n`).
    async fn info_memory(&self) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream.write_all(b"INFO memory\r\n").await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("redis-server closed the connection");
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&buf[..end])?;
            let len: usize = head
                .strip_prefix('$')
                .and_then(|l| l.parse().ok())
                .with_context(|| format!("unexpected answer to INFO: {head}"))?;
            if buf.len() >= end + 2 + len {
                return Ok(String::from_utf8_lossy(&buf[end + 2..end + 2 + len]).into_owned());
            }
        }
    }

    /// CPU time used so far (user + system), seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        procfs::cpu_seconds(self.pid)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
