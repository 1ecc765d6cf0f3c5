//! `[[proxy]]`: reverse-proxy routes on the public listener, so that one
//! origin serves the page (`[static]`), the gateway's transports and the
//! app's own backend (`/api/` → Django), as an edge server would. The
//! transports' routes (`/ws`, `/sse`, `/poll`) always stay the gateway's.

use std::time::Duration;

use hyper::Uri;
use serde::Deserialize;

use super::problem::Problems;
use super::value::{duration, http_backend};

/// One `[[proxy]]` route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    /// Path prefix, from `/` to `/` (e.g. `/api/`); the longest matching
    /// prefix wins, and `/` takes every path no other route or file has.
    pub prefix: String,
    /// The backend, `http://host:port`, optionally with a path ending in
    /// `/` that replaces the prefix (`/api/` → `http://b:8111/v2/`).
    pub url: String,
    /// How long the backend may take to start its answer (the body may
    /// then stream for as long as it likes: an SSE feed, a download).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Routes the gateway keeps for itself whatever the proxy config says.
const TRANSPORT_PATHS: [&str; 3] = ["/ws", "/sse", "/poll"];

impl ProxyRoute {
    /// The backend URL, when it is one the proxy can use: plain `http`,
    /// with a host, and a path that is empty or ends in `/`.
    pub fn backend(&self) -> Result<Uri, String> {
        let uri = http_backend(&self.url, "http://host:port[/path/]")?;
        if uri.query().is_some() || !(uri.path() == "/" || uri.path().ends_with('/')) {
            return Err(format!(
                "`{}`: a path must end with `/` and carry no query",
                self.url
            ));
        }
        Ok(uri)
    }
}

/// Every route's problems: prefixes well formed and distinct, URLs usable.
pub(super) fn problems(routes: &[ProxyRoute], out: &mut Problems<'_>) {
    for (i, route) in routes.iter().enumerate() {
        let at = format!("\"{}\"", route.prefix);
        if !route.prefix.starts_with('/') || !route.prefix.ends_with('/') {
            out.at(
                &at,
                format!(
                    "proxy.prefix `{}` must start and end with `/`, e.g. \"/api/\"",
                    route.prefix
                ),
            );
        }
        if TRANSPORT_PATHS
            .iter()
            .any(|t| route.prefix.starts_with(&format!("{t}/")))
        {
            out.at(
                &at,
                format!(
                    "proxy.prefix `{}` is under a gateway transport",
                    route.prefix
                ),
            );
        }
        if routes[..i].iter().any(|r| r.prefix == route.prefix) {
            out.at(
                &at,
                format!("proxy.prefix `{}` is defined twice", route.prefix),
            );
        }
        if let Err(message) = route.backend() {
            out.at(&route.url, format!("proxy.url {message}"));
        }
        if route.timeout.is_zero() {
            out.at(&at, "proxy.timeout must be more than 0s".into());
        }
    }
}
