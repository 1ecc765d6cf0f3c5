//! Wall-clock time in the unit tokens use: whole seconds since the Unix epoch.
//!
//! Token `exp` claims, subscription expiry and the demo's simulated fleet all
//! count in these seconds; one function keeps them on the same clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
