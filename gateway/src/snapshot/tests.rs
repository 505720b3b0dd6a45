use std::time::Duration;

use meridian_api::load::parse_table;

use std::net::SocketAddr;

use super::*;

fn defaults() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(10),
        total: Duration::from_secs(30),
    }
}

/// Region index and endpoint of an unrestricted first-attempt pick.
fn pick<'a>(s: &'a SubsetRt, rng: &mut fastrand::Rng) -> Option<(usize, &'a EndpointRt)> {
    let allowed = vec![true; s.regions.len()];
    let o = PickOpts {
        allowed: &allowed,
        restricted: false,
        tried: &[],
        avoid: 0,
        now: 0,
    };
    match s.pick(rng, &o) {
        Picked::Endpoint { tier, ep, .. } => Some((tier, ep)),
        _ => None,
    }
}

fn table(v1_eps: usize, v2_eps: usize, eu_healthy: usize) -> Table {
    let mut text = String::from(
        "version: 1\nregions: [{name: eu, failover: [us]}, {name: us}]\nroutes:\n  - name: r\n    split: [{subset: s@v1, weight: 80}, {subset: s@v2, weight: 20}]\nsubsets:\n  - name: s@v1\n    endpoints:\n",
    );
    for i in 0..v1_eps {
        let healthy = i < eu_healthy;
        text += &format!(
            "      - {{address: '127.0.0.1:{}', region: eu, healthy: {healthy}}}\n",
            1000 + i
        );
        text += &format!(
            "      - {{address: '127.0.0.2:{}', region: us}}\n",
            1000 + i
        );
    }
    text += "  - name: s@v2\n    endpoints:\n";
    for i in 0..v2_eps {
        text += &format!(
            "      - {{address: '127.0.0.3:{}', region: eu}}\n",
            1000 + i
        );
    }
    parse_table(&text).expect("valid")
}

#[test]
fn split_between_unequal_subsets_is_exact() {
    let m = Metrics::new().expect("metrics");
    let snap = Snapshot::build(table(9, 2, 9), "eu", defaults(), &m, &mut StatsBook::new());
    let route = &snap.routes[0];
    let mut hits = [0u32; 2];
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..10_000 {
        let s = route.splitter.next();
        hits[s] += 1;
        let (_, ep) = pick(&route.subsets[s].subset, &mut rng).expect("endpoint");
        assert_eq!(&*ep.region, "eu", "healthy local region keeps its traffic");
    }
    assert!((hits[0] as i64 - 8_000).abs() <= 100, "{hits:?}");
}

#[test]
fn degraded_local_region_spills_in_proportion() {
    let m = Metrics::new().expect("metrics");
    // 3 of 9 local endpoints healthy: 1/3 × 1.4 = 46.7 % stays local.
    let snap = Snapshot::build(table(9, 1, 3), "eu", defaults(), &m, &mut StatsBook::new());
    let subset = &snap.routes[0].subsets[0].subset;
    let mut rng = fastrand::Rng::with_seed(2);
    let local = (0..10_000)
        .filter(|_| pick(subset, &mut rng).map(|(t, _)| t) == Some(0))
        .count();
    assert!(
        (local as f64 / 100.0 - 46.7).abs() < 2.0,
        "local share {local}"
    );
    // Nothing healthy locally: everything fails over.
    let snap = Snapshot::build(table(9, 1, 0), "eu", defaults(), &m, &mut StatsBook::new());
    let subset = &snap.routes[0].subsets[0].subset;
    assert!((0..1000).all(|_| pick(subset, &mut rng).map(|(t, _)| t) == Some(1)));
}

#[test]
fn stats_survive_a_rebuild() {
    let m = Metrics::new().expect("metrics");
    let mut book = StatsBook::new();
    let a = Snapshot::build(table(2, 1, 2), "eu", defaults(), &m, &mut book);
    let b = Snapshot::build(table(2, 1, 2), "eu", defaults(), &m, &mut book);
    assert!(
        Arc::ptr_eq(&a.routes[0].state, &b.routes[0].state),
        "route budget carried over"
    );
    let ea = &a.routes[0].subsets[0].subset.tiers[0][0];
    let eb = &b.routes[0].subsets[0].subset.tiers[0][0];
    assert!(Arc::ptr_eq(&ea.stats, &eb.stats));
}

#[test]
fn a_region_without_failover_stays_home() {
    let m = Metrics::new().expect("metrics");
    let snap = Snapshot::build(table(3, 1, 0), "us", defaults(), &m, &mut StatsBook::new());
    // us has no failover list: only its own endpoints count, and v2 has none there.
    let v2 = &snap.routes[0].subsets[1].subset;
    assert!(pick(v2, &mut fastrand::Rng::with_seed(3)).is_none());
}

#[test]
fn retries_skip_tried_endpoints_and_cross_regions() {
    let m = Metrics::new().expect("metrics");
    let snap = Snapshot::build(table(2, 1, 2), "eu", defaults(), &m, &mut StatsBook::new());
    let s = &snap.routes[0].subsets[0].subset;
    let allowed = vec![true; s.regions.len()];
    let eu: Vec<SocketAddr> = s.tiers[0].iter().map(|e| e.addr).collect();
    let o = PickOpts {
        allowed: &allowed,
        restricted: false,
        tried: &eu,
        avoid: 0,
        now: 0,
    };
    let mut rng = fastrand::Rng::with_seed(9);
    for _ in 0..100 {
        match s.pick(&mut rng, &o) {
            Picked::Endpoint {
                tier,
                ep,
                fail_open,
            } => {
                assert_eq!(
                    tier, 1,
                    "both local endpoints tried: the next region serves"
                );
                assert!(!eu.contains(&ep.addr) && !fail_open);
            }
            other => panic!("expected an endpoint, got {other:?}"),
        }
    }
}

#[test]
fn residency_refuses_rather_than_leave_the_allowed_regions() {
    let m = Metrics::new().expect("metrics");
    // No healthy local endpoint; the route may only use eu.
    let snap = Snapshot::build(table(3, 1, 0), "eu", defaults(), &m, &mut StatsBook::new());
    let s = &snap.routes[0].subsets[0].subset;
    let allowed = vec![true, false];
    let o = PickOpts {
        allowed: &allowed,
        restricted: true,
        tried: &[],
        avoid: 0,
        now: 0,
    };
    let mut rng = fastrand::Rng::with_seed(10);
    assert!(matches!(s.pick(&mut rng, &o), Picked::Residency));
    let open = vec![true, true];
    let o = PickOpts {
        allowed: &open,
        restricted: false,
        tried: &[],
        avoid: 0,
        now: 0,
    };
    assert!(matches!(
        s.pick(&mut rng, &o),
        Picked::Endpoint { tier: 1, .. }
    ));
}

#[test]
fn ejected_endpoints_get_no_traffic_and_all_ejected_fails_open() {
    let m = Metrics::new().expect("metrics");
    let snap = Snapshot::build(table(3, 1, 3), "eu", defaults(), &m, &mut StatsBook::new());
    let s = &snap.routes[0].subsets[0].subset;
    let policy = meridian_api::Outlier {
        consecutive_failures: 1,
        max_ejection_percent: 100,
        ..Default::default()
    };
    let now = crate::balance::now_ns();
    let bad = &s.tiers[0][0];
    assert!(matches!(
        bad.stats.outlier.failure(&policy, now, || (0, 6)),
        crate::outlier::Verdict::Ejected(_)
    ));
    let allowed = vec![true, true];
    let o = PickOpts {
        allowed: &allowed,
        restricted: false,
        tried: &[],
        avoid: 0,
        now,
    };
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..1000 {
        if let Picked::Endpoint { ep, .. } = s.pick(&mut rng, &o) {
            assert_ne!(ep.addr, bad.addr, "an ejected endpoint must get no traffic");
        }
    }
    // Eject everything in both regions: the pick fails open and says so.
    for e in s.tiers.iter().flatten() {
        e.stats.outlier.failure(&policy, now, || (0, 6));
    }
    assert!(matches!(
        s.pick(&mut rng, &o),
        Picked::Endpoint {
            fail_open: true,
            ..
        }
    ));
}

#[test]
fn an_endpoint_that_leaves_the_table_leaves_metrics_too() {
    let m = Metrics::new().expect("metrics");
    let mut book = StatsBook::new();
    let series = |m: &Metrics, addr: &str| {
        String::from_utf8(m.render())
            .expect("utf-8")
            .lines()
            .any(|l| l.starts_with("meridian_upstream_inflight") && l.contains(addr))
    };
    let _a = Snapshot::build(table(3, 1, 3), "eu", defaults(), &m, &mut book);
    assert!(series(&m, "127.0.0.1:1002"));
    assert!(series(&m, "127.0.0.2:1002"));
    // 127.0.0.1:1001-1002 and 127.0.0.2:1001-1002 leave; 127.0.0.1:1000 stays.
    let _b = Snapshot::build(table(1, 1, 1), "eu", defaults(), &m, &mut book);
    for gone in [
        "127.0.0.1:1001",
        "127.0.0.1:1002",
        "127.0.0.2:1001",
        "127.0.0.2:1002",
    ] {
        assert!(!series(&m, gone), "{gone} still exported");
    }
    assert!(series(&m, "127.0.0.1:1000"));
    assert!(series(&m, "127.0.0.3:1000"));
    // And one that comes back is exported again.
    let _c = Snapshot::build(table(2, 1, 2), "eu", defaults(), &m, &mut book);
    assert!(series(&m, "127.0.0.1:1001"));
}
