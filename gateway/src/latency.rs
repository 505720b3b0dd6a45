//! A lock-free latency histogram over a sliding window, for adaptive hedging: the route's live
//! p95 (or any percentile) decides how long to wait before a hedge. Log-spaced buckets (four per
//! doubling, about 19 % wide) from 1 µs to 16 s; two half-window generations of atomics; the
//! percentile is recomputed at most every 50 ms and cached in an atomic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 96;
const RECOMPUTE_NS: u64 = 50_000_000;

#[derive(Debug)]
struct Half {
    epoch: AtomicU64,
    counts: [AtomicU64; BUCKETS],
}

impl Default for Half {
    fn default() -> Self {
        Half {
            epoch: AtomicU64::new(0),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Recent attempt latencies of one route.
#[derive(Debug)]
pub struct LatencyWindow {
    half_ns: u64,
    halves: [Half; 2],
    /// `(percentile in tenths, computed value in ns, samples)` packed as three atomics.
    cached_ns: AtomicU64,
    cached_samples: AtomicU64,
    cached_at: AtomicU64,
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_micros().max(1) as f64;
    ((us.log2() * 4.0) as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn bucket_value(i: usize) -> Duration {
    Duration::from_nanos((2f64.powf((i + 1) as f64 / 4.0) * 1000.0) as u64)
}

impl LatencyWindow {
    /// A window of `window` (two halves of `window / 2`).
    pub fn new(window: Duration) -> LatencyWindow {
        LatencyWindow {
            half_ns: (window.as_nanos() as u64 / 2).max(1),
            halves: Default::default(),
            cached_ns: AtomicU64::new(0),
            cached_samples: AtomicU64::new(0),
            cached_at: AtomicU64::new(0),
        }
    }

    fn half(&self, now: u64) -> &Half {
        let epoch = now / self.half_ns + 1;
        let h = &self.halves[(epoch % 2) as usize];
        let seen = h.epoch.load(Ordering::Acquire);
        if seen != epoch
            && h.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for c in &h.counts {
                c.store(0, Ordering::Relaxed);
            }
        }
        h
    }

    /// Records one attempt's latency (to response headers).
    pub fn record(&self, d: Duration, now: u64) {
        self.half(now).counts[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `pct` percentile (0-100) and the number of samples in the window; cached for 50 ms.
    pub fn percentile(&self, pct: f64, now: u64) -> (Duration, u64) {
        let at = self.cached_at.load(Ordering::Relaxed);
        if at != 0 && now.saturating_sub(at) < RECOMPUTE_NS {
            return (
                Duration::from_nanos(self.cached_ns.load(Ordering::Relaxed)),
                self.cached_samples.load(Ordering::Relaxed),
            );
        }
        let current = now / self.half_ns + 1;
        let mut counts = [0u64; BUCKETS];
        for h in &self.halves {
            let e = h.epoch.load(Ordering::Acquire);
            if e == current || e + 1 == current {
                for (i, c) in h.counts.iter().enumerate() {
                    counts[i] += c.load(Ordering::Relaxed);
                }
            }
        }
        let total: u64 = counts.iter().sum();
        let rank = ((pct / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        let mut value = Duration::ZERO;
        for (i, c) in counts.iter().enumerate() {
            acc += c;
            if acc >= rank {
                value = bucket_value(i);
                break;
            }
        }
        self.cached_ns
            .store(value.as_nanos() as u64, Ordering::Relaxed);
        self.cached_samples.store(total, Ordering::Relaxed);
        self.cached_at.store(now.max(1), Ordering::Relaxed);
        (value, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn p95_of_a_bimodal_load() {
        let w = LatencyWindow::new(Duration::from_secs(10));
        let now = 1_000 * MS;
        for i in 0..1000 {
            let d = if i % 50 == 0 { 200 } else { 10 };
            w.record(Duration::from_millis(d), now);
        }
        let (p95, n) = w.percentile(95.0, now);
        assert_eq!(n, 1000);
        // 98 % of samples are 10 ms: the p95 is in 10 ms's bucket (within 19 %).
        assert!(
            p95 >= Duration::from_millis(10) && p95 <= Duration::from_millis(12),
            "{p95:?}"
        );
        let (p99, _) = w.percentile(99.0, now + RECOMPUTE_NS);
        assert!(p99 >= Duration::from_millis(200), "{p99:?}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let w = LatencyWindow::new(Duration::from_secs(2));
        w.record(Duration::from_millis(5), 1_000 * MS);
        assert_eq!(w.percentile(50.0, 1_000 * MS).1, 1);
        assert_eq!(w.percentile(50.0, 4_000 * MS).1, 0);
    }
}
