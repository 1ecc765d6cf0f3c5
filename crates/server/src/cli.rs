//! The command line: `serve`, `demo`, `dev`, `token`, `publish`, `check-config`.
//!
//! Secrets never come from flags (they would show in `ps` and shell
//! history): `token` reads `CHOUQUETTE_SECRET`, `publish` reads
//! `CHOUQUETTE_API_KEY`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// Chouquette: push events to browsers and devices in real time, each user
/// seeing only what its backend allows.
#[derive(Debug, Parser)]
#[command(name = "chouquette", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Config file; default `./chouquette.toml` if present, else embedded defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the charging-point supervision demo (gateway, backend, fleet, dashboard).
    Demo {
        /// Public listener: the dashboard and the gateway's transports.
        #[arg(long, default_value = "127.0.0.1:8080")]
        public: std::net::SocketAddr,
        /// Internal listener: publish API and metrics.
        #[arg(long, default_value = "127.0.0.1:8081")]
        internal: std::net::SocketAddr,
        /// Fleet changes per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// The charging points talk MQTT through this broker
        /// (`mqtt://host[:port]`, anonymous) instead of WebSocket.
        #[arg(long)]
        mqtt: Option<String>,
    },
    /// Run a development gateway: a page folder, backends behind proxy
    /// routes on the same origin, fresh secrets printed.
    Dev {
        /// The page's folder, served at `/`.
        dir: PathBuf,
        /// Proxy routes, `PREFIX=URL` (e.g. `/api/=http://localhost:8111`).
        routes: Vec<String>,
        /// Public listener: the page, the proxy routes and the transports.
        #[arg(long, default_value = "127.0.0.1:8080")]
        public: std::net::SocketAddr,
        /// Internal listener: publish API and metrics.
        #[arg(long, default_value = "127.0.0.1:8081")]
        internal: std::net::SocketAddr,
        /// The app's id.
        #[arg(long, default_value = "dev")]
        app: String,
    },
    /// Print a subscription token signed with `CHOUQUETTE_SECRET`.
    Token {
        /// App id.
        #[arg(long)]
        app: String,
        /// Channel the token grants.
        #[arg(long)]
        channel: String,
        /// Filter object, JSON.
        #[arg(long)]
        filters: String,
        /// User or device id.
        #[arg(long)]
        sub: Option<String>,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime, e.g. `1h`, `30m`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Publish one event through the internal API (key from `CHOUQUETTE_API_KEY`).
    Publish(PublishArgs),
    /// Validate a config file and print each problem with its line.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
}

/// `chouquette publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// App id.
    #[arg(long)]
    pub app: String,
    /// Channel.
    #[arg(long)]
    pub channel: String,
    /// Event kind.
    #[arg(long = "event-kind")]
    pub event_kind: String,
    /// A `name:value` keyword (repeatable).
    #[arg(long = "keyword")]
    pub keywords: Vec<String>,
    /// Last-known-state key.
    #[arg(long)]
    pub key: Option<String>,
    /// Payload, JSON.
    #[arg(long)]
    pub data: Option<String>,
    /// Idempotency id: sending the same event again publishes it once.
    #[arg(long)]
    pub id: Option<String>,
    /// Internal listener URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub url: String,
}

/// Loads the config `serve` should run with.
pub fn serve_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let default = PathBuf::from("chouquette.toml");
    let path = match path {
        Some(p) => Some(p),
        None if default.exists() => Some(default),
        None => None,
    };
    match path {
        Some(p) => Config::load(&p).map_err(|e| match e {
            // Already names the file; "invalid" would be wrong.
            ConfigError::Read { .. } => anyhow::Error::from(e),
            e => anyhow::Error::from(e).context(format!("invalid config {}", p.display())),
        }),
        None => Config::defaults_with_env().context("invalid configuration from the environment"),
    }
}

/// `check-config`: prints problems, one per line, `FILE:LINE: message`.
pub fn check_config(file: &Path) -> anyhow::Result<()> {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            Ok(())
        }
        Err(ConfigError::Invalid(problems)) => {
            for p in &problems {
                match p.line {
                    Some(line) => eprintln!("{}:{line}: {}", file.display(), p.message),
                    None => eprintln!("{}: {}", file.display(), p.message),
                }
            }
            bail!("{} problem(s) in {}", problems.len(), file.display())
        }
        Err(e) => Err(e.into()),
    }
}

/// `token`: the signed JWT on stdout.
pub fn token(
    app: &str,
    channel: &str,
    filters: &str,
    sub: Option<&str>,
    groups: &[String],
    ttl: Duration,
) -> anyhow::Result<String> {
    if ttl < Duration::from_secs(1) {
        bail!("--ttl must be at least 1s: a token that expires at once is refused by the gateway");
    }
    let secret = std::env::var("CHOUQUETTE_SECRET")
        .context("set CHOUQUETTE_SECRET to the app's signing secret")?;
    if secret.is_empty() {
        bail!("CHOUQUETTE_SECRET is empty");
    }
    let filters: serde_json::Value =
        serde_json::from_str(filters).context("--filters is not JSON")?;
    chouquette_core::filter::Filter::parse(&filters).context("--filters is not a valid filter")?;
    let exp = chouquette_core::clock::unix_now() + ttl.as_secs();
    let mut claims = serde_json::json!({
        "app_id": app, "channel": channel, "filters": filters, "exp": exp,
    });
    if let Some(sub) = sub {
        claims["sub"] = sub.into();
    }
    if !groups.is_empty() {
        claims["groups"] = groups.into();
    }
    Ok(chouquette_core::token::sign(&claims, secret.as_bytes()))
}
