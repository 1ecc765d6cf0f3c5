//! Log output: readable lines by default, JSON on request. `RUST_LOG`
//! overrides the configured level.
//!
//! Tokens and secrets are never logged: the gateway's own events never
//! carry them, and the libraries that would (tungstenite and hyper print
//! whole frames and requests at `debug` and `trace`, tokens included) are
//! held at `info` whatever the level asked, unless the filter names them
//! explicitly (an operator debugging the wire on purpose).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Libraries that log message or request contents below `info`.
const WIRE_LIBRARIES: [&str; 6] = [
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "redis",
];

/// The filter directives for `level`: it, then `info` for every wire
/// library it does not name.
pub fn directives(level: &str) -> String {
    let mut out = level.trim().to_string();
    for library in WIRE_LIBRARIES {
        let named = out
            .split(',')
            .any(|d| d.trim().split(['=', '[']).next() == Some(library));
        if !named {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(library);
            out.push_str("=info");
        }
    }
    out
}

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: LogFormat, level: &str) {
    let asked = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| level.to_string());
    let filter = EnvFilter::try_new(directives(&asked))
        .or_else(|_| EnvFilter::try_new(directives("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_libraries_stay_at_info_unless_named() {
        let d = directives("trace");
        assert!(d.starts_with("trace,"), "{d}");
        assert!(
            d.contains("tungstenite=info") && d.contains("hyper=info"),
            "{d}"
        );
        let named = directives("debug,tungstenite=trace");
        assert!(named.contains("tungstenite=trace"), "{named}");
        assert!(
            !named.split(',').any(|d| d == "tungstenite=info"),
            "{named}"
        );
        assert!(named.contains("tokio_tungstenite=info"), "{named}");
        assert!(EnvFilter::try_new(directives("chouquette=debug")).is_ok());
        assert!(EnvFilter::try_new(directives("")).is_ok());
    }
}
