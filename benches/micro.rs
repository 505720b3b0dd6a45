//! Criterion micro-benchmarks of the gateway's request-path building blocks and of table swaps.
//!
//! Run: `cargo bench -p meridian-gateway --bench micro` (add `-- --quick` for a fast pass).
//!
//! Tables are built from JSON through the same parser and validator the gateway uses, so the
//! benchmarks keep compiling when the table gains optional fields.
//!
//! - `route_match`: [`Router::find`] against 10,000 routes, laid out two ways: spread over 100
//!   hosts (the host hash narrows the search), and all on one host (a linear scan of path rules).
//! - `split`: [`Splitter::next`] (weighted) and [`Splitter::for_key`] (sticky).
//! - `endpoint_pick`: [`SubsetRt::pick`] among 1,000 endpoints: the first attempt (fast path) and
//!   a retry that must skip the endpoint already tried (slow path).
//! - `table`: building a snapshot of a table with 100,000 endpoints, storing it through an
//!   `ArcSwap` (and dropping the old one), and a reader's `load_full` while a writer swaps.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method};
use meridian_api::Table;
use meridian_gateway::config::Timeouts;
use meridian_gateway::metrics::Metrics;
use meridian_gateway::routing::Router;
use meridian_gateway::snapshot::{PickOpts, Picked, Snapshot, StatsBook, SubsetRt};
use meridian_gateway::split::Splitter;
use serde_json::{json, Value};

const REGION: &str = "eu-west";

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(10),
        total: Duration::from_secs(30),
    }
}

/// Parses and validates a table given as JSON, as the gateway would.
fn table(v: &Value) -> Table {
    let text = serde_json::to_string(v).expect("json");
    match meridian_api::load::parse_table(&text) {
        Ok(t) => t,
        Err(e) => panic!("benchmark table is invalid: {e}"),
    }
}

/// `n` distinct loopback endpoints starting at `first`, all in the local region.
fn endpoints(first: usize, n: usize) -> Vec<Value> {
    (first..first + n)
        .map(|i| {
            // 127.x.y.z:port, unique per i: 60,000 ports per address.
            let ip = i / 60_000;
            let port = 1_024 + i % 60_000;
            json!({
                "address": format!("127.0.{}.{}:{port}", ip / 250, 1 + ip % 250),
                "region": REGION,
                "zone": format!("{REGION}-{}", i % 3),
            })
        })
        .collect()
}

/// `n` routes; `hosts` distinct hosts take them in turn. Each route has a path prefix (some of
/// them a method or header condition too) and a 90/10 split over two subsets.
fn routes(n: usize, hosts: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let host = format!("svc{}.example.com", i % hosts);
            let mut m = json!({
                "hosts": [host],
                "path": { "prefix": format!("/api/v1/r{i}/") },
            });
            if i % 7 == 3 {
                m["methods"] = json!(["GET", "HEAD"]);
            }
            if i % 11 == 5 {
                m["headers"] = json!([{ "name": "x-tenant", "exact": format!("t{i}") }]);
            }
            json!({
                "name": format!("r{i}"),
                "match": m,
                "split": [
                    { "subset": "s@v1", "weight": 90 },
                    { "subset": "s@v2", "weight": 10 },
                ],
            })
        })
        .collect()
}

fn routing_table(n: usize, hosts: usize) -> Table {
    table(&json!({
        "version": 1,
        "regions": [{ "name": REGION }],
        "routes": routes(n, hosts),
        "subsets": [
            { "name": "s@v1", "endpoints": endpoints(0, 2) },
            { "name": "s@v2", "endpoints": endpoints(2, 2) },
        ],
    }))
}

fn bench_route_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_match");
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("t9999"));
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    let get = Method::GET;

    // 10,000 routes over 100 hosts: 100 rules behind the request's host.
    let spread = routing_table(10_000, 100);
    let router = Router::new(&spread.routes);
    let (host, path) = ("svc50.example.com", "/api/v1/r5050/items/7");
    assert_eq!(router.find(host, path, &get, &headers), Some(5050));
    g.bench_function("10k_routes_100_hosts/hit_middle", |b| {
        b.iter(|| router.find(black_box(host), black_box(path), &get, &headers))
    });
    g.bench_function("10k_routes_100_hosts/miss", |b| {
        b.iter(|| router.find(black_box(host), black_box("/nothing/here"), &get, &headers))
    });

    // 10,000 routes on one host: the worst case, a scan of prefix rules (longest first).
    let one = routing_table(10_000, 1);
    let router = Router::new(&one.routes);
    let host = "svc0.example.com";
    let path = "/api/v1/r5000/items/7";
    assert_eq!(router.find(host, path, &get, &headers), Some(5000));
    g.bench_function("10k_routes_1_host/hit_middle", |b| {
        b.iter(|| router.find(black_box(host), black_box(path), &get, &headers))
    });
    g.bench_function("10k_routes_1_host/miss", |b| {
        b.iter(|| router.find(black_box(host), black_box("/nothing"), &get, &headers))
    });

    g.sample_size(10);
    g.bench_function("compile_10k_routes", |b| {
        b.iter(|| Router::new(black_box(&spread.routes)))
    });
    g.finish();
}

fn bench_split(c: &mut Criterion) {
    let mut g = c.benchmark_group("subset_pick");
    let two = Splitter::new(&[90, 10]);
    g.bench_function("weighted_90_10/next", |b| b.iter(|| black_box(&two).next()));
    let key = b"user-0b5c1e7a-42";
    g.bench_function("weighted_90_10/sticky_key", |b| {
        b.iter(|| two.for_key(black_box(key)))
    });
    let ten = Splitter::new(&[10; 10]);
    g.bench_function("ten_subsets/next", |b| b.iter(|| black_box(&ten).next()));
    g.finish();
}

fn pick_table(n: usize) -> Table {
    table(&json!({
        "version": 1,
        "regions": [{ "name": REGION, "failover": ["us-east"] }, { "name": "us-east" }],
        "routes": [{ "name": "r", "split": [{ "subset": "s@v1", "weight": 1 }] }],
        "subsets": [{ "name": "s@v1", "endpoints": endpoints(0, n) }],
    }))
}

fn bench_endpoint_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("endpoint_pick");
    let metrics = Metrics::new().expect("metrics");
    let snap = Snapshot::build(
        pick_table(1_000),
        REGION,
        timeouts(),
        &metrics,
        &mut StatsBook::new(),
    );
    let subset: &SubsetRt = &snap.routes[0].subsets[0].subset;
    assert_eq!(subset.tiers[0].len(), 1_000);
    let allowed = vec![true; subset.regions.len()];
    let now = meridian_gateway::balance::now_ns();
    let mut rng = fastrand::Rng::with_seed(7);

    let first = PickOpts {
        allowed: &allowed,
        restricted: false,
        tried: &[],
        avoid: 0,
        now,
    };
    assert!(matches!(
        subset.pick(&mut rng, &first),
        Picked::Endpoint { .. }
    ));
    g.bench_function("1000_endpoints/first_attempt", |b| {
        b.iter(|| match subset.pick(&mut rng, black_box(&first)) {
            Picked::Endpoint { ep, .. } => Some(ep.addr),
            _ => None,
        })
    });

    let tried: [SocketAddr; 1] = [subset.tiers[0][500].addr];
    let retry = PickOpts {
        allowed: &allowed,
        restricted: false,
        tried: &tried,
        avoid: 0,
        now,
    };
    g.bench_function("1000_endpoints/retry_skipping_one", |b| {
        b.iter(|| match subset.pick(&mut rng, black_box(&retry)) {
            Picked::Endpoint { ep, .. } => Some(ep.addr),
            _ => None,
        })
    });
    g.finish();
}

/// 100 subsets × 1,000 endpoints, 200 routes each splitting 90/10 over two subsets.
fn big_table(version: u64) -> Table {
    let subsets: Vec<Value> = (0..100)
        .map(|s| json!({ "name": format!("svc{}@v{}", s / 2, 1 + s % 2), "endpoints": endpoints(s * 1_000, 1_000) }))
        .collect();
    let routes: Vec<Value> = (0..200)
        .map(|r| {
            let svc = r % 50;
            json!({
                "name": format!("r{r}"),
                "match": { "hosts": [format!("svc{svc}.example.com")], "path": { "prefix": format!("/p{r}/") } },
                "split": [
                    { "subset": format!("svc{svc}@v1"), "weight": 90 },
                    { "subset": format!("svc{svc}@v2"), "weight": 10 },
                ],
            })
        })
        .collect();
    table(&json!({
        "version": version,
        "regions": [{ "name": REGION }],
        "routes": routes,
        "subsets": subsets,
    }))
}

fn bench_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("table_100k_endpoints");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100_000));
    let metrics = Metrics::new().expect("metrics");
    let table = big_table(1);
    let endpoints: usize = table.subsets.iter().map(|s| s.endpoints.len()).sum();
    assert_eq!(endpoints, 100_000);
    let mut book = StatsBook::new();
    let first = Snapshot::build(table.clone(), REGION, timeouts(), &metrics, &mut book);
    let live = ArcSwap::from_pointee(first);

    // Steady state: every address is already in the book (a health flip, a weight change).
    g.bench_function("build", |b| {
        b.iter_batched(
            || table.clone(),
            |t| Snapshot::build(t, REGION, timeouts(), &metrics, &mut book),
            BatchSize::LargeInput,
        )
    });
    // The swap as the applier does it: store, then the old snapshot is dropped on this thread.
    g.bench_function("swap_and_drop_old", |b| {
        b.iter_batched(
            || {
                Arc::new(Snapshot::build(
                    table.clone(),
                    REGION,
                    timeouts(),
                    &metrics,
                    &mut book,
                ))
            },
            |s| drop(live.swap(s)),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // What a reader pays for its one load while a writer keeps swapping.
    let mut g = c.benchmark_group("snapshot_load");
    let a = live.load_full();
    let b2 = Arc::new(Snapshot::build(
        table,
        REGION,
        timeouts(),
        &metrics,
        &mut book,
    ));
    g.bench_function("load_full/idle", |b| b.iter(|| black_box(live.load_full())));
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(live);
    let writer = {
        let (stop, live) = (stop.clone(), live.clone());
        std::thread::spawn(move || {
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                live.store(if flip { a.clone() } else { b2.clone() });
                flip = !flip;
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    g.bench_function("load_full/while_swapping_every_50us", |b| {
        b.iter(|| black_box(live.load_full()))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    g.finish();
}

criterion_group!(
    benches,
    bench_route_match,
    bench_split,
    bench_endpoint_pick,
    bench_table
);
criterion_main!(benches);
