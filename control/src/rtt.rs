//! Inter-region RTTs for `failover: auto`.
//!
//! The approach: the failover order of a region is decided by what is measured *from that
//! region*. Two sources feed one [`Smoother`]:
//!
//! - **Gateway reports (the pairs).** Every gateway synced to a control plane probes the other
//!   regions of its table on its own schedule (default every 5 s: the fastest TCP connect to up
//!   to 3 endpoints per region) and sends the round's result in its next `POST /v1/reports`
//!   (`Report::rtt_ms`, region -> ms). The hub validates each value ([`check_sample`]: both
//!   regions known and different, finite, `0 <= ms < 60000`; anything else is ignored, counted
//!   per gateway and logged) and forwards the rest here as [`Reported`]. Each value is a sample
//!   of the pair `(gateway's region, other region)`; the samples of every gateway of a region
//!   are smoothed together.
//! - **The control plane's own probes (the fallback).** Every `rtt.interval_ms` the control plane
//!   connects to a few endpoints of each region itself and keeps the fastest connect as the
//!   sample of `("", region)`. The builder uses it for a region none of whose gateways reported
//!   that destination (no gateways yet, an old gateway, or a pair that expired).
//!
//! Samples are smoothed per pair (EWMA). A pair nobody reported for [`PAIR_TTL`] (60 s, i.e. at
//! least 3 rounds at the gateways' longest allowed probe interval of 20 s) is dropped, and so is
//! a control-plane value not refreshed for 3 of its intervals (at least 60 s): stale figures do
//! not decide. Pairs naming a region that left the intent are dropped at once.
//!
//! A noisy RTT must not make a new table version every round, so the smoothed values are only
//! published ([`Event::Rtt`], then the reconciler rebuilds) when a pair appears or expires, or
//! when the order they imply for some region differs from the published order by a clear margin:
//! a region overtakes another only when it is faster by 25 % plus 0.5 ms. The order compared is
//! the one the builder will compute: for each reporting region, its own pair where known and the
//! control plane's value otherwise (see [`crate::builder::failover_orders`]). On loopback every
//! region is one hop away, so the figures mostly show scheduling noise; the order still follows
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::builder::Rtt;
use crate::reconcile::Event;

/// A measured pair: `(from, to)`; `from` is empty for the control plane's own measurement.
pub type Pair = (String, String);

/// A pair reported by no gateway for this long is forgotten.
pub const PAIR_TTL: Duration = Duration::from_secs(60);

/// The highest RTT a report may carry, in ms (exclusive).
pub const MAX_REPORTED_MS: f64 = 60_000.0;

/// Weight of a new sample.
const ALPHA: f64 = 0.3;
/// Relative margin a region must beat another by to overtake it.
const MARGIN: f64 = 1.25;
/// Absolute margin, in ms.
const MARGIN_MS: f64 = 0.5;
/// Longest wait for one of the control plane's own probe connects.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The control plane's own probe connects in flight at once.
const PROBE_CONCURRENCY: usize = 16;
/// How often stale pairs are looked for.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// What the control plane probes and which regions exist, kept current by the reconciler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Every region of the intent in force (reports naming others are dropped).
    pub regions: BTreeSet<String>,
    /// Per region, the endpoint addresses the control plane may probe itself.
    pub addrs: BTreeMap<String, Vec<SocketAddr>>,
}

/// A gateway's validated RTTs to other regions, from one report.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// The reporting gateway's region.
    pub from: String,
    /// Destination region and RTT in ms; every value passed [`check_sample`].
    pub rtt_ms: Vec<(String, f64)>,
}

/// Why a reported value is refused, if it is: both regions must be known and different, and the
/// value finite and in `0..60000` ms.
pub fn check_sample(
    from: &str,
    to: &str,
    ms: f64,
    regions: &BTreeSet<String>,
) -> Result<(), &'static str> {
    if !regions.contains(from) {
        Err("the reporting region is not in the intent")
    } else if !regions.contains(to) {
        Err("the destination region is not in the intent")
    } else if from == to {
        Err("a region's RTT to itself is not used")
    } else if !ms.is_finite() || !(0.0..MAX_REPORTED_MS).contains(&ms) {
        Err("the value is not a finite number of ms in 0..60000")
    } else {
        Ok(())
    }
}

/// One smoothed pair.
#[derive(Debug, Clone, Copy)]
struct Smoothed {
    ms: f64,
    seen: Instant,
}

/// Smoothed RTTs of every pair, and the values last published.
#[derive(Debug, Default, Clone)]
pub struct Smoother {
    ewma: BTreeMap<Pair, Smoothed>,
    published: BTreeMap<Pair, f64>,
}

impl Smoother {
    /// Adds one sample of `from -> to` taken at `now` (`from` empty: the control plane's own).
    pub fn observe(&mut self, from: &str, to: &str, ms: f64, now: Instant) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        self.ewma
            .entry((from.to_string(), to.to_string()))
            .and_modify(|e| {
                e.ms = e.ms * (1.0 - ALPHA) + ms * ALPHA;
                e.seen = now;
            })
            .or_insert(Smoothed { ms, seen: now });
    }

    /// Forgets the control plane's values older than `own_ttl` and reported pairs older than
    /// `pair_ttl`.
    pub fn expire(&mut self, now: Instant, own_ttl: Duration, pair_ttl: Duration) {
        self.ewma.retain(|(from, _), s| {
            let ttl = if from.is_empty() { own_ttl } else { pair_ttl };
            now.saturating_duration_since(s.seen) < ttl
        });
    }

    /// Forgets every pair that names a region not in `regions`.
    pub fn retain_regions(&mut self, regions: &BTreeSet<String>) {
        self.ewma.retain(|(from, to), _| {
            (from.is_empty() || regions.contains(from)) && regions.contains(to)
        });
    }

    /// The RTTs to publish, when a pair appeared or went away, or when the order they imply for
    /// some region changed clearly; `None` otherwise.
    pub fn publish(&mut self) -> Option<Rtt> {
        let now: BTreeMap<Pair, f64> = self.ewma.iter().map(|(k, s)| (k.clone(), s.ms)).collect();
        let same_pairs = now.len() == self.published.len()
            && now.keys().zip(self.published.keys()).all(|(a, b)| a == b);
        if same_pairs && !overtaken(&self.published, &now) {
            return None;
        }
        self.published = now;
        Some(
            self.published
                .iter()
                .map(|(k, ms)| (k.clone(), Duration::from_micros((ms * 1000.0) as u64)))
                .collect(),
        )
    }
}

/// What each view orders by: the control plane's view (`""`) and each reporting region's, where
/// a region's own pair wins over the control plane's value, as in the builder.
fn views(m: &BTreeMap<Pair, f64>) -> BTreeMap<&str, BTreeMap<&str, f64>> {
    let mut regions: BTreeSet<&str> = BTreeSet::new();
    let mut froms: BTreeSet<&str> = BTreeSet::from([""]);
    for (from, to) in m.keys() {
        regions.insert(to);
        if !from.is_empty() {
            regions.insert(from);
            froms.insert(from);
        }
    }
    froms
        .into_iter()
        .map(|from| {
            let view = regions
                .iter()
                .filter(|to| **to != from)
                .filter_map(|to| {
                    let own = m.get(&(from.to_string(), to.to_string()));
                    let fallback = m.get(&(String::new(), to.to_string()));
                    own.or(fallback).map(|ms| (*to, *ms))
                })
                .collect();
            (from, view)
        })
        .collect()
}

/// True when, in some view, a region that was no faster than another is now clearly faster.
/// `old` and `new` hold the same pairs.
fn overtaken(old: &BTreeMap<Pair, f64>, new: &BTreeMap<Pair, f64>) -> bool {
    let (old, new) = (views(old), views(new));
    old.iter().any(|(from, before)| {
        let Some(after) = new.get(from) else {
            return true;
        };
        before.iter().any(|(a, pa)| {
            before.iter().any(|(b, pb)| {
                let (Some(na), Some(nb)) = (after.get(a), after.get(b)) else {
                    return false;
                };
                pa <= pb && nb * MARGIN + MARGIN_MS < *na
            })
        })
    })
}

/// The fastest TCP connect time to each region in `targets`: up to `per_region` addresses of
/// each are tried, at most `concurrency` connects at once, each given up after `timeout`. A
/// region none of whose addresses connected is absent. Connections are closed at once.
pub async fn probe_regions(
    targets: &BTreeMap<String, Vec<SocketAddr>>,
    per_region: usize,
    timeout: Duration,
    concurrency: usize,
) -> BTreeMap<String, Duration> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for (region, addrs) in targets {
        for addr in addrs.iter().take(per_region).copied() {
            let (permits, region) = (permits.clone(), region.clone());
            set.spawn(async move {
                let _permit = permits.acquire_owned().await.ok()?;
                let start = Instant::now();
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => Some((region, start.elapsed())),
                    _ => None,
                }
            });
        }
    }
    let mut best: BTreeMap<String, Duration> = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        if let Ok(Some((region, d))) = done {
            best.entry(region)
                .and_modify(|b| *b = (*b).min(d))
                .or_insert(d);
        }
    }
    best
}

/// Keeps the smoothed RTTs and sends [`Event::Rtt`] when what they imply changes. It probes every
/// region of `targets` itself on `interval` (up to `per_region` endpoints each), takes the
/// gateways' validated reports from `reports` as they come, and expires stale pairs. A probe
/// round runs in its own task, so reports are never held up by it.
pub async fn run(
    mut targets: watch::Receiver<Targets>,
    mut reports: mpsc::Receiver<Reported>,
    interval: Duration,
    per_region: usize,
    events: mpsc::UnboundedSender<Event>,
) {
    let own_ttl = (interval * 3).max(PAIR_TTL);
    let mut smoother = Smoother::default();
    let mut rounds: JoinSet<BTreeMap<String, Duration>> = JoinSet::new();
    let mut next_round = Instant::now();
    let mut expiry = tokio::time::interval(EXPIRY_CHECK);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_round), if rounds.is_empty() => {
                let addrs = targets.borrow().addrs.clone();
                rounds.spawn(async move {
                    probe_regions(&addrs, per_region, PROBE_TIMEOUT, PROBE_CONCURRENCY).await
                });
                next_round = Instant::now() + interval;
            }
            Some(done) = rounds.join_next() => {
                let now = Instant::now();
                // Only regions still in the intent: the targets may have changed meanwhile.
                let regions = targets.borrow().regions.clone();
                for (region, d) in done.unwrap_or_default() {
                    if regions.contains(&region) {
                        smoother.observe("", &region, d.as_secs_f64() * 1000.0, now);
                    }
                }
            }
            Some(rep) = reports.recv() => {
                let now = Instant::now();
                for (to, ms) in &rep.rtt_ms {
                    smoother.observe(&rep.from, to, *ms, now);
                }
            }
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                smoother.retain_regions(&targets.borrow_and_update().regions);
                // New endpoints or regions: measure them now rather than an interval later.
                next_round = Instant::now();
            }
            _ = expiry.tick() => smoother.expire(Instant::now(), own_ttl, PAIR_TTL),
        }
        if let Some(rtt) = smoother.publish() {
            if events.send(Event::Rtt(rtt)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::failover_orders;
    use meridian_api::intent::parse_intent;

    fn key(from: &str, to: &str) -> Pair {
        (from.to_string(), to.to_string())
    }

    fn regions(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn noise_does_not_republish_but_a_clear_change_does() {
        let t = Instant::now();
        let mut s = Smoother::default();
        s.observe("", "a", 10.0, t);
        s.observe("", "b", 20.0, t);
        assert!(s.publish().is_some(), "the first data is published");
        for i in 0..50 {
            s.observe("", "a", 10.0 + f64::from(i % 3), t);
            s.observe("", "b", 19.0 + f64::from(i % 3), t);
            assert!(s.publish().is_none(), "noise republished at {i}");
        }
        for _ in 0..20 {
            s.observe("", "a", 60.0, t);
        }
        let rtt = s.publish().expect("a is now clearly slower");
        assert!(rtt[&key("", "a")] > rtt[&key("", "b")]);
    }

    #[test]
    fn a_new_region_is_published() {
        let t = Instant::now();
        let mut s = Smoother::default();
        s.observe("", "a", 10.0, t);
        assert!(s.publish().is_some());
        s.observe("", "b", 10.0, t);
        assert!(s.publish().is_some());
    }

    #[test]
    fn reported_pairs_are_smoothed_and_noise_within_a_region_does_not_republish() {
        let t = Instant::now();
        let mut s = Smoother::default();
        s.observe("a", "b", 5.0, t);
        s.observe("a", "c", 50.0, t);
        assert!(s.publish().is_some());
        for i in 0..50 {
            s.observe("a", "b", 4.0 + f64::from(i % 4), t);
            s.observe("a", "c", 48.0 + f64::from(i % 5), t);
            assert!(s.publish().is_none(), "noise republished at {i}");
        }
        // One contrary sample is not enough to flip the order ...
        s.observe("a", "b", 90.0, t);
        s.observe("a", "c", 2.0, t);
        assert!(s.publish().is_none(), "a single outlier flipped the order");
        // ... a sustained change is.
        for _ in 0..5 {
            s.observe("a", "b", 90.0, t);
            s.observe("a", "c", 2.0, t);
        }
        let rtt = s.publish().expect("c is now clearly faster from a");
        assert!(rtt[&key("a", "c")] < rtt[&key("a", "b")]);
    }

    #[test]
    fn a_fallback_change_that_reorders_a_reporting_region_is_published() {
        // Region a reports only b; c comes from the control plane's own value. The control
        // plane's b is much lower than a's b, so c overtaking b only shows in a's view.
        let t = Instant::now();
        let mut s = Smoother::default();
        s.observe("a", "b", 10.0, t);
        s.observe("", "b", 1.0, t);
        s.observe("", "c", 20.0, t);
        assert!(s.publish().is_some());
        for _ in 0..20 {
            s.observe("", "c", 3.0, t);
            s.observe("", "b", 1.0, t);
        }
        let rtt = s.publish().expect("c now beats b from a");
        let intent = parse_intent(
            "regions:\n  - { name: a, failover: auto }\n  - { name: b, failover: auto }\n  - { name: c, failover: auto }\n",
        )
        .expect("intent");
        assert_eq!(failover_orders(&intent, &rtt)["a"], vec!["c", "b"]);
    }

    #[test]
    fn each_region_orders_by_what_its_own_gateways_report() {
        let intent = parse_intent(
            "regions:\n  - { name: a, failover: auto }\n  - { name: b, failover: auto }\n  - { name: c, failover: auto }\n",
        )
        .expect("intent");
        let t = Instant::now();
        let mut s = Smoother::default();
        // The control plane sees b far and a, c near: without reports, everyone puts b last.
        s.observe("", "a", 1.0, t);
        s.observe("", "b", 70.0, t);
        s.observe("", "c", 2.0, t);
        // Region a measures b fast and c slow; region c measures a slow and b fast. Two
        // gateways per region, whose samples are smoothed together.
        for (from, to, ms) in [
            ("a", "b", 4.0),
            ("a", "b", 6.0),
            ("a", "c", 80.0),
            ("a", "c", 90.0),
            ("c", "a", 60.0),
            ("c", "a", 65.0),
            ("c", "b", 3.0),
            ("c", "b", 5.0),
        ] {
            s.observe(from, to, ms, t);
        }
        let rtt = s.publish().expect("published");
        let orders = failover_orders(&intent, &rtt);
        assert_eq!(orders["a"], vec!["b", "c"], "a follows its own reports");
        assert_eq!(orders["c"], vec!["b", "a"], "c follows its own reports");
        assert_eq!(
            orders["b"],
            vec!["a", "c"],
            "b reported nothing: the control plane's view"
        );
    }

    #[test]
    fn a_pair_nobody_reports_expires_and_the_region_falls_back() {
        let intent = parse_intent(
            "regions:\n  - { name: a, failover: auto }\n  - { name: b, failover: auto }\n  - { name: c, failover: auto }\n",
        )
        .expect("intent");
        let t0 = Instant::now();
        let mut s = Smoother::default();
        s.observe("", "b", 30.0, t0);
        s.observe("", "c", 5.0, t0);
        s.observe("a", "b", 2.0, t0);
        let rtt = s.publish().expect("published");
        assert_eq!(failover_orders(&intent, &rtt)["a"], vec!["b", "c"]);
        // The control plane keeps measuring; a's gateways go quiet.
        let later = t0 + PAIR_TTL;
        s.observe("", "b", 30.0, later);
        s.observe("", "c", 5.0, later);
        s.expire(later - Duration::from_secs(1), PAIR_TTL, PAIR_TTL);
        assert!(s.publish().is_none(), "not stale yet");
        s.expire(later, PAIR_TTL, PAIR_TTL);
        let rtt = s.publish().expect("the expired pair is published away");
        assert!(!rtt.contains_key(&key("a", "b")));
        assert_eq!(failover_orders(&intent, &rtt)["a"], vec!["c", "b"]);
    }

    #[test]
    fn pairs_of_regions_that_left_the_intent_are_dropped() {
        let t = Instant::now();
        let mut s = Smoother::default();
        s.observe("a", "b", 2.0, t);
        s.observe("x", "b", 2.0, t);
        s.observe("a", "x", 2.0, t);
        s.observe("", "x", 2.0, t);
        assert!(s.publish().is_some());
        s.retain_regions(&regions(&["a", "b"]));
        let rtt = s.publish().expect("the set of pairs changed");
        assert_eq!(rtt.keys().cloned().collect::<Vec<_>>(), vec![key("a", "b")]);
    }

    #[test]
    fn everything_expiring_publishes_an_empty_map_once() {
        let t = Instant::now();
        let mut s = Smoother::default();
        s.observe("a", "b", 2.0, t);
        assert!(s.publish().is_some());
        s.expire(t + PAIR_TTL, PAIR_TTL, PAIR_TTL);
        assert_eq!(s.publish(), Some(Rtt::new()));
        assert_eq!(s.publish(), None);
    }

    #[test]
    fn reported_values_are_checked() {
        let known = regions(&["a", "b"]);
        assert!(check_sample("a", "b", 0.0, &known).is_ok());
        assert!(check_sample("a", "b", 59_999.9, &known).is_ok());
        for (from, to, ms) in [
            ("a", "b", -0.1),
            ("a", "b", 60_000.0),
            ("a", "b", f64::NAN),
            ("a", "b", f64::INFINITY),
            ("a", "a", 1.0),
            ("a", "zz", 1.0),
            ("zz", "b", 1.0),
            ("", "b", 1.0),
        ] {
            assert!(
                check_sample(from, to, ms, &known).is_err(),
                "{from} -> {to} {ms}"
            );
        }
    }

    #[test]
    fn a_bad_sample_is_ignored_by_the_smoother() {
        let t = Instant::now();
        let mut s = Smoother::default();
        s.observe("a", "b", f64::NAN, t);
        s.observe("a", "b", -1.0, t);
        assert!(s.publish().is_none());
    }
}
