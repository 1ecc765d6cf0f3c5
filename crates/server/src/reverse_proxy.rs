//! The reverse proxy of `[[proxy]]` routes: a request whose path starts with
//! a route's prefix goes to that route's backend, its body streamed both
//! ways (never buffered whole, so uploads, downloads and a backend's own
//! SSE feed pass through in constant memory).
//!
//! What the backend sees, as behind nginx: the method, path (the prefix
//! replaced by the backend URL's path when it has one) and query; the
//! client's headers minus the hop-by-hop ones (RFC 9110 section 7.6.1) and
//! minus any `X-Forwarded-*` it sent; then `X-Forwarded-For` (the client's
//! address as the gateway resolved it), `X-Forwarded-Proto` and
//! `X-Forwarded-Host` set by the gateway, so the backend never trusts a
//! value a client made up. Upgrades (a backend's own WebSockets) are not
//! passed: the gateway's transports are the way to push.
//!
//! Failures are told apart: 502 when the backend cannot be reached or
//! breaks the exchange, 504 when it does not start answering within the
//! route's timeout, 400 for a path with dot segments (which a backend might
//! resolve outside the prefix).

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::ProxyRoute;

/// One route, ready to use.
#[derive(Debug, Clone)]
struct Route {
    prefix: String,
    /// `http://host:port`.
    origin: String,
    /// The path replacing the prefix (`None`: the path is kept whole).
    path: Option<String>,
    timeout: Duration,
}

/// Every `[[proxy]]` route and the client they share (connections to each
/// backend are kept alive and reused).
#[derive(Debug, Clone)]
pub struct ReverseProxy {
    /// Longest prefix first, so the first match is the longest.
    routes: Vec<Route>,
    client: Client<HttpConnector, Body>,
    /// `https` when the public listener has TLS.
    proto: &'static str,
}

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1),
/// never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl ReverseProxy {
    /// The proxy for checked `routes` (`None` when there are none); routes
    /// whose URL does not parse were refused by the config check.
    pub fn new(routes: &[ProxyRoute], https: bool) -> Option<ReverseProxy> {
        let mut routes: Vec<Route> = routes.iter().filter_map(Route::new).collect();
        if routes.is_empty() {
            return None;
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Some(ReverseProxy {
            routes,
            client: Client::builder(TokioExecutor::new()).build_http(),
            proto: if https { "https" } else { "http" },
        })
    }

    /// Whether a route takes `path`.
    pub fn takes(&self, path: &str) -> bool {
        self.route(path).is_some()
    }

    fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }

    /// Forwards `request` from `client` to its route's backend, answering
    /// the backend's response or why there is none.
    pub async fn forward(&self, client: Option<IpAddr>, request: Request<Body>) -> Response {
        let Some(route) = self.route(request.uri().path()) else {
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        };
        if has_dot_segment(request.uri().path()) {
            return (StatusCode::BAD_REQUEST, "path with `.` or `..` segments\n").into_response();
        }
        if request.headers().contains_key(header::UPGRADE) {
            let why = "the proxy does not pass protocol upgrades\n";
            return (StatusCode::NOT_IMPLEMENTED, why).into_response();
        }
        let request = match self.outgoing(route, client, request) {
            Ok(r) => r,
            Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
        };
        match tokio::time::timeout(route.timeout, self.client.request(request)).await {
            Err(_) => {
                tracing::warn!(prefix = %route.prefix, backend = %route.origin, "proxy: backend too slow");
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "the backend did not answer in time\n",
                )
                    .into_response()
            }
            Ok(Err(e)) => {
                tracing::warn!(prefix = %route.prefix, backend = %route.origin, error = %e, "proxy: backend unreachable");
                (StatusCode::BAD_GATEWAY, "the backend cannot be reached\n").into_response()
            }
            Ok(Ok(answer)) => {
                let (mut parts, body) = answer.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
        }
    }

    /// The request as the backend gets it.
    fn outgoing(
        &self,
        route: &Route,
        client: Option<IpAddr>,
        request: Request<Body>,
    ) -> Result<Request<Body>, &'static str> {
        let (mut parts, body) = request.into_parts();
        let uri = route
            .target(&parts.uri)
            .ok_or("the path cannot be forwarded\n")?;
        let host = parts.headers.get(header::HOST).cloned();
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            header::HOST,
        ] {
            headers.remove(name);
        }
        if let Some(ip) = client
            && let Ok(value) = HeaderValue::from_str(&ip.to_string())
        {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
        parts.uri = uri;
        Ok(Request::from_parts(parts, body))
    }
}

impl Route {
    fn new(config: &ProxyRoute) -> Option<Route> {
        let backend = config.backend().ok()?;
        let origin = format!("http://{}", backend.authority()?);
        let path = (backend.path() != "/").then(|| backend.path().to_string());
        Some(Route {
            prefix: config.prefix.clone(),
            origin,
            path,
            timeout: config.timeout,
        })
    }

    /// The backend URI for a request to `uri`.
    fn target(&self, uri: &Uri) -> Option<Uri> {
        let path = uri.path();
        let path = match &self.path {
            Some(base) => format!("{base}{}", path.get(self.prefix.len()..)?),
            None => path.to_string(),
        };
        let target = match uri.query() {
            Some(q) => format!("{}{path}?{q}", self.origin),
            None => format!("{}{path}", self.origin),
        };
        target.parse().ok()
    }
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.into_iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Whether a path has a `.` or `..` segment, plain or percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase().replace("%2e", ".");
        lower == "." || lower == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, url: &str) -> Route {
        Route::new(&ProxyRoute {
            prefix: prefix.into(),
            url: url.into(),
            timeout: Duration::from_secs(1),
        })
        .expect("valid")
    }

    #[test]
    fn the_path_is_kept_or_its_prefix_replaced() {
        let keep = route("/api/", "http://127.0.0.1:8111");
        let uri: Uri = "/api/x/y?a=1".parse().expect("uri");
        assert_eq!(
            keep.target(&uri).expect("target").to_string(),
            "http://127.0.0.1:8111/api/x/y?a=1"
        );
        let replace = route("/api/", "http://127.0.0.1:8111/v2/");
        assert_eq!(
            replace.target(&uri).expect("target").to_string(),
            "http://127.0.0.1:8111/v2/x/y?a=1"
        );
    }

    #[test]
    fn dot_segments_are_found_however_written() {
        for bad in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2E/x",
            "/api/.%2e",
            "/api/%2E",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for good in ["/api/x.y/", "/api/..x", "/api/"] {
            assert!(!has_dot_segment(good), "{good}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }
}
