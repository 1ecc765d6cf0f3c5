//! The broker era: how many times this node's broker link came back after a
//! loss.
//!
//! Offsets seen before a loss say nothing about those after it: the broker
//! may have restarted empty, with a new epoch and offsets counting from 1
//! again. So every frame the hub queues carries the [`Era`] it was delivered
//! in, and a subscription's dedup cursor counts in one era: a frame of a
//! later era restarts the cursor, a frame of an earlier era is stale (the
//! client was told `reset` since). The hub owns the node's [`EraClock`]; a
//! broker advances it before it delivers the first event of a restored link.

use std::sync::atomic::{AtomicU32, Ordering};

/// One broker era; later eras compare greater.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Era(u32);

/// How a frame's era stands to the era a subscription's cursor counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meeting {
    /// The same era: the cursor decides.
    Same,
    /// A later era: the cursor restarts, offsets may have restarted too.
    Later,
    /// An earlier era: the frame is stale, drop it.
    Stale,
}

impl Era {
    /// How a frame of era `frame` stands to a cursor counting in `self`.
    pub fn meet(self, frame: Era) -> Meeting {
        match frame.cmp(&self) {
            std::cmp::Ordering::Equal => Meeting::Same,
            std::cmp::Ordering::Greater => Meeting::Later,
            std::cmp::Ordering::Less => Meeting::Stale,
        }
    }
}

/// The node's current era, read by every delivery and advanced by the broker
/// link on each restoration.
#[derive(Debug, Default)]
pub struct EraClock(AtomicU32);

impl EraClock {
    /// The era now.
    pub fn now(&self) -> Era {
        Era(self.0.load(Ordering::Acquire))
    }

    /// Starts the next era and returns it.
    pub fn advance(&self) -> Era {
        Era(self.0.fetch_add(1, Ordering::AcqRel).wrapping_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_meets_later_and_stale_frames() {
        let clock = EraClock::default();
        let first = clock.now();
        let second = clock.advance();
        assert_eq!(clock.now(), second);
        assert_eq!(first.meet(first), Meeting::Same);
        assert_eq!(first.meet(second), Meeting::Later);
        assert_eq!(second.meet(first), Meeting::Stale);
    }
}
