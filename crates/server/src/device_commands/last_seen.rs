//! The seam between device commands and device liveness
//! (docs/devices.md, "Liveness"): the one place commands ask whether a
//! device is connected and when it was last seen.
//!
//! [`Tracked`] reads this node's liveness trackers ([`Devices`]) and the
//! cluster's [`Ledger`]: with several gateways on Redis, a device last
//! seen through another node is known here too. A device is *offline*
//! when no other node holds it and this node does not either, and either
//! this node saw it leave (its last connection closed here, its MQTT Last
//! Will arrived here, its node was declared lost) or the cluster saw it
//! once. A device nobody reported is unknown, not offline: an MQTT
//! command to it is sent and waits for its reply or the timeout. An app
//! without `[apps.devices]` tracks no device: its MQTT commands always
//! wait. The ledger unreachable, this node's view alone answers.
//!
//! [`Devices`]: chouquette_core::devices::Devices

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chouquette_core::devices::{Ledger, Sighting, State};
use chouquette_core::node::Node;

/// What commands know of a device's liveness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// When it was last heard from, if known.
    pub last_seen: Option<SystemTime>,
    /// Whether it is connected now; `None` when not known (the command is
    /// then sent and waits for its timeout).
    pub online: Option<bool>,
}

/// Liveness as this node's trackers and the cluster's ledger know it.
#[derive(Clone)]
pub struct Tracked {
    pub node: Arc<Node>,
    pub ledger: Arc<dyn Ledger>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").finish_non_exhaustive()
    }
}

fn time_of(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Puts this node's view (`here`: state and last seen) and the cluster's
/// together (see the module docs).
fn combine(here: Option<(State, u64)>, cluster: Option<Sighting>) -> Seen {
    let local_seen = here.map(|(_, ms)| ms).filter(|ms| *ms > 0);
    let last_seen = local_seen
        .max(cluster.and_then(|c| c.last_seen))
        .and_then(time_of);
    let held_here = here.is_some_and(|(state, _)| state != State::Offline);
    let online = match (here, cluster) {
        (_, Some(c)) if c.others > 0 => Some(true),
        _ if held_here => Some(true),
        (Some(_), _) | (None, Some(_)) => Some(false),
        (None, None) => None,
    };
    Seen { last_seen, online }
}

impl Tracked {
    /// `device` of `app` as far as the gateway knows.
    pub async fn seen(&self, app: &str, device: &str) -> Seen {
        if self.node.devices().settings(app).is_none() {
            return Seen::default();
        }
        let here = self
            .node
            .devices()
            .liveness(app, device)
            .map(|l| (l.state, l.last_seen));
        let cluster = match self.ledger.lookup(app, device).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(app, error = %e, "device commands: ledger unreachable");
                None
            }
        };
        combine(here, cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(others: u64, last_seen: Option<u64>) -> Option<Sighting> {
        Some(Sighting { others, last_seen })
    }

    #[test]
    fn offline_needs_no_holder_anywhere_and_a_sighting() {
        assert_eq!(combine(None, None), Seen::default(), "unknown");
        let gone_elsewhere = combine(None, cluster(0, Some(5_000)));
        assert_eq!(gone_elsewhere.online, Some(false));
        assert_eq!(gone_elsewhere.last_seen, time_of(5_000));
        let on_another = combine(Some((State::Offline, 9_000)), cluster(1, Some(5_000)));
        assert_eq!(
            (on_another.online, on_another.last_seen),
            (Some(true), time_of(9_000))
        );
        let left_here = combine(Some((State::Offline, 3_000)), None);
        assert_eq!(left_here.online, Some(false));
        let silent_here = combine(Some((State::Silent, 3_000)), cluster(0, Some(3_000)));
        assert_eq!(silent_here.online, Some(true), "held here: tried");
    }
}
