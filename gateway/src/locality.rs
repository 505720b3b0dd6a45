//! Region priority and spill-over, as Envoy's priority levels do it.
//!
//! A subset's endpoints are grouped by region: the gateway's own region first, then the table's
//! failover order for it. Each region's health is its healthy weight share × 1.4 (the
//! overprovisioning factor), capped at 1. The first region takes as much load as its health
//! allows, the next the rest up to its own health, and so on. When the health of all regions
//! adds up to less than 1, the loads are normalised so that traffic still goes somewhere healthy.

/// The overprovisioning factor: a region at 72 % healthy or more keeps all of its traffic.
pub const OVERPROVISION: f64 = 1.4;

/// Healthy and total endpoint weight of one region, in priority order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionHealth {
    /// Sum of weights of healthy endpoints.
    pub healthy: f64,
    /// Sum of weights of all endpoints.
    pub total: f64,
}

/// The share of traffic each region takes, in the same order; all zero when nothing is healthy.
pub fn loads(regions: &[RegionHealth]) -> Vec<f64> {
    let health: Vec<f64> = regions
        .iter()
        .map(|r| {
            if r.total <= 0.0 {
                0.0
            } else {
                (r.healthy / r.total * OVERPROVISION).min(1.0)
            }
        })
        .collect();
    let sum: f64 = health.iter().sum();
    if sum <= 0.0 {
        return vec![0.0; regions.len()];
    }
    if sum < 1.0 {
        return health.iter().map(|h| h / sum).collect();
    }
    let mut left = 1.0;
    health
        .iter()
        .map(|&h| {
            let take = h.min(left);
            left -= take;
            take
        })
        .collect()
}

/// Picks a region index from cumulative loads with `u` drawn uniformly from [0, 1).
pub fn pick(cumulative: &[f64], u: f64) -> Option<usize> {
    let last = cumulative.last().copied().unwrap_or(0.0);
    if last <= 0.0 {
        return None;
    }
    let target = u * last;
    cumulative
        .iter()
        .position(|&c| target < c)
        .or(Some(cumulative.len() - 1))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rh(healthy: f64, total: f64) -> RegionHealth {
        RegionHealth { healthy, total }
    }

    #[test]
    fn healthy_local_region_keeps_everything() {
        assert_eq!(loads(&[rh(10.0, 10.0), rh(10.0, 10.0)]), vec![1.0, 0.0]);
        // 80 % healthy × 1.4 >= 1: still all local.
        assert_eq!(loads(&[rh(8.0, 10.0), rh(10.0, 10.0)]), vec![1.0, 0.0]);
    }

    #[test]
    fn partial_outage_spills_in_proportion() {
        let l = loads(&[rh(5.0, 10.0), rh(10.0, 10.0)]);
        assert!(
            (l[0] - 0.7).abs() < 1e-9 && (l[1] - 0.3).abs() < 1e-9,
            "{l:?}"
        );
    }

    #[test]
    fn total_outage_sends_everything_on() {
        assert_eq!(loads(&[rh(0.0, 10.0), rh(10.0, 10.0)]), vec![0.0, 1.0]);
        assert_eq!(loads(&[rh(0.0, 0.0), rh(0.0, 3.0)]), vec![0.0, 0.0]);
    }

    #[test]
    fn pick_follows_cumulative_loads() {
        let cum = [0.7, 1.0];
        assert_eq!(pick(&cum, 0.0), Some(0));
        assert_eq!(pick(&cum, 0.69), Some(0));
        assert_eq!(pick(&cum, 0.71), Some(1));
        assert_eq!(pick(&[0.0, 0.0], 0.5), None);
    }

    proptest! {
        #[test]
        fn loads_sum_to_one_or_zero(h in prop::collection::vec((0u32..20, 0u32..20), 1..5)) {
            let regions: Vec<RegionHealth> = h.iter()
                .map(|&(a, b)| rh(f64::from(a.min(b)), f64::from(b)))
                .collect();
            let l = loads(&regions);
            let sum: f64 = l.iter().sum();
            let any = regions.iter().any(|r| r.healthy > 0.0);
            let fine = if any { (sum - 1.0).abs() < 1e-9 } else { sum == 0.0 };
            prop_assert!(fine, "loads {:?} sum to {}", l, sum);
            for (load, r) in l.iter().zip(&regions) {
                prop_assert!(*load >= 0.0);
                if r.healthy == 0.0 { prop_assert!(*load == 0.0); }
            }
        }
    }
}
