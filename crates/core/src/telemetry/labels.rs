//! The closed label sets: each enum is every value one label can take, so a
//! family's series are fixed (all rendered, zero or not) and counted in an
//! array indexed by the enum, never in a map.
//!
//! Invariant: each `ALL` lists the variants in declaration order, so
//! `index()` is the variant's discriminant (checked by a test).

/// Why an event frame meant for a client was not written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Discarded when the connection's outbox overflowed (the frames queued
    /// then, and the one that did not fit); the client resumes with `since`.
    SlowConsumer,
    /// Refused by an outbox that had already overflowed or was closing.
    Closed,
    /// Queued for a subscription that ended (unsubscribe, kill switch, token
    /// expiry) before it was written.
    Ended,
    /// Already sent by recovery (history replay raced the live copy): not a
    /// loss, the client has it.
    Duplicate,
    /// Taken from the outbox, but the write failed or missed its deadline.
    WriteFailed,
}

impl DropReason {
    /// Every reason, in the order of the series.
    pub const ALL: [DropReason; 5] = [
        DropReason::SlowConsumer,
        DropReason::Closed,
        DropReason::Ended,
        DropReason::Duplicate,
        DropReason::WriteFailed,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::Closed => "closed",
            DropReason::Ended => "ended",
            DropReason::Duplicate => "duplicate",
            DropReason::WriteFailed => "write_failed",
        }
    }

    /// Its place in [`DropReason::ALL`] (a counter array's index).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A call to the broker whose round trip is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerOp {
    /// Publishing a run of events of one channel (with the memory broker,
    /// this includes handing them to the hub).
    Publish,
    /// Reading history or last state for a subscribe.
    Recover,
}

impl BrokerOp {
    /// Every operation, in the order of the series.
    pub const ALL: [BrokerOp; 2] = [BrokerOp::Publish, BrokerOp::Recover];

    /// The `op` label.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerOp::Publish => "publish",
            BrokerOp::Recover => "recover",
        }
    }

    /// Its place in [`BrokerOp::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection was closed by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client could not keep up (outbox overflow or write timeout).
    SlowConsumer,
    /// Too many bad messages.
    Misbehaving,
    /// A frame over the hard size limit.
    TooLarge,
    /// The gateway is shutting down.
    Shutdown,
    /// Refused at upgrade: the node is at its connection limit.
    Full,
    /// An operator disconnected the user (`POST /admin/disconnect`).
    Disconnected,
    /// Nothing came from the client, not even a pong, for the idle timeout.
    Idle,
}

impl CloseReason {
    /// Every reason, in the order of the series.
    pub const ALL: [CloseReason; 7] = [
        CloseReason::SlowConsumer,
        CloseReason::Misbehaving,
        CloseReason::TooLarge,
        CloseReason::Shutdown,
        CloseReason::Full,
        CloseReason::Disconnected,
        CloseReason::Idle,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Misbehaving => "misbehaving",
            CloseReason::TooLarge => "too_large",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Full => "full",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Idle => "idle",
        }
    }

    /// Its place in [`CloseReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An operator's action through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// A kill switch switched off (put in force).
    SwitchOff,
    /// A kill switch switched back on (lifted).
    SwitchOn,
    /// A user's connections closed.
    Disconnect,
    /// A test publish.
    Publish,
}

impl AdminAction {
    /// Every action, in the order of the series.
    pub const ALL: [AdminAction; 4] = [
        AdminAction::SwitchOff,
        AdminAction::SwitchOn,
        AdminAction::Disconnect,
        AdminAction::Publish,
    ];

    /// The label (and audit log `action`).
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::SwitchOff => "switch_off",
            AdminAction::SwitchOn => "switch_on",
            AdminAction::Disconnect => "disconnect",
            AdminAction::Publish => "publish",
        }
    }

    /// Its place in [`AdminAction::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_is_the_place_in_all() {
        assert!(
            DropReason::ALL
                .iter()
                .enumerate()
                .all(|(i, r)| r.index() == i)
        );
        assert!(
            BrokerOp::ALL
                .iter()
                .enumerate()
                .all(|(i, o)| o.index() == i)
        );
        assert!(
            CloseReason::ALL
                .iter()
                .enumerate()
                .all(|(i, r)| r.index() == i)
        );
        assert!(
            AdminAction::ALL
                .iter()
                .enumerate()
                .all(|(i, a)| a.index() == i)
        );
    }
}
