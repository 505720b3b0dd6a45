//! Hedging figure: p50/p99/p99.9 and extra upstream requests, without hedging, with a fixed
//! hedge delay and with the adaptive (live p95) delay, against upstreams where 2 % of requests
//! take 20x the median.
//!
//! Run: `cargo bench -p meridian-gateway --bench hedge` (release build of the gateway binary;
//! about half a minute). `HEDGE_REQUESTS` and `HEDGE_CONCURRENCY` override the load.
//! Everything runs on 127.0.0.1 with ports picked at run time; every loop is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_testkit::{Latency, MockUpstream, UpstreamConfig};

const MEDIAN: Duration = Duration::from_millis(5);
const SLOW: Duration = Duration::from_millis(100);

struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(serde::Deserialize)]
struct Ports {
    listeners: Vec<SocketAddr>,
    admin: SocketAddr,
}

fn table(version: u64, ups: &[MockUpstream], hedge: &str) -> String {
    let mut t = format!(
        "version: {version}\nroutes:\n  - name: api\n    split: [{{subset: svc@v1, weight: 100}}]\n    budget: {{ratio: 0.1, min_per_s: 10}}\n{hedge}subsets:\n  - name: svc@v1\n    endpoints:\n"
    );
    for (i, u) in ups.iter().enumerate() {
        t += &format!(
            "      - {{address: '{}', region: local, zone: z{}}}\n",
            u.addr(),
            i % 3
        );
    }
    t
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn start_gateway(dir: &Path) -> Gateway {
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        "region: local\nlisteners: [{address: '127.0.0.1:0'}]\nadmin: '127.0.0.1:0'\ntable: {file: table.yaml, poll_ms: 50}\nworkers: 2\n",
    )
    .expect("config");
    let ports = dir.join("ports.json");
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["gateway", "--config"])
        .arg(&cfg)
        .arg("--ports-file")
        .arg(&ports)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway");
    let unbound: SocketAddr = ([127, 0, 0, 1], 0).into();
    // Owned by the guard at once, so every exit path (a panic included) reaps the child.
    let mut gw = Gateway {
        child,
        addr: unbound,
        admin: unbound,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ports) {
            if let Ok(p) = serde_json::from_str::<Ports>(&text) {
                gw.addr = p.listeners[0];
                gw.admin = p.admin;
                return gw;
            }
        }
        assert!(Instant::now() < deadline, "gateway did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_version(c: &reqwest::Client, admin: SocketAddr, v: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = c.get(format!("http://{admin}/readyz")).send().await {
            if r.text()
                .await
                .unwrap_or_default()
                .contains(&format!("version {v}"))
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "table {v} not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `n` GETs with `conc` in flight; returns sorted latencies in microseconds and errors.
async fn load(c: &reqwest::Client, url: &str, n: usize, conc: usize) -> (Vec<u64>, usize) {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, url, next) = (c.clone(), url.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t0 = Instant::now();
                let ok = match c.get(&url).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(t0.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("task");
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    (all, errors)
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n: usize = std::env::var("HEDGE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let conc: usize = std::env::var("HEDGE_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let mut ups = Vec::new();
    for i in 0..3 {
        let lat = Latency::Bimodal {
            base: MEDIAN,
            slow: SLOW,
            slow_fraction: 0.02,
        };
        let cfg = UpstreamConfig::new(format!("u{i}")).latency(lat);
        ups.push(MockUpstream::start(cfg).await.expect("upstream"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let table_path = dir.path().join("table.yaml");
    write(&table_path, &table(1, &ups, ""));
    let gw = start_gateway(dir.path()).await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(conc * 2)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://{}/x", gw.addr);
    let modes = [
        ("no hedging", String::new()),
        ("fixed 8 ms", "    hedge: {delay_ms: 8}\n".to_string()),
        (
            "adaptive p95",
            "    hedge: {adaptive: {percentile: 95, min_samples: 200}}\n".to_string(),
        ),
    ];
    println!("hedging bench: {n} GETs, {conc} in flight, 3 upstreams, 2% of requests {}x the {} ms median", SLOW.as_millis() / MEDIAN.as_millis(), MEDIAN.as_millis());
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "mode", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms", "extra %", "errors"
    );
    let mut base_p999 = 0.0;
    let mut base_p95 = 0.0;
    for (v, (name, hedge)) in modes.iter().enumerate() {
        let version = v as u64 + 2;
        write(&table_path, &table(version, &ups, hedge));
        wait_version(&c, gw.admin, version).await;
        // Warm-up: connections, balancer estimates and the adaptive window.
        load(&c, &url, 2_000.min(n), conc).await;
        let before: u64 = ups.iter().map(|u| u.requests()).sum();
        let (lat, errors) = load(&c, &url, n, conc).await;
        let sent: u64 = ups.iter().map(|u| u.requests()).sum::<u64>() - before;
        let extra = (sent as f64 / n as f64 - 1.0) * 100.0;
        let p999 = pct(&lat, 0.999);
        if v == 0 {
            base_p999 = p999;
            base_p95 = pct(&lat, 0.95);
        }
        println!(
            "{:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8}",
            name,
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            pct(&lat, 0.99),
            p999,
            extra,
            errors
        );
        if v > 0 {
            println!(
                "{:<14} p99.9 {:.1}x lower than without hedging",
                "",
                base_p999 / p999
            );
        }
    }
    // A hedge sent no earlier than the p95 (the 5 % cap) answers the slow requests no sooner
    // than p95 + p95 of its own leg (benches/README.md has the argument).
    println!(
        "best possible p99.9 with at most 5 % extra: about 2 x p95 = {:.2} ms, {:.1}x lower",
        2.0 * base_p95,
        base_p999 / (2.0 * base_p95)
    );
}
