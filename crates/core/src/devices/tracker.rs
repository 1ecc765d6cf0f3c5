//! One app's devices as this node sees them: the pure state machine behind
//! liveness, driven by what happens (a connection, a message, a Last Will)
//! and by the time passed in, so that it is tested without a clock.
//!
//! A device is *online* from its first sign of life (a `connect` identity,
//! a published message, an MQTT `online` status), *silent* once it sent
//! nothing for `silent_after`, and *offline* when its last connection on
//! this node closes or its MQTT status says `offline`. A message brings a
//! silent or offline device back online.
//!
//! Bound: at most `max_devices` devices are tracked. A new device past it
//! takes the place of the device without a connection (offline, or a
//! silent MQTT device) seen longest ago; when every tracked device holds a
//! connection, the new one is not tracked (no liveness event for it,
//! counted as untracked) — its own messages are published as usual.

use std::collections::HashMap;
use std::time::Duration;

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected, or sent something within `silent_after`.
    Online,
    /// Sent nothing for `silent_after` (a connection may still be open).
    Silent,
    /// Its last connection closed, its MQTT status says `offline`, or the
    /// node that held it is gone.
    Offline,
}

impl State {
    /// `online`, `silent` or `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Silent => "silent",
            State::Offline => "offline",
        }
    }

    /// The event kind announcing the state.
    pub fn event_kind(self) -> &'static str {
        match self {
            State::Online => "device_online",
            State::Silent => "device_silent",
            State::Offline => "device_offline",
        }
    }
}

/// A device's liveness: its state, since when, when it was last seen and
/// through what (`ws`, `sse`, `poll` or `mqtt`). Times are Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Its state.
    pub state: State,
    /// When it entered that state.
    pub since: u64,
    /// Its last sign of life.
    pub last_seen: u64,
    /// How it was last seen.
    pub transport: &'static str,
}

/// What made a device change state (the `reason` of its event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A connection identified as the device.
    Connected,
    /// Its last connection on this node closed.
    Disconnected,
    /// A message from it.
    Message,
    /// Nothing from it for `silent_after`.
    Silence,
    /// Its MQTT status topic (a Last Will or the device itself).
    Status,
    /// The node that held it stopped refreshing its lease (crash, partition).
    NodeLost,
    /// This node got back its lease on a device it still holds, after
    /// another node had declared it offline (a broker outage).
    Renewed,
}

impl Reason {
    /// The `reason` field of an event.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Connected => "connected",
            Reason::Disconnected => "disconnected",
            Reason::Message => "message",
            Reason::Silence => "silence",
            Reason::Status => "status",
            Reason::NodeLost => "node_lost",
            Reason::Renewed => "renewed",
        }
    }
}

/// A change of one device's state, to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The device.
    pub device: Box<str>,
    /// Its liveness after the change.
    pub liveness: Liveness,
    /// Its state before (offline for a device new here).
    pub was: State,
    /// Why.
    pub reason: Reason,
}

#[derive(Debug, Clone)]
struct Device {
    connections: u32,
    liveness: Liveness,
}

/// What a sign of life is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// A connection opened (counted until [`Tracker::disconnected`]).
    Connection,
    /// A message or an `online` status.
    Message(Reason),
}

/// One app's tracked devices (see the module docs).
#[derive(Debug)]
pub struct Tracker {
    silent_after: Duration,
    max_devices: usize,
    devices: HashMap<Box<str>, Device>,
    untracked: u64,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(silent_after: Duration, max_devices: usize) -> Tracker {
        Tracker {
            silent_after,
            max_devices,
            devices: HashMap::new(),
            untracked: 0,
        }
    }

    /// A sign of life of `device` through `transport` at `now`: the change
    /// to announce when it was not online.
    pub fn alive(
        &mut self,
        device: &str,
        sign: Sign,
        transport: &'static str,
        now: u64,
    ) -> Option<Change> {
        let reason = match sign {
            Sign::Connection => Reason::Connected,
            Sign::Message(reason) => reason,
        };
        if !self.devices.contains_key(device) && !self.make_room() {
            self.untracked += 1;
            return None;
        }
        let entry = self.devices.entry(device.into()).or_insert(Device {
            connections: 0,
            liveness: Liveness {
                state: State::Offline,
                since: now,
                last_seen: now,
                transport,
            },
        });
        if sign == Sign::Connection {
            entry.connections += 1;
        }
        entry.liveness.last_seen = now;
        entry.liveness.transport = transport;
        if entry.liveness.state == State::Online {
            return None;
        }
        let was = entry.liveness.state;
        entry.liveness.state = State::Online;
        entry.liveness.since = now;
        Some(Change {
            device: device.into(),
            liveness: entry.liveness,
            was,
            reason,
        })
    }

    /// One connection of `device` closed: the change when it was the last.
    pub fn disconnected(&mut self, device: &str, now: u64) -> Option<Change> {
        let entry = self.devices.get_mut(device)?;
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections > 0 {
            return None;
        }
        Self::offline(device, entry, Reason::Disconnected, now)
    }

    /// `device` said (or its Last Will said) it is offline.
    pub fn status_offline(&mut self, device: &str, now: u64) -> Option<Change> {
        let entry = self.devices.get_mut(device)?;
        Self::offline(device, entry, Reason::Status, now)
    }

    fn offline(device: &str, entry: &mut Device, reason: Reason, now: u64) -> Option<Change> {
        let was = entry.liveness.state;
        if was == State::Offline {
            return None;
        }
        entry.liveness.state = State::Offline;
        entry.liveness.since = now;
        Some(Change {
            device: device.into(),
            liveness: entry.liveness,
            was,
            reason,
        })
    }

    /// The online devices that sent nothing for `silent_after`, now silent.
    pub fn tick(&mut self, now: u64) -> Vec<Change> {
        let after = u64::try_from(self.silent_after.as_millis()).unwrap_or(u64::MAX);
        let mut changes = Vec::new();
        for (device, entry) in &mut self.devices {
            let l = &mut entry.liveness;
            if l.state == State::Online && now.saturating_sub(l.last_seen) >= after {
                l.state = State::Silent;
                l.since = now;
                changes.push(Change {
                    device: device.clone(),
                    liveness: *l,
                    was: State::Online,
                    reason: Reason::Silence,
                });
            }
        }
        changes
    }

    /// Marks `device` offline because its node is gone (another node's
    /// device, announced by this one): tracked here only if it was.
    pub fn node_lost(&mut self, device: &str, now: u64) -> Option<Change> {
        match self.devices.get_mut(device) {
            Some(entry) if entry.connections == 0 => {
                Self::offline(device, entry, Reason::NodeLost, now)
            }
            _ => None,
        }
    }

    /// Frees a place for a new device when full: false when every tracked
    /// device holds a connection.
    fn make_room(&mut self) -> bool {
        if self.devices.len() < self.max_devices {
            return true;
        }
        let oldest = self
            .devices
            .iter()
            .filter(|(_, d)| d.connections == 0)
            .min_by_key(|(_, d)| d.liveness.last_seen)
            .map(|(name, _)| name.clone());
        match oldest {
            Some(name) => {
                self.devices.remove(&name);
                true
            }
            None => false,
        }
    }

    /// `device`'s liveness, when tracked.
    pub fn get(&self, device: &str) -> Option<Liveness> {
        self.devices.get(device).map(|d| d.liveness)
    }

    /// The devices that hold this node's lease: online or silent.
    pub fn held(&self) -> Vec<Box<str>> {
        self.devices
            .iter()
            .filter(|(_, d)| d.liveness.state != State::Offline)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The devices that hold this node's lease, with their state and
    /// last sign of life (what a renewal tells the ledger).
    pub fn holdings(&self) -> Vec<super::Holding> {
        self.devices
            .iter()
            .filter(|(_, d)| d.liveness.state != State::Offline)
            .map(|(name, d)| super::Holding {
                device: name.clone(),
                silent: d.liveness.state == State::Silent,
                last_seen: d.liveness.last_seen,
            })
            .collect()
    }

    /// How many devices are online, silent and tracked.
    pub fn counts(&self) -> (usize, usize, usize) {
        let online = self
            .devices
            .values()
            .filter(|d| d.liveness.state == State::Online)
            .count();
        let silent = self
            .devices
            .values()
            .filter(|d| d.liveness.state == State::Silent)
            .count();
        (online, silent, self.devices.len())
    }

    /// Devices refused because the tracker was full of connected devices.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(10);

    #[test]
    fn a_connection_is_online_until_it_closes() {
        let mut t = Tracker::new(S, 10);
        let c = t
            .alive("D1", Sign::Connection, "ws", 1_000)
            .expect("online");
        assert_eq!(
            (c.liveness.state, c.reason),
            (State::Online, Reason::Connected)
        );
        assert_eq!(t.alive("D1", Sign::Connection, "ws", 2_000), None);
        assert_eq!(t.disconnected("D1", 3_000), None, "one connection left");
        let c = t.disconnected("D1", 4_000).expect("offline");
        assert_eq!(
            (c.liveness.state, c.liveness.since),
            (State::Offline, 4_000)
        );
        assert_eq!(c.liveness.last_seen, 2_000);
        assert_eq!(t.disconnected("D1", 5_000), None);
    }

    #[test]
    fn silence_then_a_message_brings_it_back() {
        let mut t = Tracker::new(S, 10);
        t.alive("D1", Sign::Message(Reason::Message), "mqtt", 0);
        assert!(t.tick(9_999).is_empty());
        let silent = t.tick(10_000);
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].liveness.state, State::Silent);
        assert!(t.tick(50_000).is_empty(), "announced once");
        let back = t
            .alive("D1", Sign::Message(Reason::Message), "mqtt", 60_000)
            .expect("online again");
        assert_eq!(
            (back.liveness.state, back.reason),
            (State::Online, Reason::Message)
        );
        let off = t.status_offline("D1", 61_000).expect("offline");
        assert_eq!(off.reason, Reason::Status);
    }

    #[test]
    fn full_tracker_evicts_the_oldest_unconnected_or_refuses() {
        let mut t = Tracker::new(S, 2);
        t.alive("A", Sign::Message(Reason::Message), "mqtt", 1);
        t.alive("B", Sign::Connection, "ws", 2);
        assert!(
            t.alive("C", Sign::Message(Reason::Message), "mqtt", 3)
                .is_some()
        );
        assert_eq!(t.get("A"), None, "A had no connection and was oldest");
        t.alive("C", Sign::Connection, "ws", 4);
        assert_eq!(t.alive("D", Sign::Connection, "ws", 5), None);
        assert_eq!((t.untracked(), t.counts().2), (1, 2));
    }

    #[test]
    fn node_lost_spares_devices_connected_here() {
        let mut t = Tracker::new(S, 10);
        t.alive("A", Sign::Connection, "ws", 1);
        t.alive("B", Sign::Message(Reason::Message), "mqtt", 1);
        assert_eq!(t.node_lost("A", 2), None);
        assert_eq!(
            t.node_lost("B", 2).map(|c| c.reason),
            Some(Reason::NodeLost)
        );
        assert_eq!(t.held(), vec![Box::from("A")]);
    }
}
