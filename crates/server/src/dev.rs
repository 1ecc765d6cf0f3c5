//! `chouquette dev ./public /api/=http://localhost:8111`: a development
//! gateway in one line. Embedded defaults (memory broker), one app with
//! fresh secrets printed at start so the developer's backend can sign
//! tokens and publish, the page folder served without asset caching (an
//! edit shows at the next reload), and the backend behind `[[proxy]]`
//! routes on the same origin, so the page needs no CORS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::config::{AppConfig, Config, ProxyRoute};

/// What `chouquette dev` was asked for.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The page's folder.
    pub dir: PathBuf,
    /// `PREFIX=URL` routes to backends.
    pub routes: Vec<String>,
    /// Public listener.
    pub public: SocketAddr,
    /// Internal listener.
    pub internal: SocketAddr,
    /// The app's id.
    pub app: String,
}

/// The development app's credentials, printed for the developer.
#[derive(Debug, Clone)]
pub struct DevSecrets {
    /// Signs subscription and connect tokens (`CHOUQUETTE_SECRET`).
    pub secret: String,
    /// Publishes through the internal API (`CHOUQUETTE_API_KEY`).
    pub api_key: String,
}

/// The config `dev` runs with, checked like any other.
pub fn dev_config(options: &DevOptions) -> anyhow::Result<(Config, DevSecrets)> {
    let mut config = Config::default();
    config.listen.public = options.public;
    config.listen.internal = options.internal;
    config.static_files.dir = Some(options.dir.clone());
    config.static_files.cache_assets = false;
    for route in &options.routes {
        let Some((prefix, url)) = route.split_once('=') else {
            bail!("route `{route}` must be PREFIX=URL, e.g. /api/=http://localhost:8111");
        };
        config.proxy.push(ProxyRoute {
            prefix: prefix.into(),
            url: url.into(),
            timeout: Duration::from_secs(30),
        });
    }
    let secrets = DevSecrets {
        secret: uuid::Uuid::new_v4().simple().to_string(),
        api_key: uuid::Uuid::new_v4().simple().to_string(),
    };
    config.apps.push(AppConfig {
        id: options.app.clone(),
        secrets: vec![secrets.secret.clone()],
        api_key: Some(secrets.api_key.clone()),
        allow_tokens_without_exp: false,
        channel_defaults: Default::default(),
        limits: Default::default(),
        rpc: Vec::new(),
        connect_auth: None,
        notifications: Default::default(),
        devices: None,
        messages: Default::default(),
        channels: Default::default(),
    });
    let problems = config.problems("");
    if !problems.is_empty() {
        let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("{}", all.join("; "));
    }
    Ok((config, secrets))
}
