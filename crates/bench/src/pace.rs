//! Opening connections at a planned rate: the workers, the storm's clients
//! and the idle-abuse holders all start theirs this way.

use std::time::Duration;

use tokio::time::{MissedTickBehavior, interval};

/// How often a paced loop starts its next share.
const TICK: Duration = Duration::from_millis(10);

/// Calls `start` with `first`, `first + 1`, ... (`count` of them), `rate`
/// per second: each 10 ms tick starts its share, at least one. A tick
/// missed on a busy machine is delayed, not made up in a burst.
pub async fn paced(rate: u32, first: usize, count: usize, mut start: impl FnMut(usize)) {
    let per_tick = (f64::from(rate) * TICK.as_secs_f64()).ceil().max(1.0) as usize;
    let mut ticks = interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next = 0;
    while next < count {
        ticks.tick().await;
        for _ in 0..per_tick.min(count - next) {
            start(first + next);
            next += 1;
        }
    }
}
