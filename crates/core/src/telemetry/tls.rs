//! TLS on the public listener: certificate reloads (SIGHUP) and handshakes
//! that never became a connection. Kept apart from the hot-path counters:
//! these move once per reload or per failed client, never per delivery.

use std::sync::atomic::{AtomicU64, Ordering};

use super::prometheus::Family;

const RELOADS: Family = Family::counter(
    "chouquette_tls_reloads_total",
    "Certificate reloads of the public listener (SIGHUP), by result.",
);
const HANDSHAKE_FAILURES: Family = Family::counter(
    "chouquette_tls_handshake_failures_total",
    "TLS handshakes on the public listener that did not become a connection, by reason.",
);

/// TLS counters of the public listener.
#[derive(Debug, Default)]
pub struct TlsTelemetry {
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    handshakes_failed: AtomicU64,
    handshakes_timed_out: AtomicU64,
}

impl TlsTelemetry {
    fn reload_counter(&self, ok: bool) -> &AtomicU64 {
        if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        }
    }

    /// A certificate reload finished: `ok`, or refused (the old one stays).
    pub fn reloaded(&self, ok: bool) {
        self.reload_counter(ok).fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads so far that succeeded (`ok`) or were refused.
    pub fn reloads(&self, ok: bool) -> u64 {
        self.reload_counter(ok).load(Ordering::Relaxed)
    }

    /// A client's handshake failed, or did not finish in time (`timed_out`).
    pub fn handshake_failed(&self, timed_out: bool) {
        let counter = if timed_out {
            &self.handshakes_timed_out
        } else {
            &self.handshakes_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the TLS families.
    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RELOADS
            .render(out)
            .sample(&[("result", "ok")], self.reloads(true))
            .sample(&[("result", "error")], self.reloads(false));
        HANDSHAKE_FAILURES
            .render(out)
            .sample(&[("reason", "error")], load(&self.handshakes_failed))
            .sample(&[("reason", "timeout")], load(&self.handshakes_timed_out));
    }
}
