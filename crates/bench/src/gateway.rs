//! A gateway under test: a child process running the release binary with a
//! generated config (memory broker, or one of several nodes on a shared
//! Redis; free loopback ports, one app). It is killed when dropped, so every
//! exit path stops it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::http::Http;
use crate::procfs;
use crate::wire::AppSpec;

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Public listener (`/ws`).
    pub public: SocketAddr,
    /// Internal listener (`/api/v1`, `/readyz`).
    pub internal: SocketAddr,
    dir: PathBuf,
    http: Http,
    /// The binary and its config, to start it again (none for the floor).
    relaunch: Option<(PathBuf, PathBuf)>,
}

impl Gateway {
    /// Writes the config, starts the binary and waits for `/readyz`.
    /// `limits.default_rates`: keep the gateway's default rate limits;
    /// otherwise the per-address connection rate is lifted, since the load
    /// generator opens thousands of connections per second from each source
    /// address.
    pub async fn start(
        binary: &Path,
        app: &AppSpec,
        outbox_capacity: usize,
        limits: &LimitsSpec,
        broker: &BrokerSpec,
    ) -> anyhow::Result<Gateway> {
        Gateway::start_with(binary, app, outbox_capacity, limits, broker, "").await
    }

    /// [`Gateway::start`] with `app_extra` TOML appended to the app's
    /// table (its `[apps.limits]`, `[[apps.rpc]]` routes).
    pub async fn start_with(
        binary: &Path,
        app: &AppSpec,
        outbox_capacity: usize,
        limits: &LimitsSpec,
        broker: &BrokerSpec,
        app_extra: &str,
    ) -> anyhow::Result<Gateway> {
        if !binary.is_file() {
            bail!(
                "gateway binary {} not found: build it with `cargo build --release -p chouquette`",
                binary.display()
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "chouquette-bench-{}-{}",
            std::process::id(),
            broker.node()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let (public, internal) = (free_port()?, free_port()?);
        let config = dir.join("chouquette.toml");
        let text = config_text(public, internal, app, outbox_capacity, limits, broker);
        let text = format!("{text}{app_extra}");
        std::fs::write(&config, text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let child = spawn(binary, &config)?;
        let relaunch = Some((binary.to_path_buf(), config));
        Gateway::started(child, (public, internal), dir, relaunch).await
    }

    /// Starts the floor server (this binary, `floor`; see `floor.rs`) on
    /// free ports and waits for its `/readyz`.
    pub async fn start_floor() -> anyhow::Result<Gateway> {
        let me = std::env::current_exe().context("cannot locate this executable")?;
        let dir =
            std::env::temp_dir().join(format!("chouquette-bench-{}-floor", std::process::id()));
        let (public, internal) = (free_port()?, free_port()?);
        let child = pinned(&me)
            .arg("floor")
            .arg("--public")
            .arg(public.to_string())
            .arg("--internal")
            .arg(internal.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the floor server")?;
        Gateway::started(child, (public, internal), dir, None).await
    }

    /// A server process just spawned on `ports` (public, internal), once
    /// its `/readyz` answers.
    async fn started(
        child: Child,
        (public, internal): (SocketAddr, SocketAddr),
        dir: PathBuf,
        relaunch: Option<(PathBuf, PathBuf)>,
    ) -> anyhow::Result<Gateway> {
        let pid = child.id().context("the server exited at once")?;
        let gateway = Gateway {
            child,
            pid,
            public,
            internal,
            dir,
            http: Http::default(),
            relaunch,
        };
        gateway.wait_ready(Duration::from_secs(15)).await?;
        Ok(gateway)
    }

    /// Stops the process for a restart, with SIGKILL, or with SIGTERM and
    /// SIGKILL if it still runs after `grace`; returns once it is gone.
    pub async fn halt(&mut self, kill: bool, grace: Duration) -> anyhow::Result<()> {
        if kill {
            self.child.start_kill().context("cannot kill the gateway")?;
        } else {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status()
                .context("cannot run kill")?;
            if !status.success() {
                bail!("kill -TERM {} failed", self.pid);
            }
            if timeout(grace, self.child.wait()).await.is_ok() {
                return Ok(());
            }
            eprintln!(
                "gateway {} still running after {grace:?}: killing it",
                self.pid
            );
            self.child.start_kill().context("cannot kill the gateway")?;
        }
        self.child
            .wait()
            .await
            .context("cannot wait for the gateway")?;
        Ok(())
    }

    /// Starts the (stopped) gateway again, same binary, config and ports;
    /// returns without waiting for `/readyz`.
    pub fn relaunch(&mut self) -> anyhow::Result<()> {
        let (binary, config) = self
            .relaunch
            .as_ref()
            .context("this server cannot be restarted")?;
        self.child = spawn(binary, config)?;
        self.pid = self.child.id().context("gateway exited at once")?;
        Ok(())
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.ready().await {
                return Ok(());
            }
            sleep(Duration::from_millis(50)).await;
        }
        bail!("gateway not ready within {within:?}")
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn ready(&self) -> bool {
        let url = format!("http://{}/readyz", self.internal);
        matches!(self.http.get(&url).await, Ok((200, _)))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory now, bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        procfs::status_bytes(self.pid, "VmRSS")
    }

    /// Peak resident memory, bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        procfs::status_bytes(self.pid, "VmHWM")
    }

    /// CPU time used so far (user + system), seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        procfs::cpu_seconds(self.pid)
    }

    /// The gateway's user and system CPU time so far, seconds.
    pub fn cpu_split(&self) -> anyhow::Result<(f64, f64)> {
        procfs::cpu_split(self.pid)
    }

    /// Asks the process to stop (SIGTERM, so profilers wrapping it can
    /// write their output); kills it if it is still running after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let terminated = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !terminated || timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a run sets in its gateways' `[limits]`, beyond the outbox.
#[derive(Debug, Clone, Default)]
pub struct LimitsSpec {
    /// Keep the default per-address connection rate (otherwise lifted).
    pub default_rates: bool,
    /// More `[limits]` lines, each ending with a newline.
    pub extra: String,
}

/// The `[broker]` (and `[node]`) of one gateway's config.
#[derive(Debug, Clone)]
pub enum BrokerSpec {
    /// In-process.
    Memory,
    /// The shared Redis at `url`, as node `node`.
    Redis {
        /// `redis://...`.
        url: String,
        /// The node's index.
        node: usize,
    },
}

impl BrokerSpec {
    fn node(&self) -> usize {
        match self {
            BrokerSpec::Memory => 0,
            BrokerSpec::Redis { node, .. } => *node,
        }
    }

    fn toml(&self) -> String {
        match self {
            BrokerSpec::Memory => "[broker]\nkind = \"memory\"\n".into(),
            BrokerSpec::Redis { url, node } => format!(
                "[node]\nid = \"bench-{node}\"\n\n[broker]\nkind = \"redis\"\nurl = \"{url}\"\ninbox = \"\"\n"
            ),
        }
    }
}

/// The cores servers are pinned to (`--server-cpus`), set once at start.
static SERVER_CPUS: OnceLock<String> = OnceLock::new();

/// Pins every server started from now on to `cpus` (a `taskset -c` list).
pub fn pin_servers(cpus: &str) {
    let _ = SERVER_CPUS.set(cpus.to_owned());
}

/// A command running `binary`, through `taskset -c` when servers are
/// pinned (`taskset` execs it, so the child's pid is the server's).
fn pinned(binary: &Path) -> Command {
    match SERVER_CPUS.get() {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(binary);
            command
        }
        None => Command::new(binary),
    }
}

/// Starts `binary serve --config config` (pinned if servers are).
fn spawn(binary: &Path, config: &Path) -> anyhow::Result<Child> {
    pinned(binary)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// The gateway binary: `given` (`--gateway`), else `chouquette` next to
/// this executable.
pub fn binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let me = std::env::current_exe().context("cannot locate this executable")?;
    Ok(me.with_file_name("chouquette"))
}

/// A loopback port free right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}

fn config_text(
    public: SocketAddr,
    internal: SocketAddr,
    app: &AppSpec,
    outbox: usize,
    limits: &LimitsSpec,
    broker: &BrokerSpec,
) -> String {
    let per_address = if limits.default_rates {
        ""
    } else {
        "new_connections_per_address = 0\nmax_connections_per_address = 0\n"
    };
    let extra = &limits.extra;
    format!(
        r#"[listen]
public = "{public}"
internal = "{internal}"

{broker}
[limits]
outbox_capacity = {outbox}
{per_address}{extra}
[shutdown]
grace = "2s"

[log]
level = "warn"

[[apps]]
id = "{app_id}"
secrets = ["{secret}"]
api_key = "{api_key}"
"#,
        app_id = app.app,
        secret = app.secret,
        api_key = app.api_key,
        broker = broker.toml(),
    )
}
