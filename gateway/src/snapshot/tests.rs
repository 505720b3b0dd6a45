use std::time::Duration;

use meridian_api::load::parse_table;

use super::*;

fn defaults() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(10),
        total: Duration::from_secs(30),
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
        let (_, ep) = route.subsets[s].subset.pick(&mut rng, 0).expect("endpoint");
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
        .filter(|_| subset.pick(&mut rng, 0).map(|(t, _)| t) == Some(0))
        .count();
    assert!(
        (local as f64 / 100.0 - 46.7).abs() < 2.0,
        "local share {local}"
    );
    // Nothing healthy locally: everything fails over.
    let snap = Snapshot::build(table(9, 1, 0), "eu", defaults(), &m, &mut StatsBook::new());
    let subset = &snap.routes[0].subsets[0].subset;
    assert!((0..1000).all(|_| subset.pick(&mut rng, 0).map(|(t, _)| t) == Some(1)));
}

#[test]
fn stats_survive_a_rebuild() {
    let m = Metrics::new().expect("metrics");
    let mut book = StatsBook::new();
    let a = Snapshot::build(table(2, 1, 2), "eu", defaults(), &m, &mut book);
    let b = Snapshot::build(table(2, 1, 2), "eu", defaults(), &m, &mut book);
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
    assert!(v2.pick(&mut fastrand::Rng::with_seed(3), 0).is_none());
}
