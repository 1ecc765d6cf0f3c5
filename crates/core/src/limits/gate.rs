//! A connection's client-message gate: its message rate, and a budget of
//! refusals that are forgiven one per second. A client over its rate is
//! answered `rate_limited`; one that keeps on past the budget is closed as
//! abusive.

use std::time::Instant;

use super::{Rate, TokenBucket};

/// A connection's client-message budget: `rate` with its burst, and
/// `strikes` refusals tolerated (one back per second) before the connection
/// counts as abusive and is closed.
#[derive(Debug, Clone, Copy)]
pub struct MessageGate {
    rate: Rate,
    bucket: TokenBucket,
    strikes: Rate,
    strikes_left: TokenBucket,
}

/// The close reason of a connection closed for sustained abuse of its
/// message rate (close code 1008); the driver then charges its address a
/// share of its new-connection budget ([`super::abuse_cost`]).
pub const ABUSE_CLOSE_REASON: &str = "rate_limited";

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Handle it.
    Pass,
    /// Answer `rate_limited`, keep the connection.
    Refuse,
    /// Sustained abuse: close the connection.
    Close,
}

impl MessageGate {
    /// A gate at `rate`, closing after `max_refused` refusals not yet
    /// forgiven (one is forgiven per second).
    pub fn new(rate: Rate, max_refused: u32, now: Instant) -> MessageGate {
        let strikes = Rate::new(1, max_refused.max(1));
        MessageGate {
            rate,
            bucket: TokenBucket::full(rate, now),
            strikes,
            strikes_left: TokenBucket::full(strikes, now),
        }
    }

    /// Changes the rate (the connection's app became known); the tokens
    /// already held stay, capped by the new burst on the next refill.
    pub fn set_rate(&mut self, rate: Rate) {
        self.rate = rate;
    }

    /// Decides on one message at `now`.
    pub fn admit(&mut self, now: Instant) -> Gate {
        if self.bucket.try_take(self.rate, now, 1).is_ok() {
            Gate::Pass
        } else if self.strikes_left.try_take(self.strikes, now, 1).is_ok() {
            Gate::Refuse
        } else {
            Gate::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn message_gate_refuses_then_closes_on_sustained_abuse() {
        let t0 = Instant::now();
        let mut gate = MessageGate::new(Rate::new(10, 2), 3, t0);
        assert_eq!(gate.admit(t0), Gate::Pass);
        assert_eq!(gate.admit(t0), Gate::Pass);
        for _ in 0..3 {
            assert_eq!(gate.admit(t0), Gate::Refuse);
        }
        assert_eq!(gate.admit(t0), Gate::Close);
        // A client that slows down is forgiven: one strike back per second.
        let mut gate = MessageGate::new(Rate::new(10, 1), 2, t0);
        assert_eq!(gate.admit(t0), Gate::Pass);
        assert_eq!(gate.admit(t0), Gate::Refuse);
        assert_eq!(gate.admit(t0), Gate::Refuse);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(gate.admit(later), Gate::Pass);
        assert_eq!(gate.admit(later), Gate::Refuse);
        // A new rate applies at once.
        gate.set_rate(Rate::UNLIMITED);
        assert_eq!(gate.admit(later), Gate::Pass);
    }
}
