//! Page origins allowed to use the public listener from a browser
//! (`[listen] allowed_origins`), and the matching of a request's `Origin`.
//!
//! Invariants: every listed origin is `scheme://host[:port]` with scheme
//! `http` or `https`, no path, query, fragment or user info, stored in
//! lower case without a trailing slash and without the scheme's default
//! port, so that matching is a plain comparison of the normalised `Origin`
//! header; `"*"` allows every origin. Browsers send `Origin` in that form
//! already; normalising both sides makes `HTTPS://Example.com:443` the same
//! origin as `https://example.com`, as the browser considers it.

use thiserror::Error;

/// Why an `allowed_origins` entry is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OriginError {
    /// Not `http://` or `https://`.
    #[error("`{0}` is not an origin: it must start with http:// or https:// (or be \"*\")")]
    Scheme(String),
    /// Nothing after the scheme, or a host with characters no host has.
    #[error("`{0}` is not an origin: the host is missing or not a host name or address")]
    Host(String),
    /// A port that is not a number from 1 to 65535.
    #[error("`{0}` is not an origin: the port must be a number from 1 to 65535")]
    Port(String),
    /// A path, query, fragment or user info: an origin has none.
    #[error(
        "`{0}` is not an origin: an origin has no path, query or user (just scheme://host[:port])"
    )]
    Path(String),
}

/// The allowed page origins: some listed ones, or every one (`"*"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    any: bool,
    listed: Vec<String>,
}

impl Origins {
    /// The origins of `entries`, each checked; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Origins, OriginError> {
        let mut origins = Origins {
            any: false,
            listed: Vec::new(),
        };
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "*" {
                origins.any = true;
            } else {
                origins.listed.push(normalise(entry)?);
            }
        }
        Ok(origins)
    }

    /// Whether a request whose `Origin` header is `origin` comes from an
    /// allowed page. `null` (sandboxed pages, `file:`) and anything that is
    /// not an origin are allowed only by `"*"`.
    pub fn allows(&self, origin: &str) -> bool {
        if self.any {
            return true;
        }
        normalise(origin.trim()).is_ok_and(|o| self.listed.contains(&o))
    }
}

/// `scheme://host[:port]` in lower case, default port left out.
fn normalise(entry: &str) -> Result<String, OriginError> {
    let lower = entry.to_ascii_lowercase();
    let (scheme, rest, default_port) = if let Some(rest) = lower.strip_prefix("https://") {
        ("https", rest, 443)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        ("http", rest, 80)
    } else {
        return Err(OriginError::Scheme(entry.to_string()));
    };
    // A single trailing slash is what people paste from an address bar.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(OriginError::Path(entry.to_string()));
    }
    let (host, port) = split_port(rest).map_err(|()| OriginError::Port(entry.to_string()))?;
    if !valid_host(host) {
        return Err(OriginError::Host(entry.to_string()));
    }
    Ok(match port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Host and port of `host[:port]`, the host possibly a bracketed IPv6
/// address (whose colons are not a port's).
fn split_port(rest: &str) -> Result<(&str, Option<u16>), ()> {
    let colon = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => i,
        _ => return Ok((rest, None)),
    };
    let port: u16 = rest[colon + 1..].parse().map_err(|_| ())?;
    if port == 0 {
        return Err(());
    }
    Ok((&rest[..colon], Some(port)))
}

/// A DNS name, an IPv4 address or a bracketed IPv6 address.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(entries: &[&str]) -> Origins {
        Origins::parse(entries).expect("valid origins")
    }

    #[test]
    fn a_listed_origin_matches_in_any_case_and_with_its_default_port() {
        let o = origins(&["https://App.Example.com", "http://localhost:18500"]);
        assert!(o.allows("https://app.example.com"));
        assert!(o.allows("HTTPS://APP.EXAMPLE.COM:443"));
        assert!(o.allows("http://localhost:18500"));
        assert!(!o.allows("http://localhost:18501"));
        assert!(!o.allows("http://app.example.com"), "another scheme");
        assert!(!o.allows("https://evil.example.com"));
        assert!(!o.allows("https://app.example.com.evil.net"));
        assert!(!o.allows("null"));
        assert!(!o.allows(""));
    }

    #[test]
    fn a_star_allows_every_origin_even_null() {
        let o = origins(&["*"]);
        assert!(o.allows("https://anything.example"));
        assert!(o.allows("null"));
    }

    #[test]
    fn ipv6_hosts_and_ports_are_told_apart() {
        let o = origins(&["http://[::1]:8080"]);
        assert!(o.allows("http://[::1]:8080"));
        assert!(!o.allows("http://[::1]"));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused_with_their_reason() {
        let bad = |e: &str| Origins::parse(&[e]).expect_err(e);
        assert!(matches!(bad("example.com"), OriginError::Scheme(_)));
        assert!(matches!(bad("ftp://example.com"), OriginError::Scheme(_)));
        assert!(matches!(bad("https://"), OriginError::Host(_)));
        assert!(matches!(bad("https://exa mple.com"), OriginError::Host(_)));
        assert!(matches!(bad("https://example.com:0"), OriginError::Port(_)));
        assert!(matches!(
            bad("https://example.com:99999"),
            OriginError::Port(_)
        ));
        assert!(matches!(
            bad("https://example.com/app"),
            OriginError::Path(_)
        ));
        assert!(matches!(bad("https://u@example.com"), OriginError::Path(_)));
        assert_eq!(
            origins(&["https://example.com/"]),
            origins(&["https://example.com"]),
            "a trailing slash is forgiven"
        );
    }
}
