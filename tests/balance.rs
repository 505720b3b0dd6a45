//! End-to-end: the latency-aware balancer of a real `meridian gateway` process steers traffic
//! away from an endpoint that became slow. In its own test binary so that no other load test
//! competes for the CPU while latencies are measured.

mod common;

use std::time::Duration;

use common::*;
use meridian_testkit::Latency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_gets_under_ten_percent() {
    let base = Duration::from_millis(10);
    let ups = upstreams("lat", 3).await;
    for u in &ups {
        u.set_latency(Latency::Fixed(base));
    }
    let t = table(
        1,
        vec![route("lat", None, &[("lat@v1", 1)])],
        vec![subset("lat@v1", &[&ups[0], &ups[1], &ups[2]])],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let url = gw.url("/lat");

    // Warm-up: every endpoint is measured and gets traffic.
    let warm = run_load(&c, LoadSpec::new(url.clone(), 300, 4)).await;
    assert_eq!(warm.errors, 0, "{:?}", warm.first_errors);
    for u in &ups {
        assert!(
            u.requests() > 30,
            "{} got {} in warm-up",
            u.name(),
            u.requests()
        );
    }

    // One endpoint becomes 10x slower.
    ups[0].set_latency(Latency::Fixed(base * 10));
    for u in &ups {
        u.reset_counters();
    }
    let load = run_load(&c, LoadSpec::new(url, 2000, 4)).await;
    assert_eq!(load.sent, 2000);
    assert_eq!(load.errors, 0, "{:?}", load.first_errors);
    let counts: Vec<u64> = ups.iter().map(|u| u.requests()).collect();
    eprintln!("after the slow-down: {counts:?} in {:?}", load.elapsed);
    assert_eq!(counts.iter().sum::<u64>(), 2000);
    let slow_share = 100.0 * counts[0] as f64 / 2000.0;
    assert!(
        slow_share < 10.0,
        "the slow endpoint got {slow_share:.1} % ({counts:?})"
    );
    // The other two share the rest.
    assert!(counts[1] > 600 && counts[2] > 600, "{counts:?}");
}
