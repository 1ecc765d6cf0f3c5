//! `[apps.connect_auth]`: the backend that accepts or refuses an app's
//! connections at their upgrade (PROTOCOL.md section 10, docs/connect-auth.md).
//! The URL is plain `http`, checked like `[[apps.rpc]]` URLs (the gateway
//! signs each request, it does not encrypt it); the timeout is bounded, as
//! every upgrade of the app waits on it.

use std::time::Duration;

use serde::Deserialize;

use super::problem::Problems;
use super::value::{duration, http_backend};

/// Longest `timeout` accepted: a client's upgrade waits this long at most
/// before it is refused with 503.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// One app's `[apps.connect_auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectAuthConfig {
    /// The backend, `http://host:port/path`, POSTed to at each upgrade.
    pub url: String,
    /// How long the backend may take to answer in full; past it the
    /// upgrade is refused with 503.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

/// The problems of app `app`'s connect auth, at the line of its URL.
pub(super) fn problems(app: &str, auth: &ConnectAuthConfig, out: &mut Problems<'_>) {
    let at = format!("\"{}\"", auth.url);
    if let Err(message) = http_backend(&auth.url, "http://host:port/path") {
        out.at(&at, format!("app `{app}`: connect_auth.url {message}"));
    }
    if auth.timeout.is_zero() || auth.timeout > MAX_TIMEOUT {
        let max = MAX_TIMEOUT.as_secs();
        let message =
            format!("app `{app}`: connect_auth.timeout must be more than 0s and at most {max}s");
        out.at(&at, message);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const APP: &str = "[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n";

    fn problems(section: &str) -> Vec<(Option<usize>, String)> {
        match Config::from_toml(&format!("{APP}{section}"), std::iter::empty()) {
            Err(ConfigError::Invalid(p)) => p.into_iter().map(|p| (p.line, p.message)).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn connect_auth_loads_with_a_default_timeout() {
        let text = format!("{APP}[apps.connect_auth]\nurl = \"http://127.0.0.1:9000/auth\"\n");
        let config = Config::from_toml(&text, std::iter::empty()).expect("valid");
        let auth = config.apps[0].connect_auth.as_ref().expect("connect auth");
        assert_eq!(auth.timeout, super::default_timeout());
        assert_eq!(auth.url, "http://127.0.0.1:9000/auth");
    }

    #[test]
    fn bad_urls_and_timeouts_name_their_line() {
        let p = problems("[apps.connect_auth]\nurl = \"https://b/auth\"\ntimeout = \"0s\"\n");
        let lines: Vec<_> = p.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [Some(5), Some(5)], "{p:?}");
        assert!(
            p[0].1.contains("connect_auth.url") && p[0].1.contains("TLS"),
            "{p:?}"
        );
        assert!(p[1].1.contains("connect_auth.timeout"), "{p:?}");
        let p = problems("[apps.connect_auth]\nurl = \"http://b/\"\ntimeout = \"1h\"\n");
        assert!(p[0].1.contains("at most 30s"), "{p:?}");
        let p = problems("[apps.connect_auth]\nurl = \"not a url\"\n");
        assert!(p[0].1.contains("not a URL"), "{p:?}");
        let p = problems("[apps.connect_auth]\nurl = \"http://b/\"\nwhat = 1\n");
        assert_eq!(p[0].0, Some(6), "{p:?}");
        assert!(p[0].1.contains("what"), "{p:?}");
        let p = problems("[apps.connect_auth]\ntimeout = \"1s\"\n");
        assert!(p[0].1.contains("url"), "{p:?}");
    }
}
