//! The seam between device commands and device liveness
//! (docs/devices.md, "Liveness"): the one place commands ask whether a
//! device is connected and when it was last seen.
//!
//! [`Tracked`] reads this node's liveness trackers ([`Devices`]): the last
//! time this node saw the device, and "offline" only when this node's view
//! says so (its last connection closed here, its MQTT Last Will arrived
//! here, or its node was declared lost). A device this node does not track
//! is unknown, not offline: an MQTT command to it is sent and waits for its
//! reply or the timeout. An app without `[apps.devices]` tracks
//! no device: its MQTT commands always wait.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chouquette_core::devices::State;
use chouquette_core::node::Node;

/// What commands need to know about a device's liveness.
pub trait LastSeen: Send + Sync + std::fmt::Debug {
    /// When `device` of `app` was last heard from, if known.
    fn last_seen(&self, app: &str, device: &str) -> Option<SystemTime>;

    /// Whether `device` of `app` is connected now; `None` when not known
    /// (the command is then sent and waits for its timeout).
    fn is_online(&self, app: &str, device: &str) -> Option<bool>;
}

/// Liveness as this node's trackers know it.
#[derive(Debug, Clone)]
pub struct Tracked(pub Arc<Node>);

impl LastSeen for Tracked {
    fn last_seen(&self, app: &str, device: &str) -> Option<SystemTime> {
        let ms = self
            .0
            .devices()
            .last_seen(app, device)
            .filter(|ms| *ms > 0)?;
        UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    }

    fn is_online(&self, app: &str, device: &str) -> Option<bool> {
        let liveness = self.0.devices().liveness(app, device)?;
        (liveness.state == State::Offline).then_some(false)
    }
}
