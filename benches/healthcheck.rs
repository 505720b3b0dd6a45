//! Health-check scale: 10,000 endpoints checked every second (±10 % jitter) by the control
//! plane's checker, 256 checks in flight at most, connections kept alive (the control plane's
//! default, `health.keep_alive: true`).
//!
//! The endpoints are 10,000 loopback listeners that answer `GET /healthz` with 200 on kept-alive
//! connections. They live in `FLEETS` child processes (default 2; this same binary, started
//! again with `MERIDIAN_HC_FLEET` set), not in the checker's process, for two reasons: the
//! mock servers' CPU is then visible apart from the checker's, and each process stays well under
//! this machine's 20,000 file-descriptor limit (5,000 listeners + 5,000 accepted connections per
//! child; 10,000 client connections in the checker). Fleet `i` listens on 127.0.(i+1).1-100.
//!
//! Every second it prints the checks finished, the worst lateness of a check's start against its
//! schedule, and the CPU time each process used in that second. Keeping up means about 10,000
//! checks a second and a lateness far below the interval. The run fails (exit status 1) when the
//! steady-state median falls below 95 % of the endpoints per second or any check starts more
//! than one interval late.
//!
//! `cargo bench -p meridian-control --bench healthcheck` (`ENDPOINTS`, `SECONDS`, `FLEETS`,
//! `KEEP_ALIVE=0` override).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meridian_api::intent::HealthCheck;
use meridian_control::health::{Checker, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLEET_ENV: &str = "MERIDIAN_HC_FLEET";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Serves `GET` after `GET` on one connection until the peer closes it.
async fn serve(mut s: tokio::net::TcpStream) {
    let mut buf = vec![0u8; 2048];
    let mut seen = 0;
    loop {
        let Ok(n) = s.read(&mut buf[seen..]).await else {
            return;
        };
        if n == 0 {
            return;
        }
        seen += n;
        // Answer every complete request head in the buffer (a client may pipeline).
        while let Some(end) = buf[..seen].windows(4).position(|w| w == b"\r\n\r\n") {
            let head_len = end + 4;
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
            buf.copy_within(head_len..seen, 0);
            seen -= head_len;
        }
        if seen == buf.len() {
            return; // a head this large is not a health check
        }
    }
}

/// The child: `count` listeners on 127.0.`net`.1-100, their addresses on stdout, then serve
/// until stdin closes (the parent exited or dropped us).
fn fleet(spec: &str) {
    let mut parts = spec.split(',').filter_map(|p| p.parse::<usize>().ok());
    let (Some(net), Some(count)) = (parts.next(), parts.next()) else {
        eprintln!("{FLEET_ENV} must be NET,COUNT");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut out = String::with_capacity(count * 24);
        for i in 0..count {
            let ip = IpAddr::V4(Ipv4Addr::new(127, net as u8, 1, (i % 100 + 1) as u8));
            let l = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .expect("bind");
            out.push_str(&l.local_addr().expect("addr").to_string());
            out.push('\n');
            tokio::spawn(async move {
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(serve(s));
                    }
                }
            });
        }
        out.push_str("ready\n");
        {
            use std::io::Write;
            let mut so = std::io::stdout().lock();
            so.write_all(out.as_bytes()).expect("stdout");
            so.flush().expect("stdout");
        }
        // Stop when the parent goes away.
        let mut stdin = tokio::io::stdin();
        let mut b = [0u8; 64];
        while matches!(stdin.read(&mut b).await, Ok(n) if n > 0) {}
    });
}

/// Starts one fleet child and reads its addresses.
fn spawn_fleet(net: usize, count: usize) -> (Child, Vec<SocketAddr>) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .env(FLEET_ENV, format!("{net},{count}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fleet");
    let out = child.stdout.take().expect("stdout");
    let mut addrs = Vec::with_capacity(count);
    for line in BufReader::new(out).lines() {
        let line = line.expect("read fleet");
        if line == "ready" {
            break;
        }
        addrs.push(line.parse().expect("fleet address"));
    }
    assert_eq!(addrs.len(), count, "fleet {net} started only part");
    (child, addrs)
}

/// CPU time (user + sys) of a process so far, from /proc.
fn cpu_of(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // CLK_TCK is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn main() {
    if let Ok(spec) = std::env::var(FLEET_ENV) {
        fleet(&spec);
        return;
    }
    let endpoints = env("ENDPOINTS", 10_000);
    let seconds = env("SECONDS", 15);
    let fleets = env("FLEETS", 2).max(1);
    let keep_alive = env("KEEP_ALIVE", 1) != 0;

    let mut children = Vec::new();
    let mut addrs = Vec::with_capacity(endpoints);
    for f in 0..fleets {
        let n = endpoints / fleets + usize::from(f < endpoints % fleets);
        let (c, a) = spawn_fleet(f + 1, n);
        children.push(c);
        addrs.extend(a);
    }
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let me = std::process::id();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = rt.block_on(async move {
        let spec = HealthCheck {
            interval_ms: 1000,
            jitter_percent: 10,
            timeout_ms: 1000,
            ..HealthCheck::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut checker = Checker::new(256, keep_alive, tx);
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
        println!(
            "{endpoints} endpoints in {fleets} fleet processes, 1 s interval ±10 %, \
             256 in flight, keep-alive {keep_alive}"
        );
        let start = Instant::now();
        let mut last = 0;
        let mut rates = Vec::new();
        let mut lags = Vec::new();
        let mut checker_cpu = Vec::new();
        let mut fleet_cpu = Vec::new();
        let mut cpu_last = (cpu_of(me), pids.iter().map(|p| cpu_of(*p)).sum::<Duration>());
        for s in 1..=seconds {
            tokio::time::sleep_until((start + Duration::from_secs(s as u64)).into()).await;
            let done = stats.checks.load(Ordering::Relaxed);
            let lag = stats.take_max_lag();
            let cpu_now = (cpu_of(me), pids.iter().map(|p| cpu_of(*p)).sum::<Duration>());
            let (dc, df) = (cpu_now.0 - cpu_last.0, cpu_now.1 - cpu_last.1);
            cpu_last = cpu_now;
            let health = checker.health();
            let unhealthy = health.values().filter(|h| !**h).count();
            println!(
                "t={s:>3}s checks/s={:>6} worst start lateness={lag:>9.2?} known={:>6} \
                 unhealthy={unhealthy} cpu: checker {:>4} ms, fleets {:>4} ms",
                done - last,
                health.len(),
                dc.as_millis(),
                df.as_millis()
            );
            if s > 2 {
                rates.push(done - last);
                lags.push(lag);
                checker_cpu.push(dc);
                fleet_cpu.push(df);
            }
            last = done;
        }
        rates.sort();
        lags.sort();
        checker_cpu.sort();
        fleet_cpu.sort();
        let median = rates.get(rates.len() / 2).copied().unwrap_or(0);
        let worst = lags.last().copied().unwrap_or_default();
        let mid = |v: &Vec<Duration>| v.get(v.len() / 2).copied().unwrap_or_default();
        let per_check = |d: Duration| d.as_secs_f64() * 1e6 / median.max(1) as f64;
        println!(
            "\nsteady state (after 2 s): checks/s min={} median={median} max={}; \
             worst lateness max={worst:.2?}",
            rates.first().copied().unwrap_or(0),
            rates.last().copied().unwrap_or(0),
        );
        println!(
            "CPU per second (median): checker {:?} ({:.1} µs/check), fleets {:?} ({:.1} µs/check)",
            mid(&checker_cpu),
            per_check(mid(&checker_cpu)),
            mid(&fleet_cpu),
            per_check(mid(&fleet_cpu)),
        );
        drop(checker);
        let kept_up =
            median as f64 >= 0.95 * endpoints as f64 && worst < Duration::from_millis(1000);
        println!(
            "{}",
            if kept_up {
                "KEPT UP: median >= 95 % of the endpoints per second, no check a whole interval late"
            } else {
                "FELL BEHIND"
            }
        );
        kept_up
    });
    for mut c in children {
        drop(c.stdin.take());
        let _ = c.kill();
        let _ = c.wait();
    }
    if !ok {
        std::process::exit(1);
    }
}
