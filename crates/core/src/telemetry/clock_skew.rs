//! Device clock skew: per device (an app's event `key`), the gateway's
//! received time minus the device's own `time`, measured on fresh events
//! (newer device time than any seen from the device before: a late event's
//! gap is its delay, not the clock's error).
//!
//! Bounded: at most [`MAX_DEVICES`] devices are remembered; when full, a new
//! device is not tracked (counted in `untracked`) until the node restarts.
//! Metrics stay small: one histogram of the absolute skew per configured
//! app, never a series per device; the admin status lists the
//! [`TOP_DEVICES`] most skewed devices.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::histogram::{Buckets, Histogram};
use super::prometheus::Family;
use crate::device_time::DeviceTime;

/// Most devices whose skew is remembered.
pub const MAX_DEVICES: usize = 100_000;
/// Devices listed in the admin status, most skewed first.
pub const TOP_DEVICES: usize = 20;

/// Absolute skews in milliseconds, shown in seconds: 10 ms to 1 day.
#[derive(Debug)]
pub struct SkewMillis;

impl Buckets for SkewMillis {
    const BOUNDS: &'static [u64] = &[
        10, 50, 100, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
        21_600_000, 86_400_000,
    ];
    const PER_UNIT: f64 = 1000.0;
}

const SKEW: Family = Family::histogram(
    "chouquette_device_clock_skew_seconds",
    "Absolute clock skew of devices (received time minus device time), per fresh event with a device time.",
);
const DEVICES: Family = Family::gauge(
    "chouquette_device_clock_skew_devices",
    "Devices whose clock skew is tracked.",
);
const UNTRACKED: Family = Family::counter(
    "chouquette_device_clock_skew_untracked_total",
    "Events of devices not tracked because the skew map was full.",
);

/// (app, device key).
type DeviceId = (Arc<str>, Box<str>);

#[derive(Debug, Clone, Copy)]
struct Device {
    newest_ms: i64,
    skew_ms: i64,
}

/// One device's latest measured skew, for the admin status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSkew {
    /// The app.
    pub app: String,
    /// The device (the events' `key`).
    pub device: String,
    /// Received minus device time, in milliseconds: positive when the
    /// device's clock is behind (or the event was delayed).
    pub skew_ms: i64,
    /// The newest device time seen from it.
    pub device_time: String,
}

/// Per-device skews and their per-app histograms.
#[derive(Debug, Default)]
pub struct ClockSkews {
    devices: Mutex<HashMap<DeviceId, Device>>,
    per_app: BTreeMap<Arc<str>, Histogram<SkewMillis>>,
    untracked: AtomicU64,
}

impl ClockSkews {
    /// Histograms for these (configured) apps.
    pub fn for_apps(apps: impl IntoIterator<Item = Arc<str>>) -> ClockSkews {
        ClockSkews {
            per_app: apps
                .into_iter()
                .map(|a| (a, Histogram::default()))
                .collect(),
            ..ClockSkews::default()
        }
    }

    /// An event of `device` of `app` stamped `time` by the device, received
    /// at `received`: measured when it is the device's newest.
    pub fn observe(&self, app: &str, device: &str, time: DeviceTime, received: DeviceTime) {
        let Some((app, histogram)) = self.per_app.get_key_value(app) else {
            return;
        };
        let skew_ms = received.millis().saturating_sub(time.millis());
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let full = devices.len() >= MAX_DEVICES;
        let entry = (app.clone(), Box::<str>::from(device));
        match devices.get_mut(&entry) {
            Some(held) if time.millis() <= held.newest_ms => return,
            Some(held) => {
                *held = Device {
                    newest_ms: time.millis(),
                    skew_ms,
                }
            }
            None if full => {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => {
                devices.insert(
                    entry,
                    Device {
                        newest_ms: time.millis(),
                        skew_ms,
                    },
                );
            }
        }
        drop(devices);
        histogram.observe(skew_ms.unsigned_abs());
    }

    /// The `n` devices with the largest absolute skew, largest first.
    pub fn top(&self, n: usize) -> Vec<DeviceSkew> {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = devices.iter().collect();
        all.sort_unstable_by_key(|(_, d)| std::cmp::Reverse(d.skew_ms.unsigned_abs()));
        all.into_iter()
            .take(n)
            .map(|((app, device), d)| DeviceSkew {
                app: app.to_string(),
                device: device.to_string(),
                skew_ms: d.skew_ms,
                device_time: DeviceTime::from_millis(d.newest_ms)
                    .map(DeviceTime::rfc3339)
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Devices tracked.
    pub fn tracked(&self) -> usize {
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The skew families.
    pub fn render(&self, out: &mut String) {
        let mut skew = SKEW.render(out);
        for (app, histogram) in &self.per_app {
            skew.histogram(&[("app", app)], &histogram.snapshot());
        }
        DEVICES.render_value(out, self.tracked());
        UNTRACKED.render_value(out, self.untracked.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DeviceTime {
        DeviceTime::from_millis(secs * 1000).expect("time")
    }

    #[test]
    fn only_fresh_events_measure_and_the_top_is_the_most_skewed() {
        let skews = ClockSkews::for_apps([Arc::from("a")]);
        skews.observe("a", "d1", at(100), at(102));
        skews.observe("a", "d2", at(100), at(40));
        // Older than d1's newest: a late event, its gap is not skew.
        skews.observe("a", "d1", at(50), at(5000));
        skews.observe("other", "d3", at(1), at(9));
        let top = skews.top(5);
        let shown: Vec<(&str, i64)> = top.iter().map(|d| (&*d.device, d.skew_ms)).collect();
        assert_eq!(shown, vec![("d2", -60_000), ("d1", 2000)]);
        let mut out = String::new();
        skews.render(&mut out);
        assert!(
            out.contains("chouquette_device_clock_skew_seconds_count{app=\"a\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("chouquette_device_clock_skew_devices 2"),
            "{out}"
        );
    }
}
