//! Propagation: how long a health change takes to reach 100 gateways.
//!
//! A real control plane (in this process, on 127.0.0.1:0, its own HTTP API) watches 4 testkit
//! upstreams in two regions, checked every 50 ms (±10 %) with thresholds of 1. 100 simulated
//! gateways (50 per region, each with its own HTTP client and connection) long-poll their
//! region's table, and parse, hash-check and validate every table they get, as a gateway does.
//! Each round flips one upstream's `/healthz` and records, for every watcher, the time from the
//! flip to the watcher holding a table with the new health:
//! - **end to end**: from the flip, so it includes detection (up to one check interval);
//! - **fan-out**: from the moment the control plane published the new table (observed in
//!   process) to the watcher having it.
//!
//! `cargo bench -p meridian-control --bench propagation` (ROUNDS=N and WATCHERS=N override).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_api::wire::{content_hash, TableResponse};
use meridian_testkit::{MockUpstream, UpstreamConfig};
use tokio::sync::mpsc;

struct Seen {
    watcher: usize,
    at: Instant,
    sick: bool,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn line(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<34} n={:<6} p50={:>8.2?} p99={:>8.2?} max={:>8.2?}",
        v.len(),
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or_default()
    );
}

/// True when the table lists `addr` as unhealthy.
fn lists_sick(t: &meridian_api::Table, addr: &str) -> bool {
    t.subsets
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .any(|e| e.address == addr && !e.healthy)
}

async fn watcher(
    id: usize,
    base: String,
    region: &'static str,
    sick_addr: String,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(40))
        .build()
        .expect("client");
    let mut since = 0;
    loop {
        let url = format!("{base}/v1/tables/{region}?since={since}&wait_ms=30000&gateway=w{id}");
        let Ok(resp) = client.get(&url).bearer_auth("bench-token-01").send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if resp.status() != 200 {
            continue;
        }
        let Ok(body) = resp.bytes().await else {
            continue;
        };
        let at = Instant::now();
        let t: TableResponse = serde_json::from_slice(&body).expect("table response");
        assert_eq!(content_hash(&t.table), t.hash);
        meridian_api::validate::validate_table(&t.table).expect("valid table");
        since = t.version;
        let sick = lists_sick(&t.table, &sick_addr);
        if tx
            .send(Seen {
                watcher: id,
                at,
                sick,
            })
            .is_err()
        {
            return;
        }
    }
}

fn main() {
    let rounds = env("ROUNDS", 20);
    let watchers = env("WATCHERS", 100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut ups = Vec::new();
        for i in 0..4 {
            ups.push(
                MockUpstream::start(UpstreamConfig::new(format!("up-{i}")))
                    .await
                    .expect("upstream"),
            );
        }
        let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr()).collect();
        let dir = tempfile::tempdir().expect("dir");
        let intent = format!(
            "regions:\n  - {{ name: eu-west, failover: [us-east] }}\n  - {{ name: us-east, failover: [eu-west] }}\n\
             services:\n  - name: vitals\n    health_check: {{ interval_ms: 50, timeout_ms: 40, jitter_percent: 10, \
             healthy_threshold: 1, unhealthy_threshold: 1 }}\n    versions:\n      - name: v1\n        endpoints:\n\
             \x20         eu-west: [\"{}\", \"{}\"]\n          us-east: [\"{}\", \"{}\"]\n\
             routes:\n  - {{ name: vitals, split: [{{ subset: vitals@v1, weight: 1 }}] }}\n",
            addrs[0], addrs[1], addrs[2], addrs[3]
        );
        std::fs::write(dir.path().join("intent.yaml"), intent).expect("intent");
        let cfg = meridian_control::ControlConfig::parse(
            "listen: '127.0.0.1:0'\nintent: intent.yaml\nstate_dir: state\ntokens: { bench: bench-token-01 }\nlong_poll_max_ms: 30000\n",
            dir.path(),
        )
        .expect("config");
        let control = meridian_control::start(cfg).await.expect("control plane");
        let base = format!("http://{}", control.addr);
        let sick_addr = addrs[0].to_string();

        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..watchers {
            let region = if i % 2 == 0 { "eu-west" } else { "us-east" };
            tokio::spawn(watcher(i, base.clone(), region, sick_addr.clone(), tx.clone()));
        }
        // Everyone holds a first table with the endpoint healthy.
        let mut state = vec![None; watchers];
        while state.iter().any(|s| *s != Some(false)) {
            let s = rx.recv().await.expect("watchers run");
            state[s.watcher] = Some(s.sick);
        }
        println!("{watchers} watchers in sync; {rounds} flips of {sick_addr}");

        let mut end_to_end = Vec::new();
        let mut fan_out = Vec::new();
        let mut last_e2e = Vec::new();
        let mut detect = Vec::new();
        for round in 0..rounds {
            tokio::time::sleep(Duration::from_millis(200 + fastrand::u64(0..100))).await;
            let sick = round % 2 == 0;
            let mut tables = control.hub.subscribe();
            let flipped = Instant::now();
            ups[0].set_healthy(!sick);
            let published = {
                let addr = sick_addr.clone();
                tokio::spawn(async move {
                    let _ = tables
                        .wait_for(|t| {
                            t.by_region
                                .values()
                                .all(|p| lists_sick(&p.table, &addr) == sick)
                        })
                        .await;
                    Instant::now()
                })
            };
            let mut got = vec![None; watchers];
            while got.iter().any(Option::is_none) {
                let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("a watcher got nothing for 10 s")
                    .expect("watchers run");
                if s.sick == sick && got[s.watcher].is_none() {
                    got[s.watcher] = Some(s.at);
                }
            }
            let published = published.await.expect("publish time");
            detect.push(published - flipped);
            let times: Vec<Instant> = got.into_iter().flatten().collect();
            for t in &times {
                end_to_end.push(*t - flipped);
                fan_out.push(t.saturating_duration_since(published));
            }
            last_e2e.push(times.iter().max().copied().unwrap_or(flipped) - flipped);
        }
        println!();
        line("detection (flip -> published)", detect);
        line("fan-out (published -> watcher)", fan_out);
        line("end to end (flip -> watcher)", end_to_end);
        line("end to end, last watcher per flip", last_e2e);
        drop(control);
    });
}
