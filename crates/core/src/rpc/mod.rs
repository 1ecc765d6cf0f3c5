//! RPC from clients to HTTP backends: the routes of each app, the call
//! rate of each app, and the seam to the HTTP side.
//!
//! The core has no HTTP client: a [`Backends`] implementation (the server's
//! `rpc` module) is given to the node with [`crate::node::Node::with_rpc`].
//! A session routes a `call` here (longest matching prefix; `""` is the
//! default route), and the answer comes back to the connection through its
//! outbox, so the connection keeps reading and delivering while the backend
//! thinks (see [`crate::session`]'s `calls` module).

pub mod signature;
mod telemetry;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chouquette_protocol::ErrorCode;
use serde_json::value::RawValue;

use crate::app::App;
use crate::connections::Identity;
use crate::limits::{Rate, TokenBucket};
pub use telemetry::{Outcome, Refusal, RouteCounters, RpcTelemetry};

/// One `[[apps.rpc]]` route.
#[derive(Debug)]
pub struct Route {
    /// Methods starting with this are sent here (`""`: every method).
    pub prefix: Box<str>,
    /// The backend's URL, POSTed to.
    pub url: Box<str>,
    /// How long the backend may take to answer in full.
    pub timeout: Duration,
    /// Whether a call may be sent again after it may have reached the
    /// backend (a dropped connection, 502, 503, 504): only where the
    /// backend's methods can run twice without harm. A call that never
    /// reached the backend (connection refused) is retried on every route.
    pub idempotent: bool,
    /// Calls by outcome and their latency.
    pub counters: RouteCounters,
}

impl Route {
    /// A route with fresh counters.
    pub fn new(prefix: &str, url: &str, timeout: Duration) -> Route {
        Route {
            prefix: prefix.into(),
            url: url.into(),
            timeout,
            idempotent: false,
            counters: RouteCounters::default(),
        }
    }

    /// The route, marked as safe to retry after a call may have reached
    /// its backend (see [`Route::idempotent`]).
    pub fn with_idempotent(mut self, idempotent: bool) -> Route {
        self.idempotent = idempotent;
        self
    }
}

/// One app's routes and call rate.
#[derive(Debug)]
pub struct AppRoutes {
    /// Longest prefix first, so the first match is the longest.
    routes: Vec<Arc<Route>>,
    rate: Rate,
    bucket: Mutex<TokenBucket>,
}

impl AppRoutes {
    /// `routes` of one app, limited to `rate` calls (all its connections).
    pub fn new(mut routes: Vec<Route>, rate: Rate) -> AppRoutes {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        AppRoutes {
            routes: routes.into_iter().map(Arc::new).collect(),
            rate,
            bucket: Mutex::new(TokenBucket::full(rate, Instant::now())),
        }
    }

    /// The route of `method`: the longest prefix it starts with.
    pub fn route(&self, method: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| method.starts_with(&*r.prefix))
    }

    /// Takes one call from the app's rate; false when over it.
    fn admit(&self, now: Instant) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.try_take(self.rate, now, 1).is_ok()
    }
}

/// What the gateway sends a backend for one call.
#[derive(Debug)]
pub struct BackendCall {
    /// The route chosen.
    pub route: Arc<Route>,
    /// The caller's app: its first secret signs the request.
    pub app: Arc<App>,
    /// Who calls (from `connect`).
    pub identity: Arc<Identity>,
    /// The method, as the client wrote it.
    pub method: String,
    /// Positional arguments.
    pub args: Vec<serde_json::Value>,
    /// Named arguments.
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

/// How a backend answered a call.
#[derive(Debug)]
pub enum Answer {
    /// A 2xx with a JSON body: the client's `result`.
    Result(Box<RawValue>),
    /// A 4xx: the backend refused the call, with its own code and message
    /// when its body had usable ones (already sanitized and bounded).
    Refused {
        /// The backend's code.
        code: Option<String>,
        /// The backend's message.
        message: Option<String>,
    },
    /// No usable answer.
    Failed(Failure),
}

/// Why a call got no usable answer; each has its own client code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 5xx, or a status that is no answer.
    BackendError,
    /// The connection was refused or dropped.
    Unreachable,
    /// No full answer within the route's timeout.
    Timeout,
    /// A body that is not JSON.
    NotJson,
    /// A body over the bound the gateway forwards.
    TooLarge,
}

impl Failure {
    /// The client's error code.
    pub fn code(self) -> ErrorCode {
        match self {
            Failure::BackendError => ErrorCode::BackendError,
            Failure::Unreachable => ErrorCode::BackendUnavailable,
            Failure::Timeout => ErrorCode::BackendTimeout,
            Failure::NotJson => ErrorCode::BadBackendAnswer,
            Failure::TooLarge => ErrorCode::BackendAnswerTooLarge,
        }
    }

    /// The client's message: fixed, so no backend detail leaks.
    pub fn message(self) -> &'static str {
        match self {
            Failure::BackendError => "the backend failed",
            Failure::Unreachable => "the backend is unreachable",
            Failure::Timeout => "the backend did not answer in time",
            Failure::NotJson => "the backend's answer is not JSON",
            Failure::TooLarge => "the backend's answer is too large",
        }
    }
}

/// A future answer of a backend.
pub type AnswerFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// The HTTP side of RPC, implemented by the server. An implementation
/// enforces the route's timeout and its own answer bound itself, and never
/// panics on what a backend sends.
pub trait Backends: Send + Sync + std::fmt::Debug {
    /// Sends `call` to its route's backend.
    fn call(&self, call: BackendCall) -> AnswerFuture;
}

/// Why a call was not sent to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// No route of the app matches the method.
    NoRoute,
    /// Over the app's calls per second.
    RateLimited,
}

/// Every app's routes, the backends they lead to, and the counters.
#[derive(Debug, Default)]
pub struct Rpc {
    apps: HashMap<Arc<str>, AppRoutes>,
    backends: Option<Arc<dyn Backends>>,
    telemetry: RpcTelemetry,
}

impl Rpc {
    /// RPC for these apps' routes through `backends`.
    pub fn new(
        apps: impl IntoIterator<Item = (Arc<str>, AppRoutes)>,
        backends: Arc<dyn Backends>,
    ) -> Rpc {
        Rpc {
            apps: apps.into_iter().collect(),
            backends: Some(backends),
            telemetry: RpcTelemetry::default(),
        }
    }

    /// The route for `method` of `app`, once the app's rate allows a call.
    pub fn route(&self, app: &str, method: &str) -> Result<(Arc<Route>, &dyn Backends), Unrouted> {
        let routes = self.apps.get(app).ok_or(Unrouted::NoRoute)?;
        let backends = self.backends.as_deref().ok_or(Unrouted::NoRoute)?;
        let route = routes.route(method).ok_or(Unrouted::NoRoute)?;
        if !routes.admit(Instant::now()) {
            return Err(Unrouted::RateLimited);
        }
        Ok((route.clone(), backends))
    }

    /// Calls refused before any backend, by reason.
    pub fn telemetry(&self) -> &RpcTelemetry {
        &self.telemetry
    }

    /// Appends the RPC families to a `/metrics` text.
    pub fn render(&self, out: &mut String) {
        let mut routes: Vec<(&str, &Route)> = self
            .apps
            .iter()
            .flat_map(|(app, r)| r.routes.iter().map(move |route| (&**app, &**route)))
            .collect();
        routes.sort_by(|a, b| (a.0, &*a.1.prefix).cmp(&(b.0, &*b.1.prefix)));
        self.telemetry.render(&routes, out);
    }
}

/// Longest backend code passed to a client.
pub const MAX_BACKEND_CODE: usize = 64;
/// Longest backend message passed to a client, in characters.
pub const MAX_BACKEND_MESSAGE: usize = 256;

/// A backend's own error code, if it is one a client may see: 1 to
/// [`MAX_BACKEND_CODE`] bytes of lower-case ASCII letters, digits, `_`,
/// `.` and `-` (anything else could smuggle markup or another meaning).
pub fn backend_code(code: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c);
    (!code.is_empty() && code.len() <= MAX_BACKEND_CODE && code.chars().all(ok))
        .then(|| code.to_owned())
}

/// A backend's error message for a client: control characters dropped,
/// cut to [`MAX_BACKEND_MESSAGE`] characters; none if nothing is left.
pub fn backend_message(message: &str) -> Option<String> {
    let kept: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_BACKEND_MESSAGE)
        .collect();
    (!kept.trim().is_empty()).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_codes_are_plain_and_bounded() {
        assert_eq!(
            backend_code("no_such_room").as_deref(),
            Some("no_such_room")
        );
        for bad in ["", "Bad", "<b>", "a b", &"x".repeat(MAX_BACKEND_CODE + 1)] {
            assert_eq!(backend_code(bad), None, "{bad}");
        }
        let long = "é\n".repeat(500);
        let m = backend_message(&long).expect("kept");
        assert_eq!(m.chars().count(), MAX_BACKEND_MESSAGE);
        assert_eq!(backend_message("\u{7}\n "), None);
    }

    fn routes(prefixes: &[&str], rate: Rate) -> AppRoutes {
        let routes = prefixes
            .iter()
            .map(|p| Route::new(p, &format!("http://b/{p}"), Duration::from_secs(1)))
            .collect();
        AppRoutes::new(routes, rate)
    }

    #[test]
    fn the_longest_prefix_wins_and_the_empty_one_takes_the_rest() {
        let r = routes(&["chat.", "", "chat.admin."], Rate::UNLIMITED);
        let prefix = |m: &str| r.route(m).map(|r| r.prefix.to_string());
        assert_eq!(prefix("chat.admin.kick").as_deref(), Some("chat.admin."));
        assert_eq!(prefix("chat.send").as_deref(), Some("chat."));
        assert_eq!(prefix("billing.pay").as_deref(), Some(""));
        let r = routes(&["chat."], Rate::UNLIMITED);
        assert!(r.route("billing.pay").is_none());
    }

    #[test]
    fn the_app_rate_refuses_past_its_burst() {
        let r = routes(&[""], Rate::new(1, 2));
        let now = Instant::now();
        assert!(r.admit(now) && r.admit(now));
        assert!(!r.admit(now));
    }
}
