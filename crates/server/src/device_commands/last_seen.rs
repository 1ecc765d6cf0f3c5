//! THE SEAM between device commands and device liveness (issue 14,
//! "Liveness", written on the `liveness` branch): the one place commands
//! ask whether a device is connected and when it was last seen.
//!
//! Until that work is merged, [`NotTracked`] knows nothing: a WebSocket
//! device that no node holds is still answered "offline" at once (the call
//! machinery knows that by itself), with `last_seen: null`; an MQTT device
//! is sent its command and waits for its reply or the timeout. At merge,
//! implement [`LastSeen`] over the liveness state and pass it to
//! [`super::DeviceCommands::new`] in `serve.rs`: `is_online` answering
//! `Some(false)` then makes an MQTT command to an absent device answer
//! "offline" at once too.

use std::time::SystemTime;

/// What commands need to know about a device's liveness.
pub trait LastSeen: Send + Sync + std::fmt::Debug {
    /// When `device` of `app` was last heard from, if known.
    fn last_seen(&self, app: &str, device: &str) -> Option<SystemTime>;

    /// Whether `device` of `app` is connected now; `None` when not known
    /// (the command is then sent and waits for its timeout).
    fn is_online(&self, app: &str, device: &str) -> Option<bool>;
}

/// No liveness known: the stand-in until the liveness work is wired here.
#[derive(Debug, Default, Clone, Copy)]
pub struct NotTracked;

impl LastSeen for NotTracked {
    fn last_seen(&self, _app: &str, _device: &str) -> Option<SystemTime> {
        None
    }

    fn is_online(&self, _app: &str, _device: &str) -> Option<bool> {
        None
    }
}
