//! Stopping: one signal every part watches, and a count of live connections
//! so the node can wait for them to flush within the grace time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chouquette_core::telemetry::Telemetry;
use tokio::sync::{Notify, watch};

/// The stop signal and the connections still open.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stop: watch::Receiver<bool>,
    live: Arc<Live>,
}

#[derive(Debug)]
struct Live {
    count: AtomicUsize,
    next_id: std::sync::atomic::AtomicU64,
    drained: Notify,
    telemetry: Arc<Telemetry>,
}

/// Held by one connection while it runs.
#[derive(Debug)]
pub struct ConnectionGuard {
    live: Arc<Live>,
    id: u64,
    transport: &'static str,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        tracing::debug!(
            id = self.id,
            transport = self.transport,
            "connection closed"
        );
        self.live.telemetry.connection_closed();
        if self.live.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.live.drained.notify_waiters();
        }
    }
}

/// The sending side: triggers the stop.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

impl Trigger {
    /// Asks every part to stop.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// A new signal, not yet triggered.
    pub fn new(telemetry: Arc<Telemetry>) -> (Trigger, Shutdown) {
        let (tx, stop) = watch::channel(false);
        let live = Arc::new(Live {
            count: AtomicUsize::new(0),
            next_id: std::sync::atomic::AtomicU64::new(1),
            drained: Notify::new(),
            telemetry,
        });
        (Trigger { tx }, Shutdown { stop, live })
    }

    /// Whether the stop was asked for.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once the stop is asked for.
    pub async fn stopped(&mut self) {
        // An error means the trigger is gone, which also means stop.
        let _ = self.stop.wait_for(|s| *s).await;
    }

    /// Counts a connection of `transport` until the guard drops.
    pub fn connection(&self, transport: &'static str) -> ConnectionGuard {
        self.live.count.fetch_add(1, Ordering::AcqRel);
        self.live.telemetry.connection_opened();
        let id = self.live.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(id, transport, "connection opened");
        ConnectionGuard {
            live: self.live.clone(),
            id,
            transport,
        }
    }

    /// Waits until no connection is left, or `grace` passed; true if drained.
    pub async fn drained(&self, grace: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.live.drained.notified();
                if self.live.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }
}
