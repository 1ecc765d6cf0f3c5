//! Fixed-bucket histograms of relaxed atomics: no registry, no lock.
//!
//! Observing costs one comparison search and two adds; a batch is counted
//! into a local array first, then added with one relaxed add per bucket it
//! touched. Buckets are stored per bucket (not cumulative); the exposition
//! ([`super::prometheus`]) accumulates them. The layout is a type
//! ([`Buckets`]), so a histogram cannot be read with the wrong bounds.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most bucket bounds a histogram has (the `+Inf` bucket comes on top).
const MAX_BOUNDS: usize = 16;

/// A histogram's bucket layout: upper bounds in an integer unit, and how to
/// show them.
pub trait Buckets {
    /// Inclusive upper bounds, increasing, at most 16, in the integer unit.
    const BOUNDS: &'static [u64];
    /// Integer units per exported unit (1e9 for nanoseconds shown as seconds).
    const PER_UNIT: f64;
}

/// Durations in nanoseconds, exported in seconds: 100 µs to 10 s.
#[derive(Debug)]
pub struct Nanos;

impl Buckets for Nanos {
    const BOUNDS: &'static [u64] = &[
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        10_000_000_000,
    ];
    const PER_UNIT: f64 = 1e9;
}

/// Queue lengths in frames: 1 to 8192, by powers of two.
#[derive(Debug)]
pub struct Frames;

impl Buckets for Frames {
    const BOUNDS: &'static [u64] = &[
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192,
    ];
    const PER_UNIT: f64 = 1.0;
}

/// A duration in whole nanoseconds, saturating (584 years): what a
/// [`Histogram<Nanos>`] observes.
#[inline]
pub(super) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A fixed-bucket histogram of relaxed atomics: observing costs one
/// comparison search and two adds, and never locks.
#[derive(Debug)]
pub struct Histogram<B: Buckets> {
    /// Per bucket (not cumulative); index `BOUNDS.len()` is `+Inf`.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    /// Sum of observations, in the integer unit.
    sum: AtomicU64,
    unit: PhantomData<B>,
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            buckets: Default::default(),
            sum: AtomicU64::new(0),
            unit: PhantomData,
        }
    }
}

/// A histogram as read at one moment, for the admin console and the
/// exposition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets, in the exported unit (`+Inf` left out).
    pub bounds: Vec<f64>,
    /// Observations per bucket, not cumulative: one more than `bounds`, the
    /// last being the `+Inf` bucket.
    pub counts: Vec<u64>,
    /// Observations in all.
    pub count: u64,
    /// Sum of observations, in the exported unit.
    pub sum: f64,
}

impl<B: Buckets> Histogram<B> {
    fn bucket(value: u64) -> usize {
        B::BOUNDS.partition_point(|&bound| bound < value)
    }

    /// Records one observation, in the integer unit.
    pub fn observe(&self, value: u64) {
        self.buckets[Self::bucket(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records many observations: counted locally, then one add per bucket
    /// touched (a write batch costs a few adds, not a few per frame).
    pub fn observe_all(&self, values: impl Iterator<Item = u64>) {
        let mut local = [0u64; MAX_BOUNDS + 1];
        let mut sum: u64 = 0;
        for value in values {
            local[Self::bucket(value)] += 1;
            sum = sum.saturating_add(value);
        }
        for (bucket, n) in self.buckets.iter().zip(local) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
        if sum > 0 {
            self.sum.fetch_add(sum, Ordering::Relaxed);
        }
    }

    /// The buckets now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.buckets[..=B::BOUNDS.len()]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            bounds: B::BOUNDS.iter().map(|&b| b as f64 / B::PER_UNIT).collect(),
            count: counts.iter().sum(),
            counts,
            sum: self.sum.load(Ordering::Relaxed) as f64 / B::PER_UNIT,
        }
    }
}
