//! Exactly-once accounting of one subscriber's offsets on one channel,
//! across reconnections: the `storm` scenario's verdict on `since`.
//!
//! Offsets of a channel are consecutive, so a subscriber that resumes
//! correctly sees `last + 1` every time: anything at or below `last` is a
//! duplicate, anything above `last + 1` skipped the offsets between.
//! The `ack` of a subscription names the channel's offset when it went
//! live, and every event up to it comes before the `ack` (catch-up), so an
//! `ack` above `last` is a gap too.

/// What one event did to the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next offset.
    Next,
    /// An offset already seen.
    Duplicate,
    /// Ahead of the next offset by this many missing ones.
    Gap(u64),
}

/// One subscriber's position and its faults so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequence {
    last: Option<u64>,
    /// Offsets skipped (missing events, not occurrences).
    pub missing: u64,
    /// Events seen more than once.
    pub duplicates: u64,
    /// `reset` `history_gap` received: the resume was refused.
    pub resets: u64,
}

impl Sequence {
    /// The last offset seen (or the position the first `ack` gave).
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// An event at `offset`.
    pub fn event(&mut self, offset: u64) -> Seen {
        let Some(last) = self.last else {
            self.last = Some(offset);
            return Seen::Next;
        };
        if offset <= last {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        self.last = Some(offset);
        let skipped = offset - last - 1;
        if skipped == 0 {
            Seen::Next
        } else {
            self.missing += skipped;
            Seen::Gap(skipped)
        }
    }

    /// The `ack` of a subscription, live after `offset`: the first gives
    /// the starting position; after a resume, the catch-up should have
    /// brought the sequence there already. Returns the offsets missed.
    pub fn ack(&mut self, offset: u64) -> u64 {
        match self.last {
            None => {
                self.last = Some(offset);
                0
            }
            Some(last) if last < offset => {
                self.last = Some(offset);
                self.missing += offset - last;
                offset - last
            }
            Some(_) => 0,
        }
    }

    /// A `reset` `history_gap`: the channel is numbered anew from the
    /// next `ack` or event; what was missed cannot be counted.
    pub fn reset(&mut self) {
        self.resets += 1;
        self.last = None;
    }

    /// Whether every offset up to `offset` was seen, once each, with no
    /// reset.
    pub fn complete_through(&self, offset: u64) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.resets == 0
            && self.last.is_some_and(|l| l >= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_without_fault_is_complete() {
        let mut s = Sequence::default();
        assert_eq!(s.ack(3), 0);
        assert_eq!(s.event(4), Seen::Next);
        assert_eq!(s.event(5), Seen::Next);
        // The connection ends; the catch-up brings 6 and 7, then the ack.
        assert_eq!(s.event(6), Seen::Next);
        assert_eq!(s.event(7), Seen::Next);
        assert_eq!(s.ack(7), 0);
        assert_eq!(s.event(8), Seen::Next);
        assert!(s.complete_through(8));
        assert!(!s.complete_through(9));
        assert_eq!(s.last(), Some(8));
    }

    #[test]
    fn counts_duplicates_and_missing_offsets() {
        let mut s = Sequence::default();
        s.ack(0);
        assert_eq!(s.event(1), Seen::Next);
        assert_eq!(s.event(1), Seen::Duplicate);
        assert_eq!(s.event(4), Seen::Gap(2));
        assert_eq!(s.event(3), Seen::Duplicate);
        assert_eq!((s.missing, s.duplicates), (2, 2));
        assert!(!s.complete_through(4));
    }

    #[test]
    fn an_ack_past_the_catch_up_is_a_gap() {
        let mut s = Sequence::default();
        s.ack(10);
        s.event(11);
        // Resumed from 11, but history sent nothing and the ack says 14.
        assert_eq!(s.ack(14), 3);
        assert_eq!(s.missing, 3);
        assert_eq!(s.event(15), Seen::Next);
        // An ack below what was seen (nothing new) changes nothing.
        assert_eq!(s.ack(12), 0);
        assert_eq!(s.last(), Some(15));
    }

    #[test]
    fn a_reset_breaks_completeness_and_restarts_numbering() {
        let mut s = Sequence::default();
        s.ack(5);
        s.reset();
        assert_eq!(s.last(), None);
        assert_eq!(s.ack(1), 0);
        assert_eq!(s.event(2), Seen::Next);
        assert_eq!(s.resets, 1);
        assert!(!s.complete_through(2));
    }
}
