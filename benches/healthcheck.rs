//! Health-check scale: 10,000 endpoints checked every second (±10 % jitter) by the control
//! plane's checker, 256 checks in flight at most, against 10,000 loopback listeners in this
//! process (100 addresses 127.0.1.1-100, 100 ports each) that answer `GET /healthz` with 200.
//! Every second it prints the checks finished and the worst lateness of a check's start against
//! its schedule; keeping up means about 10,000 checks a second and a lateness far below the
//! interval.
//!
//! Connections are not kept alive here (`health.keep_alive: false`): 10,000 idle connections
//! on both ends would pass this machine's 20,000 file-descriptor limit.
//!
//! `cargo bench -p meridian-control --bench healthcheck` (ENDPOINTS=N, SECONDS=N override).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meridian_api::intent::HealthCheck;
use meridian_control::health::{Checker, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn listener(ip: IpAddr) -> SocketAddr {
    let l = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut seen = 0;
                while let Ok(n) = s.read(&mut buf[seen..]).await {
                    if n == 0 {
                        return;
                    }
                    seen += n;
                    if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") || seen == buf.len() {
                        break;
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

fn main() {
    let endpoints = env("ENDPOINTS", 10_000);
    let seconds = env("SECONDS", 15);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut addrs = Vec::with_capacity(endpoints);
        for i in 0..endpoints {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (i / 100 + 1) as u8));
            addrs.push(listener(ip).await);
        }
        let spec = HealthCheck {
            interval_ms: 1000,
            jitter_percent: 10,
            timeout_ms: 1000,
            ..HealthCheck::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut checker = Checker::new(256, false, tx);
        let stats = checker.stats.clone();
        checker.sync(
            addrs
                .iter()
                .map(|a| Target {
                    key: ("svc".to_string(), *a),
                    spec: spec.clone(),
                    tls: false,
                })
                .collect(),
        );
        println!("{endpoints} endpoints, 1 s interval, 256 in flight");
        let start = Instant::now();
        let mut last = 0;
        let mut rates = Vec::new();
        let mut lags = Vec::new();
        for s in 1..=seconds {
            tokio::time::sleep_until((start + Duration::from_secs(s as u64)).into()).await;
            let done = stats.checks.load(Ordering::Relaxed);
            let lag = stats.take_max_lag();
            let unhealthy = checker.health().values().filter(|h| !**h).count();
            println!(
                "t={s:>3}s checks/s={:>6} worst start lateness={lag:>9.2?} unhealthy={unhealthy}",
                done - last
            );
            if s > 2 {
                rates.push(done - last);
                lags.push(lag);
            }
            last = done;
        }
        rates.sort();
        lags.sort();
        println!(
            "\nsteady state (after 2 s): checks/s min={} median={} max={}; worst lateness max={:.2?}",
            rates.first().copied().unwrap_or(0),
            rates.get(rates.len() / 2).copied().unwrap_or(0),
            rates.last().copied().unwrap_or(0),
            lags.last().copied().unwrap_or_default()
        );
        drop(checker);
    });
}
