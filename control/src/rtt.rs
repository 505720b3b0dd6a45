//! Inter-region RTT probes for `failover: auto`.
//!
//! The approach: every interval the control plane opens a TCP connection to a few endpoints of
//! each region (their resolved addresses) and takes the fastest connect time of the round as that
//! region's sample; samples are smoothed (EWMA). That measures the path from the control plane to
//! each region, which is what a control plane can see by itself; the builder also accepts
//! measurements between two regions (`(from, to)`), to be filled from gateway reports when they
//! carry them. On loopback every region is one hop away, so the figures mostly show scheduling
//! noise; the order still follows them.
//!
//! A noisy RTT must not make a new table version every round, so the smoothed values are only
//! published when the order they imply differs from the published order by a clear margin
//! ([`Smoother`]): a region overtakes another only when it is faster by 25 % plus 0.5 ms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::builder::Rtt;
use crate::reconcile::Event;

/// Smoothed RTTs and the order last published.
#[derive(Debug, Default, Clone)]
pub struct Smoother {
    ewma_ms: BTreeMap<String, f64>,
    published: BTreeMap<String, f64>,
    started: bool,
}

/// Weight of a new sample.
const ALPHA: f64 = 0.3;
/// Relative margin a region must beat another by to overtake it.
const MARGIN: f64 = 1.25;
/// Absolute margin, in ms.
const MARGIN_MS: f64 = 0.5;

impl Smoother {
    /// Adds one sample for `region`.
    pub fn observe(&mut self, region: &str, sample: Duration) {
        let ms = sample.as_secs_f64() * 1000.0;
        self.ewma_ms
            .entry(region.to_string())
            .and_modify(|e| *e = *e * (1.0 - ALPHA) + ms * ALPHA)
            .or_insert(ms);
    }

    /// Forgets regions not in `keep`.
    pub fn retain(&mut self, keep: &[String]) {
        self.ewma_ms.retain(|r, _| keep.contains(r));
        self.published.retain(|r, _| keep.contains(r));
    }

    /// The RTTs to publish, when the order changed clearly (or on the first call with data).
    pub fn publish(&mut self) -> Option<Rtt> {
        if self.ewma_ms.is_empty() {
            return None;
        }
        let same_regions = self.published.len() == self.ewma_ms.len()
            && self.published.keys().all(|k| self.ewma_ms.contains_key(k));
        let overtaken = self.published.keys().any(|a| {
            self.published.keys().any(|b| {
                let (pa, pb) = (self.published[a], self.published[b]);
                let (na, nb) = (self.ewma_ms[a], self.ewma_ms[b]);
                pa <= pb && nb * MARGIN + MARGIN_MS < na
            })
        });
        if self.started && same_regions && !overtaken {
            return None;
        }
        self.started = true;
        self.published = self.ewma_ms.clone();
        Some(
            self.published
                .iter()
                .map(|(r, ms)| {
                    (
                        (String::new(), r.clone()),
                        Duration::from_micros((ms * 1000.0) as u64),
                    )
                })
                .collect(),
        )
    }
}

/// The fastest TCP connect time to any of `addrs`, if one connected within `timeout`.
pub async fn probe(addrs: &[SocketAddr], timeout: Duration) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for a in addrs {
        let start = tokio::time::Instant::now();
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(a)).await {
            let d = start.elapsed();
            best = Some(best.map_or(d, |b| b.min(d)));
        }
    }
    best
}

/// Probes every region on `interval` and sends [`Event::Rtt`] when the order changes. `targets`
/// holds, per region, the addresses to probe (kept current by the reconciler); only regions
/// with `auto` failover somewhere need it, but probing all is cheap.
pub async fn run(
    mut targets: watch::Receiver<BTreeMap<String, Vec<SocketAddr>>>,
    interval: Duration,
    per_region: usize,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut smoother = Smoother::default();
    loop {
        let regions = targets.borrow_and_update().clone();
        let keep: Vec<String> = regions.keys().cloned().collect();
        smoother.retain(&keep);
        for (region, addrs) in &regions {
            let pick: Vec<SocketAddr> = addrs.iter().take(per_region).copied().collect();
            if let Some(d) = probe(&pick, Duration::from_secs(1)).await {
                smoother.observe(region, d);
            }
        }
        if let Some(rtt) = smoother.publish() {
            if events.send(Event::Rtt(rtt)).is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = targets.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn noise_does_not_republish_but_a_clear_change_does() {
        let mut s = Smoother::default();
        s.observe("a", ms(10));
        s.observe("b", ms(20));
        assert!(s.publish().is_some(), "the first data is published");
        for i in 0..50 {
            s.observe("a", ms(10 + i % 3));
            s.observe("b", ms(19 + i % 3));
            assert!(s.publish().is_none(), "noise republished at {i}");
        }
        for _ in 0..20 {
            s.observe("a", ms(60));
        }
        let rtt = s.publish().expect("a is now clearly slower");
        let a = rtt[&(String::new(), "a".to_string())];
        let b = rtt[&(String::new(), "b".to_string())];
        assert!(a > b);
    }

    #[test]
    fn a_new_region_is_published() {
        let mut s = Smoother::default();
        s.observe("a", ms(10));
        assert!(s.publish().is_some());
        s.observe("b", ms(10));
        assert!(s.publish().is_some());
    }
}
