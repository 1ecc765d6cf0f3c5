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
use super::value::duration;

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
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Longest prefix accepted: methods are short dotted names.
const MAX_PREFIX: usize = 256;

impl RpcRoute {
    /// The backend URL, when the client can use it: `http`, with a host.
    pub fn backend(&self) -> Result<Uri, String> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e| format!("`{}` is not a URL: {e}", self.url))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "`{}` must be http://host:port/path (TLS to backends is not supported: \
                 put them on loopback or a private network)",
                self.url
            ));
        }
        Ok(uri)
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
        .map(|r| Route::new(&r.prefix, &r.url, r.timeout))
        .collect();
    (app.into(), AppRoutes::new(routes, calls))
}
