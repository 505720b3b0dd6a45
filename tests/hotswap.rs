//! End-to-end: routing tables swapped under load. Fifty valid swaps (endpoints and weights
//! changing every time) fail no request, the gateway ends on the last version, and an invalid
//! table is refused, counted and reported while the table in force keeps serving.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meridian_api::Table;
use meridian_testkit::MockUpstream;

/// Valid swaps after the first table.
const SWAPS: u64 = 50;

/// Version `v`: `svc@v1` on two of the first three upstreams and `svc@v2` on one of the last
/// three, rotating with `v`, with weights that change every version and are never both 0.
fn table_v(v: u64, ups: &[MockUpstream]) -> Table {
    let i = (v % 3) as usize;
    let v1 = subset("svc@v1", &[&ups[i], &ups[(i + 1) % 3]]);
    let v2 = subset("svc@v2", &[&ups[3 + i]]);
    let w2 = (v * 17 % 101) as i64;
    let w1 = 101 - w2;
    table(
        v,
        vec![route("svc", None, &[("svc@v1", w1), ("svc@v2", w2)])],
        vec![v1, v2],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_fail_nothing_and_bad_tables_are_refused() {
    let ups = upstreams("swap", 6).await;
    let gw = Gw::start(&table_v(1, &ups), "").await;
    let c = client();

    let m = gw.metrics().await;
    assert_eq!(metric(&m, "meridian_table_version", &[]), Some(1.0));
    assert_eq!(metric(&m, "meridian_table_applies_total", &[]), Some(1.0));
    assert_eq!(
        metric(&m, "meridian_table_rejections_total", &[]),
        Some(0.0)
    );

    // Continuous traffic, 8 requests in flight, until told to stop (bounded in count and time).
    let stop = Arc::new(AtomicBool::new(false));
    let mut spec = LoadSpec::new(gw.url("/svc"), 200_000, 8);
    spec.limit = Duration::from_secs(60);
    spec.stop = Some(stop.clone());
    let load = tokio::spawn({
        let c = c.clone();
        async move { run_load(&c, spec).await }
    });

    let mut sent_before = Vec::new();
    for v in 2..=SWAPS + 1 {
        gw.write_table(&table_v(v, &ups));
        gw.wait_version(v).await;
        sent_before.push(ups.iter().map(|u| u.requests()).sum::<u64>());
    }
    // A little more traffic on the last table, then stop.
    let at_last = ups.iter().map(|u| u.requests()).sum::<u64>();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while ups.iter().map(|u| u.requests()).sum::<u64>() < at_last + 200 {
        assert!(
            std::time::Instant::now() < end,
            "traffic stalled after the swaps"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let load = load.await.expect("load task");
    eprintln!(
        "{} requests over {SWAPS} swaps in {:?}: {:?}",
        load.sent, load.elapsed, load.by_upstream
    );
    assert_eq!(load.errors, 0, "failed requests: {:?}", load.first_errors);
    assert!(
        load.sent >= 500,
        "too little traffic to prove anything: {}",
        load.sent
    );
    // Traffic kept flowing while the tables changed, and followed them to every endpoint.
    let during = sent_before.last().copied().unwrap_or(0) - sent_before[0];
    assert!(during > 0, "no request was served during the swaps");
    for u in &ups {
        assert!(u.requests() > 0, "{} never got traffic", u.name());
    }

    let last = SWAPS + 1;
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "meridian_table_version", &[]), Some(last as f64));
    assert_eq!(
        metric(&m, "meridian_table_applies_total", &[]),
        Some(last as f64),
        "one apply per table written"
    );
    assert_eq!(
        metric(&m, "meridian_table_rejections_total", &[]),
        Some(0.0)
    );

    // Traffic keeps running while invalid tables are written.
    let stop = Arc::new(AtomicBool::new(false));
    let mut spec = LoadSpec::new(gw.url("/svc"), 100_000, 4);
    spec.limit = Duration::from_secs(30);
    spec.stop = Some(stop.clone());
    let load = tokio::spawn({
        let c = c.clone();
        async move { run_load(&c, spec).await }
    });

    // Invalid by validation: a negative weight, with a higher version.
    let mut bad = table_v(last + 1, &ups);
    bad.routes[0].split[1].weight = -5;
    gw.write_table(&bad);
    gw.wait_metric_at_least("meridian_table_rejections_total", &[], 1.0)
        .await;
    assert_eq!(gw.table_version().await, Some(last), "the old table stays");
    let (_, body) = gw.admin_get("/table").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let why = v["last_rejection"].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains("routes[0].split[1].weight: must be >= 0"),
        "rejection reason: {why}"
    );

    // Invalid by syntax.
    gw.write_table_text("version: 99\nroutes: [ {name: oops\n");
    gw.wait_metric_at_least("meridian_table_rejections_total", &[], 2.0)
        .await;
    assert_eq!(gw.table_version().await, Some(last), "the old table stays");
    let (ready, _) = gw.admin_get("/readyz").await;
    assert_eq!(ready, 200, "still ready on the table in force");

    // Let some traffic through after the rejections, then stop.
    let after = ups.iter().map(|u| u.requests()).sum::<u64>();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while ups.iter().map(|u| u.requests()).sum::<u64>() < after + 200 {
        assert!(
            std::time::Instant::now() < end,
            "traffic stalled after the rejections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let load = load.await.expect("load task");
    assert_eq!(load.errors, 0, "failed requests: {:?}", load.first_errors);
    assert!(load.sent >= 200);

    let m = gw.metrics().await;
    assert_eq!(metric(&m, "meridian_table_version", &[]), Some(last as f64));
    assert_eq!(
        metric(&m, "meridian_table_rejections_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "meridian_table_applies_total", &[]),
        Some(last as f64)
    );

    // Serving is on the last valid table: its split and endpoints.
    let want = table_v(last, &ups);
    let allowed: Vec<String> = want
        .subsets
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.address.clone()))
        .collect();
    for _ in 0..20 {
        let r = get(&c, &gw.url("/svc"), &[]).await;
        assert_eq!(r.status(), 200);
        let up = header(&r, "x-meridian-upstream");
        assert!(allowed.contains(&up), "{up} is not in version {last}");
    }
}
