//! Parked connections: an idle WebSocket without a task.
//!
//! An idle connection's task is most of what it costs (its future holds the
//! session, the wire and the loop's `select!`, over a kilobyte). Where the
//! wire can be waited on without a future of its own (plain TCP: tokio keeps
//! a read waker per socket), the driver *parks* instead of waiting: the
//! connection's state moves into a [`Sleeper`], the task ends, and the first
//! of its sources to fire spawns a new task that goes on where the loop
//! stopped. The sources are those of the driver's `select!`:
//!
//! - the client: the socket's read readiness (tokio's `ScheduledIo` keeps
//!   the sleeper's waker);
//! - the outbox: it keeps the waker next to its queue and wakes it with the
//!   task's own notification;
//! - the next timer and the stop signal: the [`Parking`] lot, one per
//!   gateway, holds every parked connection by its next deadline; one task
//!   wakes those that are due, and all of them when the node stops.
//!
//! No wake-up is lost: a connection registers every source first, then lays
//! its state in the sleeper; a source that fired meanwhile has marked the
//! sleeper woken, and the connection goes on in the task it has instead of
//! parking. A waker that fires for a sleeper already resumed finds it empty
//! and does nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};
use std::time::Duration;

use chouquette_core::telemetry::prometheus::Family;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::shutdown::Shutdown;

const PARKED: Family = Family::gauge(
    "chouquette_connections_parked",
    "Idle WebSocket connections waiting without a task (plain TCP).",
);

/// The deadline of a connection with no timer: far enough never to come.
const NEVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A parked connection's place in the lot, to take it out on resuming.
pub(crate) type Ticket = (Instant, u64);

/// Every parked connection of a gateway, by its next deadline.
#[derive(Debug)]
pub(crate) struct Parking {
    entries: Mutex<Entries>,
    /// An entry came in ahead of the earliest: the lot's task waits anew.
    earlier: Notify,
}

#[derive(Debug, Default)]
struct Entries {
    next_id: u64,
    parked: BTreeMap<Ticket, Waker>,
    stopping: bool,
}

impl Parking {
    /// An empty lot; [`Parking::run`] must run for its deadlines to fire.
    pub(crate) fn new() -> Arc<Parking> {
        Arc::new(Parking {
            entries: Mutex::new(Entries::default()),
            earlier: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Every update is one insert or removal: a panic cannot leave the
        // map half changed.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks a connection until `deadline` (none: until another source
    /// wakes it): `None` when it must not park, the deadline being due or
    /// the node stopping.
    pub(crate) fn enter(&self, deadline: Option<Instant>, waker: &Waker) -> Option<Ticket> {
        let now = Instant::now();
        let at = deadline.unwrap_or(now + NEVER);
        if at <= now {
            return None;
        }
        let mut entries = self.lock();
        if entries.stopping {
            return None;
        }
        entries.next_id += 1;
        let ticket = (at, entries.next_id);
        let first = entries
            .parked
            .first_key_value()
            .is_none_or(|(t, _)| ticket < *t);
        entries.parked.insert(ticket, waker.clone());
        drop(entries);
        if first {
            self.earlier.notify_one();
        }
        Some(ticket)
    }

    /// Takes a resumed connection out (nothing if its deadline took it).
    pub(crate) fn leave(&self, ticket: Ticket) {
        self.lock().parked.remove(&ticket);
    }

    /// How many connections are parked.
    pub(crate) fn len(&self) -> usize {
        self.lock().parked.len()
    }

    /// Its gauge, for `/metrics`.
    pub(crate) fn render(&self, out: &mut String) {
        PARKED.render_value(out, self.len());
    }

    /// Wakes each parked connection at its deadline, and all of them once
    /// the node stops; returns then, refusing to park any more.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        loop {
            let first = self.lock().parked.first_key_value().map(|(t, _)| t.0);
            let first = first.unwrap_or_else(|| Instant::now() + NEVER);
            tokio::select! {
                () = shutdown.stopped() => break,
                () = self.earlier.notified() => {}
                () = sleep_until(first) => self.wake_due(Instant::now()),
            }
        }
        let all = {
            let mut entries = self.lock();
            entries.stopping = true;
            std::mem::take(&mut entries.parked)
        };
        all.into_values().for_each(Waker::wake);
    }

    /// Wakes (and takes out) the connections due at `now`.
    fn wake_due(&self, now: Instant) {
        let due = {
            let mut entries = self.lock();
            let later = entries.parked.split_off(&(now, u64::MAX));
            std::mem::replace(&mut entries.parked, later)
        };
        due.into_values().for_each(Waker::wake);
    }
}

/// What a sleeper holds: the parked state, once laid, and whether a source
/// fired.
#[derive(Debug)]
struct Slot<T> {
    state: Option<Box<T>>,
    woken: bool,
}

/// The waker of one parking: the first wake after the state is laid spawns
/// `resume` with it on the runtime.
pub(crate) struct Sleeper<T> {
    slot: Mutex<Slot<T>>,
    runtime: tokio::runtime::Handle,
    resume: fn(Box<T>),
}

impl<T> std::fmt::Debug for Sleeper<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleeper").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Sleeper<T> {
    /// A sleeper for state that `resume` takes up on the current runtime.
    pub(crate) fn new(resume: fn(Box<T>)) -> Arc<Sleeper<T>> {
        Arc::new(Sleeper {
            slot: Mutex::new(Slot {
                state: None,
                woken: false,
            }),
            runtime: tokio::runtime::Handle::current(),
            resume,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lays the state down: `Some` (the state back) when a source fired
    /// since the sleeper was made, and the caller must go on instead.
    pub(crate) fn lay(&self, state: Box<T>) -> Option<Box<T>> {
        let mut slot = self.lock();
        if slot.woken {
            return Some(state);
        }
        slot.state = Some(state);
        None
    }
}

impl<T: Send + 'static> Wake for Sleeper<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let state = {
            let mut slot = self.lock();
            slot.woken = true;
            slot.state.take()
        };
        if let Some(state) = state {
            // The runtime's context, whichever thread fired the waker (the
            // I/O driver, a fan-out, the lot's task).
            let _entered = self.runtime.enter();
            (self.resume)(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RESUMED: AtomicUsize = AtomicUsize::new(0);

    #[expect(
        clippy::boxed_local,
        reason = "a sleeper's resume takes its state boxed"
    )]
    fn count(state: Box<u32>) {
        RESUMED.fetch_add(*state as usize, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn a_wake_before_the_state_is_laid_hands_it_back_and_one_after_resumes_once() {
        let early = Sleeper::new(count);
        Waker::from(early.clone()).wake_by_ref();
        assert_eq!(early.lay(Box::new(1)).as_deref(), Some(&1));

        let sleeper = Sleeper::new(count);
        let waker = Waker::from(sleeper.clone());
        assert!(sleeper.lay(Box::new(10)).is_none());
        let before = RESUMED.load(Ordering::SeqCst);
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert_eq!(RESUMED.load(Ordering::SeqCst) - before, 10);
    }

    struct Flag(AtomicUsize);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_lot_wakes_at_deadlines_and_everyone_at_the_stop() {
        let (trigger, shutdown) = Shutdown::new(Default::default());
        let lot = Parking::new();
        let task = tokio::spawn(lot.clone().run(shutdown));
        let soon = Arc::new(Flag(AtomicUsize::new(0)));
        let later = Arc::new(Flag(AtomicUsize::new(0)));
        let never = Arc::new(Flag(AtomicUsize::new(0)));
        let woken = |flag: &Arc<Flag>| flag.0.load(Ordering::SeqCst);
        let now = Instant::now();
        let past = lot.enter(Some(now), &Waker::from(soon.clone()));
        assert!(past.is_none(), "a due deadline does not park");
        let at = |ms| Some(now + Duration::from_millis(ms));
        lot.enter(at(600), &Waker::from(later.clone()))
            .expect("parked");
        // Ahead of the earliest: the lot's task waits for it instead.
        lot.enter(at(100), &Waker::from(soon.clone()))
            .expect("parked");
        let left = lot
            .enter(None, &Waker::from(never.clone()))
            .expect("parked");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!((woken(&soon), woken(&later)), (1, 0));
        assert_eq!(lot.len(), 2);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(woken(&later), 1);
        assert_eq!(lot.len(), 1);
        lot.leave(left);
        assert_eq!(lot.len(), 0);
        lot.enter(None, &Waker::from(never.clone()))
            .expect("parked");
        trigger.stop();
        task.await.expect("the lot's task ends at the stop");
        assert_eq!(woken(&never), 1);
        assert!(lot.enter(None, &Waker::from(never.clone())).is_none());
    }
}
