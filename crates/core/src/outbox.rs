//! A connection's bounded outbound queue.
//!
//! Producers (the hub, on any thread) never wait: `push` either queues or
//! reports the queue full. A full queue is a *slow consumer*: the queue is
//! emptied (its memory released at once), marked overflowed, and the
//! connection is closed with a reason so the client reconnects and resumes
//! with `since`. Nothing is dropped silently and one slow client never delays
//! the others. An idle outbox holds no allocation.
//!
//! While the connection's task is parked (not [`Outbox::hold`]ing it) and
//! nothing waits in the queue, a live event need not be queued at all: the
//! fan-out admits it against its subscription's [`Marks`] and writes it
//! straight into the transport's [`DirectSocket`], on the publishing thread,
//! without waking the task. It is queued (and the task woken) only when the
//! socket would block, the task is busy, or the frame is not a plain event
//! of a subscription that is live (recovering, renumbered, presence, calls).
//! Order holds because a direct write needs an empty queue and a parked
//! task, both read under the queue's lock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;
use tokio::sync::Notify;

use crate::era::{Era, Meeting};
use crate::hub::RENUMBERED;
use crate::presence::PRESENCE;

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

    /// Whether a message it took only part of ([`Sent::Partly`]) is still
    /// to be finished by the connection's task.
    fn unfinished(&self) -> bool;
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
    /// Written into the socket by the pusher (see [`DirectSocket`]).
    Written,
    /// Not written: its subscription had seen it (or it was of a stale
    /// broker era).
    Duplicate,
}

/// The state of the queue as seen by its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Open.
    Open,
    /// Overflowed: close the connection as a slow consumer.
    Overflowed,
}

/// Where one subscription's live events stand: its dedup cursor, kept in
/// the outbox so that the fan-out can admit an event where it writes it.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The subscription's slot tag.
    tag: u32,
    /// The broker era `last` counts in.
    era: Era,
    /// The last offset admitted; [`RECOVERING`] admits nothing.
    last: u64,
}

impl Mark {
    /// Whether the event at `offset`, delivered in `era`, is new to this
    /// cursor, without moving it: an event of an earlier era, or any event
    /// while recovering, is seen. (A later era is the caller's to restart.)
    fn judge(&self, era: Era, offset: u64) -> Verdict {
        let stale = self.era.meet(era) == Meeting::Stale;
        if stale || self.last == RECOVERING || offset <= self.last {
            Verdict::Seen
        } else {
            Verdict::New
        }
    }
}

/// `last` of a subscription whose recovery has not said where history
/// ended: no live event is admitted yet.
pub const RECOVERING: u64 = u64::MAX;

/// What becomes of a live event for a subscription, by its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: the cursor moved to it.
    New,
    /// Already seen, or of a stale broker era.
    Seen,
    /// No such subscription (it ended).
    Unknown,
}

/// The connection's subscriptions' cursors, by slot tag. Most connections
/// hold one subscription: its cursor sits inline, in the outbox, where the
/// fan-out reads it without another allocation to fetch.
#[derive(Debug, Default)]
pub struct Marks(SmallVec<[Mark; 1]>);

impl Marks {
    fn find(&mut self, tag: u32) -> Option<&mut Mark> {
        self.0.iter_mut().find(|m| m.tag == tag)
    }

    /// Whether the event at `offset`, delivered in `era`, is new to the
    /// subscription tagged `tag`, advancing its cursor if so. A later era
    /// restarts the cursor: offsets may have restarted with a new epoch.
    pub fn admit(&mut self, tag: u32, era: Era, offset: u64) -> Verdict {
        let Some(mark) = self.find(tag) else {
            return Verdict::Unknown;
        };
        if mark.era.meet(era) == Meeting::Later {
            mark.era = era;
            mark.last = 0;
        }
        let verdict = mark.judge(era, offset);
        if verdict == Verdict::New {
            mark.last = offset;
        }
        verdict
    }

    /// Moves the cursor of `tag` to `last` (recovery said where history
    /// ended, or the channel was numbered anew).
    pub fn set(&mut self, tag: u32, last: u64) {
        if let Some(mark) = self.find(tag) {
            mark.last = last;
        }
    }

    /// The cursor of `tag`, if it is tracked.
    pub fn last(&self, tag: u32) -> Option<u64> {
        self.0.iter().find(|m| m.tag == tag).map(|m| m.last)
    }
}

#[derive(Debug)]
struct Inner {
    queue: VecDeque<Outbound>,
    overflowed: bool,
    closed: bool,
    signals: Signals,
    /// The connection's task is running (not parked): only it may write.
    held: bool,
    marks: Marks,
    socket: Option<std::sync::Arc<dyn DirectSocket>>,
    /// The waker of a connection parked without a task (see
    /// [`Outbox::park_until_ready`]), woken with the notification.
    sleeper: Option<Waker>,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            queue: VecDeque::new(),
            overflowed: false,
            closed: false,
            signals: 0,
            held: true,
            marks: Marks::default(),
            socket: None,
            sleeper: None,
        }
    }
}

impl Inner {
    /// Writes `item` into the socket if it may go now (see the module
    /// doc); `None` when it must be queued.
    fn try_direct(&mut self, item: &Outbound) -> Option<Pushed> {
        if self.held || !self.queue.is_empty() {
            return None;
        }
        let socket = self.socket.as_ref()?;
        if item.slot == NO_SLOT || item.offset == RENUMBERED || item.offset == PRESENCE {
            return None;
        }
        // Only a recovered subscription in this era decides here; the
        // session decides the rest when it drains the queue.
        let mark = self.marks.find(item.slot)?;
        if mark.last == RECOVERING || mark.era.meet(item.era) == Meeting::Later {
            return None;
        }
        if mark.judge(item.era, item.offset) == Verdict::Seen {
            return Some(Pushed::Duplicate);
        }
        match socket.try_send(&item.frame) {
            Sent::Whole => {
                mark.last = item.offset;
                Some(Pushed::Written)
            }
            Sent::Partly => {
                mark.last = item.offset;
                // The task finishes the frame before anything else.
                self.held = true;
                Some(Pushed::Written)
            }
            Sent::Not => None,
        }
    }
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

    /// Writes a frame into the socket, if it may go now (see the module
    /// doc), or else queues it; never waits.
    pub fn push(&self, item: Outbound) -> Pushed {
        let mut inner = self.lock();
        if inner.overflowed || inner.closed {
            return Pushed::Refused;
        }
        if let Some(done) = inner.try_direct(&item) {
            if done == Pushed::Written && inner.held {
                self.wake(inner);
            }
            return done;
        }
        if inner.queue.len() >= self.capacity {
            inner.overflowed = true;
            inner.queue = VecDeque::new();
            self.wake(inner);
            return Pushed::Overflowed;
        }
        let was_empty = inner.queue.is_empty();
        inner.queue.push_back(item);
        if was_empty {
            self.wake(inner);
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
        self.wake(inner);
    }

    /// Wakes the connection, once the lock is let go: its task, or the
    /// connection parked without one.
    fn wake(&self, mut inner: std::sync::MutexGuard<'_, Inner>) {
        let sleeper = inner.sleeper.take();
        drop(inner);
        self.notify.notify_one();
        if let Some(waker) = sleeper {
            waker.wake();
        }
    }

    /// Takes the signals raised since the last call.
    pub fn take_signals(&self) -> Signals {
        std::mem::take(&mut self.lock().signals)
    }

    /// Hands up to `max` queued frames to `each`, in order, and says whether
    /// the queue overflowed. `each` runs under the queue's lock: keep it short.
    pub fn drain(&self, max: usize, mut each: impl FnMut(Outbound)) -> State {
        self.drain_counted(max, |item, _| each(item)).0
    }

    /// Like [`Outbox::drain`], handing `each` the subscriptions' [`Marks`]
    /// too, and saying how many frames were waiting (read under the same
    /// lock, for the queue-depth histogram).
    pub fn drain_counted(
        &self,
        max: usize,
        mut each: impl FnMut(Outbound, &mut Marks),
    ) -> (State, usize) {
        let mut inner = self.lock();
        if inner.overflowed {
            return (State::Overflowed, 0);
        }
        let depth = inner.queue.len();
        let n = depth.min(max);
        let Inner { queue, marks, .. } = &mut *inner;
        queue.drain(..n).for_each(|item| each(item, marks));
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

    /// Refuses further frames (the connection is going away), and lets go
    /// of its socket.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.queue = VecDeque::new();
        inner.socket = None;
        inner.sleeper = None;
    }

    /// Lets the fan-out write live events into `socket` while the task is
    /// parked.
    pub fn attach(&self, socket: std::sync::Arc<dyn DirectSocket>) {
        let mut inner = self.lock();
        if !inner.closed {
            inner.socket = Some(socket);
        }
    }

    /// The connection's task runs: from now until [`Outbox::park`], only
    /// it writes to the socket, and events are queued.
    pub fn hold(&self) {
        let mut inner = self.lock();
        inner.held = true;
        inner.sleeper = None;
    }

    /// The connection's task waits: events may be written into the socket
    /// by the fan-out while nothing is queued.
    pub fn park(&self) {
        self.lock().held = false;
    }

    /// Parks the outbox like [`Outbox::park`] for a connection that waits
    /// without a task: `waker` is woken by the next notification. True (and
    /// nothing kept) when the connection has something to do already:
    /// frames queued, signals raised, an overflow.
    pub fn park_until_ready(&self, waker: &Waker) -> bool {
        let mut inner = self.lock();
        inner.held = false;
        let unfinished = inner.socket.as_ref().is_some_and(|s| s.unfinished());
        if !inner.queue.is_empty() || inner.signals != 0 || inner.overflowed || unfinished {
            return true;
        }
        inner.sleeper = Some(waker.clone());
        false
    }

    /// Starts tracking the cursor of the subscription tagged `tag`, in
    /// `era`; it admits nothing until [`Marks::set`] says where recovery
    /// ended.
    pub fn track(&self, tag: u32, era: Era) {
        let mut inner = self.lock();
        inner.marks.0.retain(|m| m.tag != tag);
        inner.marks.0.push(Mark {
            tag,
            era,
            last: RECOVERING,
        });
    }

    /// Stops tracking `tag`, returning its last cursor.
    pub fn untrack(&self, tag: u32) -> Option<u64> {
        let mut inner = self.lock();
        let marks = &mut inner.marks.0;
        let i = marks.iter().position(|m| m.tag == tag)?;
        let last = marks.swap_remove(i).last;
        if marks.is_empty() {
            *marks = SmallVec::new();
        }
        Some(last)
    }

    /// Calls `f` with the subscriptions' cursors, under the queue's lock.
    pub fn with_marks<R>(&self, f: impl FnOnce(&mut Marks) -> R) -> R {
        f(&mut self.lock().marks)
    }

    /// Resolves when frames may be waiting (or the queue overflowed).
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::era::EraClock;

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

    /// A socket that takes what it is told to, and keeps what it took.
    #[derive(Debug)]
    struct Taker {
        answer: Mutex<Sent>,
        took: Mutex<Vec<u64>>,
    }

    impl DirectSocket for Taker {
        fn try_send(&self, message: &Bytes) -> Sent {
            let answer = *self.answer.lock().expect("not poisoned");
            if answer != Sent::Not {
                let offset = std::str::from_utf8(message).expect("utf-8");
                let offset = offset.parse().expect("an offset");
                self.took.lock().expect("not poisoned").push(offset);
            }
            answer
        }

        fn unfinished(&self) -> bool {
            *self.answer.lock().expect("not poisoned") == Sent::Partly
        }
    }

    fn event(tag: u32, era: Era, offset: u64) -> Outbound {
        Outbound {
            frame: Bytes::from(offset.to_string()),
            slot: tag,
            era,
            offset,
            received: Instant::now(),
        }
    }

    /// An outbox whose task is parked, with one subscription (tag 7)
    /// recovered up to offset 10, and its socket.
    fn parked() -> (Outbox, std::sync::Arc<Taker>) {
        let outbox = Outbox::new(8);
        let socket = std::sync::Arc::new(Taker {
            answer: Mutex::new(Sent::Whole),
            took: Mutex::new(Vec::new()),
        });
        outbox.attach(socket.clone());
        outbox.track(7, Era::default());
        outbox.with_marks(|m| m.set(7, 10));
        outbox.park();
        (outbox, socket)
    }

    fn took(socket: &Taker) -> Vec<u64> {
        socket.took.lock().expect("not poisoned").clone()
    }

    #[test]
    fn a_parked_task_lets_the_pusher_write_new_events_once() {
        let (outbox, socket) = parked();
        let era = Era::default();
        assert_eq!(outbox.push(event(7, era, 11)), Pushed::Written);
        assert_eq!(outbox.push(event(7, era, 11)), Pushed::Duplicate);
        assert_eq!(outbox.push(event(7, era, 9)), Pushed::Duplicate);
        assert_eq!(outbox.push(event(7, era, 12)), Pushed::Written);
        assert_eq!(took(&socket), vec![11, 12]);
        assert_eq!(outbox.with_marks(|m| m.last(7)), Some(12));
        assert!(outbox.is_empty());
    }

    #[test]
    fn what_is_not_a_live_event_of_a_recovered_subscription_is_queued() {
        let era = Era::default();
        let later = EraClock::default().advance();
        let cases = [
            (event(8, era, 11), "recovering"),
            (event(9, era, 11), "unknown tag"),
            (event(7, later, 1), "later era"),
            (event(NO_SLOT, era, 11), "no subscription"),
            (event(7, era, PRESENCE), "presence"),
            (event(7, era, RENUMBERED), "renumbered"),
        ];
        for (item, case) in cases {
            let (outbox, socket) = parked();
            outbox.track(8, era);
            assert_eq!(outbox.push(item), Pushed::Queued, "{case}");
            assert!(took(&socket).is_empty(), "{case}");
        }
    }

    #[test]
    fn a_held_task_or_a_waiting_queue_keeps_the_order() {
        let (outbox, socket) = parked();
        let era = Era::default();
        outbox.hold();
        assert_eq!(outbox.push(event(7, era, 11)), Pushed::Queued);
        outbox.park();
        // 11 waits in the queue: 12 must not overtake it.
        assert_eq!(outbox.push(event(7, era, 12)), Pushed::Queued);
        assert!(took(&socket).is_empty());
        let mut admitted = Vec::new();
        outbox.drain_counted(10, |item, marks| {
            if marks.admit(item.slot, item.era, item.offset) == Verdict::New {
                admitted.push(item.offset);
            }
        });
        assert_eq!(admitted, vec![11, 12]);
        assert_eq!(outbox.push(event(7, era, 13)), Pushed::Written);
        assert_eq!(took(&socket), vec![13]);
    }

    #[tokio::test]
    async fn a_socket_that_would_block_or_took_a_part_wakes_the_task() {
        let (outbox, socket) = parked();
        let era = Era::default();
        *socket.answer.lock().expect("not poisoned") = Sent::Partly;
        assert_eq!(outbox.push(event(7, era, 11)), Pushed::Written);
        // The task must finish the frame: it is woken, and holds the socket.
        outbox.ready().await;
        assert_eq!(outbox.push(event(7, era, 12)), Pushed::Queued);
        let (outbox, socket) = parked();
        *socket.answer.lock().expect("not poisoned") = Sent::Not;
        assert_eq!(outbox.push(event(7, era, 11)), Pushed::Queued);
        outbox.ready().await;
        assert_eq!(
            outbox.with_marks(|m| m.last(7)),
            Some(10),
            "not admitted yet"
        );
    }

    #[test]
    fn a_closed_outbox_lets_go_of_its_socket() {
        let (outbox, socket) = parked();
        assert_eq!(std::sync::Arc::strong_count(&socket), 2);
        outbox.close();
        assert_eq!(std::sync::Arc::strong_count(&socket), 1);
        assert_eq!(outbox.untrack(7), Some(10));
        assert_eq!(outbox.untrack(7), None);
    }

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_connection_parked_without_a_task_is_woken_by_what_would_wake_its_task() {
        let woken =
            |count: &std::sync::Arc<Count>| count.0.load(std::sync::atomic::Ordering::SeqCst);
        let (outbox, socket) = parked();
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        assert!(!outbox.park_until_ready(&waker), "nothing to do: parked");
        // Written into the socket: no reason to wake.
        assert_eq!(outbox.push(event(7, Era::default(), 11)), Pushed::Written);
        assert_eq!(woken(&count), 0);
        // The socket is full: queued, and the connection woken once.
        *socket.answer.lock().expect("not poisoned") = Sent::Not;
        assert_eq!(outbox.push(event(7, Era::default(), 12)), Pushed::Queued);
        assert_eq!(outbox.push(event(7, Era::default(), 13)), Pushed::Queued);
        assert_eq!(woken(&count), 1);
        assert!(outbox.park_until_ready(&waker), "frames wait: not parked");

        // A signal wakes it, and a frame left half written keeps it awake.
        let (outbox, socket) = parked();
        assert!(!outbox.park_until_ready(&waker));
        outbox.signal(SIGNAL_SWITCHES);
        assert_eq!(woken(&count), 2);
        assert!(outbox.park_until_ready(&waker), "a signal waits");
        outbox.take_signals();
        *socket.answer.lock().expect("not poisoned") = Sent::Partly;
        assert!(outbox.park_until_ready(&waker), "a frame to finish");

        // Once the task holds the outbox again, the parked waker is let go.
        let (outbox, _socket) = parked();
        assert!(!outbox.park_until_ready(&waker));
        outbox.hold();
        outbox.signal(SIGNAL_SWITCHES);
        assert_eq!(woken(&count), 2);
    }
}
