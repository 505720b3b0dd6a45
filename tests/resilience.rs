//! End-to-end: retries, the shared budget, outlier ejection, circuit breaking, region failover
//! and data residency, hedging, and status codes, through a real `meridian gateway` process and
//! real mock upstreams.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use meridian_api::{Route, Subset, Table};
use meridian_testkit::{Fault, Latency, MockUpstream, UpstreamConfig};
use serde_json::{json, Value};

/// Load-heavy tests in this binary take turns, so each one's rate is its own and not shared
/// with another load running at the same time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A route on every path with `policy` merged in (retry, hedge, budget, allowed_regions...).
fn route_with(name: &str, prefix: &str, split: &[(&str, i64)], policy: Value) -> Route {
    let mut r = serde_json::to_value(route(name, Some(prefix), split)).expect("route json");
    if let (Some(obj), Value::Object(extra)) = (r.as_object_mut(), policy) {
        obj.extend(extra);
    }
    serde_json::from_value(r).expect("route with policy")
}

/// A subset of `(address, region, zone)` endpoints with `policy` merged in (outlier, limits).
fn subset_in(name: &str, eps: &[(SocketAddr, &str, &str)], policy: Value) -> Subset {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(a, r, z)| json!({"address": a.to_string(), "region": r, "zone": z}))
        .collect();
    let mut s = json!({"name": name, "endpoints": endpoints});
    if let (Some(obj), Value::Object(extra)) = (s.as_object_mut(), policy) {
        obj.extend(extra);
    }
    serde_json::from_value(s).expect("subset")
}

/// A table with one route `api` (every path) to `svc@v1` made of `ups` in the local region,
/// with `route_policy` and `subset_policy` merged in.
fn api_table(ups: &[MockUpstream], route_policy: Value, subset_policy: Value) -> Table {
    table(
        1,
        vec![route_with("api", "/", &[("svc@v1", 100)], route_policy)],
        vec![subset_in("svc@v1", &local(ups), subset_policy)],
    )
}

fn local(ups: &[MockUpstream]) -> Vec<(SocketAddr, &'static str, &'static str)> {
    ups.iter()
        .enumerate()
        .map(|(i, u)| {
            (
                u.addr(),
                REGION,
                if i % 2 == 0 {
                    "eu-west-1a"
                } else {
                    "eu-west-1b"
                },
            )
        })
        .collect()
}

fn total_requests(ups: &[MockUpstream]) -> u64 {
    ups.iter().map(|u| u.requests()).sum()
}

/// Fast outlier settings so the tests see ejection and return within seconds.
fn fast_outlier() -> Value {
    json!({"outlier": {"consecutive_failures": 3, "base_ejection_ms": 1000, "max_ejection_ms": 2000, "max_ejection_percent": 50}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_dying_under_load_costs_no_errors_and_is_ejected_then_readmitted() {
    let _turn = HEAVY.lock().await;
    let ups = upstreams("pool", 3).await;
    let t = table(
        1,
        vec![route_with(
            "api",
            "/",
            &[("svc@v1", 100)],
            json!({"retry": {"attempts": 3}}),
        )],
        vec![subset_in("svc@v1", &local(&ups), fast_outlier())],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let stop = Arc::new(AtomicBool::new(false));
    // 1,000 GETs/s, paced, so the load outlasts the endpoint's death and return however fast
    // the gateway is.
    let mut spec = LoadSpec::new(gw.url("/x"), 20_000, 32);
    spec.limit = Duration::from_secs(20);
    spec.rate = Some(1000.0);
    spec.stop = Some(stop.clone());
    let load = tokio::spawn({
        let c = c.clone();
        async move { run_load(&c, spec).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    ups[0].set_fault(Fault::Refuse);
    gw.wait_metric_at_least(
        "meridian_outlier_ejections_total",
        &[("subset", "svc@v1")],
        1.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dead_at = ups[0].requests();
    ups[0].set_fault(Fault::None);
    // Back after its ejection ends: it is picked again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ups[0].requests() < dead_at + 20 {
        assert!(
            Instant::now() < deadline,
            "the recovered endpoint never got traffic back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let l = load.await.expect("load");
    assert!(l.sent > 1500, "load too small to mean anything: {l:?}");
    let rate = l.sent as f64 / l.elapsed.as_secs_f64();
    assert!(rate >= 500.0, "the load ran at {rate:.0} req/s, below 500");
    assert_eq!(
        l.errors, 0,
        "client errors while an endpoint died: {:?}",
        l.first_errors
    );
    let m = gw.metrics().await;
    assert!(
        metric(&m, "meridian_retries_total", &[("route", "api")]).unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_requests_are_never_retried_after_they_were_sent() {
    let ups = upstreams("post", 2).await;
    for u in &ups {
        u.set_fault(Fault::Status(503));
    }
    let t = api_table(
        &ups,
        json!({"retry": {"attempts": 3, "per_try_timeout_ms": 300}, "budget": {"min_per_s": 100}}),
        json!({"outlier": {"consecutive_failures": 1000}}),
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    for i in 0..10u64 {
        let r = c
            .post(gw.url("/order"))
            .body("{}")
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 503, "the upstream's own 503 passes through");
        assert_eq!(total_requests(&ups), i + 1, "a POST was sent twice");
    }
    // Hanging upstream: the per-try timeout fires after the request was sent; still one attempt.
    for u in &ups {
        u.reset_counters();
        u.set_fault(Fault::Hang);
    }
    let r = c
        .post(gw.url("/order"))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 504);
    assert_eq!(total_requests(&ups), 1, "a timed-out POST was retried");
    // With an Idempotency-Key the same POST may be retried.
    for u in &ups {
        u.reset_counters();
        u.set_fault(Fault::Status(503));
    }
    let r = c
        .post(gw.url("/order"))
        .header("idempotency-key", "k-1")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 503);
    assert_eq!(
        total_requests(&ups),
        2,
        "a keyed POST is retried on the other endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_bodies_arrive_byte_identical_and_large_ones_are_not_retried() {
    // Each endpoint answers every second request with 503, so about half of all first attempts
    // fail and are retried on the other endpoint. Within one case's 4 rounds some endpoint takes
    // two first attempts, and of two requests in a row one is its 503: every case meets at
    // least one retry.
    let mut ups = Vec::new();
    for name in ["a", "b"] {
        let cfg = UpstreamConfig::new(name).error_every(2, 503);
        ups.push(MockUpstream::start(cfg).await.expect("up"));
    }
    let t = api_table(
        &ups,
        json!({"budget": {"min_per_s": 1000}}),
        json!({"outlier": {"consecutive_failures": 100000}}),
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let status_retries = || async {
        metric(
            &gw.metrics().await,
            "meridian_retries_total",
            &[("route", "api"), ("reason", "status")],
        )
        .unwrap_or(0.0)
    };
    let put = |body: &[u8], chunked: bool| {
        let req = c.put(gw.url("/blob"));
        if chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                body.chunks(1000).map(|c| Ok(c.to_vec())).collect();
            req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
        } else {
            req.body(body.to_vec())
        }
    };
    let mut retried = 0;
    for size in [1usize, 100, 4096, 65_536] {
        for chunked in [false, true] {
            let mut retried_here = 0;
            for round in 0..4 {
                let body: Vec<u8> = (0..size).map(|i| (i * 31 + size + round) as u8).collect();
                let before: Vec<u64> = ups.iter().map(|u| u.requests()).collect();
                let retries_before = status_retries().await;
                let r = put(&body, chunked).send().await.expect("put");
                let what = format!("size {size} chunked {chunked} round {round}");
                assert!(
                    r.status() == 200 || r.status() == 503,
                    "{what}: {}",
                    r.status()
                );
                let attempts = header(&r, "x-meridian-attempts");
                r.bytes().await.expect("body");
                // The bodies this request delivered: the newest of each endpoint's recorded ones.
                let bodies: Vec<bytes::Bytes> = ups
                    .iter()
                    .zip(&before)
                    .flat_map(|(u, b)| {
                        let n = (u.requests() - b) as usize;
                        let all = u.received_bodies();
                        all[all.len() - n..].to_vec()
                    })
                    .collect();
                assert!(
                    !bodies.is_empty() && bodies.len() <= 2,
                    "{what}: {} attempts",
                    bodies.len()
                );
                for b in &bodies {
                    assert!(
                        *b == body,
                        "{what}: a replayed body differs from the original"
                    );
                }
                // The gateway's own account of this request agrees with the upstreams'.
                assert_eq!(
                    attempts,
                    bodies.len().to_string(),
                    "{what}: x-meridian-attempts"
                );
                let counted = status_retries().await - retries_before;
                assert_eq!(
                    counted,
                    (bodies.len() - 1) as f64,
                    "{what}: retries counted for {} attempts",
                    bodies.len()
                );
                if bodies.len() == 2 {
                    // Once per endpoint: a retry goes to the other one.
                    for (u, b) in ups.iter().zip(&before) {
                        assert_eq!(u.requests() - b, 1, "{what}: {} got it twice", u.name());
                    }
                    retried_here += 1;
                }
            }
            assert!(
                retried_here >= 1,
                "size {size} chunked {chunked}: no round was retried, so no body was replayed"
            );
            retried += retried_here;
        }
    }
    assert!(
        retried >= 8,
        "too few retries to show replay ({retried} of 32)"
    );
    // Over 64 KiB, with a length or chunked: the first failure is passed through, never retried.
    let big = vec![7u8; 100 * 1024];
    for chunked in [false, true] {
        let mut saw_failure = false;
        for _ in 0..20 {
            let before: Vec<u64> = ups.iter().map(|u| u.requests()).collect();
            let retries_before = status_retries().await;
            let r = put(&big, chunked).send().await.expect("put");
            let status = r.status();
            r.bytes().await.expect("body");
            let delta: Vec<u64> = ups
                .iter()
                .zip(&before)
                .map(|(u, b)| u.requests() - b)
                .collect();
            assert_eq!(
                delta.iter().sum::<u64>(),
                1,
                "a body over 64 KiB was sent twice (chunked {chunked})"
            );
            let took = &ups[delta.iter().position(|d| *d == 1).expect("one endpoint")];
            assert!(
                took.received_bodies().last().map(|b| &b[..]) == Some(&big[..]),
                "a body over 64 KiB arrived altered (chunked {chunked})"
            );
            assert_eq!(
                status_retries().await,
                retries_before,
                "a retry was counted for a body over 64 KiB"
            );
            if status == 503 {
                saw_failure = true;
            }
        }
        assert!(
            saw_failure,
            "no large request met a failing answer (chunked {chunked})"
        );
    }
}

fn two_region_table(eu: &[MockUpstream], us: &[MockUpstream]) -> Table {
    let mut eps = local(eu);
    eps.extend(us.iter().map(|u| (u.addr(), "us-east", "us-east-1a")));
    let mut t = table(
        1,
        vec![
            route_with(
                "open",
                "/open",
                &[("svc@v1", 100)],
                json!({"retry": {"attempts": 3}}),
            ),
            route_with(
                "eu-only",
                "/eu",
                &[("svc@v1", 100)],
                json!({"retry": {"attempts": 3}, "allowed_regions": [REGION]}),
            ),
        ],
        vec![subset_in(
            "svc@v1",
            &eps,
            json!({"outlier": {"consecutive_failures": 2, "base_ejection_ms": 1000, "max_ejection_ms": 1000, "max_ejection_percent": 100}}),
        )],
    );
    t.regions = serde_json::from_value(json!([
        {"name": REGION, "failover": ["us-east"]},
        {"name": "us-east", "failover": [REGION]}
    ]))
    .expect("regions");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_outage_fails_over_within_a_second_without_errors_and_comes_back() {
    let _turn = HEAVY.lock().await;
    let eu = upstreams("eu", 3).await;
    let us = upstreams("us", 3).await;
    let gw = Gw::start(&two_region_table(&eu, &us), "").await;
    let c = client();
    // Before: all local.
    let l = run_load(&c, LoadSpec::new(gw.url("/open/a"), 300, 8)).await;
    assert_eq!(l.errors, 0);
    assert_eq!(
        total_requests(&us),
        0,
        "a healthy local region keeps its traffic"
    );

    let stop = Arc::new(AtomicBool::new(false));
    // Paced at 1,000 GETs/s so the load lasts through the outage and the recovery.
    let mut spec = LoadSpec::new(gw.url("/open/b"), 20_000, 8);
    spec.limit = Duration::from_secs(20);
    spec.rate = Some(1000.0);
    spec.stop = Some(stop.clone());
    let load = tokio::spawn({
        let c = c.clone();
        async move { run_load(&c, spec).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    for u in &eu {
        u.set_fault(Fault::Refuse);
    }
    // Failover is complete when requests are served by us-east at the first attempt: probe
    // with single requests and look at the gateway's debug headers.
    let probe = client();
    let mut complete = None;
    let mut streak = 0;
    let mut streak_start = killed.elapsed();
    while killed.elapsed() < Duration::from_secs(5) && complete.is_none() {
        let sent_at = killed.elapsed();
        let r = get(&probe, &gw.url("/open/probe"), &[]).await;
        let first_try = header(&r, "x-meridian-attempts") == "1";
        if r.status() == 200 && header(&r, "x-meridian-region") == "us-east" && first_try {
            if streak == 0 {
                streak_start = sent_at;
            }
            streak += 1;
            if streak == 20 {
                complete = Some(streak_start);
            }
        } else {
            streak = 0;
        }
    }
    let complete = complete.expect("requests never settled on us-east at the first attempt");
    assert!(
        complete < Duration::from_secs(1),
        "failover took {complete:?}"
    );
    // Recovery: eu serves again once its ejections end.
    for u in &eu {
        u.reset_counters();
        u.set_fault(Fault::None);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while total_requests(&eu) < 50 {
        assert!(Instant::now() < deadline, "traffic never came back to eu");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let l = load.await.expect("load");
    assert_eq!(
        l.errors, 0,
        "errors during the outage: {:?}",
        l.first_errors
    );
    println!(
        "failover complete after {complete:?}; {} requests, 0 errors",
        l.sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eu_only_route_answers_503_in_a_total_eu_outage_while_an_open_route_fails_over() {
    let _turn = HEAVY.lock().await;
    let eu = upstreams("eu", 2).await;
    let us = upstreams("us", 2).await;
    let gw = Gw::start(&two_region_table(&eu, &us), "").await;
    let c = client();
    for u in &eu {
        u.set_fault(Fault::Refuse);
    }
    // Let passive health eject every eu endpoint.
    let open = run_load(&c, LoadSpec::new(gw.url("/open/x"), 200, 4)).await;
    assert_eq!(open.errors, 0, "{:?}", open.first_errors);
    let us_before = total_requests(&us);
    let mut refused = 0;
    for _ in 0..20 {
        let r = get(&c, &gw.url("/eu/x"), &[]).await;
        assert_ne!(
            r.status(),
            200,
            "an eu-only request succeeded during a total eu outage"
        );
        if r.status() == 503 {
            refused += 1;
        }
    }
    assert!(refused >= 15, "eu-only requests got {refused}/20 503s");
    assert_eq!(
        total_requests(&us),
        us_before,
        "an eu-only request reached us-east"
    );
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            "meridian_residency_refusals_total",
            &[("route", "eu-only")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_hedges_stay_within_the_budget_and_the_metrics_agree() {
    budget_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_and_retries_share_one_budget_and_the_metrics_agree() {
    budget_run(true).await;
}

/// Every endpoint answers 503 after 20 ms; 300 GETs, 4 at a time, may take up to 3 attempts
/// each, on a route whose budget is `ratio` 0.2 over 10 s plus 1 per second. With `hedged`, the
/// route also hedges after 5 ms, so each request asks for a hedge (while its first attempt is
/// still out) and then for retries, all from the same budget.
async fn budget_run(hedged: bool) {
    let _turn = HEAVY.lock().await;
    let mut ups = Vec::new();
    for i in 0..3 {
        let cfg = UpstreamConfig::new(format!("fail-{i}"))
            .latency(Latency::Fixed(Duration::from_millis(20)));
        let u = MockUpstream::start(cfg).await.expect("up");
        u.set_fault(Fault::Status(503));
        ups.push(u);
    }
    let (ratio, window_s, floor) = (0.2, 10.0, 1.0);
    let mut policy = json!({"retry": {"attempts": 3, "backoff_base_ms": 1, "backoff_max_ms": 2},
                            "budget": {"ratio": ratio, "window_s": window_s as u64, "min_per_s": floor as u64}});
    if hedged {
        policy["hedge"] = json!({"delay_ms": 5});
    }
    let t = table(
        1,
        vec![route_with("api", "/", &[("svc@v1", 100)], policy)],
        vec![subset_in(
            "svc@v1",
            &local(&ups),
            json!({"outlier": {"consecutive_failures": 100000}}),
        )],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let n = 300;
    let l = run_load(&c, LoadSpec::new(gw.url("/x"), n, 4)).await;
    assert_eq!(l.statuses.get(&503).copied(), Some(n as u64), "{l:?}");
    let m = gw.metrics().await;
    let retries = metric(&m, "meridian_retries_total", &[("route", "api")]).unwrap_or(0.0);
    let hedges = metric(&m, "meridian_hedges_total", &[("route", "api")]).unwrap_or(0.0);
    let exhausted =
        metric(&m, "meridian_budget_exhausted_total", &[("route", "api")]).unwrap_or(0.0);
    let extras = retries + hedges;
    println!(
        "hedged {hedged}: {n} requests in {:?}, retries {retries}, hedges {hedges}, \
         budget exhausted {exhausted}, attempts {:?}",
        l.elapsed, l.by_attempts
    );
    // While the whole run fits in the window (it spans at most 10 one-second slots), extras
    // are bounded by ratio × requests + floor × window; a slot rollover may lose one count.
    // A slower run lets older extras slide out of the window: bound it per window it spanned.
    let secs = l.elapsed.as_secs_f64();
    let bound = if secs <= window_s - 1.0 {
        ratio * n as f64 + floor * window_s
    } else {
        2.0 * ratio * n as f64 + floor * window_s * ((secs / window_s).ceil() + 1.0)
    };
    let slack = 2.0;
    assert!(
        extras <= bound + slack,
        "retries {retries} + hedges {hedges} over the budget {bound} (run took {secs:.1} s)"
    );
    // Demand (up to 2 extras per request) is far above the budget: it is used up.
    let tight = ratio * n as f64 + floor * window_s;
    assert!(
        extras >= tight - slack,
        "the budget was not used: {extras} of {tight}"
    );
    if hedged {
        assert!(hedges >= 1.0, "no hedge was sent: {m}");
        assert!(retries >= 1.0, "no retry was made: {m}");
    } else {
        assert_eq!(hedges, 0.0, "a route without hedging hedged");
    }
    // The upstreams saw each request once plus every extra attempt the metrics counted...
    let sent = total_requests(&ups) as f64;
    assert_eq!(
        sent,
        n as f64 + extras,
        "upstream count {sent} != requests + retries + hedges"
    );
    // ...and so did the attempts each response reports.
    let by = |a: u32| l.with_attempts(a) as f64;
    assert_eq!(
        by(1) + by(2) + by(3),
        n as f64,
        "attempt counts: {:?}",
        l.by_attempts
    );
    assert_eq!(
        by(2) + 2.0 * by(3),
        extras,
        "attempt counts {:?} disagree with the metrics",
        l.by_attempts
    );
    // A request short of its 3 attempts stopped because the budget refused it, which was
    // counted: exactly once without hedging (its one refused retry ended it); with hedging, at
    // most once more (a refused hedge does not end the request, a refused retry does).
    let short = by(1) + by(2);
    assert!(short >= 1.0, "no request was refused an extra attempt");
    if hedged {
        assert!(
            exhausted >= short && exhausted <= 2.0 * short + by(3),
            "budget exhausted {exhausted}, attempt counts {:?}",
            l.by_attempts
        );
    } else {
        assert_eq!(
            exhausted, short,
            "budget exhausted {exhausted}, attempt counts {:?}",
            l.by_attempts
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_keep_their_meaning_for_http_and_grpc() {
    let hang = MockUpstream::start(UpstreamConfig::new("hang"))
        .await
        .expect("up");
    hang.set_fault(Fault::Hang);
    let refused = MockUpstream::start(UpstreamConfig::new("refused"))
        .await
        .expect("up");
    refused.set_fault(Fault::Refuse);
    let reset = MockUpstream::start(UpstreamConfig::new("reset"))
        .await
        .expect("up");
    reset.set_fault(Fault::ResetMidBody);
    let none: Vec<MockUpstream> = Vec::new();
    let t = table(
        1,
        vec![
            route_with(
                "hang",
                "/hang",
                &[("hang@v1", 100)],
                json!({"retry": {"attempts": 1}, "timeouts": {"read_ms": 300}}),
            ),
            route_with("refused", "/refused", &[("refused@v1", 100)], json!({})),
            route_with(
                "reset",
                "/reset",
                &[("reset@v1", 100)],
                json!({"retry": {"attempts": 1}}),
            ),
            route_with("empty", "/empty", &[("empty@v1", 100)], json!({})),
        ],
        vec![
            subset_in("hang@v1", &local(std::slice::from_ref(&hang)), json!({})),
            subset_in(
                "refused@v1",
                &local(std::slice::from_ref(&refused)),
                json!({}),
            ),
            subset_in("reset@v1", &local(std::slice::from_ref(&reset)), json!({})),
            subset_in("empty@v1", &local(&none), json!({})),
        ],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let code = |r: &reqwest::Response| r.status().as_u16();
    let r = get(&c, &gw.url("/hang"), &[]).await;
    assert_eq!(code(&r), 504);
    let r = get(&c, &gw.url("/refused"), &[]).await;
    assert_eq!(code(&r), 502);
    let r = get(&c, &gw.url("/empty"), &[]).await;
    assert_eq!(code(&r), 503);
    assert_eq!(header(&r, "x-meridian-reject"), "no-healthy-endpoint");
    // Reset mid-body: headers were already relayed, so the client sees a broken body.
    let r = c.get(gw.url("/reset")).send().await;
    let broken = match r {
        Ok(r) => r.bytes().await.is_err(),
        Err(_) => true,
    };
    assert!(
        broken,
        "a reset mid-body must not look like a complete answer"
    );

    let grpc = [("content-type", "application/grpc")];
    let r = get(&c, &gw.url("/hang"), &grpc).await;
    assert_eq!(code(&r), 200);
    assert_eq!(header(&r, "grpc-status"), "4");
    let r = get(&c, &gw.url("/refused"), &grpc).await;
    assert_eq!(code(&r), 200);
    assert_eq!(header(&r, "grpc-status"), "14");
    let r = get(&c, &gw.url("/empty"), &grpc).await;
    assert_eq!(header(&r, "grpc-status"), "14");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_another_gateway_is_not_retried_again() {
    let ups = upstreams("hop", 2).await;
    for u in &ups {
        u.set_fault(Fault::Status(503));
    }
    let t = api_table(
        &ups,
        json!({"budget": {"min_per_s": 100}}),
        json!({"outlier": {"consecutive_failures": 1000}}),
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let r = get(&c, &gw.url("/x"), &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(total_requests(&ups), 2, "a plain GET is retried once");
    assert_eq!(
        ups.iter().map(|u| u.requests()).max(),
        Some(1),
        "always to another endpoint"
    );
    let r = get(&c, &gw.url("/x"), &[("x-meridian-attempt", "1")]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        total_requests(&ups),
        3,
        "a request carrying x-meridian-attempt was retried"
    );
}

/// Six GETs at once to one endpoint that answers in 500 ms, through a subset with `limits`:
/// each refusal must be a fast 503 with the `reason` header. Returns the gateway, the endpoint
/// and how many were served and refused.
async fn burst_against_a_limit(limits: Value, reason: &str) -> (Gw, MockUpstream, u64, u64) {
    let slow = MockUpstream::start(
        UpstreamConfig::new("slow").latency(Latency::Fixed(Duration::from_millis(500))),
    )
    .await
    .expect("up");
    let t = table(
        1,
        vec![route_with("api", "/", &[("svc@v1", 100)], json!({}))],
        vec![subset_in(
            "svc@v1",
            &local(std::slice::from_ref(&slow)),
            json!({ "limits": limits }),
        )],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (c, url) = (c.clone(), gw.url("/x"));
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = c.get(url).send().await.expect("get");
            (
                r.status().as_u16(),
                header(&r, "x-meridian-reject"),
                t0.elapsed(),
            )
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let (code, got, took) = t.await.expect("task");
        match code {
            200 => ok += 1,
            503 => {
                assert_eq!(got, reason);
                assert!(
                    took < Duration::from_millis(400),
                    "the 503 was not fast: {took:?}"
                );
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 2 && limited >= 1, "ok {ok}, limited {limited}");
    (gw, slow, ok, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_in_flight_limit_gives_a_fast_503_with_a_reason() {
    let (gw, _slow, _, _) = burst_against_a_limit(json!({"max_inflight": 2}), "subset-limit").await;
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            "meridian_circuit_open_total",
            &[("subset", "svc@v1"), ("limit", "subset")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_races_a_slow_endpoint_and_the_first_answer_wins() {
    let slow = MockUpstream::start(
        UpstreamConfig::new("slow").latency(Latency::Fixed(Duration::from_millis(800))),
    )
    .await
    .expect("up");
    let fast = MockUpstream::start(
        UpstreamConfig::new("fast").latency(Latency::Fixed(Duration::from_millis(5))),
    )
    .await
    .expect("up");
    let ups = [slow, fast];
    let t = table(
        1,
        vec![route_with(
            "api",
            "/",
            &[("svc@v1", 100)],
            json!({"hedge": {"delay_ms": 50}, "budget": {"min_per_s": 1000}}),
        )],
        vec![subset_in("svc@v1", &local(&ups), json!({}))],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    for _ in 0..30 {
        let t0 = Instant::now();
        let r = get(&c, &gw.url("/x"), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "x-upstream"),
            "fast",
            "the slow endpoint's answer won a race"
        );
        r.bytes().await.expect("body");
        assert!(
            t0.elapsed() < Duration::from_millis(600),
            "hedge did not cut latency: {:?}",
            t0.elapsed()
        );
    }
    let m = gw.metrics().await;
    let hedges = metric(&m, "meridian_hedges_total", &[("route", "api")]).unwrap_or(0.0);
    let wins = metric(&m, "meridian_hedge_wins_total", &[("route", "api")]).unwrap_or(0.0);
    assert!(hedges >= 1.0 && wins >= 1.0, "hedges {hedges}, wins {wins}");
    assert!(wins <= hedges);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_is_ejected_the_gateway_fails_open_and_says_so() {
    let ups = upstreams("all", 2).await;
    for u in &ups {
        u.set_fault(Fault::Status(500));
    }
    let t = api_table(
        &ups,
        json!({"retry": {"attempts": 1}}),
        json!({"outlier": {"consecutive_failures": 2, "base_ejection_ms": 30000, "max_ejection_ms": 30000, "max_ejection_percent": 100}}),
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    run_load(&c, LoadSpec::new(gw.url("/x"), 20, 1)).await;
    gw.wait_metric_at_least(
        "meridian_outlier_ejections_total",
        &[("subset", "svc@v1")],
        2.0,
    )
    .await;
    for u in &ups {
        u.set_fault(Fault::None);
    }
    let r = get(&c, &gw.url("/x"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-meridian-fail-open"), "1");
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            "meridian_outlier_fail_open_total",
            &[("subset", "svc@v1")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_by_the_upstream_costs_no_error() {
    // One endpoint only: the retry after a stale pooled connection has to go back to it, on a
    // fresh connection. No budget at all: only the free stale-connection retry can save a
    // request.
    let up = MockUpstream::start(UpstreamConfig::new("solo"))
        .await
        .expect("up");
    let t = table(
        1,
        vec![route_with(
            "api",
            "/",
            &[("svc@v1", 100)],
            json!({"budget": {"ratio": 0.0, "min_per_s": 0}}),
        )],
        vec![subset_in(
            "svc@v1",
            &local(std::slice::from_ref(&up)),
            json!({}),
        )],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let stale = [("route", "api"), ("reason", "stale-connection")];
    for round in 0..20 {
        let r = get(&c, &gw.url("/x"), &[]).await;
        assert_eq!(r.status(), 200, "round {round}");
        // Close every connection the upstream holds (the gateway's pooled one included), then
        // accept again at once. The pool's liveness check usually sees the close before reuse.
        up.set_fault(Fault::Refuse);
        up.set_fault(Fault::None);
        let r = get(&c, &gw.url("/x"), &[]).await;
        assert_eq!(
            r.status(),
            200,
            "round {round}: the stale pooled connection cost an error"
        );
    }
    // Now the close races the reuse: the upstream closes a kept-alive connection, unanswered,
    // when the next request arrives on it, so the gateway only learns it was stale by sending.
    let before = metric(&gw.metrics().await, "meridian_retries_total", &stale).unwrap_or(0.0);
    up.set_fault(Fault::CloseReused);
    let n = 10u64;
    let served = up.requests();
    let mut second_tries = 0u64;
    for round in 0..n {
        let r = get(&c, &gw.url("/x"), &[]).await;
        assert_eq!(
            r.status(),
            200,
            "round {round}: a connection closed as it was reused cost an error"
        );
        if header(&r, "x-meridian-attempts") == "2" {
            second_tries += 1;
        }
        r.bytes().await.expect("body");
    }
    assert_eq!(up.requests() - served, n, "each request was served once");
    let m = gw.metrics().await;
    let retried = metric(&m, "meridian_retries_total", &stale).unwrap_or(0.0) - before;
    assert!(
        retried >= 1.0,
        "no stale-connection retry was counted in {n} requests: {m}"
    );
    assert_eq!(
        retried, second_tries as f64,
        "stale-connection retries counted vs responses that took a second attempt"
    );
    for reason in ["reset", "status", "connect-failure", "per-try-timeout"] {
        assert_eq!(
            metric(
                &m,
                "meridian_retries_total",
                &[("route", "api"), ("reason", reason)]
            )
            .unwrap_or(0.0),
            0.0,
            "a {reason} retry with no budget: {m}"
        );
    }
    assert_eq!(
        metric(&m, "meridian_budget_exhausted_total", &[("route", "api")]).unwrap_or(0.0),
        0.0,
        "the stale-connection retry took from the budget: {m}"
    );
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_response_headers_is_retried_on_the_other_endpoint() {
    // `reset` reads each request and aborts the connection before any response byte; `good`
    // answers after 30 ms, so the balancer keeps preferring the fast-failing `reset` as the
    // first pick and nearly every request meets the reset.
    let reset = MockUpstream::start(UpstreamConfig::new("reset"))
        .await
        .expect("up");
    reset.set_fault(Fault::ResetBeforeHeaders);
    let good = MockUpstream::start(
        UpstreamConfig::new("good").latency(Latency::Fixed(Duration::from_millis(30))),
    )
    .await
    .expect("up");
    let never_eject = json!({"outlier": {"consecutive_failures": 100000}});
    let both = [reset.clone(), good.clone()];
    let t = table(
        1,
        vec![
            route_with(
                "both",
                "/both",
                &[("both@v1", 100)],
                json!({"budget": {"min_per_s": 1000}}),
            ),
            route_with(
                "alone",
                "/alone",
                &[("alone@v1", 100)],
                json!({"budget": {"min_per_s": 1000}}),
            ),
            route_with(
                "once",
                "/once",
                &[("both@v1", 100)],
                json!({"retry": {"attempts": 1}}),
            ),
        ],
        vec![
            subset_in("both@v1", &local(&both), never_eject.clone()),
            subset_in(
                "alone@v1",
                &local(std::slice::from_ref(&reset)),
                never_eject,
            ),
        ],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();

    // Two endpoints: a request that meets the reset is retried on `good` and succeeds.
    let mut sent = 0u64;
    let mut retried = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while reset.requests() < 5 {
        assert!(
            sent < 200 && Instant::now() < deadline,
            "the resetting endpoint got only {} of {sent} requests",
            reset.requests()
        );
        let r = get(&c, &gw.url("/both/x"), &[]).await;
        sent += 1;
        assert_eq!(r.status(), 200, "a reset before headers reached the client");
        assert_eq!(header(&r, "x-upstream"), "good");
        if header(&r, "x-meridian-attempts") == "2" {
            retried += 1;
        }
        r.bytes().await.expect("body");
    }
    assert_eq!(good.requests(), sent, "every request ends on `good` once");
    assert_eq!(
        retried,
        reset.requests(),
        "every request that met the reset was retried once"
    );
    gw.assert_metric(
        "meridian_retries_total",
        &[("route", "both"), ("reason", "reset")],
        reset.requests() as f64,
    )
    .await;

    // One endpoint: there is no other endpoint to retry on, so the client gets 502, and the
    // endpoint is not tried twice.
    for _ in 0..3 {
        let before = reset.requests();
        let r = get(&c, &gw.url("/alone/x"), &[]).await;
        assert_eq!(r.status(), 502);
        assert_eq!(reset.requests(), before + 1, "retried on the same endpoint");
    }
    // Two endpoints but a single attempt: the first reset is the answer.
    let mut saw_502 = false;
    for _ in 0..50 {
        let (r0, g0) = (reset.requests(), good.requests());
        let r = get(&c, &gw.url("/once/x"), &[]).await;
        let code = r.status().as_u16();
        let got = (reset.requests() - r0, good.requests() - g0);
        match code {
            502 => assert_eq!(got, (1, 0), "a 502 after more than one attempt"),
            200 => assert_eq!(got, (0, 1), "a 200 after more than one attempt"),
            other => panic!("unexpected status {other}"),
        }
        r.bytes().await.expect("body");
        if code == 502 {
            saw_502 = true;
            break;
        }
    }
    assert!(saw_502, "no single-attempt request met the reset");
    let m = gw.metrics().await;
    for route in ["alone", "once"] {
        assert_eq!(
            metric(&m, "meridian_retries_total", &[("route", route)]).unwrap_or(0.0),
            0.0,
            "route {route} retried: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_never_hedged_but_a_get_on_the_same_route_is() {
    // Both endpoints answer after 400 ms; the hedge delay is 30 ms, so a hedge, if sent, reaches
    // an upstream long before the first answer comes back.
    let mut ups = Vec::new();
    for name in ["slow-a", "slow-b"] {
        let cfg = UpstreamConfig::new(name).latency(Latency::Fixed(Duration::from_millis(400)));
        ups.push(MockUpstream::start(cfg).await.expect("up"));
    }
    let t = api_table(
        &ups,
        json!({"hedge": {"delay_ms": 30}, "budget": {"min_per_s": 1000}}),
        json!({}),
    );
    let gw = Gw::start(&t, "").await;
    let c = client();
    let hedges = || async {
        metric(
            &gw.metrics().await,
            "meridian_hedges_total",
            &[("route", "api")],
        )
        .unwrap_or(0.0)
    };
    for i in 0..3 {
        let before = total_requests(&ups);
        let r = c
            .post(gw.url("/order"))
            .body(format!("{{\"order\": {i}}}"))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-meridian-attempts"), "1");
        r.bytes().await.expect("body");
        assert_eq!(
            total_requests(&ups) - before,
            1,
            "a POST without Idempotency-Key was hedged"
        );
    }
    assert_eq!(hedges().await, 0.0, "a hedge was counted for a POST");

    // A GET on the same route is hedged; so is a POST carrying an Idempotency-Key.
    for i in 0..3 {
        let before = total_requests(&ups);
        let r = get(&c, &gw.url("/x"), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-meridian-attempts"), "2");
        r.bytes().await.expect("body");
        assert_eq!(total_requests(&ups) - before, 2, "GET {i} was not hedged");
    }
    gw.assert_metric("meridian_hedges_total", &[("route", "api")], 3.0)
        .await;
    let before = total_requests(&ups);
    let r = c
        .post(gw.url("/order"))
        .header("idempotency-key", "k-7")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    r.bytes().await.expect("body");
    assert_eq!(
        total_requests(&ups) - before,
        2,
        "a keyed POST was not hedged"
    );
    gw.assert_metric("meridian_hedges_total", &[("route", "api")], 4.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_in_flight_limit_gives_a_fast_503_with_a_reason() {
    let (gw, slow, ok, limited) =
        burst_against_a_limit(json!({"max_inflight_per_endpoint": 2}), "endpoint-limit").await;
    assert_eq!(
        slow.requests(),
        ok,
        "a request refused by the limit reached the endpoint"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "meridian_circuit_open_total",
            &[("subset", "svc@v1"), ("limit", "endpoint")]
        )
        .unwrap_or(0.0),
        limited as f64,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "meridian_circuit_open_total",
            &[("subset", "svc@v1"), ("limit", "subset")]
        )
        .unwrap_or(0.0),
        0.0,
        "the subset limit was not reached: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_connection_does_not_use_up_one_of_the_routes_attempts() {
    // Three regions in failover order, one endpoint each, so every pick is known in advance:
    // `tired` (local) closes a kept-alive connection when it is reused, `failing` (first
    // failover) answers 503 and `good` (second failover) serves.
    let tired = MockUpstream::start(UpstreamConfig::new("tired"))
        .await
        .expect("up");
    tired.set_fault(Fault::CloseReused);
    let failing = MockUpstream::start(UpstreamConfig::new("failing"))
        .await
        .expect("up");
    failing.set_fault(Fault::Status(503));
    let good = MockUpstream::start(UpstreamConfig::new("good"))
        .await
        .expect("up");
    let eps = vec![
        (tired.addr(), REGION, "eu-west-1a"),
        (failing.addr(), "us-east", "us-east-1a"),
        (good.addr(), "ap-south", "ap-south-1a"),
    ];
    let mut t = table(
        1,
        vec![route_with(
            "api",
            "/",
            &[("svc@v1", 100)],
            json!({"retry": {"attempts": 2}, "budget": {"min_per_s": 100}}),
        )],
        vec![subset_in(
            "svc@v1",
            &eps,
            json!({"outlier": {"consecutive_failures": 100000}}),
        )],
    );
    t.regions = serde_json::from_value(json!([
        {"name": REGION, "failover": ["us-east", "ap-south"]},
        {"name": "us-east", "failover": [REGION]},
        {"name": "ap-south", "failover": [REGION]}
    ]))
    .expect("regions");
    let gw = Gw::start(&t, "").await;
    let c = client();
    for round in 1..=3u64 {
        // A fresh connection to `tired`: served, and kept in the gateway's pool.
        let r = get(&c, &gw.url("/x"), &[]).await;
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(header(&r, "x-upstream"), "tired", "round {round}");
        r.bytes().await.expect("body");
        // The pooled connection is closed as it is reused: the free retry goes to `failing`,
        // whose 503 still has the route's second attempt left, on `good`.
        let r = get(&c, &gw.url("/x"), &[]).await;
        assert_eq!(
            (r.status().as_u16(), header(&r, "x-upstream")),
            (200, "good".to_string()),
            "round {round}: the stale-connection retry used up the route's retry"
        );
        assert_eq!(header(&r, "x-meridian-attempts"), "3", "round {round}");
        r.bytes().await.expect("body");
        assert_eq!(
            (tired.requests(), failing.requests(), good.requests()),
            (round, round, round),
            "round {round}"
        );
    }
    let m = gw.metrics().await;
    for (reason, want) in [("stale-connection", 3.0), ("status", 3.0)] {
        assert_eq!(
            metric(
                &m,
                "meridian_retries_total",
                &[("route", "api"), ("reason", reason)]
            ),
            Some(want),
            "{reason} retries: {m}"
        );
    }
}
