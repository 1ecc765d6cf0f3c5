//! `[[apps.rpc]]`: where an app's client calls go, by method prefix
//! (docs/rpc.md). The longest matching prefix wins and `""` is the default
//! route; a method no prefix matches is answered `unavailable`. Backends
//! are plain `http` (put them on loopback or a private network: the
//! gateway signs each request, it does not encrypt it).

use std::sync::Arc;
use std::time::Duration;

use chouquette_core::limits::Rate;
use chouquette_core::rpc::{AppRoutes, Route};
use hyper::Uri;
use serde::Deserialize;

use super::problem::Problems;
use super::value::{duration, http_backend};

/// One `[[apps.rpc]]` route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcRoute {
    /// Methods starting with this go to `url` (`""`: every method).
    pub prefix: String,
    /// The backend, `http://host:port/path`, POSTed to.
    pub url: String,
    /// How long the backend may take to answer in full; past it the client
    /// gets `backend_timeout`.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Whether the route's methods may run twice without harm: a call whose
    /// backend dropped the connection or answered 502, 503 or 504 (a
    /// backend restarting) is then sent again within `timeout`.
    #[serde(default)]
    pub idempotent: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Longest prefix accepted: methods are short dotted names.
const MAX_PREFIX: usize = 256;

impl RpcRoute {
    /// The backend URL, when the client can use it: `http`, with a host.
    pub fn backend(&self) -> Result<Uri, String> {
        http_backend(&self.url, "http://host:port/path")
    }
}

/// One app's routes' problems: URLs usable, prefixes distinct and short,
/// timeouts above zero. Each at the line of the route's URL.
pub(super) fn problems(app: &str, routes: &[RpcRoute], out: &mut Problems<'_>) {
    for (i, route) in routes.iter().enumerate() {
        let at = format!("\"{}\"", route.url);
        let prefix = &route.prefix;
        if let Err(message) = route.backend() {
            out.at(&at, format!("app `{app}`: rpc.url {message}"));
        }
        if routes[..i].iter().any(|r| r.prefix == *prefix) {
            let message = format!("app `{app}`: rpc.prefix `{prefix}` is defined twice");
            out.at(&at, message);
        }
        if prefix.len() > MAX_PREFIX {
            let message = format!("app `{app}`: rpc.prefix is longer than {MAX_PREFIX} bytes");
            out.at(&at, message);
        }
        if route.timeout.is_zero() {
            out.at(
                &at,
                format!("app `{app}`: rpc.timeout must be more than 0s"),
            );
        }
    }
}

/// The core's routes of one app, with its calls per second.
pub(super) fn app_routes(app: &str, routes: &[RpcRoute], calls: Rate) -> (Arc<str>, AppRoutes) {
    let routes = routes
        .iter()
        .map(|r| Route::new(&r.prefix, &r.url, r.timeout).with_idempotent(r.idempotent))
        .collect();
    (app.into(), AppRoutes::new(routes, calls))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const APP: &str = "[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n";

    fn problems(routes: &str) -> Vec<(Option<usize>, String)> {
        match Config::from_toml(&format!("{APP}{routes}"), std::iter::empty()) {
            Err(ConfigError::Invalid(p)) => p.into_iter().map(|p| (p.line, p.message)).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn routes_load_with_a_default_timeout() {
        let text = format!(
            "{APP}[[apps.rpc]]\nprefix = \"chat.\"\nurl = \"http://127.0.0.1:9000/rpc\"\n\
             timeout = \"2s\"\n[[apps.rpc]]\nprefix = \"\"\nurl = \"http://127.0.0.1:9000/\"\n"
        );
        let config = Config::from_toml(&text, std::iter::empty()).expect("valid");
        let rpc = &config.apps[0].rpc;
        assert_eq!(rpc[0].timeout, std::time::Duration::from_secs(2));
        assert_eq!(rpc[1].timeout, super::default_timeout());
    }

    #[test]
    fn bad_urls_twice_defined_prefixes_and_zero_timeouts_name_their_line() {
        let p = problems(
            "[[apps.rpc]]\nprefix = \"chat.\"\nurl = \"https://b/rpc\"\n\
             [[apps.rpc]]\nprefix = \"chat.\"\nurl = \"http://b/other\"\ntimeout = \"0s\"\n\
             [[apps.rpc]]\nprefix = \"x.\"\nurl = \"not a url\"\n",
        );
        let lines: Vec<_> = p.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [Some(6), Some(9), Some(9), Some(13)], "{p:?}");
        assert!(
            p[0].1.contains("rpc.url") && p[0].1.contains("TLS"),
            "{p:?}"
        );
        assert!(p[1].1.contains("defined twice"), "{p:?}");
        assert!(p[2].1.contains("rpc.timeout"), "{p:?}");
        assert!(p[3].1.contains("not a URL"), "{p:?}");
        let p = problems("[[apps.rpc]]\nprefix = \"\"\nurl = \"http://b/\"\nwhat = 1\n");
        assert!(p[0].1.contains("what"), "{p:?}");
    }

    #[test]
    fn a_limited_call_rate_needs_a_burst() {
        let p = problems("[apps.limits]\ncalls_per_second = 5\ncalls_burst = 0\n");
        assert!(p[0].1.contains("calls_burst"), "{p:?}");
    }
}
