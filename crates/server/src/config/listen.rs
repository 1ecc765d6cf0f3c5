//! `[listen]` and `[listen.tls]`: the two listeners' addresses and the
//! public listener's certificate. The internal listener is always plain: it
//! belongs on loopback or a private network, and its clients are our
//! backends. The two must be able to bind together (not the same port on
//! overlapping addresses). A TLS problem points at its key inside `[listen.tls]`, since
//! `cert` and `key` are common words elsewhere in the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problem::Problems;
use super::value::{duration, socket_addr};
use crate::accept::TrustedProxies;
use crate::origins::Origins;
use crate::tls::TlsSettings;

/// `[listen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Clients: `/ws`.
    #[serde(deserialize_with = "socket_addr")]
    pub public: SocketAddr,
    /// Backends and operators: `/api/v1`, `/metrics`, `/healthz`, `/readyz`.
    #[serde(deserialize_with = "socket_addr")]
    pub internal: SocketAddr,
    /// TLS on the public listener; none: plain (e.g. behind a proxy that
    /// terminates TLS). The internal listener is always plain: it belongs
    /// on loopback or a private network, and its clients are our backends.
    pub tls: Option<TlsConfig>,
    /// Page origins (`scheme://host[:port]`, or `"*"`) allowed to use the
    /// public listener from a browser: CORS on `/sse` and `/poll`, and the
    /// `Origin` of `/ws` upgrades checked. None: no `Origin` is checked and
    /// no CORS header is sent (same-origin pages and non-browser clients).
    pub allowed_origins: Option<Vec<String>>,
    /// Proxies (IPs or CIDR networks) whose PROXY protocol header or
    /// `X-Forwarded-For` names the client; empty: every peer is the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            public: SocketAddr::from(([0, 0, 0, 0], 8080)),
            internal: SocketAddr::from(([127, 0, 0, 1], 8081)),
            tls: None,
            allowed_origins: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Listen {
    /// Addresses were checked while parsing; what is left is whether the
    /// two listeners can both bind, TLS, and the allowed origins (each bad
    /// one at its own line).
    pub(super) fn problems(&self, out: &mut Problems<'_>) {
        if self.overlap() {
            out.at(
                "internal",
                format!(
                    "listen.internal ({}) and listen.public ({}) cannot both be bound: \
                     give them different ports",
                    self.internal, self.public
                ),
            );
        }
        if let Some(tls) = &self.tls {
            tls.problems(out);
        }
        for entry in &self.trusted_proxies {
            if let Err(e) = TrustedProxies::parse(&[entry]) {
                out.at(
                    &format!("\"{entry}\""),
                    format!("listen.trusted_proxies: {e}"),
                );
            }
        }
        for entry in self.allowed_origins.iter().flatten() {
            if let Err(e) = Origins::parse(&[entry]) {
                out.at(
                    &format!("\"{entry}\""),
                    format!("listen.allowed_origins: {e}"),
                );
            }
        }
    }

    /// The allowed origins, when the key is set (checked by `problems`, so
    /// a bad entry here is only possible for a config never validated, and
    /// is then left out rather than allowed).
    pub fn origins(&self) -> Option<Origins> {
        let entries = self.allowed_origins.as_ref()?;
        let valid: Vec<&String> = entries
            .iter()
            .filter(|e| Origins::parse(&[e]).is_ok())
            .collect();
        Origins::parse(&valid).ok()
    }
}

impl Listen {
    /// The trusted proxies (checked by `problems`; for a config never
    /// validated, a bad entry is left out rather than trusted).
    pub fn trusted(&self) -> TrustedProxies {
        let valid: Vec<&String> = self
            .trusted_proxies
            .iter()
            .filter(|e| TrustedProxies::parse(&[e]).is_ok())
            .collect();
        TrustedProxies::parse(&valid).unwrap_or_default()
    }

    /// Whether binding one listener would make the other's bind fail: the
    /// same port (0, any free port, never clashes) on the same address, or
    /// on any address when one of them is the wildcard.
    fn overlap(&self) -> bool {
        let (a, b) = (self.public, self.internal);
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    }
}

/// `[listen.tls]`: the public listener's certificate, reloaded on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the certificate, then its intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A client that has not finished its handshake by then is dropped.
    #[serde(default = "TlsConfig::default_handshake_timeout")]
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the
    /// kernel's accept queue, so a flood of slow handshakes is bounded.
    #[serde(default = "TlsConfig::default_max_handshakes")]
    pub max_handshakes: usize,
}

impl TlsConfig {
    fn default_handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }

    fn default_max_handshakes() -> usize {
        1024
    }

    /// The listener's settings.
    pub fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert: self.cert.clone(),
            key: self.key.clone(),
            handshake_timeout: self.handshake_timeout,
            max_handshakes: self.max_handshakes,
        }
    }

    /// Problems with the files (missing, unreadable, not PEM, key not the
    /// certificate's) and the bounds, each at its line in `[listen.tls]`.
    fn problems(&self, out: &mut Problems<'_>) {
        let text = out.text();
        let line = |key: &str| tls_line(text, key);
        if self.handshake_timeout.is_zero() {
            out.at_line(
                line("handshake_timeout"),
                "listen.tls.handshake_timeout must be more than 0s".into(),
            );
        }
        if self.max_handshakes == 0 {
            out.at_line(
                line("max_handshakes"),
                "listen.tls.max_handshakes must be at least 1".into(),
            );
        }
        if let Err(e) = crate::tls::load_key_pair(&self.cert, &self.key) {
            let at = if e.is_about_key() { "key" } else { "cert" };
            out.at_line(line(at), format!("listen.tls: {e}"));
        }
    }
}

/// The line of `key = ...` inside the `[listen.tls]` table (or of the
/// table's header when the key is not in the file).
fn tls_line(text: &str, key: &str) -> Option<usize> {
    let mut lines = text.lines().enumerate();
    let (header, _) = lines.find(|(_, l)| {
        let l = l.trim();
        l.starts_with('[') && l.trim_matches(['[', ']', ' ']) == "listen.tls"
    })?;
    for (i, l) in lines {
        let l = l.trim();
        if l.starts_with('[') {
            break;
        }
        if l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    Some(header + 1)
}
