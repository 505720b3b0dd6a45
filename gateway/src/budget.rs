//! The retry budget one route's retries and hedges share: over a sliding window, extra attempts
//! may not exceed `ratio` × requests + `min_per_s` × window seconds (Finagle's and Linkerd's
//! budget). Ten slots of atomics make the window; `now` is passed in.

use std::sync::atomic::{AtomicU64, Ordering};

const SLOTS: usize = 10;

#[derive(Debug, Default)]
struct Slot {
    /// Which slot-length period this slot currently counts.
    epoch: AtomicU64,
    requests: AtomicU64,
    extras: AtomicU64,
}

/// A lock-free sliding-window budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor: f64,
    slot_ns: u64,
    slots: [Slot; SLOTS],
}

impl RetryBudget {
    /// A budget of `ratio` extra attempts per request plus `min_per_s` per second, over
    /// `window_s` seconds.
    pub fn new(ratio: f64, window_s: u64, min_per_s: u64) -> RetryBudget {
        let window_ns = window_s.max(1) * 1_000_000_000;
        RetryBudget {
            ratio,
            floor: (min_per_s * window_s.max(1)) as f64,
            slot_ns: window_ns / SLOTS as u64,
            slots: Default::default(),
        }
    }

    fn slot(&self, now: u64) -> &Slot {
        let epoch = now / self.slot_ns + 1;
        let s = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = s.epoch.load(Ordering::Acquire);
        if seen != epoch
            && s.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This thread moved the slot to a new period: clear the old counts. A racing
            // increment in between may be lost, which only errs by one.
            s.requests.store(0, Ordering::Release);
            s.extras.store(0, Ordering::Release);
        }
        s
    }

    fn totals(&self, now: u64) -> (u64, u64) {
        let current = now / self.slot_ns + 1;
        let mut req = 0;
        let mut ext = 0;
        for s in &self.slots {
            let e = s.epoch.load(Ordering::Acquire);
            if e + (SLOTS as u64) > current && e <= current {
                req += s.requests.load(Ordering::Relaxed);
                ext += s.extras.load(Ordering::Relaxed);
            }
        }
        (req, ext)
    }

    /// Counts one original request.
    pub fn record_request(&self, now: u64) {
        self.slot(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one extra attempt (retry or hedge) from the budget if it has room.
    pub fn try_spend(&self, now: u64) -> bool {
        let (req, ext) = self.totals(now);
        let allowed = self.ratio * req as f64 + self.floor;
        if (ext + 1) as f64 > allowed {
            return false;
        }
        self.slot(now).extras.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Requests and extra attempts in the window (for tests and `/table`).
    pub fn window(&self, now: u64) -> (u64, u64) {
        self.totals(now)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn floor_and_ratio_bound_extras() {
        let b = RetryBudget::new(0.2, 10, 1);
        let now = 100 * S;
        for _ in 0..100 {
            b.record_request(now);
        }
        // 0.2 × 100 + 1 × 10 = 30 extras.
        let granted = (0..100).filter(|_| b.try_spend(now)).count();
        assert_eq!(granted, 30);
    }

    #[test]
    fn the_window_slides() {
        let b = RetryBudget::new(0.0, 10, 1);
        let t0 = 50 * S;
        assert_eq!((0..20).filter(|_| b.try_spend(t0)).count(), 10);
        // Eleven seconds later the old extras have left the window.
        let t1 = t0 + 11 * S;
        assert_eq!((0..20).filter(|_| b.try_spend(t1)).count(), 10);
    }

    proptest! {
        /// Whatever the pattern of requests and attempts, a granted extra never takes the window
        /// over its budget.
        #[test]
        fn extras_never_exceed_budget(
            steps in prop::collection::vec((0u64..300_000_000, 0u32..20, 0u32..20), 1..200),
            ratio in 0.0f64..1.0, floor in 0u64..5,
        ) {
            let b = RetryBudget::new(ratio, 10, floor);
            let mut now = S;
            for (dt, reqs, tries) in steps {
                now += dt;
                for _ in 0..reqs { b.record_request(now); }
                for _ in 0..tries {
                    if b.try_spend(now) {
                        let (r, e) = b.window(now);
                        let bound = ratio * r as f64 + (floor * 10) as f64;
                        prop_assert!(e as f64 <= bound + 1e-9, "extras {} over bound {}", e, bound);
                    }
                }
            }
        }
    }
}
