//! How values other than TOML's own types are written in the file:
//! addresses (`127.0.0.1:8080`) and durations (`5s`, `1h`, `250ms`). A value
//! that does not parse is a type error, so it is reported at its line while
//! the file is deserialized.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A socket address, `host:port` with a literal IP.
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!("`{s}` is not an address like 127.0.0.1:8080"))
    })
}

/// A human duration, as `humantime` reads it.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a duration like 5s or 1h")))
}

/// A duration for an optional key (with `#[serde(default)]`).
pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A backend URL the gateway can call: plain `http` with a host (the
/// gateway has no TLS client: backends sit on loopback or a private
/// network). `shape` is how the key's URL should look, for the message.
pub(super) fn http_backend(url: &str, shape: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!(
            "`{url}` must be {shape} (TLS to backends is not supported: \
             put them on loopback or a private network)"
        ));
    }
    Ok(uri)
}
