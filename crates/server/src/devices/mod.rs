//! The node's liveness task (docs/devices.md, "Liveness"): every
//! [`TICK`] it takes the devices' changes (silences checked first),
//! settles them with the [`Ledger`] so that only the cluster-wide ones
//! are announced (one event per change of a device, however many nodes
//! hold it), publishes each as an event on the
//! app's liveness channel and hands it to the app's webhook; every third
//! of the lease it renews this node's holds and announces offline the
//! devices of nodes that stopped renewing theirs.
//!
//! Each event: kind `device_online`, `device_silent` or `device_offline`,
//! keyword `device:<id>`, key `liveness:<id>` (so a subscriber's snapshot
//! shows each device's current liveness), and data
//! `{device, state, since, last_seen, transport, node, reason}` (times
//! in Unix milliseconds).

pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chouquette_core::devices::{Change, Hold, HoldChange, Ledger, Reason, State, TICK, now_ms};
use chouquette_core::ingest::{self, Caller};
use chouquette_core::node::Node;
use chouquette_core::publication::NewEvent;
use serde_json::value::RawValue;

use webhook::Webhooks;

/// The liveness event of `change` of `app`'s device, on `channel`.
pub fn event(app: &str, channel: &str, node: &str, change: &Change) -> NewEvent {
    let l = &change.liveness;
    let data = serde_json::json!({
        "device": &*change.device,
        "state": l.state.as_str(),
        "since": l.since,
        // Unknown (0, "") when a node announces another node's device.
        "last_seen": (l.last_seen > 0).then_some(l.last_seen),
        "transport": (!l.transport.is_empty()).then_some(l.transport),
        "node": node,
        "reason": change.reason.as_str(),
    });
    NewEvent {
        app_id: app.to_string(),
        channel: channel.to_string(),
        event_kind: l.state.event_kind().to_string(),
        keywords: vec![format!("device:{}", change.device)],
        key: Some(format!("liveness:{}", change.device)),
        data: RawValue::from_string(data.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned()),
        id: None,
        time: None,
    }
}

/// Runs until aborted: see the module docs. `lease` is how long a node's
/// holds last without renewal.
pub async fn run(node: Arc<Node>, ledger: Arc<dyn Ledger>, webhooks: Webhooks, lease: Duration) {
    if node.devices().apps().next().is_none() {
        return;
    }
    let renew_every = (lease / 3).max(TICK);
    let mut renewed_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changes = node.devices().take_changes(now_ms());
        let mut by_app: HashMap<Arc<str>, Vec<Change>> = HashMap::new();
        for (app, change) in changes {
            by_app.entry(app).or_default().push(change);
        }
        for (app, changes) in by_app {
            let settled = settle(&*ledger, &app, changes).await;
            announce(&node, &webhooks, &app, settled).await;
        }
        if renewed_at.is_none_or(|at| at.elapsed() >= renew_every) {
            renewed_at = Some(Instant::now());
            renew(&node, &*ledger, &webhooks).await;
        }
    }
}

/// How a change moves this node's hold on its device.
fn hold(change: &Change) -> Option<Hold> {
    match (change.was, change.liveness.state) {
        (State::Offline, State::Online) => Some(Hold::Take),
        (State::Online | State::Silent, State::Offline) => Some(Hold::Release),
        (State::Online, State::Silent) => Some(Hold::Quiet),
        (State::Silent, State::Online) => Some(Hold::Speak),
        _ => None,
    }
}

/// The changes to announce: those the ledger says change the device for
/// the whole cluster (all of them when it cannot be reached: a duplicate
/// is better than a device never announced). A device this node lets go
/// while the other nodes holding it all find it silent is announced
/// silent (`silence`), not offline.
async fn settle(ledger: &dyn Ledger, app: &str, changes: Vec<Change>) -> Vec<Change> {
    let holds: Vec<HoldChange<'_>> = changes
        .iter()
        .filter_map(|c| {
            Some(HoldChange {
                hold: hold(c)?,
                device: &c.device,
                last_seen: c.liveness.last_seen,
            })
        })
        .collect();
    if holds.is_empty() {
        return changes;
    }
    let states = match ledger.record(app, &holds).await {
        Ok(states) => states,
        Err(e) => {
            tracing::warn!(app, error = %e, "devices: ledger unreachable; announcing this node's view");
            holds.iter().map(|h| Some(h.hold.state())).collect()
        }
    };
    let mut states = states.into_iter();
    changes
        .into_iter()
        .filter_map(|mut change| {
            if hold(&change).is_none() {
                return Some(change);
            }
            let state = states.next().flatten()?;
            if state != change.liveness.state {
                change.liveness.state = state;
                change.reason = Reason::Silence;
            }
            Some(change)
        })
        .collect()
}

/// Renews this node's holds, announcing the devices of lapsed nodes
/// offline (or silent), and the holds it got back as it sees them.
async fn renew(node: &Arc<Node>, ledger: &dyn Ledger, webhooks: &Webhooks) {
    for (app, held) in node.devices().held() {
        match ledger.refresh(&app, &held).await {
            Ok(renewal) => {
                let mut changes = node.devices().node_lost(&app, &renewal.gone);
                changes.extend(node.devices().node_quieted(&app, &renewal.quieted));
                changes.extend(node.devices().renewed(&app, &renewal.back));
                announce(node, webhooks, &app, changes).await;
            }
            Err(e) => tracing::warn!(app = %app, error = %e, "devices: lease renewal failed"),
        }
    }
}

/// Publishes each change on the app's liveness channel, then hands it to
/// the webhook.
async fn announce(node: &Arc<Node>, webhooks: &Webhooks, app: &Arc<str>, changes: Vec<Change>) {
    let Some(settings) = node.devices().settings(app) else {
        return;
    };
    for change in changes {
        let event = event(app, &settings.channel, node.id(), &change);
        match ingest::publish(node, Caller::Trusted, vec![event.clone()]).await {
            Ok(positions) => {
                node.devices().announced(app, change.liveness.state);
                let position = positions.into_iter().next();
                webhooks.send(node, app, event, position);
            }
            Err(e) => {
                node.devices().not_announced();
                tracing::warn!(app = %app, device = %change.device, error = %e,
                    "devices: liveness event not published");
            }
        }
    }
}
