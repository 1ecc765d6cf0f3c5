//! A PostgreSQL cluster of the test's own, with `wal_level = logical`, on a
//! free loopback port in a temporary folder, that the test may stop and
//! start again (the machine's own cluster is not logical, and restarting it
//! is not a test's business).
//!
//! Postgres refuses to run as root: under root, the cluster is created and
//! run as the `postgres` user (`runuser`), its folder owned by it. Missing
//! binaries fail the test, with the package to install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::free_port;

/// The role the gateway connects as (LOGIN REPLICATION) and its database.
pub const PG_ROLE: &str = "chouquette";
/// The database the tests write to.
pub const PG_DATABASE: &str = "app";

/// A running cluster, stopped and deleted when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    wal_level: &'static str,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn binaries() -> PathBuf {
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
    versions.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL server binaries must be installed (Debian package postgresql: \
         /usr/lib/postgresql/<version>/bin/initdb)",
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl PostgresServer {
    /// Creates and starts a cluster with the [`PG_ROLE`] role and the
    /// [`PG_DATABASE`] database; panics (the test fails) when it cannot.
    pub async fn start() -> PostgresServer {
        PostgresServer::start_with_wal_level("logical").await
    }

    /// Like [`PostgresServer::start`] with another `wal_level` (`replica`:
    /// a server that cannot do logical replication).
    pub async fn start_with_wal_level(wal_level: &'static str) -> PostgresServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chq-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder for postgres");
        let server = PostgresServer {
            port,
            dir,
            bin: binaries(),
            as_postgres: running_as_root(),
            wal_level,
        };
        if server.as_postgres {
            server.run_plain("chown", &["-R", "postgres:postgres", &server.dir_str()]);
        }
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.launch().await;
        let admin = server.client_as("postgres", "postgres").await;
        for sql in [
            format!("CREATE ROLE {PG_ROLE} LOGIN REPLICATION"),
            "CREATE ROLE plain_user LOGIN".to_string(),
            format!("CREATE DATABASE {PG_DATABASE} OWNER {PG_ROLE}"),
        ] {
            admin
                .simple_query(&sql)
                .await
                .expect("test role and database");
        }
        server
    }

    fn dir_str(&self) -> String {
        self.dir.display().to_string()
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program).args(args);
            c
        } else {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = self
            .command(&self.bin.join(tool), args)
            .output()
            .unwrap_or_else(|e| panic!("{tool} could not run: {e}"));
        assert!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn run_plain(&self, program: &str, args: &[&str]) {
        let ok = Command::new(program)
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{program} {args:?} failed");
    }

    async fn launch(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c wal_level={} -c max_replication_slots=10 -c max_wal_senders=10 \
             -c fsync=off",
            self.port,
            self.dir_str(),
            self.wal_level
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio_postgres::connect(&self.url_as("postgres", "postgres"), NoTls)
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "postgres did not answer on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL the gateway uses: [`PG_ROLE`] on [`PG_DATABASE`].
    pub fn url(&self) -> String {
        self.url_as(PG_ROLE, PG_DATABASE)
    }

    /// The URL of `role` on `database`.
    pub fn url_as(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{database}", self.port)
    }

    /// A client on [`PG_DATABASE`] as [`PG_ROLE`], its connection driven in
    /// the background.
    pub async fn client(&self) -> Client {
        self.client_as(PG_ROLE, PG_DATABASE).await
    }

    /// A client as `role` on `database`.
    pub async fn client_as(&self, role: &str, database: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.url_as(role, database), NoTls)
            .await
            .expect("a postgres connection");
        tokio::spawn(connection);
        client
    }

    /// Puts `lines` at the top of `pg_hba.conf` (they win over initdb's
    /// `trust` lines) and reloads: e.g. to require `scram-sha-256` of a role.
    pub async fn hba_first(&self, lines: &str) {
        let path = self.dir.join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).expect("pg_hba.conf");
        std::fs::write(&path, format!("{lines}\n{old}")).expect("pg_hba.conf written");
        self.run("pg_ctl", &["-D", &self.data(), "reload"]);
    }

    /// Sets server settings (`ALTER SYSTEM`, as `postgres`) and reloads:
    /// e.g. a short `wal_sender_timeout`.
    pub async fn set(&self, settings: &[(&str, &str)]) {
        let admin = self.client_as("postgres", "postgres").await;
        for (name, value) in settings {
            admin
                .simple_query(&format!("ALTER SYSTEM SET {name} = '{value}'"))
                .await
                .expect("a server setting");
        }
        admin
            .simple_query("SELECT pg_reload_conf()")
            .await
            .expect("settings reloaded");
    }

    /// Stops it the way a crash does (`-m immediate`: no checkpoint).
    pub async fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Starts it again on the same port, with its data.
    pub async fn restart(&self) {
        self.launch().await;
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self
            .command(
                &self.bin.join("pg_ctl"),
                &["-D", &self.data(), "-m", "immediate", "stop"],
            )
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
