//! Passive health: outlier ejection from the results of real requests.
//!
//! An endpoint with `consecutive_failures` failures in a row (5xx answers, connect failures,
//! resets, timeouts) is ejected for `base × 2^k` (k = ejections so far, capped at `max`). At most
//! `max_ejection_percent` of a subset's endpoints may be out at once; a failing endpoint over that
//! cap stays in and the skip is counted. The multiplier is forgotten once an endpoint has stayed
//! in for `max` after its last ejection. All state is atomics; `now` is passed in.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use meridian_api::Outlier;

/// The latest moment any endpoint in this process is ejected until. While `now` is past it,
/// nothing is ejected and pickers may take their fast path.
static EJECTED_UNTIL_MAX: AtomicU64 = AtomicU64::new(0);

/// True when some endpoint may still be ejected at `now`.
pub fn any_ejected(now: u64) -> bool {
    EJECTED_UNTIL_MAX.load(Ordering::Relaxed) > now
}

/// The outlier state of one endpoint.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive: AtomicU32,
    ejections: AtomicU32,
    until: AtomicU64,
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing (below the threshold, or already ejected).
    None,
    /// The endpoint is now ejected for this long.
    Ejected(Duration),
    /// It crossed the threshold but the ejection cap kept it in.
    CapReached,
}

impl OutlierState {
    /// True while ejected.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.until.load(Ordering::Relaxed) > now
    }

    /// Records a success: the failure run ends.
    pub fn success(&self, policy: &Outlier, now: u64) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        let until = self.until.load(Ordering::Relaxed);
        if until != 0 && now > until + policy.max_ejection_ms * 1_000_000 {
            self.ejections.store(0, Ordering::Relaxed);
            self.until.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure. `ejected_now` and `total` describe the subset (ejected endpoints and
    /// all endpoints) so the cap can be applied; they are only asked for at the threshold.
    pub fn failure(
        &self,
        policy: &Outlier,
        now: u64,
        subset_counts: impl FnOnce() -> (usize, usize),
    ) -> Verdict {
        if self.is_ejected(now) {
            return Verdict::None;
        }
        let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if run < policy.consecutive_failures {
            return Verdict::None;
        }
        let (ejected, total) = subset_counts();
        if total == 0 || (ejected + 1) * 100 > policy.max_ejection_percent as usize * total {
            return Verdict::CapReached;
        }
        let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let ms = policy
            .base_ejection_ms
            .saturating_mul(1u64 << k)
            .min(policy.max_ejection_ms);
        let until = now + ms * 1_000_000;
        self.until.store(until, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        EJECTED_UNTIL_MAX.fetch_max(until, Ordering::Relaxed);
        Verdict::Ejected(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Outlier {
        Outlier {
            consecutive_failures: 3,
            base_ejection_ms: 1_000,
            max_ejection_ms: 3_000,
            max_ejection_percent: 50,
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn ejection_time_doubles_up_to_the_cap() {
        let p = policy();
        let s = OutlierState::default();
        let mut now = 10_000 * MS;
        let mut times = Vec::new();
        for _ in 0..3 {
            let mut v = Verdict::None;
            for _ in 0..3 {
                v = s.failure(&p, now, || (0, 4));
            }
            let Verdict::Ejected(d) = v else {
                panic!("expected an ejection, got {v:?}");
            };
            assert!(s.is_ejected(now) && any_ejected(now));
            times.push(d.as_millis());
            now += d.as_millis() as u64 * MS + 1;
            assert!(!s.is_ejected(now));
        }
        assert_eq!(times, vec![1_000, 2_000, 3_000]);
    }

    #[test]
    fn a_success_breaks_the_run() {
        let p = policy();
        let s = OutlierState::default();
        s.failure(&p, 0, || (0, 4));
        s.failure(&p, 0, || (0, 4));
        s.success(&p, 0);
        assert_eq!(s.failure(&p, 0, || (0, 4)), Verdict::None);
    }

    #[test]
    fn the_cap_keeps_endpoints_in() {
        let p = policy();
        let s = OutlierState::default();
        for _ in 0..2 {
            s.failure(&p, 0, || (1, 2));
        }
        // One of two already out: a second would be 100 % > 50 %.
        assert_eq!(s.failure(&p, 0, || (1, 2)), Verdict::CapReached);
        assert!(!s.is_ejected(0));
    }
}
