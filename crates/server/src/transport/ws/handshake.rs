//! The opening handshake (RFC 6455 section 4.2): which requests may become
//! a WebSocket, and the `101 Switching Protocols` answer.

use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use crate::http_error::error_response;

/// Appended to the client's key before hashing (RFC 6455 section 1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version the gateway speaks.
const VERSION: &str = "13";

/// A request that cannot become a WebSocket, and the answer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// Not a GET (405).
    #[error("a WebSocket opens with GET")]
    Method,
    /// Older than HTTP/1.1 (400).
    #[error("a WebSocket needs HTTP/1.1")]
    HttpVersion,
    /// No `Upgrade: websocket` (400).
    #[error("missing `Upgrade: websocket`")]
    Upgrade,
    /// No `upgrade` token in `Connection` (400).
    #[error("missing `Connection: upgrade`")]
    Connection,
    /// Missing or other than 13 (426, naming 13).
    #[error("unsupported WebSocket version: this server speaks 13")]
    Version,
    /// Missing, or not base64 of 16 bytes (400).
    #[error("missing or malformed `Sec-WebSocket-Key`")]
    Key,
    /// The connection cannot be taken over (426).
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl Refused {
    /// The HTTP answer: a JSON `bad_message` error with the status that
    /// goes with it, and for a version mismatch the version spoken.
    pub(crate) fn response(self) -> Response {
        let status = match self {
            Refused::Method => StatusCode::METHOD_NOT_ALLOWED,
            Refused::Version | Refused::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            Refused::HttpVersion | Refused::Upgrade | Refused::Connection | Refused::Key => {
                StatusCode::BAD_REQUEST
            }
        };
        let mut response = error_response(status, "bad_message", &self.to_string());
        if self == Refused::Version {
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
        }
        response
    }
}

/// What a valid upgrade request asked for.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    accept: HeaderValue,
    /// Whether the client offered `chouquette.v1`.
    subprotocol: bool,
}

/// Checks an upgrade request as RFC 6455 section 4.2.1 requires.
pub(crate) fn check(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<Accepted, Refused> {
    if method != Method::GET {
        return Err(Refused::Method);
    }
    if version < Version::HTTP_11 {
        return Err(Refused::HttpVersion);
    }
    if !has_token(headers, &UPGRADE, "websocket") {
        return Err(Refused::Upgrade);
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return Err(Refused::Connection);
    }
    let versions: Vec<_> = headers.get_all(SEC_WEBSOCKET_VERSION).iter().collect();
    if versions.len() != 1
        || versions
            .first()
            .is_none_or(|v| v.as_bytes() != VERSION.as_bytes())
    {
        return Err(Refused::Version);
    }
    let key = headers.get(SEC_WEBSOCKET_KEY).ok_or(Refused::Key)?;
    let key = key.as_bytes().trim_ascii();
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(Refused::Key);
    }
    Ok(Accepted {
        accept: accept_value(key),
        subprotocol: offers(headers, chouquette_protocol::PROTOCOL_NAME),
    })
}

/// The `Sec-WebSocket-Accept` value for a client's key.
fn accept_value(key: &[u8]) -> HeaderValue {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    let encoded = STANDARD.encode(sha.finalize());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a comma-separated header holds `token`, ignoring ASCII case.
fn has_token(headers: &HeaderMap, name: &axum::http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Whether the client offers the subprotocol `name` (names are
/// case-sensitive).
fn offers(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii() == name.as_bytes())
    })
}

impl Accepted {
    /// The `101 Switching Protocols` answer.
    pub(crate) fn response(self) -> Response {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(SEC_WEBSOCKET_ACCEPT, self.accept);
        if self.subprotocol {
            headers.insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(chouquette_protocol::PROTOCOL_NAME),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    const VALID: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        VALID.iter().copied().filter(|(n, _)| *n != name).collect()
    }

    #[test]
    fn the_rfc_example_key_gets_the_rfc_accept_value() {
        let accepted = check(&Method::GET, Version::HTTP_11, &request(&VALID)).expect("valid");
        assert_eq!(accepted.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!accepted.subprotocol);
        let response = accepted.response();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(response.headers().get(SEC_WEBSOCKET_PROTOCOL).is_none());
    }

    #[test]
    fn the_subprotocol_is_selected_only_when_offered() {
        let mut lines = VALID.to_vec();
        lines.push(("sec-websocket-protocol", "other, chouquette.v1"));
        let accepted = check(&Method::GET, Version::HTTP_11, &request(&lines)).expect("valid");
        let response = accepted.response();
        assert_eq!(
            response.headers().get(SEC_WEBSOCKET_PROTOCOL),
            Some(&HeaderValue::from_static("chouquette.v1"))
        );
        let mut other = VALID.to_vec();
        other.push(("sec-websocket-protocol", "Chouquette.V1"));
        let accepted = check(&Method::GET, Version::HTTP_11, &request(&other)).expect("valid");
        assert!(!accepted.subprotocol);
    }

    #[test]
    fn bad_requests_are_refused_with_the_right_status() {
        let refused = |method: Method, version: Version, lines: &[(&'static str, &'static str)]| {
            check(&method, version, &request(lines)).expect_err("refused")
        };
        assert_eq!(
            refused(Method::POST, Version::HTTP_11, &VALID),
            Refused::Method
        );
        assert_eq!(
            refused(Method::HEAD, Version::HTTP_11, &VALID),
            Refused::Method
        );
        assert_eq!(
            refused(Method::GET, Version::HTTP_10, &VALID),
            Refused::HttpVersion
        );
        let v = Version::HTTP_11;
        assert_eq!(
            refused(Method::GET, v, &without("upgrade")),
            Refused::Upgrade
        );
        let mut h2c = without("upgrade");
        h2c.push(("upgrade", "h2c"));
        assert_eq!(refused(Method::GET, v, &h2c), Refused::Upgrade);
        let mut keep = without("connection");
        keep.push(("connection", "keep-alive"));
        assert_eq!(refused(Method::GET, v, &keep), Refused::Connection);
        assert_eq!(
            refused(Method::GET, v, &without("sec-websocket-version")),
            Refused::Version
        );
        let mut eight = without("sec-websocket-version");
        eight.push(("sec-websocket-version", "8"));
        assert_eq!(refused(Method::GET, v, &eight), Refused::Version);
        assert_eq!(
            refused(Method::GET, v, &without("sec-websocket-key")),
            Refused::Key
        );
        let mut short = without("sec-websocket-key");
        short.push(("sec-websocket-key", "c2hvcnQ="));
        assert_eq!(refused(Method::GET, v, &short), Refused::Key);

        let version = Refused::Version.response();
        assert_eq!(version.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            version.headers().get(SEC_WEBSOCKET_VERSION),
            Some(&HeaderValue::from_static("13"))
        );
        assert_eq!(Refused::Key.response().status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            Refused::Method.response().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
