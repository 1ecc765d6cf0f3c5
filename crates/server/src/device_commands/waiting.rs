//! The MQTT commands this node waits on, matched to their devices' replies
//! by correlation id.
//!
//! Invariants:
//! - At most [`MAX_WAITING`] commands wait on the node and
//!   [`MAX_WAITING_PER_DEVICE`] per device; one more is refused, never
//!   queued.
//! - A command's place is freed when its [`Ticket`] is dropped: answered,
//!   timed out, or the backend's HTTP request went away. Nothing outlives
//!   the request that opened it.
//! - Only the device a command was sent to may answer it: a reply read on
//!   another device's reply topic is dropped, as is one for an id that is
//!   not waiting. Every dropped reply is counted by reason.
//! - Ids start with a tag drawn at random for this process, so a node that
//!   reads a reply meant for another gateway (every gateway reads every
//!   reply: docs/devices.md "Several gateways") tells it apart from an
//!   unknown or expired one of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chouquette_core::telemetry::prometheus::Family;
use chouquette_core::user_calls::ClientAnswer;
use tokio::sync::oneshot;

/// MQTT commands waiting for a reply on this node, all apps together.
/// Each holds a few hundred bytes and one waiting HTTP request.
pub const MAX_WAITING: usize = 10_000;

/// MQTT commands one device may have waiting on this node, so one backend
/// loop cannot take the node's whole share.
pub const MAX_WAITING_PER_DEVICE: usize = 16;

/// Why a command could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// [`MAX_WAITING`] commands already wait on this node.
    #[error("too many commands waiting on this node (limit {MAX_WAITING})")]
    Node,
    /// [`MAX_WAITING_PER_DEVICE`] commands already wait for this device.
    #[error("too many commands waiting for this device (limit {MAX_WAITING_PER_DEVICE})")]
    Device,
}

/// Why a device's reply was not delivered (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not JSON, or not `{"id", "result"}` / `{"id", "error"}`.
    Invalid,
    /// An id of this node that is not waiting: expired, answered, made up.
    Unknown,
    /// An id of another gateway (which reads the same reply itself).
    OtherNode,
    /// Read on the reply topic of a device the command was not sent to.
    WrongDevice,
}

impl Dropped {
    const ALL: [Dropped; 4] = [
        Dropped::Invalid,
        Dropped::Unknown,
        Dropped::OtherNode,
        Dropped::WrongDevice,
    ];

    fn label(self) -> &'static str {
        match self {
            Dropped::Invalid => "invalid",
            Dropped::Unknown => "unknown",
            Dropped::OtherNode => "other_node",
            Dropped::WrongDevice => "wrong_device",
        }
    }
}

const DROPPED: Family = Family::counter(
    "chouquette_device_command_replies_dropped_total",
    "MQTT replies to device commands not delivered, by reason.",
);
const WAITING: Family = Family::gauge(
    "chouquette_device_commands_waiting",
    "MQTT device commands waiting for a reply on this node.",
);

type DeviceKey = (Arc<str>, Box<str>);

#[derive(Debug)]
struct Slot {
    device: DeviceKey,
    answer: oneshot::Sender<ClientAnswer>,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<Box<str>, Slot>,
    per_device: HashMap<DeviceKey, usize>,
}

/// The table (see the module docs).
#[derive(Debug)]
pub struct Waiting {
    table: Mutex<Table>,
    /// This process's id prefix.
    tag: String,
    next: AtomicU64,
    dropped: [AtomicU64; Dropped::ALL.len()],
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            table: Mutex::default(),
            tag: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            next: AtomicU64::new(0),
            dropped: Default::default(),
        }
    }
}

/// A command's place in the table, freed when dropped.
#[derive(Debug)]
pub struct Ticket<'a> {
    waiting: &'a Waiting,
    /// The correlation id the device must answer with.
    pub id: Box<str>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut table = self.waiting.lock();
        if let Some(slot) = table.slots.remove(&self.id)
            && let Some(n) = table.per_device.get_mut(&slot.device)
        {
            *n -= 1;
            if *n == 0 {
                table.per_device.remove(&slot.device);
            }
        }
    }
}

impl Waiting {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Single inserts and removes: never left half changed.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a command to `device` of `app` under a fresh id; the
    /// receiver gets the device's answer.
    pub fn open(
        &self,
        app: &str,
        device: &str,
    ) -> Result<(Ticket<'_>, oneshot::Receiver<ClientAnswer>), Full> {
        let mut table = self.lock();
        if table.slots.len() >= MAX_WAITING {
            return Err(Full::Node);
        }
        let key: DeviceKey = (app.into(), device.into());
        let held = table.per_device.get(&key).copied().unwrap_or(0);
        if held >= MAX_WAITING_PER_DEVICE {
            return Err(Full::Device);
        }
        table.per_device.insert(key.clone(), held + 1);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // A random part, so an id cannot be guessed from another one.
        let random = uuid::Uuid::new_v4().simple().to_string();
        let id: Box<str> = format!("{}.{n}-{}", self.tag, &random[..12]).into();
        let (answer, receiver) = oneshot::channel();
        table.slots.insert(
            id.clone(),
            Slot {
                device: key,
                answer,
            },
        );
        Ok((Ticket { waiting: self, id }, receiver))
    }

    /// A reply with id `id`, read on the reply topic of `device` of `app`:
    /// handed to its command if that device's command is waiting, else
    /// counted and dropped.
    pub fn reply(&self, app: &str, device: &str, id: &str, answer: ClientAnswer) {
        let mut table = self.lock();
        let fate = match table.slots.get(id) {
            None if id
                .strip_prefix(self.tag.as_str())
                .is_some_and(|rest| rest.starts_with('.')) =>
            {
                Some(Dropped::Unknown)
            }
            None => Some(Dropped::OtherNode),
            Some(slot) if &*slot.device.0 != app || &*slot.device.1 != device => {
                Some(Dropped::WrongDevice)
            }
            // Answered once: the slot goes, a second reply is unknown.
            Some(_) => table
                .slots
                .remove(id)
                .and_then(|slot| slot.answer.send(answer).err())
                .map(|_| Dropped::Unknown),
        };
        drop(table);
        if let Some(reason) = fate {
            self.drop_reply(reason);
        }
    }

    /// Counts a reply not delivered for `reason`.
    pub fn drop_reply(&self, reason: Dropped) {
        let i = Dropped::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Commands waiting now.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no command waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Renders the counters (Prometheus text).
    pub fn render(&self, out: &mut String) {
        let mut samples = DROPPED.render(out);
        for (reason, n) in Dropped::ALL.iter().zip(&self.dropped) {
            samples.sample(&[("reason", reason.label())], n.load(Ordering::Relaxed));
        }
        WAITING.render_value(out, self.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> ClientAnswer {
        ClientAnswer::Error {
            code: code.into(),
            message: String::new(),
        }
    }

    fn dropped(waiting: &Waiting, reason: Dropped) -> u64 {
        let i = Dropped::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        waiting.dropped[i].load(Ordering::Relaxed)
    }

    #[test]
    fn only_the_called_device_answers_and_only_once() {
        let waiting = Waiting::default();
        let (ticket, mut answer) = waiting.open("a", "D1").expect("room");
        let id = ticket.id.clone();
        waiting.reply("a", "D2", &id, error("spoofed"));
        assert_eq!(dropped(&waiting, Dropped::WrongDevice), 1);
        assert!(answer.try_recv().is_err(), "still waiting");
        waiting.reply("a", "D1", &id, error("first"));
        waiting.reply("a", "D1", &id, error("second"));
        assert_eq!(answer.try_recv().ok(), Some(error("first")));
        assert_eq!(dropped(&waiting, Dropped::Unknown), 1);
        drop(ticket);
        assert!(waiting.is_empty());
    }

    #[test]
    fn other_nodes_ids_are_told_from_unknown_ones() {
        let waiting = Waiting::default();
        waiting.reply("a", "D1", "0badc0de.1-abc", error("x"));
        waiting.reply("a", "D1", &format!("{}.99-abc", waiting.tag), error("x"));
        assert_eq!(dropped(&waiting, Dropped::OtherNode), 1);
        assert_eq!(dropped(&waiting, Dropped::Unknown), 1);
    }

    #[test]
    fn the_table_is_bounded_per_device_and_frees_its_places() {
        let waiting = Waiting::default();
        let held: Vec<_> = (0..MAX_WAITING_PER_DEVICE)
            .map(|_| waiting.open("a", "D1").expect("room"))
            .collect();
        assert_eq!(waiting.open("a", "D1").err(), Some(Full::Device));
        assert!(waiting.open("a", "D2").is_ok(), "another device has room");
        drop(held);
        assert!(waiting.is_empty());
        assert!(waiting.lock().per_device.is_empty());
        assert!(waiting.open("a", "D1").is_ok());
    }
}
