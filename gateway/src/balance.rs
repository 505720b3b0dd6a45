//! Endpoint choice: power of two choices over peak-EWMA latency × (in-flight + 1) ÷ weight.
//!
//! Peak EWMA (Finagle's and Linkerd's balancer): a sample above the estimate replaces it at once,
//! a sample below it is blended in with weight `1 - exp(-Δt/τ)`, and an idle estimate decays
//! toward zero with the same τ, so a slow endpoint that stops getting traffic is probed again
//! later rather than starved for ever. Everything here is atomics; `now` is passed in.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// Decay constant of the estimate: 10 s, as in Linkerd.
pub const DECAY: Duration = Duration::from_secs(10);
/// Estimate of an endpoint never measured, when no peer in its region has been measured either
/// (otherwise it starts at their mean, see [`EndpointStats::seed`]): 1 ms. Its first sample,
/// higher or lower, replaces it.
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// Nanoseconds since the process's first call; the gateway's monotonic clock.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Live load and latency of one endpoint address. Shared by every snapshot that lists it, so a
/// table swap keeps what was learned.
#[derive(Debug)]
pub struct EndpointStats {
    inflight: AtomicU64,
    /// Estimate in nanoseconds, as `f64` bits.
    ewma: AtomicU64,
    /// When the estimate was last updated, from [`now_ns`].
    stamp: AtomicU64,
    /// Whether any latency sample has been folded in yet.
    measured: AtomicBool,
    gauge: IntGauge,
    /// Passive health of this endpoint.
    pub outlier: crate::outlier::OutlierState,
    /// Idle keep-alive connections to it (the HTTP/1 engine's pool).
    pub pool: crate::h1::upstream::Pool,
}

impl EndpointStats {
    /// Fresh stats reporting in-flight requests to `gauge`.
    pub fn new(gauge: IntGauge) -> EndpointStats {
        EndpointStats {
            inflight: AtomicU64::new(0),
            ewma: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(now_ns()),
            measured: AtomicBool::new(false),
            gauge,
            outlier: Default::default(),
            pool: Default::default(),
        }
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// The decayed latency estimate at `now`, in nanoseconds.
    pub fn estimate(&self, now: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let age = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        ewma * (-age / DECAY.as_nanos() as f64).exp()
    }

    /// True once a latency sample has been folded in.
    pub fn measured(&self) -> bool {
        self.measured.load(Ordering::Relaxed)
    }

    /// Starts an endpoint that has no sample yet at `estimate` (its peers' current mean), so
    /// that it competes on equal terms: with the fixed [`DEFAULT_RTT`] a new endpoint among
    /// faster peers would not be picked until that guess had decayed below them (about 15 s on
    /// loopback), and among slower peers it would take a burst. No-op once measured.
    pub fn seed(&self, estimate: f64, now: u64) {
        if self.measured() || !(estimate.is_finite() && estimate > 0.0) {
            return;
        }
        self.ewma.store(estimate.to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// The balancer's cost at `now`: estimate × (in-flight + 1).
    pub fn cost(&self, now: u64) -> f64 {
        self.estimate(now) * (self.inflight() + 1) as f64
    }

    /// Folds in one latency sample taken at `now`. Racing updates may lose one sample; that is
    /// the price of staying lock-free and does not bias the estimate.
    pub fn observe(&self, rtt: Duration, now: u64) {
        let first = !self.measured.load(Ordering::Relaxed);
        if first {
            self.measured.store(true, Ordering::Relaxed);
        }
        let sample = rtt.as_nanos() as f64;
        let prev_stamp = self.stamp.swap(now, Ordering::Relaxed);
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        // The first sample replaces the starting guess outright.
        let next = if first || sample > ewma {
            sample
        } else {
            let age = now.saturating_sub(prev_stamp) as f64;
            let w = (-age / DECAY.as_nanos() as f64).exp();
            ewma * w + sample * (1.0 - w)
        };
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Takes an in-flight slot unless `limit` are already taken. The slot is taken first and
    /// given back when over the limit, so concurrent callers never overshoot it.
    pub fn try_begin(self: &Arc<Self>, limit: u64) -> Option<InflightGuard> {
        let before = self.inflight.fetch_add(1, Ordering::Relaxed);
        self.gauge.inc();
        let guard = InflightGuard(self.clone());
        (before < limit).then_some(guard)
    }

    /// Counts a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.gauge.inc();
        InflightGuard(self.clone())
    }
}

/// Holds one in-flight slot of an endpoint; releases it on drop, on every path.
#[derive(Debug)]
pub struct InflightGuard(Arc<EndpointStats>);

impl InflightGuard {
    /// The endpoint's stats.
    pub fn stats(&self) -> &Arc<EndpointStats> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.gauge.dec();
    }
}

/// Picks an index among `n` candidates by power of two choices: two distinct random candidates,
/// the lower `cost(i) / weight(i)` wins. `None` when `n == 0`.
pub fn p2c(
    n: usize,
    rng: &mut fastrand::Rng,
    cost: impl Fn(usize) -> f64,
    weight: impl Fn(usize) -> f64,
) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        _ => {
            let a = rng.usize(..n);
            let mut b = rng.usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let ca = cost(a) / weight(a);
            let cb = cost(b) / weight(b);
            Some(if cb < ca { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Arc<EndpointStats> {
        let g = IntGauge::new("g", "g").expect("gauge");
        Arc::new(EndpointStats::new(g))
    }

    #[test]
    fn peaks_jump_up_and_decay_down() {
        let s = stats();
        let t0 = now_ns();
        s.observe(Duration::from_millis(50), t0);
        assert!((s.estimate(t0) - 50e6).abs() < 1.0);
        // Ten seconds later, untouched, it has decayed by e.
        let later = t0 + DECAY.as_nanos() as u64;
        assert!((s.estimate(later) - 50e6 / std::f64::consts::E).abs() < 1e3);
        // A low sample right after a peak barely moves it.
        s.observe(Duration::from_millis(1), t0 + 1_000_000);
        assert!(s.estimate(t0 + 1_000_000) > 49e6);
    }

    #[test]
    fn a_new_endpoint_is_seeded_once_and_a_measured_one_never() {
        let (fresh, old) = (stats(), stats());
        let t0 = now_ns();
        old.observe(Duration::from_micros(200), t0);
        fresh.seed(200_000.0, t0);
        assert!((fresh.estimate(t0) - 200_000.0).abs() < 1.0);
        fresh.observe(Duration::from_micros(300), t0);
        fresh.seed(5.0, t0);
        assert!(
            (fresh.estimate(t0) - 300_000.0).abs() < 1.0,
            "seeded after a sample"
        );
        old.seed(1e9, t0);
        assert!((old.estimate(t0) - 200_000.0).abs() < 1.0);
        let unseeded = stats();
        unseeded.seed(f64::NAN, now_ns());
        let guess = DEFAULT_RTT.as_nanos() as f64;
        assert!(
            (unseeded.estimate(now_ns()) - guess).abs() < guess * 0.01,
            "NaN seeded"
        );
    }

    #[test]
    fn try_begin_never_hands_out_more_than_the_limit() {
        let s = stats();
        let held: Vec<_> = (0..5).filter_map(|_| s.try_begin(3)).collect();
        assert_eq!(held.len(), 3);
        assert_eq!(s.inflight(), 3, "a refused slot is given back");
        drop(held);
        assert_eq!(s.inflight(), 0);
        assert!(s.try_begin(0).is_none());
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn inflight_guard_counts_and_releases() {
        let s = stats();
        let g1 = s.begin();
        let g2 = s.begin();
        assert_eq!(s.inflight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn p2c_avoids_the_expensive_endpoint() {
        let mut rng = fastrand::Rng::with_seed(7);
        let costs = [1.0, 1.0, 10.0];
        let mut hits = [0u32; 3];
        for _ in 0..10_000 {
            let i = p2c(3, &mut rng, |i| costs[i], |_| 1.0).expect("some");
            hits[i] += 1;
        }
        // The costly one only wins when it is not drawn at all: never, with distinct picks.
        assert_eq!(hits[2], 0);
        assert!(hits[0] > 4_000 && hits[1] > 4_000, "{hits:?}");
    }
}
