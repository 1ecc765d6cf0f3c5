//! The device ledger on Redis (see `chouquette_core::devices::ledger`):
//! which nodes hold each device, with a lease every node renews, so that
//! a dead node's devices are declared offline by a live one.
//!
//! Per app, under one hash tag: a sorted set of entries
//! `["<node>","<device>"]` scored by a deadline, and a hash counting each
//! device's holders (`devices.lua`). A node renews its entries every third
//! of `presence_timeout` (the same lease as presence: one setting says how
//! long a dead node's users and devices stay); each renewal also removes
//! the entries past their deadline, and the devices left with no holder
//! are the caller's to announce offline. The script runs atomically, so
//! each such device is announced by exactly one node. The node part of an
//! entry is random per process (as for presence), so a node restarted
//! under the same id does not inherit its previous life's entries: they
//! lapse and are announced offline.

use std::sync::LazyLock;

use chouquette_core::broker::BoxFuture;
use chouquette_core::devices::{Hold, Ledger, LedgerError, Renewal};
use redis::Script;

use super::{RedisBroker, not_connected};

static DEVICES: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("devices.lua")));

/// Devices per script call: a refresh of a large fleet is cut in calls of
/// this many, so that no single call holds Redis long.
const CHUNK: usize = 1000;

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
        args: &[&str],
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
            .arg(mode)
            .arg(&*shared.presence_node)
            .arg(timeout);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut commands = link.commands.clone();
        invocation
            .invoke_async(&mut commands)
            .await
            .map_err(|e| LedgerError(shared.failed(&e).to_string()))
    }
}

impl Ledger for RedisBroker {
    fn record<'a>(
        &'a self,
        app: &'a str,
        holds: &'a [(Hold, &'a str)],
    ) -> BoxFuture<'a, Result<Vec<bool>, LedgerError>> {
        Box::pin(async move {
            let mut flags = Vec::with_capacity(holds.len());
            for chunk in holds.chunks(CHUNK) {
                let args: Vec<&str> = chunk
                    .iter()
                    .flat_map(|(hold, device)| {
                        let op = match hold {
                            Hold::Take => "take",
                            Hold::Release => "release",
                        };
                        [op, *device]
                    })
                    .collect();
                let reply = self.run_devices(app, "record", &args).await?;
                let redis::Value::Array(items) = reply else {
                    return Err(LedgerError("unexpected reply".into()));
                };
                flags.extend(items.iter().map(|v| matches!(v, redis::Value::Int(1))));
            }
            flags.resize(holds.len(), false);
            Ok(flags)
        })
    }

    fn refresh<'a>(
        &'a self,
        app: &'a str,
        held: &'a [Box<str>],
    ) -> BoxFuture<'a, Result<Renewal, LedgerError>> {
        Box::pin(async move {
            let (mut gone, mut back) = (Vec::new(), Vec::new());
            let mut chunks: Vec<&[Box<str>]> = held.chunks(CHUNK).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for chunk in chunks {
                let args: Vec<&str> = chunk.iter().map(|d| &**d).collect();
                let reply = self.run_devices(app, "refresh", &args).await?;
                if let redis::Value::Array(parts) = &reply {
                    if let Some(g) = parts.first() {
                        gone.extend(strings(g));
                    }
                    if let Some(b) = parts.get(1) {
                        back.extend(strings(b));
                    }
                }
            }
            Ok(Renewal { gone, back })
        })
    }
}
