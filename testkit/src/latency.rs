//! Latency models for mock upstreams.
//!
//! A [`Latency`] describes how long an upstream waits (after reading the whole
//! request body) before it starts sending its response. Every request draws an
//! independent sample via [`Latency::sample`].

use std::f64::consts::TAU;
use std::time::Duration;

use rand::Rng;

/// Upper bound for any sampled latency (one hour).
///
/// Heavy-tailed models such as [`Latency::LogNormal`] with a large `sigma` can
/// produce absurd values; they are clamped to this instead of overflowing.
pub const MAX_SAMPLE: Duration = Duration::from_secs(3600);

/// Response latency model. The default is [`Latency::None`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Latency {
    /// Answer immediately.
    #[default]
    None,
    /// Always wait exactly this long.
    Fixed(Duration),
    /// Uniformly distributed in `[min, max]` (inclusive, nanosecond
    /// resolution). If `max <= min` the sample is always `min`.
    Uniform {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// Log-normal distribution: `median * exp(sigma * Z)` with `Z ~ N(0, 1)`.
    ///
    /// `sigma` is the standard deviation of the underlying normal
    /// distribution; its sign is ignored and a non-finite `sigma` behaves like
    /// `0.0` (always the median). Samples are clamped to [`MAX_SAMPLE`].
    LogNormal {
        /// Median of the distribution.
        median: Duration,
        /// Shape parameter (e.g. `0.5` for a moderate tail).
        sigma: f64,
    },
    /// Mostly `base`, but `slow` with probability `slow_fraction`.
    ///
    /// `slow_fraction` is clamped to `[0.0, 1.0]`; NaN counts as `0.0`.
    Bimodal {
        /// The common (fast) latency.
        base: Duration,
        /// The occasional (slow) latency.
        slow: Duration,
        /// Probability of drawing `slow`.
        slow_fraction: f64,
    },
}

impl Latency {
    /// Draws one latency sample from this model using `rng`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                if max <= min {
                    return min;
                }
                let lo = saturating_nanos(min);
                let hi = saturating_nanos(max);
                Duration::from_nanos(rng.gen_range(lo..=hi))
            }
            Latency::LogNormal { median, sigma } => {
                let sigma = if sigma.is_finite() { sigma.abs() } else { 0.0 };
                let factor = (sigma * standard_normal(rng)).exp();
                scale(median, factor)
            }
            Latency::Bimodal {
                base,
                slow,
                slow_fraction,
            } => {
                let p = if slow_fraction.is_nan() {
                    0.0
                } else {
                    slow_fraction.clamp(0.0, 1.0)
                };
                if rng.gen_bool(p) {
                    slow
                } else {
                    base
                }
            }
        }
    }
}

/// Standard normal variate via the Box-Muller transform.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // `gen::<f64>()` is in [0, 1); map u1 into (0, 1] so `ln` stays finite.
    let u1 = 1.0 - rng.gen::<f64>();
    let u2 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// `d * factor`, clamped to `[0, MAX_SAMPLE]`.
fn scale(d: Duration, factor: f64) -> Duration {
    let secs = d.as_secs_f64() * factor;
    if !secs.is_finite() || secs >= MAX_SAMPLE.as_secs_f64() {
        return MAX_SAMPLE;
    }
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(MAX_SAMPLE)
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x5eed)
    }

    #[test]
    fn none_and_fixed() {
        let mut r = rng();
        assert_eq!(Latency::None.sample(&mut r), Duration::ZERO);
        assert_eq!(Latency::Fixed(7 * MS).sample(&mut r), 7 * MS);
        assert_eq!(Latency::default(), Latency::None);
    }

    #[test]
    fn uniform_stays_in_bounds_and_spreads() {
        let mut r = rng();
        let l = Latency::Uniform {
            min: 10 * MS,
            max: 20 * MS,
        };
        let samples: Vec<Duration> = (0..10_000).map(|_| l.sample(&mut r)).collect();
        assert!(samples.iter().all(|d| (10 * MS..=20 * MS).contains(d)));
        let below_mid = samples.iter().filter(|d| **d < 15 * MS).count();
        assert!((4_500..5_500).contains(&below_mid), "below_mid={below_mid}");
        // Degenerate range.
        let flat = Latency::Uniform {
            min: 5 * MS,
            max: 1 * MS,
        };
        assert_eq!(flat.sample(&mut r), 5 * MS);
    }

    #[test]
    fn lognormal_median_and_positivity() {
        let mut r = rng();
        let l = Latency::LogNormal {
            median: 50 * MS,
            sigma: 0.5,
        };
        let mut samples: Vec<Duration> = (0..10_000).map(|_| l.sample(&mut r)).collect();
        assert!(samples
            .iter()
            .all(|d| *d > Duration::ZERO && *d <= MAX_SAMPLE));
        samples.sort();
        let median = samples[samples.len() / 2];
        assert!(
            (45 * MS..=55 * MS).contains(&median),
            "empirical median {median:?}"
        );
        // ~84th percentile should be near median * e^sigma (~82 ms).
        let p84 = samples[8_413];
        assert!((75 * MS..=90 * MS).contains(&p84), "p84 {p84:?}");
    }

    #[test]
    fn lognormal_degenerate_sigma() {
        let mut r = rng();
        for sigma in [0.0, f64::NAN, f64::INFINITY] {
            let l = Latency::LogNormal {
                median: 3 * MS,
                sigma,
            };
            assert_eq!(l.sample(&mut r), 3 * MS, "sigma={sigma}");
        }
        let huge = Latency::LogNormal {
            median: Duration::from_secs(1),
            sigma: 1e6,
        };
        for _ in 0..100 {
            assert!(huge.sample(&mut r) <= MAX_SAMPLE);
        }
    }

    #[test]
    fn bimodal_fraction_roughly_right() {
        let mut r = rng();
        let l = Latency::Bimodal {
            base: MS,
            slow: 100 * MS,
            slow_fraction: 0.1,
        };
        let n = 10_000;
        let mut slow = 0;
        for _ in 0..n {
            let d = l.sample(&mut r);
            assert!(d == MS || d == 100 * MS);
            if d == 100 * MS {
                slow += 1;
            }
        }
        // Expected 1000, sd ~30: allow a generous +-150.
        assert!((850..=1_150).contains(&slow), "slow={slow}");
    }

    #[test]
    fn bimodal_fraction_is_clamped() {
        let mut r = rng();
        let always = Latency::Bimodal {
            base: MS,
            slow: 2 * MS,
            slow_fraction: 7.0,
        };
        let never = Latency::Bimodal {
            base: MS,
            slow: 2 * MS,
            slow_fraction: f64::NAN,
        };
        for _ in 0..100 {
            assert_eq!(always.sample(&mut r), 2 * MS);
            assert_eq!(never.sample(&mut r), MS);
        }
    }
}
