//! The clients of `--scenario storm`, in a worker process: each subscribes
//! once, follows its channel's offsets (see `sequence.rs`), and whenever its
//! connection ends reconnects at once and resumes with `since` (the epoch
//! of its last `ack` and the last offset it saw), retrying until a
//! subscription is acknowledged: an HTTP 429 or 503, or an `error` instead
//! of the `ack`, is a refusal, retried at once (no backoff: the worst case
//! for the gateway); a connection the kernel refuses (no listener yet) or
//! that fails is retried after [`RETRY_PAUSE`], so the workers do not spin
//! on the cores the restarting gateway needs.
//!
//! What each client did lands in its [`Slot`], which the worker's reports
//! sum up ([`summarize`]); counts of faults are kept as they happen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::{Ws, tcp, ws_config};
use crate::histogram::AtomicHistogram;
use crate::pace;
use crate::sequence::{Seen, Sequence};
use crate::wire::{Command, Plan, Report, unix_nanos};
use crate::worker::{commands, send};
use crate::workload;

/// A connection that failed without an answer from the gateway is tried
/// again after this.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Limit on each step of one attempt: TCP connect, upgrade, `ack`.
const STEP: Duration = Duration::from_secs(10);
/// Tries of the first connection before it counts as failed.
const FIRST_ATTEMPTS: u32 = 6;
/// [`Slot::last`] before any offset is known.
const NONE: u64 = u64::MAX;

/// What the parent tells the storm clients beyond the common plan.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Share {
    /// Clients wait a share of this, spread evenly, before reconnecting.
    pub jitter: Duration,
}

/// What one client did, for the reports (Unix ns; 0: not yet).
#[derive(Debug)]
struct Slot {
    channel: usize,
    dropped_ns: AtomicU64,
    acked_ns: AtomicU64,
    caught_ns: AtomicU64,
    last: AtomicU64,
}

/// A plain copy of a [`Slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    /// The client's channel (index).
    pub channel: usize,
    /// When its connection last ended.
    pub dropped_ns: u64,
    /// When its last subscription was acknowledged.
    pub acked_ns: u64,
    /// When it had first seen every offset up to the restart's.
    pub caught_ns: u64,
    /// The last offset it saw ([`NONE`]: none).
    pub last: u64,
}

/// The counters of every client of this worker.
#[derive(Debug)]
struct Shared {
    slots: Vec<Slot>,
    connected: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
    /// Offsets up to which a client is caught up, per channel; set by
    /// [`Command::Restart`].
    targets: OnceLock<Vec<u64>>,
    drops: AtomicU64,
    reconnects: AtomicU64,
    refusals_before: AtomicU64,
    refusals_after: AtomicU64,
    connect_errors: AtomicU64,
    missing: AtomicU64,
    duplicates: AtomicU64,
    resets: AtomicU64,
    faulty: AtomicU64,
    resubscribe_us: AtomicHistogram,
}

/// What a worker's storm clients did so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Clients subscribed at first.
    pub connected: usize,
    /// Connections that ended (every client's, every time).
    pub drops: u64,
    /// Subscriptions acknowledged after a drop (every time).
    pub reconnects: u64,
    /// Upgrades answered 429 or 503, or subscribes answered `error`,
    /// before the [`Command::Restart`] (by the stopping gateway).
    pub refusals_before_restart: u64,
    /// The same, after it (by the restarted gateway).
    pub refusals_after_restart: u64,
    /// Attempts that failed without an answer (no listener, reset, timeout).
    pub connect_errors: u64,
    /// Offsets missed, summed over the clients.
    pub missing: u64,
    /// Events seen twice, summed.
    pub duplicates: u64,
    /// `reset` received that say events may have been missed
    /// (`history_gap`, `broker_unavailable`, `broker_restored`), summed.
    pub resets: u64,
    /// Clients with any of those three.
    pub faulty: u64,
    /// The clients' slots, summed up.
    pub summary: Summary,
    /// Per client, its last drop to its next `ack`, µs (sparse histogram,
    /// once per reconnection).
    pub resubscribe_us: Vec<(usize, u64)>,
}

/// The slots of some clients, summed up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Clients whose connection ended at least once.
    pub dropped: u64,
    /// Of those, subscribed again since their last drop.
    pub resubscribed: u64,
    /// Clients that have seen every offset up to the restart's.
    pub caught_up: u64,
    /// The first drop, Unix ns (0: none).
    pub first_drop_ns: u64,
    /// The last `ack` after a drop, Unix ns.
    pub last_ack_ns: u64,
    /// The last client caught up, Unix ns.
    pub last_caught_ns: u64,
    /// `(channel, last offset seen, clients)`; `u64::MAX`: no offset.
    pub last_offsets: Vec<(usize, u64, u64)>,
}

/// Sums up slots: pure, so the accounting is tested apart from sockets.
pub fn summarize(slots: impl IntoIterator<Item = SlotView>) -> Summary {
    let mut s = Summary::default();
    let mut last: BTreeMap<(usize, u64), u64> = BTreeMap::new();
    for v in slots {
        *last.entry((v.channel, v.last)).or_default() += 1;
        if v.caught_ns > 0 {
            s.caught_up += 1;
            s.last_caught_ns = s.last_caught_ns.max(v.caught_ns);
        }
        if v.dropped_ns == 0 {
            continue;
        }
        s.dropped += 1;
        s.first_drop_ns = match s.first_drop_ns {
            0 => v.dropped_ns,
            first => first.min(v.dropped_ns),
        };
        if v.acked_ns > v.dropped_ns {
            s.resubscribed += 1;
            s.last_ack_ns = s.last_ack_ns.max(v.acked_ns);
        }
    }
    s.last_offsets = last.into_iter().map(|((c, o), n)| (c, o, n)).collect();
    s
}

impl Shared {
    fn new(plan: &Plan) -> Shared {
        let channels = plan.channels.max(1);
        Shared {
            slots: (0..plan.count)
                .map(|i| Slot {
                    channel: (plan.first + i) % channels,
                    dropped_ns: AtomicU64::new(0),
                    acked_ns: AtomicU64::new(0),
                    caught_ns: AtomicU64::new(0),
                    last: AtomicU64::new(NONE),
                })
                .collect(),
            connected: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            targets: OnceLock::new(),
            drops: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            refusals_before: AtomicU64::new(0),
            refusals_after: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            faulty: AtomicU64::new(0),
            resubscribe_us: AtomicHistogram::default(),
        }
    }

    fn settled(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
            + self.refused.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }

    fn results(&self) -> Results {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let views = self.slots.iter().map(|s| SlotView {
            channel: s.channel,
            dropped_ns: load(&s.dropped_ns),
            acked_ns: load(&s.acked_ns),
            caught_ns: load(&s.caught_ns),
            last: load(&s.last),
        });
        Results {
            connected: self.connected.load(Ordering::Relaxed),
            drops: load(&self.drops),
            reconnects: load(&self.reconnects),
            refusals_before_restart: load(&self.refusals_before),
            refusals_after_restart: load(&self.refusals_after),
            connect_errors: load(&self.connect_errors),
            missing: load(&self.missing),
            duplicates: load(&self.duplicates),
            resets: load(&self.resets),
            faulty: load(&self.faulty),
            summary: summarize(views),
            resubscribe_us: self.resubscribe_us.snapshot(),
        }
    }
}

/// Entry point of a storm worker: opens the clients, reports them
/// connected, then answers the parent's commands until told to exit.
pub async fn run(plan: Plan, share: Share) -> anyhow::Result<()> {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::new(&plan));
    let lifetime = sleep(plan.lifetime);
    tokio::pin!(lifetime);
    let opening = open_all(plan.clone(), share, shared.clone());
    tokio::select! {
        _ = &mut lifetime => return Ok(()),
        () = opening => {}
    }
    send(&Report::Connected {
        connected: shared.connected.load(Ordering::Relaxed),
        refused: shared.refused.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
    })?;
    let mut commands = commands();
    loop {
        tokio::select! {
            _ = &mut lifetime => return Ok(()),
            command = commands.recv() => match command {
                None | Some(Command::Exit) => return Ok(()),
                Some(Command::Report) => send(&Report::Storm(shared.results()))?,
                Some(Command::Restart { offsets }) => {
                    let _ = shared.targets.set(offsets);
                    send(&Report::Armed)?;
                }
                Some(Command::Window { .. }) => {}
            },
        }
    }
}

/// Starts every client at the planned rate; returns once each first
/// attempt has ended (subscribed, refused or failed).
async fn open_all(plan: Arc<Plan>, share: Share, shared: Arc<Shared>) {
    let exp = chouquette_core::clock::unix_now() + plan.lifetime.as_secs() + 3600;
    let channels = plan.channels.max(1);
    let tokens: Vec<(Arc<str>, Arc<str>)> = (0..channels)
        .map(|c| {
            let name = workload::channel(&plan.app, c, channels);
            let token = workload::token_on(&plan.app, plan.scenario, c, exp, channels);
            (name.into(), token.into())
        })
        .collect();
    pace::paced(plan.connect_rate, plan.first, plan.count, |index| {
        let (name, token) = tokens[index % channels].clone();
        let client = Client {
            plan: plan.clone(),
            shared: shared.clone(),
            index,
            name,
            token,
            seq: Sequence::default(),
            epoch: None,
            attempts: 0,
            faulty: false,
        };
        tokio::spawn(client.run(share));
    })
    .await;
    while shared.settled() < plan.count {
        sleep(Duration::from_millis(20)).await;
    }
}

/// The delay of client `index` before reconnecting: its share of
/// `jitter`, spread evenly over the clients (a multiplicative hash of the
/// index, so neighbours do not go together).
pub fn jitter_of(index: usize, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let spread = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    jitter.mul_f64(spread as f64 / (1u64 << 53) as f64)
}

/// Why one attempt did not end with an `ack`.
enum Failure {
    /// The gateway answered no (HTTP 429 or 503, or `error`).
    Refused(String),
    /// No answer: refused by the kernel, reset, timed out.
    Failed(String),
}

/// One client and what it has seen.
struct Client {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    index: usize,
    name: Arc<str>,
    token: Arc<str>,
    seq: Sequence,
    epoch: Option<String>,
    attempts: u64,
    faulty: bool,
}

impl Client {
    fn slot(&self) -> &Slot {
        &self.shared.slots[self.index - self.plan.first]
    }

    /// Subscribes, then follows the channel, reconnecting whenever the
    /// connection ends, until the worker exits.
    async fn run(mut self, share: Share) {
        let Some(mut ws) = self.first().await else {
            return;
        };
        let mut first_drop = true;
        loop {
            self.follow(&mut ws).await;
            let dropped = unix_nanos();
            self.slot().dropped_ns.store(dropped, Ordering::Relaxed);
            self.shared.drops.fetch_add(1, Ordering::Relaxed);
            if first_drop {
                first_drop = false;
                sleep(jitter_of(self.index, share.jitter)).await;
            }
            ws = self.reconnect().await;
            let acked = self.slot().acked_ns.load(Ordering::Relaxed);
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
            self.shared
                .resubscribe_us
                .record(acked.saturating_sub(dropped) / 1000);
        }
    }

    /// The first subscription, with a few tries for transient failures.
    async fn first(&mut self) -> Option<Ws> {
        let mut last = String::new();
        for attempt in 0..FIRST_ATTEMPTS {
            if attempt > 0 {
                sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            match self.attempt().await {
                Ok(ws) => {
                    self.shared.connected.fetch_add(1, Ordering::Relaxed);
                    return Some(ws);
                }
                Err(Failure::Refused(reason)) => {
                    self.shared.refused.fetch_add(1, Ordering::Relaxed);
                    self.note(&reason);
                    return None;
                }
                Err(Failure::Failed(reason)) => last = reason,
            }
        }
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        self.note(&last);
        None
    }

    /// Prints the first few failures of this worker.
    fn note(&self, reason: &str) {
        static SHOWN: AtomicUsize = AtomicUsize::new(0);
        if SHOWN.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!(
                "chouquette-bench worker: client {} not subscribed: {reason}",
                self.index
            );
        }
    }

    /// Tries until a subscription is acknowledged.
    async fn reconnect(&mut self) -> Ws {
        loop {
            match self.attempt().await {
                Ok(ws) => return ws,
                Err(Failure::Refused(_)) => {
                    let counter = if self.shared.targets.get().is_some() {
                        &self.shared.refusals_after
                    } else {
                        &self.shared.refusals_before
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
                Err(Failure::Failed(_)) => {
                    self.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
                    sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// One connection: connect, upgrade, subscribe (resuming after the
    /// last offset seen), read the catch-up up to the `ack`.
    async fn attempt(&mut self) -> Result<Ws, Failure> {
        let source = self.plan.source_of(self.index, self.attempts);
        self.attempts += 1;
        let target = self.plan.target;
        let stream = tcp(target, source).await.map_err(Failure::Failed)?;
        let url = format!("ws://{target}/ws");
        let upgrade = client_async_with_config(url, stream, Some(ws_config()));
        let mut ws = match timeout(STEP, upgrade).await {
            Err(_) => return Err(Failure::Failed("upgrade timed out".into())),
            Ok(Err(WsError::Http(response))) => {
                let status = response.status().as_u16();
                return Err(if status == 429 || status == 503 {
                    Failure::Refused(format!("HTTP {status}"))
                } else {
                    Failure::Failed(format!("HTTP {status}"))
                });
            }
            Ok(Err(e)) => return Err(Failure::Failed(format!("upgrade: {e}"))),
            Ok(Ok((ws, _))) => ws,
        };
        let since = match (&self.epoch, self.seq.last()) {
            (Some(epoch), Some(last)) => Some((epoch.as_str(), last)),
            _ => None,
        };
        let message = workload::subscribe_since(&self.plan.app, &self.name, &self.token, since);
        ws.send(Message::text(message))
            .await
            .map_err(|e| Failure::Failed(format!("send subscribe: {e}")))?;
        loop {
            let text = match timeout(STEP, ws.next()).await {
                Err(_) => return Err(Failure::Failed("no ack".into())),
                Ok(None | Some(Ok(Message::Close(_)))) => {
                    return Err(Failure::Failed("closed before the ack".into()));
                }
                Ok(Some(Err(e))) => return Err(Failure::Failed(format!("before the ack: {e}"))),
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
            };
            match self.frame(text.as_str()) {
                Frame::Ack(epoch, offset) => {
                    self.acked(epoch, offset);
                    return Ok(ws);
                }
                Frame::Error(reason) => return Err(Failure::Refused(reason)),
                Frame::Other => {}
            }
        }
    }

    /// Reads until the connection ends.
    async fn follow(&mut self, ws: &mut Ws) {
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(text) => {
                    let _ = self.frame(text.as_str());
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    }

    /// Accounts for one text frame (one message or a batch array).
    fn frame(&mut self, text: &str) -> Frame {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Frame::Other;
        };
        match value {
            Value::Array(items) => {
                for item in &items {
                    self.message(item);
                }
                Frame::Other
            }
            item => self.message(&item),
        }
    }

    fn message(&mut self, item: &Value) -> Frame {
        match item["class"].as_str() {
            Some("data") => {
                if let Some(offset) = item["offset"].as_u64() {
                    self.event(offset);
                }
                Frame::Other
            }
            // Each tells the client events may have been missed (the
            // protocol's section 5): a gap it was told of, not a silent one.
            Some("reset") if announces_a_gap(&item["reason"]) => {
                self.seq.reset();
                self.shared.resets.fetch_add(1, Ordering::Relaxed);
                self.fault();
                Frame::Other
            }
            Some("ack") => {
                let channel = &item["channels"][&*self.name];
                match (channel["epoch"].as_str(), channel["offset"].as_u64()) {
                    (Some(epoch), Some(offset)) => Frame::Ack(epoch.to_owned(), offset),
                    _ => Frame::Error(format!("ack without the channel: {item}")),
                }
            }
            Some("error") => Frame::Error(format!("{}", item["code"])),
            _ => Frame::Other,
        }
    }

    fn event(&mut self, offset: u64) {
        match self.seq.event(offset) {
            Seen::Next => {}
            Seen::Duplicate => {
                self.shared.duplicates.fetch_add(1, Ordering::Relaxed);
                self.fault();
            }
            Seen::Gap(missing) => {
                self.shared.missing.fetch_add(missing, Ordering::Relaxed);
                self.fault();
            }
        }
        self.progress();
    }

    fn acked(&mut self, epoch: String, offset: u64) {
        let missing = self.seq.ack(offset);
        if missing > 0 {
            self.shared.missing.fetch_add(missing, Ordering::Relaxed);
            self.fault();
        }
        self.epoch = Some(epoch);
        self.slot().acked_ns.store(unix_nanos(), Ordering::Relaxed);
        self.progress();
    }

    /// Publishes the position; marks the client caught up once it has
    /// every offset up to the restart's.
    fn progress(&self) {
        let slot = self.slot();
        slot.last
            .store(self.seq.last().unwrap_or(NONE), Ordering::Relaxed);
        if slot.caught_ns.load(Ordering::Relaxed) != 0 {
            return;
        }
        let Some(target) = self.shared.targets.get().and_then(|t| t.get(slot.channel)) else {
            return;
        };
        if self.seq.complete_through(*target) {
            slot.caught_ns.store(unix_nanos(), Ordering::Relaxed);
        }
    }

    fn fault(&mut self) {
        if !self.faulty {
            self.faulty = true;
            self.shared.faulty.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether a `reset` of this reason tells the client it may have missed
/// events: the channel numbered anew, or the gateway's broker lost (and
/// back). `shutdown` is followed by a resume with `since`, which misses
/// nothing.
fn announces_a_gap(reason: &Value) -> bool {
    matches!(
        reason.as_str(),
        Some("history_gap" | "broker_unavailable" | "broker_restored")
    )
}

/// What a text frame was, for the handshake.
enum Frame {
    Ack(String, u64),
    Error(String),
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resets_that_announce_a_gap_are_counted_as_such() {
        for reason in ["history_gap", "broker_unavailable", "broker_restored"] {
            assert!(announces_a_gap(&Value::from(reason)), "{reason}");
        }
        for reason in ["shutdown", "disabled"] {
            assert!(!announces_a_gap(&Value::from(reason)), "{reason}");
        }
        assert!(!announces_a_gap(&Value::Null));
    }

    fn view(channel: usize, dropped_ns: u64, acked_ns: u64, caught_ns: u64, last: u64) -> SlotView {
        SlotView {
            channel,
            dropped_ns,
            acked_ns,
            caught_ns,
            last,
        }
    }

    #[test]
    fn sums_up_resubscribed_and_caught_up_clients() {
        let s = summarize([
            // Dropped at 100, back at 150, caught up at 140.
            view(0, 100, 150, 140, 9),
            // Dropped at 90, back at 300 (the last), caught up at 290.
            view(0, 90, 300, 290, 9),
            // Dropped at 120 and not back: its ack is the first one's.
            view(1, 120, 50, 0, 4),
            // Never dropped, never had an offset.
            view(1, 0, 50, 0, NONE),
        ]);
        assert_eq!(s.dropped, 3);
        assert_eq!(s.resubscribed, 2);
        assert_eq!(s.caught_up, 2);
        assert_eq!(s.first_drop_ns, 90);
        assert_eq!(s.last_ack_ns, 300);
        assert_eq!(s.last_caught_ns, 290);
        assert_eq!(s.last_offsets, vec![(0, 9, 2), (1, 4, 1), (1, NONE, 1)]);
    }

    #[test]
    fn jitter_spreads_within_its_bound() {
        assert_eq!(jitter_of(7, Duration::ZERO), Duration::ZERO);
        let bound = Duration::from_secs(1);
        let delays: Vec<Duration> = (0..1000).map(|i| jitter_of(i, bound)).collect();
        assert!(delays.iter().all(|d| *d < bound));
        let early = delays.iter().filter(|d| **d < bound / 2).count();
        assert!(
            (400..600).contains(&early),
            "{early} of 1000 in the first half"
        );
    }
}
