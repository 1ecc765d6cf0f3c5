//! The token bucket: `burst` tokens, refilled at `per_second`; one per
//! message, connection or published event. Pure logic: the time is always
//! passed in, so every rule is tested without sleeping.
//!
//! Invariants: tokens never exceed the burst (at least one); time going
//! backwards adds nothing; a batch larger than the burst passes on a full
//! bucket and leaves it in debt, so it costs what it weighs and cannot be
//! refused forever.

use std::time::{Duration, Instant};

/// A rate: `per_second` sustained, up to `burst` at once. `per_second == 0`
/// means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second (0: unlimited).
    pub per_second: u32,
    /// Most tokens held: what may be spent at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    /// `per_second` sustained, `burst` at once.
    pub const fn new(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    /// Whether this rate limits anything.
    pub fn is_limited(self) -> bool {
        self.per_second > 0
    }

    /// At least one token of burst, so a limited rate can ever pass.
    fn capacity(self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// Refused by a limit; try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When enough tokens will be there again.
    pub retry_after: Duration,
}

impl Limited {
    /// `retry_after` in whole seconds, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// A token bucket. Starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` at `now`.
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.capacity(),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate.per_second)).min(rate.capacity());
        self.last = self.last.max(now);
    }

    /// Takes `n` tokens, or says how long until it could. A batch larger
    /// than the burst passes on a full bucket and leaves it in debt (the
    /// tokens go negative), so big batches cost what they weigh and cannot
    /// be refused forever.
    pub fn try_take(&mut self, rate: Rate, now: Instant, n: u32) -> Result<(), Limited> {
        if !rate.is_limited() {
            return Ok(());
        }
        self.refill(rate, now);
        let need = f64::from(n).min(rate.capacity());
        if self.tokens >= need {
            self.tokens -= f64::from(n);
            Ok(())
        } else {
            let wait = (need - self.tokens) / f64::from(rate.per_second);
            Err(Limited {
                retry_after: Duration::from_secs_f64(wait),
            })
        }
    }

    /// Refills to `now`, then takes `n` tokens whatever is left (a
    /// penalty): the bucket may go into debt, but never deeper than a whole
    /// burst, so the bucket is out of debt within `burst / per_second`.
    pub(super) fn charge(&mut self, rate: Rate, now: Instant, n: u32) {
        self.refill(rate, now);
        self.tokens = (self.tokens - f64::from(n)).max(-rate.capacity());
    }

    /// Refills to `now`; whether the bucket is still in debt (serving a
    /// penalty), without taking a token.
    pub(super) fn in_debt(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens < 0.0
    }

    /// Whether the bucket is back to full at `now` (then it carries no state).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= rate.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let rate = Rate::new(10, 5);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        for _ in 0..5 {
            assert!(b.try_take(rate, t0, 1).is_ok());
        }
        let refused = b.try_take(rate, t0, 1).expect_err("burst spent");
        assert_eq!(refused.retry_after, ms(100));
        assert_eq!(refused.retry_after_secs(), 1);
        // 100 ms later, one token is back, and only one.
        assert!(b.try_take(rate, t0 + ms(100), 1).is_ok());
        assert!(b.try_take(rate, t0 + ms(100), 1).is_err());
        // Long idle refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(b.is_full(rate, later));
        for _ in 0..5 {
            assert!(b.try_take(rate, later, 1).is_ok());
        }
        assert!(b.try_take(rate, later, 1).is_err());
    }

    #[test]
    fn a_batch_over_the_burst_passes_on_a_full_bucket_and_leaves_debt() {
        let rate = Rate::new(10, 5);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.try_take(rate, t0, 20).is_ok());
        // 15 tokens in debt, 5 needed: 2 s at 10/s.
        let refused = b.try_take(rate, t0, 1).expect_err("in debt");
        assert_eq!(refused.retry_after, Duration::from_millis(1600));
        assert!(b.try_take(rate, t0 + ms(1600), 1).is_ok());
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let rate = Rate::new(1, 1);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.try_take(rate, t0, 1).is_ok());
        assert!(b.try_take(rate, t0 - Duration::from_secs(5), 1).is_err());
        assert!(b.try_take(rate, t0, 1).is_err());
        assert!(b.try_take(rate, t0 + Duration::from_secs(1), 1).is_ok());
    }
}
