//! The cluster's view of which node holds each device: so that a device
//! on two nodes goes offline only when its last node lets it go, and a
//! crashed node's devices are declared offline by a surviving node.
//!
//! A node *holds* a device while it is online or silent there. Each node
//! refreshes a lease on the devices it holds; a node whose lease lapsed
//! (it crashed, or lost the broker) has its devices taken back by the next
//! refresh of any live node, which announces those that no node holds any
//! more as offline. The memory ledger, for one node alone, holds nothing:
//! every change is this node's to announce, and a restart starts empty.

use crate::broker::BoxFuture;

/// Why the ledger could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("device ledger unavailable: {0}")]
pub struct LedgerError(pub String);

/// A node's change of hold on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The device came online here.
    Take,
    /// The device went offline here.
    Release,
}

/// What a renewal found (see [`Ledger::refresh`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Devices no node holds any more: to announce offline.
    pub gone: Vec<Box<str>>,
    /// Devices this node holds whose lease it had lost: to announce
    /// online again.
    pub back: Vec<Box<str>>,
}

/// Where the holds of every node meet (see the module docs).
pub trait Ledger: Send + Sync + 'static {
    /// Records this node's holds on devices of `app`, in order; answers,
    /// per hold, whether it changes the device's state for the whole
    /// cluster (the first node to take it, the last to release it).
    fn record<'a>(
        &'a self,
        app: &'a str,
        holds: &'a [(Hold, &'a str)],
    ) -> BoxFuture<'a, Result<Vec<bool>, LedgerError>>;

    /// Renews this node's lease on `held` devices of `app` and takes back
    /// lapsed leases of other nodes: answers the devices no node holds any
    /// more (to announce offline), and those of `held` whose lease this
    /// node had lost (e.g. over a broker outage: announced offline by
    /// another node, to announce online again).
    fn refresh<'a>(
        &'a self,
        app: &'a str,
        held: &'a [Box<str>],
    ) -> BoxFuture<'a, Result<Renewal, LedgerError>>;
}

/// The ledger of a node alone: every change is the cluster's.
#[derive(Debug, Default)]
pub struct MemoryLedger;

impl Ledger for MemoryLedger {
    fn record<'a>(
        &'a self,
        _app: &'a str,
        holds: &'a [(Hold, &'a str)],
    ) -> BoxFuture<'a, Result<Vec<bool>, LedgerError>> {
        let all = vec![true; holds.len()];
        Box::pin(async move { Ok(all) })
    }

    fn refresh<'a>(
        &'a self,
        _app: &'a str,
        _held: &'a [Box<str>],
    ) -> BoxFuture<'a, Result<Renewal, LedgerError>> {
        Box::pin(async { Ok(Renewal::default()) })
    }
}
