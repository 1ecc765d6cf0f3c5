//! A connection's bounded outbound queue.
//!
//! Producers (the hub, on any thread) never wait: `push` either queues or
//! reports the queue full. A full queue is a *slow consumer*: the queue is
//! emptied (its memory released at once), marked overflowed, and the
//! connection is closed with a reason so the client reconnects and resumes
//! with `since`. Nothing is dropped silently and one slow client never delays
//! the others. An idle outbox holds no allocation.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::era::Era;

/// `slot` value for frames that are not a channel's event (no dedup).
pub const NO_SLOT: u32 = u32::MAX;

/// A control signal to the connection, beside its frames (see
/// [`Outbox::signal`]): bits, so several may wait at once.
pub type Signals = u8;
/// Re-check every subscription against the kill switches.
pub const SIGNAL_SWITCHES: Signals = 1;
/// Close the connection (an operator's disconnect).
pub const SIGNAL_DISCONNECT: Signals = 2;
/// The broker is unreachable: tell the client `reset` `broker_unavailable`.
pub const SIGNAL_BROKER_LOST: Signals = 4;
/// The broker is back: tell the client `reset` `broker_restored`.
pub const SIGNAL_BROKER_RESTORED: Signals = 8;
/// Commands addressed to the connection's user wait in its mailbox (see
/// [`crate::user_mail`]); the driver hands them to the session.
pub const SIGNAL_USER: Signals = 16;

/// What [`DirectSocket::try_send`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The whole frame went to the socket.
    Whole,
    /// Part of it went; the socket keeps the rest, and the connection's
    /// task must be woken to finish it before it writes anything else.
    Partly,
    /// Nothing went: the socket would block, failed, or still holds an
    /// unfinished frame. The message is queued instead.
    Not,
}

/// A connection's socket as the fan-out sees it: a place to write one live
/// message, framed by the transport, without waiting and without waking the
/// connection's task. Only called while the task is parked (see
/// [`Outbox::hold`]) and its queue is empty, under the outbox's lock, so it
/// never interleaves with the task's own writes.
pub trait DirectSocket: Send + Sync + std::fmt::Debug {
    /// Frames `message` and writes as much of it as the socket takes now.
    fn try_send(&self, message: &Bytes) -> Sent;
}

/// One queued frame.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The serialized message, shared with other subscribers.
    pub frame: Bytes,
    /// The session's subscription slot it was queued for ([`NO_SLOT`] if none).
    pub slot: u32,
    /// The broker era it was delivered in (see [`crate::era`]).
    pub era: Era,
    /// The event's offset in its channel (0 if none).
    pub offset: u64,
    /// When its publication reached this node, for the publish-to-write
    /// latency the transport records once the frame is written.
    pub received: Instant,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// The queue was full: it is now overflowed and the connection must close.
    Overflowed,
    /// Dropped: the queue had already overflowed or is closed.
    Refused,
}

/// The state of the queue as seen by its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Open.
    Open,
    /// Overflowed: close the connection as a slow consumer.
    Overflowed,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Outbound>,
    overflowed: bool,
    closed: bool,
    signals: Signals,
}

/// A bounded multi-producer, single-consumer frame queue.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    capacity: usize,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push or clear), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame without waiting.
    pub fn push(&self, item: Outbound) -> Pushed {
        let mut inner = self.lock();
        if inner.overflowed || inner.closed {
            return Pushed::Refused;
        }
        if inner.queue.len() >= self.capacity {
            inner.overflowed = true;
            inner.queue = VecDeque::new();
            drop(inner);
            self.notify.notify_one();
            return Pushed::Overflowed;
        }
        let was_empty = inner.queue.is_empty();
        inner.queue.push_back(item);
        drop(inner);
        if was_empty {
            self.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Raises control signals and wakes the connection. Signals never take
    /// a queue slot, so a full outbox cannot lose them.
    pub fn signal(&self, signals: Signals) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        inner.signals |= signals;
        drop(inner);
        self.notify.notify_one();
    }

    /// Takes the signals raised since the last call.
    pub fn take_signals(&self) -> Signals {
        std::mem::take(&mut self.lock().signals)
    }

    /// Hands up to `max` queued frames to `each`, in order, and says whether
    /// the queue overflowed. `each` runs under the queue's lock: keep it short.
    pub fn drain(&self, max: usize, each: impl FnMut(Outbound)) -> State {
        self.drain_counted(max, each).0
    }

    /// Like [`Outbox::drain`], also saying how many frames were waiting
    /// (read under the same lock, for the queue-depth histogram).
    pub fn drain_counted(&self, max: usize, each: impl FnMut(Outbound)) -> (State, usize) {
        let mut inner = self.lock();
        if inner.overflowed {
            return (State::Overflowed, 0);
        }
        let depth = inner.queue.len();
        let n = depth.min(max);
        inner.queue.drain(..n).for_each(each);
        if inner.queue.is_empty() && inner.queue.capacity() > 64 {
            inner.queue = VecDeque::new();
        }
        (State::Open, depth)
    }

    /// Most frames it holds; an overflow discards this many plus the one
    /// that did not fit (counted as drops).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further frames (the connection is going away).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.queue = VecDeque::new();
    }

    /// Resolves when frames may be waiting (or the queue overflowed).
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(offset: u64) -> Outbound {
        Outbound {
            frame: Bytes::from_static(b"x"),
            slot: 0,
            era: Era::default(),
            offset,
            received: Instant::now(),
        }
    }

    #[test]
    fn overflow_is_reported_once_and_frees_the_queue() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(item(1)), Pushed::Queued);
        assert_eq!(outbox.push(item(2)), Pushed::Queued);
        assert_eq!(outbox.push(item(3)), Pushed::Overflowed);
        assert_eq!(outbox.push(item(4)), Pushed::Refused);
        assert_eq!(outbox.len(), 0);
        let mut out = Vec::new();
        assert_eq!(outbox.drain(10, |o| out.push(o)), State::Overflowed);
    }

    #[tokio::test]
    async fn drain_in_order_and_wake() {
        let outbox = std::sync::Arc::new(Outbox::new(10));
        outbox.signal(SIGNAL_SWITCHES);
        outbox.ready().await;
        assert_eq!(outbox.take_signals(), SIGNAL_SWITCHES);
        assert_eq!(outbox.take_signals(), 0);
        let o2 = outbox.clone();
        let waiter = tokio::spawn(async move { o2.ready().await });
        outbox.push(item(1));
        outbox.push(item(2));
        waiter.await.expect("woken");
        let mut out = Vec::new();
        assert_eq!(outbox.drain(1, |o| out.push(o)), State::Open);
        assert_eq!(outbox.drain(10, |o| out.push(o)), State::Open);
        assert_eq!(out.iter().map(|o| o.offset).collect::<Vec<_>>(), vec![1, 2]);
    }
}
