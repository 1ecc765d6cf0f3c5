//! The cluster's view of which node holds each device: so that a device
//! on two nodes goes offline only when its last node lets it go, goes
//! silent only when every node holding it heard nothing (one event per
//! change of the device for the whole cluster, not one per node), a
//! crashed node's devices are declared offline by a surviving node, and
//! any node can tell when a device was last seen, whichever node saw it.
//!
//! A node *holds* a device while it is online or silent there. Each node
//! refreshes a lease on the devices it holds; a node whose lease lapsed
//! (it crashed, or lost the broker) has its devices taken back by the next
//! refresh of any live node, which announces those that no node holds any
//! more as offline. The memory ledger, for one node alone, holds nothing:
//! every change is this node's to announce, and a restart starts empty.

use crate::broker::BoxFuture;
use crate::devices::State;

/// Why the ledger could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("device ledger unavailable: {0}")]
pub struct LedgerError(pub String);

/// A node's change of hold on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The device came online here (it was offline here).
    Take,
    /// The device went offline here.
    Release,
    /// The device went silent here (still held).
    Quiet,
    /// The device spoke again here after a silence.
    Speak,
}

impl Hold {
    /// The device's state for the whole cluster when the ledger says the
    /// hold changed it and nothing else was known (the memory ledger).
    pub fn state(self) -> State {
        match self {
            Hold::Take | Hold::Speak => State::Online,
            Hold::Quiet => State::Silent,
            Hold::Release => State::Offline,
        }
    }
}

/// One change of hold, with the device's last sign of life on this node
/// (Unix milliseconds; 0 when unknown), so that the ledger remembers when
/// the cluster last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldChange<'a> {
    /// The change.
    pub hold: Hold,
    /// The device.
    pub device: &'a str,
    /// Its last sign of life here.
    pub last_seen: u64,
}

/// A device this node holds, as a renewal tells the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The device.
    pub device: Box<str>,
    /// Silent here (else online).
    pub silent: bool,
    /// Its last sign of life here (Unix milliseconds).
    pub last_seen: u64,
}

/// What a renewal found (see [`Ledger::refresh`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Devices no node holds any more: to announce offline.
    pub gone: Vec<Box<str>>,
    /// Devices this node holds whose lease it had lost: to announce
    /// again as this node sees them.
    pub back: Vec<Box<str>>,
    /// Devices still held by live nodes, all of which find them silent,
    /// after the lapsed node was the last to hear from them: to announce
    /// silent.
    pub quieted: Vec<Box<str>>,
}

/// A device as the whole cluster knows it (see [`Ledger::lookup`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sighting {
    /// How many other nodes hold it (online or silent there).
    pub others: u64,
    /// Its last sign of life on any node, as the nodes reported it (on
    /// each change of hold and each renewal), Unix milliseconds.
    pub last_seen: Option<u64>,
}

/// Where the holds of every node meet (see the module docs).
pub trait Ledger: Send + Sync + 'static {
    /// Records this node's holds on devices of `app`, in order; answers,
    /// per hold, the device's new state for the whole cluster when the
    /// hold changed it (the first node to take it, the last to release
    /// it, the last holder to find it silent, the first to hear it again),
    /// `None` when the cluster's state did not change.
    fn record<'a>(
        &'a self,
        app: &'a str,
        holds: &'a [HoldChange<'a>],
    ) -> BoxFuture<'a, Result<Vec<Option<State>>, LedgerError>>;

    /// Renews this node's lease on `held` devices of `app` and takes back
    /// lapsed leases of other nodes (see [`Renewal`]).
    fn refresh<'a>(
        &'a self,
        app: &'a str,
        held: &'a [Holding],
    ) -> BoxFuture<'a, Result<Renewal, LedgerError>>;

    /// `device` of `app` as the cluster knows it; `None` when no node
    /// reported it (or, for the memory ledger, always: this node's own
    /// trackers are the whole truth).
    fn lookup<'a>(
        &'a self,
        app: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Option<Sighting>, LedgerError>>;
}

/// The ledger of a node alone: every change is the cluster's.
#[derive(Debug, Default)]
pub struct MemoryLedger;

impl Ledger for MemoryLedger {
    fn record<'a>(
        &'a self,
        _app: &'a str,
        holds: &'a [HoldChange<'a>],
    ) -> BoxFuture<'a, Result<Vec<Option<State>>, LedgerError>> {
        let all = holds.iter().map(|h| Some(h.hold.state())).collect();
        Box::pin(async move { Ok(all) })
    }

    fn refresh<'a>(
        &'a self,
        _app: &'a str,
        _held: &'a [Holding],
    ) -> BoxFuture<'a, Result<Renewal, LedgerError>> {
        Box::pin(async { Ok(Renewal::default()) })
    }

    fn lookup<'a>(
        &'a self,
        _app: &'a str,
        _device: &'a str,
    ) -> BoxFuture<'a, Result<Option<Sighting>, LedgerError>> {
        Box::pin(async { Ok(None) })
    }
}
