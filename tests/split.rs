//! End-to-end: subset choice through a real `meridian gateway` process. Weighted splits hold to
//! within a percentage point over 10,000 requests, pins and sticky keys hold, and raising the
//! canary weight only moves users toward the canary.

mod common;

use std::collections::BTreeMap;

use common::*;
use meridian_api::{Pin, Sticky};
use meridian_testkit::MockUpstream;

/// Requests per weighted-split case.
const SPLIT_REQUESTS: usize = 10_000;
/// Concurrent requests in the split runs.
const SPLIT_CONCURRENCY: usize = 32;

/// Runs one weighted-split case through its own gateway: `SPLIT_REQUESTS` unkeyed requests,
/// `SPLIT_CONCURRENCY` at a time. Every subset's share must be within one percentage point of its
/// weight's, a subset of weight 0 must get nothing, and the upstreams must agree with the
/// `x-meridian-subset` headers. `sizes` gives each subset's endpoint count.
async fn split_case(name: &str, split: &[(&str, i64)], sizes: &[usize]) {
    let mut subsets = Vec::new();
    let mut per_subset = Vec::new();
    for ((subset_name, _), n) in split.iter().zip(sizes) {
        let ups = upstreams(subset_name, *n).await;
        subsets.push(subset(subset_name, &ups.iter().collect::<Vec<_>>()));
        per_subset.push(ups);
    }
    let t = table(1, vec![route(name, None, split)], subsets);
    let gw = Gw::start(&t, "workers: 2\n").await;
    let c = client();
    let load = run_load(
        &c,
        LoadSpec::new(gw.url("/split"), SPLIT_REQUESTS, SPLIT_CONCURRENCY),
    )
    .await;
    eprintln!(
        "{name}: {} requests in {:?} ({:.0}/s): {:?}",
        load.sent,
        load.elapsed,
        load.sent as f64 / load.elapsed.as_secs_f64(),
        load.by_subset
    );
    assert_eq!(load.sent, SPLIT_REQUESTS as u64, "{name}: run cut short");
    assert_eq!(load.errors, 0, "{name}: {:?}", load.first_errors);
    assert_eq!(
        load.by_subset.values().sum::<u64>(),
        SPLIT_REQUESTS as u64,
        "{name}: every response names its subset: {:?}",
        load.by_subset
    );
    let total: i64 = split.iter().map(|(_, w)| w).sum();
    for ((subset_name, weight), ups) in split.iter().zip(&per_subset) {
        let want = 100.0 * *weight as f64 / total as f64;
        let got = load.share(subset_name);
        assert!(
            (got - want).abs() <= 1.0,
            "{name}: {subset_name} got {got:.2} %, want {want:.2} % ± 1 ({:?})",
            load.by_subset
        );
        // The upstreams saw what the headers say.
        let served: u64 = ups.iter().map(|u| u.requests()).sum();
        let by_header = load.by_subset.get(*subset_name).copied().unwrap_or(0);
        assert_eq!(served, by_header, "{name}: {subset_name} upstream count");
        if *weight == 0 {
            assert_eq!(
                served, 0,
                "{name}: {subset_name} has weight 0 and got traffic"
            );
        } else if ups.len() > 1 && served >= 100 * ups.len() as u64 {
            for u in ups {
                assert!(u.requests() > 0, "{name}: {} got nothing", u.name());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_0_100_sends_nothing_to_weight_0() {
    split_case("w0-100", &[("svc@a", 0), ("svc@b", 100)], &[2, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_100_0_sends_nothing_to_weight_0() {
    split_case("w100-0", &[("svc@a", 100), ("svc@b", 0)], &[2, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_1_99_holds_within_one_point() {
    split_case("w1-99", &[("svc@a", 1), ("svc@b", 99)], &[2, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_80_20_holds_within_one_point() {
    split_case("w80-20", &[("svc@a", 80), ("svc@b", 20)], &[2, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_80_20_between_nine_and_two_endpoints_holds_within_one_point() {
    split_case(
        "w80-20-wide",
        &[("wide@v1", 80), ("narrow@v2", 20)],
        &[9, 2],
    )
    .await;
}

/// A route `/` split stable/canary with a sticky `x-user-id` and the `x-canary` pin.
fn canary_table(
    version: u64,
    canary_weight: i64,
    stable: &[&MockUpstream],
    canary: &[&MockUpstream],
) -> meridian_api::Table {
    let mut r = route(
        "vitals",
        None,
        &[
            ("vitals@stable", 100 - canary_weight),
            ("vitals@canary", canary_weight),
        ],
    );
    r.sticky = Some(Sticky {
        header: Some("x-user-id".into()),
        cookie: None,
    });
    r.pin = Some(Pin {
        header: "x-canary".into(),
        values: BTreeMap::from([
            ("always".to_string(), "vitals@canary".to_string()),
            ("never".to_string(), "vitals@stable".to_string()),
        ]),
    });
    table(
        version,
        vec![r],
        vec![
            subset("vitals@stable", stable),
            subset("vitals@canary", canary),
        ],
    )
}

/// The subset each user lands on: every user asks twice and must land the same both times.
async fn subsets_of(c: &reqwest::Client, url: &str, users: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(users.len());
    for chunk in users.chunks(50) {
        let mut tasks = Vec::new();
        for u in chunk {
            let (c, url, u) = (c.clone(), url.to_string(), u.clone());
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..2 {
                    let r = get(&c, &url, &[("x-user-id", &u)]).await;
                    assert_eq!(r.status(), 200, "user {u}");
                    seen.push(header(&r, "x-meridian-subset"));
                }
                assert_eq!(seen[0], seen[1], "user {u} flipped between requests");
                seen.remove(0)
            }));
        }
        for t in tasks {
            out.push(t.await.expect("user task"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_and_sticky_users_only_move_toward_a_growing_canary() {
    let ups = upstreams("sticky", 4).await;
    let (stable, canary) = ([&ups[0], &ups[1]], [&ups[2], &ups[3]]);
    let gw = Gw::start(&canary_table(1, 10, &stable, &canary), "").await;
    let c = client();
    let url = gw.url("/vitals");

    // The pin wins over weights and sticky keys.
    for (value, want) in [("always", "vitals@canary"), ("never", "vitals@stable")] {
        for i in 0..50 {
            let user = format!("pinned-{i}");
            let r = get(&c, &url, &[("x-canary", value), ("x-user-id", &user)]).await;
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "x-meridian-subset"), want, "x-canary: {value}");
        }
    }

    // Sticky at 10 %: each user always lands on the same subset, about 10 % on the canary.
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let before = subsets_of(&c, &url, &users).await;
    let canary_before = before.iter().filter(|s| *s == "vitals@canary").count();
    assert!(
        (50..=150).contains(&canary_before),
        "{canary_before} of 1000 users on a 10 % canary"
    );

    // Raise the canary to 50 %.
    gw.write_table(&canary_table(2, 50, &stable, &canary));
    gw.wait_version(2).await;
    let after = subsets_of(&c, &url, &users).await;
    let mut back = Vec::new();
    let mut moved = 0;
    for ((u, b), a) in users.iter().zip(&before).zip(&after) {
        match (b.as_str(), a.as_str()) {
            ("vitals@canary", "vitals@stable") => back.push(u.clone()),
            ("vitals@stable", "vitals@canary") => moved += 1,
            _ => {}
        }
    }
    assert!(
        back.is_empty(),
        "users moved from canary back to stable: {back:?}"
    );
    let canary_after = after.iter().filter(|s| *s == "vitals@canary").count();
    assert!(
        (420..=580).contains(&canary_after),
        "{canary_after} of 1000 users on a 50 % canary"
    );
    assert_eq!(canary_after, canary_before + moved);
    assert!(moved >= 250, "only {moved} users moved to the canary");
}
