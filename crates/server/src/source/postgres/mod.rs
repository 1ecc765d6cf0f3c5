//! The Postgres source: row changes of chosen tables become events, read
//! from a logical replication slot (`pgoutput`), with nothing lost and
//! nothing published twice.
//!
//! How it reads: SQL on an ordinary connection (`tokio-postgres`, pure
//! Rust), peeking the slot with `pg_logical_slot_peek_binary_changes` and
//! moving it with `pg_replication_slot_advance` once the transactions read
//! are published; `pgoutput`'s messages are decoded here (`pgoutput`).
//! Chosen over `pg_walstream` 0.9, whose default TLS pulls `aws-lc-rs` (a C
//! and cmake build) and whose other backend links libpq, and over
//! `pgwire-replication`, which is only the transport: the streaming
//! protocol's gain (push instead of a poll every `poll_interval`) did not
//! pay for a heavier tree on this 2-core build, and peek-then-advance
//! makes "acknowledge after publishing" a plain sequence of two queries.
//!
//! Guarantees:
//! - A transaction's changes are published in commit order, transactions
//!   in commit order; each change is its own ingest group, so a change the
//!   pipeline refuses (an event over a bound) does not take its neighbours
//!   with it. A refused change is logged at error level with its id (the
//!   commit LSN and its place in the transaction), its table and why, and
//!   counted (`chouquette_postgres_events_total{outcome="refused"}`), then
//!   passed: the slot cannot move past only part of the WAL.
//! - The slot is acknowledged only up to the last transaction all of whose
//!   changes are published (or refused); a crash before that re-reads them,
//!   and their idempotency ids (see `change`) make the broker answer
//!   "duplicate" instead of publishing again (Redis: within
//!   `[broker] dedup_window`; memory: while the channel's history holds
//!   them).
//! - The app's publish rate applies as backpressure: the source waits and
//!   reads the same changes again, going on inside a transaction where it
//!   stopped (a transaction larger than the app's burst gets through).
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
//! Memory: a read holds whole transactions, about `batch` changes, but a
//! single transaction larger than that is read whole.

mod change;
mod config;
mod lease;
mod pgoutput;
mod session;
mod status;
mod template;
mod value;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chouquette_core::ingest::{self, Caller, Outcome, Refusal, Skipped};
use chouquette_core::node::Node;

pub use change::ChangeError;
use change::Transaction;
pub use config::{PostgresSettings, TableSettings};
pub use lease::{Lease, LeaseError};
pub use pgoutput::DecodeError;
use pgoutput::lsn_text;
use session::Session;
pub use session::SessionError;
pub use status::{Status, Statuses};
pub use template::{Template, TemplateError};

use super::Source;
use crate::broker::redis::{Commands, backoff};
use crate::shutdown::Shutdown;

/// Seconds from the Unix epoch to Postgres' (2000-01-01 UTC).
const PG_EPOCH: f64 = 946_684_800.0;
/// How often the slot's lag is asked for.
const LAG_EVERY: Duration = Duration::from_secs(1);

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
        let mut lease = match &self.lease {
            Some(lease) => Some((lease, self.wait_for_lease(lease).await?)),
            None => None,
        };
        let session = Session::open(settings).await?;
        self.check_lag(&session).await?;
        self.status.streaming();
        tracing::info!(slot = %settings.slot, "postgres source streaming");
        let mut lag_at = Instant::now();
        let mut lease_at = Instant::now();
        let mut resume = None;
        loop {
            if let Some((lease, con)) = lease.as_mut()
                && lease_at.elapsed() >= lease.every()
            {
                if !lease.take(con).await? {
                    return Err(SessionError::LeaseLost);
                }
                lease_at = Instant::now();
            }
            if lag_at.elapsed() >= LAG_EVERY {
                self.check_lag(&session).await?;
                lag_at = Instant::now();
            }
            let transactions = session.peek(settings, settings.batch).await?;
            if transactions.is_empty() {
                self.status.lag_seconds(0.0);
                tokio::time::sleep(settings.poll_interval).await;
                continue;
            }
            let commits: Vec<(u64, i64)> = transactions
                .iter()
                .map(|t| (t.end_lsn, t.commit_micros))
                .collect();
            let round = publish(node, transactions, resume, &self.status).await?;
            resume = round.resume;
            if let Some(&(end_lsn, micros)) = round.done.and_then(|i| commits.get(i)) {
                session.advance(&settings.slot, &lsn_text(end_lsn)).await?;
                self.status.lag_seconds(seconds_since(micros));
            }
            if let Some(wait) = round.wait {
                // Never so long that the lease lapses meanwhile.
                let most = lease.as_ref().map_or(wait, |(l, _)| l.every());
                tokio::time::sleep(wait.min(most)).await;
            }
        }
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

/// Where a read held back by the app's rate stopped inside a transaction:
/// its first `events` changes are published, so reading it again skips
/// them instead of spending the app's tokens on duplicates (a transaction
/// larger than the app's burst would otherwise never get through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    commit_lsn: u64,
    events: usize,
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
    transactions: Vec<Transaction>,
    resume: Option<Resume>,
    status: &Status,
) -> Result<Round, SessionError> {
    let count = transactions.len();
    let mut commits = Vec::with_capacity(count);
    let mut owners = Vec::new();
    let mut groups = Vec::new();
    for (t, transaction) in transactions.into_iter().enumerate() {
        commits.push(transaction.commit_lsn);
        let skip = resume
            .filter(|r| r.commit_lsn == transaction.commit_lsn)
            .map_or(0, |r| r.events);
        for (index, event) in transaction.events.into_iter().enumerate().skip(skip) {
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
