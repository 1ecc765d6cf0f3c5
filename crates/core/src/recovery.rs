//! Recovery: catching a subscriber up from history, then live, with no gap
//! and no duplicate.
//!
//! A subscription is registered in the hub *before* its history is read, so
//! every event published after that moment is queued live, and every event
//! before it is in the history read. The two overlap; a per-subscription
//! [`Cursor`] drops from the live queue whatever history (or a snapshot)
//! already covered. [`plan`] decides from offsets alone whether history can
//! bridge the gap; [`catch_up`] turns what the broker read into the frames
//! sent before the subscription's `ack`.

use bytes::Bytes;
use chouquette_protocol::ResetReason;
use chouquette_protocol::server;

use crate::filter::Filter;
use crate::history::Recovered;

/// What history can give a client that resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Replay every retained event with an offset above `after`.
    Replay {
        /// The client's last offset.
        after: u64,
    },
    /// History does not reach back, or the epoch changed: send `reset`.
    Gap,
}

/// Decides how to resume a client at `since` (same epoch or not) on a
/// channel whose last offset is `top` and whose oldest retained event has
/// offset `first_retained` (`top + 1` when history is empty).
pub fn plan(since: u64, same_epoch: bool, first_retained: u64, top: u64) -> Plan {
    if !same_epoch || since > top || since.saturating_add(1) < first_retained {
        Plan::Gap
    } else {
        Plan::Replay { after: since }
    }
}

/// Appends to `out` what a subscriber to channel `name` gets from
/// `recovered`: a `reset` when its resume was impossible, then the events
/// its `filter` lets it see, replayed as they were (a resume that worked) or
/// as snapshots of the last state (a fresh subscribe, or after that `reset`
/// on a channel that keeps state: the client rebuilds its view from them).
/// On a `notify_only` channel they come without `data`, as live ones do.
pub fn catch_up(
    name: &str,
    recovered: &Recovered,
    filter: &Filter,
    (resumed, notify_only): (bool, bool),
    out: &mut Vec<Bytes>,
) {
    if recovered.gap {
        out.push(server::reset(Some(name), ResetReason::HistoryGap));
    }
    for p in &recovered.events {
        if filter.matches(&p.event_kind, &p.keywords) {
            out.push(if resumed && !recovered.gap {
                p.frame_for(notify_only).clone()
            } else {
                p.snapshot_frame_for(notify_only).clone()
            });
        }
    }
}

/// The last offset delivered to one subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    last: u64,
}

impl Cursor {
    /// A cursor positioned after `last`.
    pub fn at(last: u64) -> Cursor {
        Cursor { last }
    }

    /// Whether the event at `offset` is new to this subscription; advances if so.
    pub fn admit(&mut self, offset: u64) -> bool {
        if offset > self.last {
            self.last = offset;
            true
        } else {
            false
        }
    }

    /// The last offset delivered.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plans() {
        assert_eq!(plan(41, true, 1, 41), Plan::Replay { after: 41 });
        assert_eq!(plan(10, true, 11, 41), Plan::Replay { after: 10 });
        assert_eq!(plan(9, true, 11, 41), Plan::Gap);
        assert_eq!(plan(41, false, 1, 41), Plan::Gap);
        assert_eq!(plan(42, true, 1, 41), Plan::Gap);
        assert_eq!(plan(0, true, 1, 0), Plan::Replay { after: 0 });
        assert_eq!(plan(5, true, 6, 5), Plan::Replay { after: 5 });
    }

    proptest! {
        /// A resumed client sees exactly the matching events after its
        /// offset, once each, in order, however history and the live queue
        /// overlap: history is read at some point after the subscription was
        /// registered, so live holds every event from the registration on.
        #[test]
        fn resume_is_exact(
            total in 1u64..60,
            since_frac in 0u64..100,
            registered_frac in 0u64..100,
            read_extra in 0u64..10,
            retained in 0u64..80,
            matches in prop::collection::vec(any::<bool>(), 60),
        ) {
            // The client saw `since` before it subscribed again.
            let since = total * since_frac / 100;
            let registered = since + (total - since) * registered_frac / 100;
            // History is read once the channel reached `read_top`.
            let read_top = (registered + read_extra).min(total);
            let first_retained = read_top.saturating_sub(retained) + 1;
            let history: Vec<u64> = (first_retained..=read_top).collect();
            let live: Vec<u64> = (registered + 1..=total).collect();
            let is_match = |o: u64| matches[(o - 1) as usize];

            match plan(since, true, first_retained, read_top) {
                Plan::Gap => prop_assert!(since + 1 < first_retained),
                Plan::Replay { after } => {
                    let mut cursor = Cursor::at(after);
                    let mut seen = Vec::new();
                    for o in history.iter().copied().filter(|o| *o > after) {
                        if cursor.admit(o) && is_match(o) {
                            seen.push(o);
                        }
                    }
                    // History is complete up to read_top even when empty.
                    cursor = Cursor::at(cursor.last().max(read_top));
                    for o in live {
                        if cursor.admit(o) && is_match(o) {
                            seen.push(o);
                        }
                    }
                    let expected: Vec<u64> = (since + 1..=total).filter(|o| is_match(*o)).collect();
                    prop_assert_eq!(seen, expected);
                }
            }
        }
    }
}
