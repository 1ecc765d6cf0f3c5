//! The Postgres source: row changes of chosen tables become events, read
//! from a logical replication slot (`pgoutput`), with nothing lost and
//! nothing published twice.
//!
//! How it reads: two connections. An ordinary SQL one (`tokio-postgres`,
//! `session`) checks the setup, creates the publication and slot, and
//! watches the slot's lag; a replication connection (`replication`, written
//! here over a socket since `tokio-postgres` has no CopyBoth mode) streams
//! the slot with `START_REPLICATION ... LOGICAL` and acknowledges, with
//! standby status updates, only what is published. `pgoutput`'s messages
//! are decoded here (`pgoutput`), batched as they arrive (`stream`).
//! Streaming replaced peeking the slot with SQL
//! (`pg_logical_slot_peek_binary_changes`), whose every read decoded again
//! from the slot's restart point and fell behind at 10,000 rows/s.
//!
//! Guarantees:
//! - A transaction's changes are published in commit order, transactions
//!   in commit order; each change is its own ingest group, so a change the
//!   pipeline refuses (an event over a bound) does not take its neighbours
//!   with it. A refused change is logged at error level with its id (the
//!   commit LSN and its place in the transaction), its table and why, and
//!   counted (`chouquette_postgres_events_total{outcome="refused"}`), then
//!   passed: the slot cannot move past only part of the WAL.
//! - The slot is acknowledged (the flush position of a status update) only
//!   up to the last transaction all of whose changes are published (or
//!   refused); a crash before that has Postgres send them again,
//!   and their idempotency ids (see `change`) make the broker answer
//!   "duplicate" instead of publishing again (Redis: within
//!   `[broker] dedup_window`; memory: while the channel's history holds
//!   them).
//! - The app's publish rate applies as backpressure: the source waits and
//!   publishes the rest of the batch, going on inside a transaction where it
//!   stopped (a transaction larger than the app's burst gets through); the
//!   reader stops reading when its next batch is full, and Postgres waits.
//! - With a Redis broker, one gateway reads a slot at a time (`lease`);
//!   the others stand by, ready, and take over when its lease expires.
//! - Any failure (Postgres restarting, the network, the broker) ends the
//!   session; the source reconnects with a capped backoff and reads from
//!   the slot's acknowledged position.
//! - A slot retaining more than `max_lag_bytes` of WAL, or that Postgres
//!   marks `unreserved`, is reported (`chouquette_postgres_behind`, a
//!   warning); one marked `lost` stops the source, not ready, with an error
//!   saying changes were missed. Nothing is dropped silently.
//!
//! Memory: three batches at most (one publishing, one queued, one filling),
//! each of about `batch` changes, but a single transaction larger than that
//! is held whole; one message is at most 1 GiB (`wire::HARD_CAP`).

mod change;
mod config;
mod lease;
mod pgoutput;
mod replication;
mod session;
mod status;
mod stream;
mod template;
mod value;
mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use chouquette_core::ingest::{self, Caller, Outcome, Refusal, Skipped};
use chouquette_core::node::Node;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub use change::ChangeError;
use change::{Decoder, Transaction};
pub use config::{PostgresSettings, TableSettings};
pub use lease::{Lease, LeaseError};
pub use pgoutput::DecodeError;
use replication::Connection;
pub use replication::ReplicationError;
use session::Session;
pub use session::SessionError;
pub use status::{Status, Statuses};
use stream::{Batch, ReplyWanted};
pub use template::{Template, TemplateError};
pub use wire::WireError;

use super::Source;
use crate::broker::redis::{Commands, backoff};
use crate::shutdown::Shutdown;

/// Seconds from the Unix epoch to Postgres' (2000-01-01 UTC).
const PG_EPOCH: f64 = 946_684_800.0;
/// How often the slot's lag is asked for.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Longest time between two status updates: well under Postgres'
/// `wal_sender_timeout` (60 s by default), after which it drops a silent
/// receiver.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How often the lease, lag and status are looked at when idle.
const CHORES_EVERY: Duration = Duration::from_millis(200);

/// One slot's reader.
#[derive(Debug)]
pub struct PostgresSource {
    settings: PostgresSettings,
    status: Arc<Status>,
    /// With a Redis broker: the gateways take turns reading the slot.
    lease: Option<Lease>,
}

impl PostgresSource {
    /// A reader of `settings`' slot; its status is in `statuses`.
    pub fn new(settings: PostgresSettings, statuses: &mut Statuses) -> PostgresSource {
        let status = Arc::new(Status::new(&settings.slot));
        statuses.push(status.clone());
        PostgresSource {
            settings,
            status,
            lease: None,
        }
    }

    /// Reads the slot only while holding `lease`.
    pub fn with_lease(self, lease: Lease) -> PostgresSource {
        PostgresSource {
            lease: Some(lease),
            ..self
        }
    }

    /// Waits until this gateway holds the lease (standby meanwhile).
    async fn wait_for_lease(&self, lease: &Lease) -> Result<Commands, SessionError> {
        let mut con = lease.connect().await?;
        loop {
            if lease.take(&mut con).await? {
                return Ok(con);
            }
            self.status.standby();
            tokio::time::sleep(lease.every()).await;
        }
    }

    async fn run_forever(&self, node: &Node) {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let Err(e) = self.stream(node).await;
            if started.elapsed() > Duration::from_secs(30) {
                failures = 0;
            }
            if failures == 0 {
                tracing::warn!(error = %e, slot = %self.settings.slot, "postgres source stopped; reconnecting");
            } else {
                tracing::debug!(error = %e, slot = %self.settings.slot, "postgres source still down");
            }
            self.status.failed(e.to_string());
            failures = failures.saturating_add(1);
            tokio::time::sleep(backoff(failures, self.settings.reconnect_max)).await;
        }
    }

    /// One session: reads, publishes, acknowledges, until something fails.
    async fn stream(&self, node: &Node) -> Result<Infallible, SessionError> {
        let settings = &self.settings;
        let lease = match &self.lease {
            Some(lease) => Some((lease, self.wait_for_lease(lease).await?)),
            None => None,
        };
        let session = Session::open(settings).await?;
        self.check_lag(&session).await?;
        let (reader, writer) = Connection::open(&settings.url, wire::HARD_CAP)
            .await?
            .start(&settings.slot, &settings.publication)
            .await?;
        self.status.streaming();
        tracing::info!(slot = %settings.slot, "postgres source streaming");
        let mut decoder = Decoder::new(&settings.tables, &session.origin);
        let (batches, queued) = mpsc::channel(1);
        let reply = ReplyWanted::default();
        let now = Instant::now();
        let mut chores = Chores {
            session: &session,
            lease,
            writer,
            out: BytesMut::new(),
            reply: &reply,
            published: 0,
            acked: 0,
            lease_at: now,
            lag_at: now,
            status_at: now,
        };
        tokio::select! {
            read = stream::read(reader, &mut decoder, batches, &reply, settings.batch) => read,
            published = self.publish_stream(node, queued, &mut chores) => published,
        }
    }

    /// Publishes the batches read, acknowledging as it goes, and does the
    /// session's chores between them.
    async fn publish_stream(
        &self,
        node: &Node,
        mut queued: mpsc::Receiver<Batch>,
        chores: &mut Chores<'_>,
    ) -> Result<Infallible, SessionError> {
        let mut tick = tokio::time::interval(CHORES_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = queued.recv() => {
                    let batch = batch.ok_or(SessionError::StreamEnded)?;
                    self.publish_batch(node, batch, chores).await?;
                }
                () = chores.reply.wake.notified() => self.chores(chores).await?,
                _ = tick.tick() => self.chores(chores).await?,
            }
        }
    }

    /// Publishes one batch whole, waiting for the app's rate if it must,
    /// then acknowledges it.
    async fn publish_batch(
        &self,
        node: &Node,
        batch: Batch,
        chores: &mut Chores<'_>,
    ) -> Result<(), SessionError> {
        let mut rest = &batch.transactions[..];
        let mut resume = None;
        if rest.is_empty() {
            self.status.lag_seconds(0.0);
        }
        while !rest.is_empty() {
            let round = publish(node, rest, resume, &self.status).await?;
            let done = round.done.map_or(0, |i| i + 1);
            if let Some(last) = done.checked_sub(1).and_then(|i| rest.get(i)) {
                chores.published = chores.published.max(last.end_lsn);
                self.status.lag_seconds(seconds_since(last.commit_micros));
            }
            rest = rest.get(done..).unwrap_or_default();
            resume = round.resume;
            if let Some(wait) = round.wait {
                self.chores(chores).await?;
                // Never so long that the lease lapses meanwhile.
                let most = chores.lease.as_ref().map_or(wait, |(l, _)| l.every());
                tokio::time::sleep(wait.min(most)).await;
            }
        }
        chores.published = chores.published.max(batch.end);
        chores.acknowledge(false).await
    }

    /// Renews the lease, checks the lag, and sends a status update, each
    /// when due.
    async fn chores(&self, chores: &mut Chores<'_>) -> Result<(), SessionError> {
        if let Some((lease, con)) = chores.lease.as_mut()
            && chores.lease_at.elapsed() >= lease.every()
        {
            if !lease.take(con).await? {
                return Err(SessionError::LeaseLost);
            }
            chores.lease_at = Instant::now();
        }
        if chores.lag_at.elapsed() >= LAG_EVERY {
            self.check_lag(chores.session).await?;
            chores.lag_at = Instant::now();
        }
        let asked = chores.reply.wanted.swap(false, Ordering::Relaxed);
        chores
            .acknowledge(asked || chores.status_at.elapsed() >= STATUS_EVERY)
            .await
    }

    async fn check_lag(&self, session: &Session) -> Result<(), SessionError> {
        let lag = session.lag(&self.settings.slot).await?;
        if lag.wal_status == "lost" {
            self.status.lag(lag.bytes, true);
            return Err(SessionError::SlotLost(self.settings.slot.clone()));
        }
        let behind = lag.wal_status == "unreserved" || lag.bytes > self.settings.max_lag_bytes;
        if behind {
            tracing::warn!(slot = %self.settings.slot, bytes = lag.bytes, wal_status = %lag.wal_status,
                "postgres slot falling behind");
        }
        self.status.lag(lag.bytes, behind);
        Ok(())
    }
}

impl Source for PostgresSource {
    async fn run(self, node: Arc<Node>, mut shutdown: Shutdown) {
        tokio::select! {
            () = shutdown.stopped() => {}
            () = self.run_forever(&node) => {}
        }
    }
}

/// Seconds from a Postgres timestamp to now.
fn seconds_since(pg_micros: i64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    now - (PG_EPOCH + pg_micros as f64 / 1e6)
}

/// Where a round held back by the app's rate stopped inside a transaction:
/// its first `events` changes are published, so publishing it again skips
/// them instead of spending the app's tokens on duplicates (a transaction
/// larger than the app's burst would otherwise never get through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    commit_lsn: u64,
    events: usize,
}

/// The session's state besides reading: the lease, the lag checks, and
/// the replication connection's writing half with what it acknowledged.
struct Chores<'s> {
    session: &'s Session,
    lease: Option<(&'s Lease, Commands)>,
    writer: replication::Writer,
    out: BytesMut,
    reply: &'s ReplyWanted,
    /// Everything before this position is published: what may be
    /// acknowledged (0 until something is).
    published: u64,
    /// The flush position of the last status update sent.
    acked: u64,
    lease_at: Instant,
    lag_at: Instant,
    status_at: Instant,
}

impl Chores<'_> {
    /// Sends a status update acknowledging `published` when it moved on,
    /// or when `anyway` (due, or asked for by the server).
    async fn acknowledge(&mut self, anyway: bool) -> Result<(), SessionError> {
        if self.published <= self.acked && !anyway {
            return Ok(());
        }
        let at = self.published;
        wire::status_update(at, at, at, replication::pg_now(), false, &mut self.out);
        self.writer
            .write_all(&self.out)
            .await
            .map_err(wire::WireError::from)?;
        self.writer.flush().await.map_err(wire::WireError::from)?;
        self.out.clear();
        self.acked = at;
        self.status_at = Instant::now();
        Ok(())
    }
}

/// What one publish round did.
#[derive(Debug, Default)]
struct Round {
    /// The last transaction whose changes are all handled: acknowledge it.
    done: Option<usize>,
    /// Where the first transaction not done stopped.
    resume: Option<Resume>,
    /// How long to wait before reading again (rate limited).
    wait: Option<Duration>,
}

/// One submitted change: its transaction, its place in it, and what the
/// log names it by if it is refused.
struct Owner {
    transaction: usize,
    index: usize,
    id: String,
    channel: String,
}

/// Publishes the transactions' events, one group each, skipping what
/// `resume` says is already published.
async fn publish(
    node: &Node,
    transactions: &[Transaction],
    resume: Option<Resume>,
    status: &Status,
) -> Result<Round, SessionError> {
    let count = transactions.len();
    let mut commits = Vec::with_capacity(count);
    let mut owners = Vec::new();
    let mut groups = Vec::new();
    for (t, transaction) in transactions.iter().enumerate() {
        commits.push(transaction.commit_lsn);
        let skip = resume
            .filter(|r| r.commit_lsn == transaction.commit_lsn)
            .map_or(0, |r| r.events);
        // Cloned: a round held back by the app's rate is published again
        // from these, the stream having moved on.
        for (index, event) in transaction.events.iter().cloned().enumerate().skip(skip) {
            owners.push(Owner {
                transaction: t,
                index,
                id: event.id.clone().unwrap_or_default(),
                channel: event.channel.clone(),
            });
            groups.push(vec![event]);
        }
    }
    let report = ingest::submit(node, Caller::Source, groups).await;
    if let Some(error) = report.unavailable {
        return Err(error.into());
    }
    let (blocked, wait) = sort_outcomes(&report.groups, &owners, status);
    Ok(match blocked {
        Some(owner) => Round {
            done: owner.transaction.checked_sub(1),
            resume: commits.get(owner.transaction).map(|&commit_lsn| Resume {
                commit_lsn,
                events: owner.index,
            }),
            wait: Some(wait.unwrap_or(Duration::from_millis(100))),
        },
        None => Round {
            done: count.checked_sub(1),
            ..Round::default()
        },
    })
}

/// Counts the outcomes and logs refusals; answers the first change held
/// back (by the app's rate) and how long to wait for its tokens.
fn sort_outcomes<'o>(
    outcomes: &[Vec<Outcome>],
    owners: &'o [Owner],
    status: &Status,
) -> (Option<&'o Owner>, Option<Duration>) {
    let (mut published, mut duplicates, mut refused) = (0, 0, 0);
    let mut blocked = None;
    let mut wait = None;
    for (outcomes, owner) in outcomes.iter().zip(owners) {
        for outcome in outcomes {
            match outcome {
                Outcome::Published(p) if p.duplicate => duplicates += 1,
                Outcome::Published(_) => published += 1,
                Outcome::Refused(Refusal::RateLimited { limited, .. }) => {
                    blocked.get_or_insert(owner);
                    wait = Some(limited.retry_after);
                }
                Outcome::NotAttempted(Skipped::GroupRefused) => {}
                Outcome::NotAttempted(_) => {
                    blocked.get_or_insert(owner);
                }
                Outcome::Refused(refusal) => {
                    refused += 1;
                    tracing::error!(id = %owner.id, channel = %owner.channel, reason = %refusal,
                        "a row change was refused by the publish pipeline and is passed");
                }
            }
        }
    }
    status.counted(published, duplicates, refused);
    (blocked, wait)
}
