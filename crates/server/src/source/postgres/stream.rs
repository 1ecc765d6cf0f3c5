//! The reading half of a streaming session: frames off the replication
//! connection, decoded into transactions, handed to publishing in batches.
//!
//! Batches form by themselves: while publishing is busy with one batch, the
//! reader goes on decoding into the next, up to `max_events` events (a
//! transaction is never cut, so one larger than that is held whole); when
//! publishing is idle, each commit goes at once. Under load that makes
//! few, large ingest calls; when quiet, no added latency.
//!
//! Each batch carries the position that may be acknowledged once all its
//! transactions are published: the end of its last commit, or a keepalive's
//! position received after it outside a transaction (the server has sent
//! everything committed before that position, so nothing is skipped by
//! acknowledging it; the slot then keeps no WAL for tables it does not
//! publish).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::{Notify, mpsc};

use super::change::{Decoder, Transaction};
use super::session::SessionError;
use super::wire::{self, Frame, FrameReader, Replication};

/// Transactions decoded together, and what publishing them acknowledges.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Committed transactions that produced events, in commit order.
    pub transactions: Vec<Transaction>,
    /// The position to acknowledge once they are all published.
    pub end: u64,
}

/// What the reader tells publishing besides batches: the server asked for
/// a status update now.
#[derive(Debug, Default)]
pub(super) struct ReplyWanted {
    pub wanted: AtomicBool,
    pub wake: Notify,
}

/// Reads the stream until it fails, sending batches to `batches`.
pub(super) async fn read<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    decoder: &mut Decoder<'_>,
    batches: mpsc::Sender<Batch>,
    reply: &ReplyWanted,
    max_events: usize,
) -> Result<Infallible, SessionError> {
    let mut pending = Pending::default();
    loop {
        let ready = pending.ready();
        let full = pending.events >= max_events;
        tokio::select! {
            biased;
            permit = batches.reserve(), if ready => {
                let permit = permit.map_err(|_| SessionError::StreamEnded)?;
                permit.send(pending.take());
            }
            frame = reader.next(), if !full => {
                let mut frame = Some(frame?);
                // Everything already read goes into this batch.
                while let Some(f) = frame.take() {
                    pending.frame(f, decoder, reply)?;
                    if pending.events >= max_events {
                        break;
                    }
                    frame = reader.buffered()?;
                }
            }
        }
    }
}

/// The batch being filled.
#[derive(Debug, Default)]
struct Pending {
    batch: Batch,
    events: usize,
    /// The `end` of the last batch sent.
    sent: u64,
}

impl Pending {
    /// Whether there is something to hand over: events, or a position.
    fn ready(&self) -> bool {
        !self.batch.transactions.is_empty() || self.batch.end > self.sent
    }

    fn take(&mut self) -> Batch {
        self.sent = self.batch.end;
        self.events = 0;
        std::mem::replace(
            &mut self.batch,
            Batch {
                transactions: Vec::new(),
                end: self.sent,
            },
        )
    }

    fn frame(
        &mut self,
        frame: Frame,
        decoder: &mut Decoder<'_>,
        reply: &ReplyWanted,
    ) -> Result<(), SessionError> {
        match frame.tag {
            b'd' => match wire::replication(&frame.body)? {
                Replication::XLogData { data, .. } => self.data(&data, decoder)?,
                Replication::Keepalive { end, reply: asked } => {
                    if !decoder.in_transaction() {
                        self.batch.end = self.batch.end.max(end);
                    }
                    if asked {
                        reply.wanted.store(true, Ordering::Relaxed);
                        reply.wake.notify_one();
                    }
                }
            },
            b'E' => {
                return Err(
                    super::replication::ReplicationError::Server(wire::server_error(&frame.body)?)
                        .into(),
                );
            }
            b'c' => return Err(SessionError::StreamEnded),
            // Notices, parameter statuses: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn data(&mut self, data: &Bytes, decoder: &mut Decoder<'_>) -> Result<(), SessionError> {
        if let Some(transaction) = decoder.feed(data)? {
            self.batch.end = self.batch.end.max(transaction.end_lsn);
            if !transaction.events.is_empty() {
                self.events += transaction.events.len();
                self.batch.transactions.push(transaction);
            }
        }
        Ok(())
    }
}
