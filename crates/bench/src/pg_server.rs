//! The Postgres cluster of a `--scenario postgres` run: its own cluster
//! (`initdb` in a temporary folder, `wal_level = logical`, a free loopback
//! port), stopped and deleted when dropped. The machine's own cluster is not
//! logical, and a benchmark must not restart it.
//!
//! Postgres refuses to run as root: under root the cluster is created and
//! run as the `postgres` user (`runuser`). Its CPU time is read from
//! `/proc` (the postmaster and its backends), for "Postgres CPU".

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::{Instant, sleep};
use tokio_postgres::{Client, NoTls};

use crate::procfs;

/// The role the gateway and the writers connect as (LOGIN REPLICATION).
const ROLE: &str = "chouquette";
/// The database written to.
const DATABASE: &str = "app";

/// A running cluster.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl PgServer {
    /// Creates and starts a cluster with the [`ROLE`] role owning the
    /// [`DATABASE`] database.
    pub async fn start() -> anyhow::Result<PgServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port")?
            .port();
        let dir = std::env::temp_dir().join(format!("chouquette-bench-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let server = PgServer {
            port,
            dir,
            bin: binaries()?,
            as_postgres: running_as_root(),
        };
        if server.as_postgres {
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !owned {
                bail!("cannot give {} to the postgres user", server.dir.display());
            }
        }
        let data = server.data();
        server.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust"])?;
        server.launch().await?;
        let admin = server.client_as("postgres", "postgres").await?;
        // One statement each: CREATE DATABASE refuses a transaction block.
        for sql in [
            format!("CREATE ROLE {ROLE} LOGIN REPLICATION"),
            format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"),
        ] {
            admin
                .simple_query(&sql)
                .await
                .with_context(|| format!("cannot run {sql}"))?;
        }
        Ok(server)
    }

    /// The URL of [`ROLE`] on [`DATABASE`] (the gateway's and the writers').
    pub fn url(&self) -> String {
        url_as(self.port, ROLE, DATABASE)
    }

    /// A client on [`DATABASE`] as [`ROLE`], its connection driven in the
    /// background.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_as(ROLE, DATABASE).await
    }

    async fn client_as(&self, role: &str, database: &str) -> anyhow::Result<Client> {
        let (client, connection) =
            tokio_postgres::connect(&url_as(self.port, role, database), NoTls)
                .await
                .with_context(|| format!("cannot connect to postgres on {}", self.port))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// CPU time (user + system, seconds) of the postmaster, its live
    /// backends and the backends it has reaped.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("cannot read {}", pid_file.display()))?;
        let pid: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("no pid in postmaster.pid")?;
        let mut total = procfs::cpu_seconds(pid)? + procfs::children_cpu_seconds(pid)?;
        for child in procfs::children(pid)? {
            // A backend may exit between the listing and the reading.
            total += procfs::cpu_seconds(child).unwrap_or(0.0);
        }
        Ok(total)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        c.args(args);
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command(&self.bin.join(tool), args)
            .output()
            .with_context(|| format!("{tool} could not run"))?;
        if !output.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// `pg_ctl start` with the settings of a logical source and no fsync
    /// (the benchmark measures the gateway, not the disk). Commits stay
    /// synchronous: logical decoding reads only flushed WAL, so
    /// `synchronous_commit = off` would add up to `wal_writer_delay` (200 ms)
    /// of lag that is Postgres', not the gateway's.
    async fn launch(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10 \
             -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display(),
        );
        let log = self.dir.join("log").display().to_string();
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio_postgres::connect(&url_as(self.port, "postgres", "postgres"), NoTls)
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("postgres did not answer on port {}", self.port);
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command(
                &self.bin.join("pg_ctl"),
                &["-D", &data, "-m", "immediate", "stop"],
            )
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url_as(port: u16, role: &str, database: &str) -> String {
    format!("postgres://{role}@127.0.0.1:{port}/{database}")
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn binaries() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context(
        "PostgreSQL server binaries not found (Debian package postgresql: \
         /usr/lib/postgresql/<version>/bin/initdb)",
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
