//! The device ledger on Redis (see `chouquette_core::devices::ledger`):
//! which nodes hold each device, with a lease every node renews, so that
//! a dead node's devices are declared offline by a live one; which of
//! them find it silent, so that each change of a device for the whole
//! cluster is announced once; and when any node last saw it.
//!
//! Per app, under one hash tag (`devices.lua`): a sorted set of entries
//! `["<node>","<device>"]` scored by a deadline, a hash counting each
//! device's holders, another counting those that find it online, the set
//! of entries whose node finds it silent, and a sorted set of each
//! device's last sign of life. A node renews its entries every third of
//! `presence_timeout` (the same lease as presence: one setting says how
//! long a dead node's users and devices stay), telling each device's
//! last sign of life; each renewal also removes the entries past their
//! deadline, and the devices left with no holder are the caller's to
//! announce offline. The script runs atomically, so each change of a
//! device for the cluster is announced by exactly one node. The node part
//! of an entry is random per process (as for presence), so a node
//! restarted under the same id does not inherit its previous life's
//! entries: they lapse and are announced offline.
//!
//! Bound: the last-seen set keeps the [`SEEN_CAP`] most recently seen
//! devices per app; an older one is forgotten (a command to it is then
//! "not known", as for a device never seen).

use std::sync::LazyLock;

use chouquette_core::broker::BoxFuture;
use chouquette_core::devices::{
    Hold, HoldChange, Holding, Ledger, LedgerError, Renewal, Sighting, State,
};
use redis::Script;

use super::{RedisBroker, not_connected};

static DEVICES: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("devices.lua")));

/// Devices per script call: a refresh of a large fleet is cut in calls of
/// this many, so that no single call holds Redis long.
const CHUNK: usize = 1000;

/// Most devices per app whose last sign of life Redis keeps (about 60
/// bytes each).
pub const SEEN_CAP: usize = 1_000_000;

/// The strings of a Redis array (others skipped).
fn strings(value: &redis::Value) -> Vec<Box<str>> {
    match value {
        redis::Value::Array(items) => items
            .iter()
            .filter_map(|v| match v {
                redis::Value::BulkString(b) => std::str::from_utf8(b).ok().map(Box::from),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl RedisBroker {
    /// Runs `devices.lua` for `app` with `mode` and `args`.
    async fn run_devices(
        &self,
        app: &str,
        mode: &str,
        args: &[String],
    ) -> Result<redis::Value, LedgerError> {
        let shared = &self.shared;
        let link = shared
            .current()
            .ok_or_else(|| LedgerError(not_connected().to_string()))?;
        let tag = format!("{}:{{dev|{app}}}", shared.settings.prefix);
        let timeout =
            u64::try_from(shared.settings.presence_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = DEVICES.prepare_invoke();
        invocation
            .key(format!("{tag}:held"))
            .key(format!("{tag}:holders"))
            .key(format!("{tag}:speakers"))
            .key(format!("{tag}:quiet"))
            .key(format!("{tag}:seen"))
            .arg(mode)
            .arg(&*shared.presence_node)
            .arg(timeout)
            .arg(SEEN_CAP);
        for arg in args {
            invocation.arg(arg);
        }
        let mut commands = link.commands.clone();
        invocation
            .invoke_async(&mut commands)
            .await
            .map_err(|e| LedgerError(shared.failed(&e).to_string()))
    }
}

/// A cluster state of `devices.lua`'s record answer.
fn cluster_state(value: &redis::Value) -> Option<State> {
    match value {
        redis::Value::Int(1) => Some(State::Online),
        redis::Value::Int(2) => Some(State::Silent),
        redis::Value::Int(3) => Some(State::Offline),
        _ => None,
    }
}

/// A non-negative integer of a Redis reply.
fn count(value: Option<&redis::Value>) -> Option<u64> {
    match value? {
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

impl Ledger for RedisBroker {
    fn record<'a>(
        &'a self,
        app: &'a str,
        holds: &'a [HoldChange<'a>],
    ) -> BoxFuture<'a, Result<Vec<Option<State>>, LedgerError>> {
        Box::pin(async move {
            let mut states = Vec::with_capacity(holds.len());
            for chunk in holds.chunks(CHUNK) {
                let args: Vec<String> = chunk
                    .iter()
                    .flat_map(|h| {
                        let op = match h.hold {
                            Hold::Take => "take",
                            Hold::Release => "release",
                            Hold::Quiet => "quiet",
                            Hold::Speak => "speak",
                        };
                        [
                            op.to_string(),
                            h.device.to_string(),
                            h.last_seen.to_string(),
                        ]
                    })
                    .collect();
                let reply = self.run_devices(app, "record", &args).await?;
                let redis::Value::Array(items) = reply else {
                    return Err(LedgerError("unexpected reply".into()));
                };
                states.extend(items.iter().map(cluster_state));
            }
            states.resize(holds.len(), None);
            Ok(states)
        })
    }

    fn refresh<'a>(
        &'a self,
        app: &'a str,
        held: &'a [Holding],
    ) -> BoxFuture<'a, Result<Renewal, LedgerError>> {
        Box::pin(async move {
            let mut renewal = Renewal::default();
            let mut chunks: Vec<&[Holding]> = held.chunks(CHUNK).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for chunk in chunks {
                let args: Vec<String> = chunk
                    .iter()
                    .flat_map(|h| {
                        let state = if h.silent { "s" } else { "o" };
                        [
                            h.device.to_string(),
                            state.to_string(),
                            h.last_seen.to_string(),
                        ]
                    })
                    .collect();
                let reply = self.run_devices(app, "refresh", &args).await?;
                if let redis::Value::Array(parts) = &reply {
                    let mut lists = parts.iter().map(strings);
                    renewal.gone.extend(lists.next().unwrap_or_default());
                    renewal.back.extend(lists.next().unwrap_or_default());
                    renewal.quieted.extend(lists.next().unwrap_or_default());
                }
            }
            Ok(renewal)
        })
    }

    fn lookup<'a>(
        &'a self,
        app: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Option<Sighting>, LedgerError>> {
        Box::pin(async move {
            let reply = self
                .run_devices(app, "lookup", &[device.to_string()])
                .await?;
            let redis::Value::Array(parts) = reply else {
                return Err(LedgerError("unexpected reply".into()));
            };
            let others = count(parts.first()).unwrap_or(0);
            let last_seen = count(parts.get(1)).filter(|ms| *ms > 0);
            Ok((others > 0 || last_seen.is_some()).then_some(Sighting { others, last_seen }))
        })
    }
}
