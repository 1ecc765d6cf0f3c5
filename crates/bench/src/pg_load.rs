//! The write load of `--scenario postgres`: writer tasks, each on its own
//! connection, doing single-row transactions (an INSERT, then an UPDATE of
//! the row it inserted last, in turn) at a share of the target rate. Every
//! change carries a number unique to the run (`seq`) and the writer's clock
//! read just before the statement is sent (`t_ns`; a single statement
//! commits when it ends, so this is the commit time to within the
//! statement's own few µs). Subscribers count changes by `seq`, which is how
//! lost and doubled changes are found.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Statement};

use crate::wire::unix_nanos;

/// The table written to, created before the gateway starts.
pub const TABLE: &str = "public.bench_rows";

/// Creates [`TABLE`] (the default replica identity: updates carry no old row).
pub const CREATE_TABLE: &str = "CREATE TABLE public.bench_rows (
    id bigint PRIMARY KEY,
    seq bigint NOT NULL,
    t_ns bigint NOT NULL,
    writer integer NOT NULL,
    payload text NOT NULL)";

const INSERT: &str =
    "INSERT INTO public.bench_rows (id, seq, t_ns, writer, payload) VALUES ($1, $1, $2, $3, $4)";
const UPDATE: &str = "UPDATE public.bench_rows SET seq = $1, t_ns = $2 WHERE id = $3";

/// A payload of the size of a small business row.
const PAYLOAD: &str = "status=available;power=22kW;connector=type2;site=bench-0000000000";

/// When the load runs and the measured window within it, Unix ns.
#[derive(Debug, Clone, Copy)]
pub struct LoadWindow {
    /// The load starts (the warmup before the window).
    pub load_start_ns: u64,
    /// The measured window starts.
    pub start_ns: u64,
    /// The window and the load end.
    pub end_ns: u64,
}

impl LoadWindow {
    /// Whether a change made at `t_ns` is measured.
    pub fn holds(&self, t_ns: u64) -> bool {
        t_ns >= self.start_ns && t_ns < self.end_ns
    }
}

/// What one writer did.
#[derive(Debug, Default)]
pub struct Written {
    /// The `seq` of every committed change.
    pub committed: Vec<u64>,
    /// Of those, made within the window.
    pub in_window: u64,
    /// Statements that failed.
    pub errors: u64,
}

/// How one writer writes.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Its share of the target rate, in changes per second (0: as fast as
    /// it can).
    pub rate: f64,
    /// Changes per transaction: 1 sends each statement on its own (it
    /// commits when it ends); more wraps them in BEGIN ... COMMIT, as
    /// pgbench's TPC-B-like script does with its four.
    pub tx_rows: usize,
    /// The last `seq` to write: the writer stops before a higher one (a
    /// backlog of a given size); `u64::MAX` for none.
    pub last_seq: u64,
}

/// Runs writer `index` until the load ends (or `plan.last_seq` is
/// passed). `next_seq` is shared by every writer, so numbers are unique
/// and dense from 1. A transaction's changes all carry the clock read
/// before their own statement, so with `tx_rows > 1` the measured lag
/// includes the wait for the rest of the transaction.
pub async fn writer(
    mut client: Client,
    index: i32,
    plan: Plan,
    window: LoadWindow,
    next_seq: Arc<AtomicU64>,
) -> anyhow::Result<Written> {
    let insert = client.prepare(INSERT).await.context("prepare insert")?;
    let update = client.prepare(UPDATE).await.context("prepare update")?;
    let statements = Statements { insert, update };
    let tx_rows = plan.tx_rows.max(1);
    let mut written = Written::default();
    let mut rows = Rows::default();
    let started = Instant::now();
    for tx_no in 0u64.. {
        if let Some(due) = due(started, plan.rate / tx_rows as f64, tx_no) {
            tokio::time::sleep_until(due).await;
        }
        if unix_nanos() >= window.end_ns {
            break;
        }
        let mut changes = Vec::with_capacity(tx_rows);
        for _ in 0..tx_rows {
            let seq = next_seq.fetch_add(1, Ordering::Relaxed);
            if seq <= plan.last_seq {
                changes.push(seq);
            }
        }
        if changes.is_empty() {
            break;
        }
        let done = if tx_rows == 1 {
            rows.write(&client, &statements, index, changes[0]).await
        } else {
            rows.write_transaction(&mut client, &statements, index, &changes)
                .await
        };
        match done {
            Ok(stamps) => {
                written.committed.extend_from_slice(&changes);
                written.in_window += stamps.iter().filter(|t| window.holds(**t)).count() as u64;
            }
            Err(_) => written.errors += changes.len() as u64,
        }
    }
    Ok(written)
}

/// The writer's prepared statements.
struct Statements {
    insert: Statement,
    update: Statement,
}

/// Which change a writer makes next: an INSERT, then an UPDATE of the row
/// it inserted last, in turn.
#[derive(Default)]
struct Rows {
    made: u64,
    last_insert: Option<i64>,
}

/// One change: its row id, its clock stamp and, for an UPDATE, the row it
/// updates.
struct Change {
    id: i64,
    t_ns: i64,
    updates: Option<i64>,
}

impl Rows {
    /// Change `seq`, stamped now.
    fn next(&mut self, seq: u64) -> Change {
        let updates = self.last_insert.filter(|_| self.made % 2 == 1);
        self.made += 1;
        let id = seq as i64;
        if updates.is_none() {
            self.last_insert = Some(id);
        }
        Change {
            id,
            t_ns: unix_nanos() as i64,
            updates,
        }
    }

    /// Change `seq` as a statement of its own; its stamp.
    async fn write(
        &mut self,
        client: &Client,
        statements: &Statements,
        index: i32,
        seq: u64,
    ) -> Result<Vec<u64>, tokio_postgres::Error> {
        Ok(vec![self.write_one(client, statements, index, seq).await?])
    }

    /// Changes `seqs` in one transaction; their stamps.
    async fn write_transaction(
        &mut self,
        client: &mut Client,
        statements: &Statements,
        index: i32,
        seqs: &[u64],
    ) -> Result<Vec<u64>, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        let mut stamps = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            stamps.push(self.write_one(&tx, statements, index, seq).await?);
        }
        tx.commit().await?;
        Ok(stamps)
    }

    /// Sends change `seq` on `client` (a connection or a transaction); its
    /// stamp.
    async fn write_one(
        &mut self,
        client: &impl GenericClient,
        statements: &Statements,
        index: i32,
        seq: u64,
    ) -> Result<u64, tokio_postgres::Error> {
        let change = self.next(seq);
        match change.updates {
            Some(row) => {
                let params: [&(dyn ToSql + Sync); 3] = [&change.id, &change.t_ns, &row];
                client.execute(&statements.update, &params).await?
            }
            None => {
                let params: [&(dyn ToSql + Sync); 4] = [&change.id, &change.t_ns, &index, &PAYLOAD];
                client.execute(&statements.insert, &params).await?
            }
        };
        Ok(change.t_ns as u64)
    }
}

/// When change `k` of a writer paced at `rate` is due; `None` unpaced. A
/// writer that fell behind catches up at full speed.
fn due(started: Instant, rate: f64, k: u64) -> Option<Instant> {
    (rate > 0.0).then(|| started + Duration::from_secs_f64(k as f64 / rate))
}

/// Most `seq` a subscriber keeps a count for; above it a change is counted
/// as unexpected (the writers number from 1 and never come near it: 60 s at
/// 100,000 changes/s is 6 M). It bounds a tally at 64 MiB.
pub const MAX_SEQ: u64 = 64 << 20;

/// How many times one subscriber received each change, indexed by `seq`.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    counts: Vec<u8>,
    /// Changes received with a `seq` above [`MAX_SEQ`].
    pub beyond: u64,
}

impl Tally {
    /// Counts one receipt of change `seq` (saturating at 255).
    pub fn add(&mut self, seq: u64) {
        if seq > MAX_SEQ {
            self.beyond += 1;
            return;
        }
        let at = seq as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] = self.counts[at].saturating_add(1);
    }

    fn count(&self, seq: u64) -> u8 {
        usize::try_from(seq)
            .ok()
            .and_then(|at| self.counts.get(at).copied())
            .unwrap_or(0)
    }
}

/// How far one subscriber's receipts are from "every committed change
/// exactly once".
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Exactness {
    /// Committed changes not received by the end of the wait after the
    /// load (late when the wait says "NOT within", else lost).
    pub lost: u64,
    /// Committed changes received more than once (each counted once).
    pub duplicated: u64,
    /// Changes received that no writer saw commit.
    pub unexpected: u64,
}

impl Exactness {
    /// Sums two subscribers' figures.
    pub fn plus(self, other: Exactness) -> Exactness {
        Exactness {
            lost: self.lost + other.lost,
            duplicated: self.duplicated + other.duplicated,
            unexpected: self.unexpected + other.unexpected,
        }
    }
}

/// Compares a subscriber's tally with the committed changes (`committed`
/// sorted, without repeats).
pub fn check(committed: &[u64], tally: &Tally) -> Exactness {
    let mut result = Exactness {
        unexpected: tally.beyond,
        ..Exactness::default()
    };
    for &seq in committed {
        match tally.count(seq) {
            0 => result.lost += 1,
            1 => {}
            _ => result.duplicated += 1,
        }
    }
    let received = tally.counts.iter().filter(|c| **c > 0).count() as u64;
    let committed_received = committed.len() as u64 - result.lost;
    result.unexpected += received - committed_received.min(received);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(seqs: &[u64]) -> Tally {
        let mut t = Tally::default();
        for &s in seqs {
            t.add(s);
        }
        t
    }

    #[test]
    fn every_change_once_is_exact() {
        let t = tally(&[3, 1, 2]);
        assert_eq!(check(&[1, 2, 3], &t), Exactness::default());
    }

    #[test]
    fn missing_doubled_and_stray_changes_are_each_counted() {
        let t = tally(&[1, 2, 2, 2, 9, MAX_SEQ + 1]);
        let got = check(&[1, 2, 3, 4], &t);
        assert_eq!(
            got,
            Exactness {
                lost: 2,
                duplicated: 1,
                unexpected: 2
            }
        );
    }

    #[test]
    fn a_paced_writer_spreads_its_changes_over_time() {
        let start = Instant::now();
        assert_eq!(due(start, 0.0, 5), None);
        let fifth = due(start, 100.0, 5).expect("paced");
        assert_eq!(fifth - start, Duration::from_millis(50));
    }
}
