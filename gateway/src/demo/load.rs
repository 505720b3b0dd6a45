//! The demo's load generator: a fixed request rate spread over the gateways, each request from
//! one of many sticky users, over real keep-alive HTTP/1.1 connections. It reads the gateway's
//! debug headers to see which subset and region served each request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::spec;
use crate::server::Bound;

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of the gateway it was sent to.
    pub gateway: usize,
    /// Index of the subset that served it.
    pub subset: Option<usize>,
    /// Index (in gateway order) of the region that served it.
    pub region: Option<usize>,
    /// Time to the full response.
    pub latency: Duration,
    /// 2xx.
    pub ok: bool,
}

/// Everything measured over the run.
#[derive(Debug, Default)]
pub struct Totals {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests (transport error or non-2xx).
    pub errors: u64,
    /// `[phase][subset]` request counts; phase 1 starts at the canary step.
    pub by_phase: [Vec<u64>; 2],
    /// `[gateway][region]` counts: where each gateway's traffic was served.
    pub by_region: Vec<Vec<u64>>,
    /// Latencies in microseconds per subset.
    pub latency_us: Vec<Vec<u32>>,
    /// Users seen.
    pub users: usize,
    /// Users who moved from the first subset to a later one.
    pub moved_forward: u64,
    /// Users who moved back from a later subset to the first one (must stay 0).
    pub moved_back: u64,
}

struct Shared {
    window: Mutex<Vec<Sample>>,
    totals: Mutex<Totals>,
    last_subset: Mutex<HashMap<u32, usize>>,
    phase: AtomicUsize,
    stop: AtomicBool,
    /// Workers still running; `stop` waits for their last request to finish.
    live: AtomicUsize,
}

/// A running load generator.
pub struct Load {
    shared: Arc<Shared>,
    rt: tokio::runtime::Runtime,
}

impl Load {
    /// Starts sending `rate` requests per second, split evenly over the gateways.
    pub fn start(
        spec: &spec::Load,
        bounds: &[Bound],
        subsets: &[String],
        rate: u32,
    ) -> anyhow::Result<Load> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("demo-load")
            .build()?;
        let totals = Totals {
            by_phase: [vec![0; subsets.len()], vec![0; subsets.len()]],
            by_region: vec![vec![0; bounds.len()]; bounds.len()],
            latency_us: vec![Vec::new(); subsets.len()],
            ..Totals::default()
        };
        let shared = Arc::new(Shared {
            window: Mutex::new(Vec::new()),
            totals: Mutex::new(totals),
            last_subset: Mutex::new(HashMap::new()),
            phase: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            live: AtomicUsize::new(0),
        });
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(spec.connections * 2)
            .build_http();
        let workers = spec.connections * bounds.len();
        let period = Duration::from_secs_f64(workers as f64 / f64::from(rate.max(1)));
        let regions: Arc<Vec<String>> = Arc::new(bounds.iter().map(|b| b.region.clone()).collect());
        let subsets = Arc::new(subsets.to_vec());
        for (gi, b) in bounds.iter().enumerate() {
            let url = format!("http://{}{}", b.listeners[0], spec.path);
            for w in 0..spec.connections {
                let (client, shared, url) = (client.clone(), shared.clone(), url.clone());
                let (regions, subsets) = (regions.clone(), subsets.clone());
                let (host, header, users) =
                    (spec.host.clone(), spec.sticky_header.clone(), spec.users);
                // Stagger workers so the requests spread over each period.
                let offset = period.mul_f64(w as f64 / spec.connections as f64);
                shared.live.fetch_add(1, Ordering::Relaxed);
                rt.spawn(async move {
                    tokio::time::sleep(offset).await;
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut rng = fastrand::Rng::new();
                    while !shared.stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let user = rng.u32(1..=users);
                        let req = http::Request::get(url.as_str())
                            .header(http::header::HOST, host.as_str())
                            .header(header.as_str(), format!("user-{user}"))
                            .body(Empty::new());
                        let Ok(req) = req else { continue };
                        let t0 = Instant::now();
                        let res =
                            tokio::time::timeout(Duration::from_secs(10), client.request(req))
                                .await;
                        let sample = match res {
                            Ok(Ok(resp)) => {
                                let find = |name: &str, list: &[String]| {
                                    resp.headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .and_then(|v| list.iter().position(|s| s == v))
                                };
                                let subset = find("x-meridian-subset", &subsets);
                                let region = find("x-meridian-region", &regions);
                                let ok = resp.status().is_success();
                                let body_ok = resp.into_body().collect().await.is_ok();
                                Sample {
                                    gateway: gi,
                                    subset,
                                    region,
                                    latency: t0.elapsed(),
                                    ok: ok && body_ok,
                                }
                            }
                            _ => Sample {
                                gateway: gi,
                                subset: None,
                                region: None,
                                latency: t0.elapsed(),
                                ok: false,
                            },
                        };
                        shared.record(user, sample);
                    }
                    shared.live.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
        Ok(Load { shared, rt })
    }

    /// Starts the second phase (after the canary step).
    pub fn mark_phase(&self) {
        self.shared.phase.store(1, Ordering::Relaxed);
    }

    /// The samples since the last call.
    pub fn take_window(&self) -> Vec<Sample> {
        std::mem::take(&mut *lock(&self.shared.window))
    }

    /// Stops the load and returns the totals.
    pub fn stop(self) -> Totals {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Let every request in flight finish, so the gateways see no cut connections.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.live.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.rt.shutdown_timeout(Duration::from_secs(2));
        let mut t = std::mem::take(&mut *lock(&self.shared.totals));
        t.users = lock(&self.shared.last_subset).len();
        t
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn record(&self, user: u32, s: Sample) {
        let phase = self.phase.load(Ordering::Relaxed);
        {
            let mut t = lock(&self.totals);
            if s.ok {
                t.ok += 1;
            } else {
                t.errors += 1;
            }
            if let Some(sub) = s.subset {
                t.by_phase[phase][sub] += 1;
                t.latency_us[sub].push(s.latency.as_micros().min(u128::from(u32::MAX)) as u32);
            }
            if let Some(r) = s.region {
                t.by_region[s.gateway][r] += 1;
            }
            if let Some(sub) = s.subset {
                let prev = lock(&self.last_subset).insert(user, sub);
                match prev {
                    Some(0) if sub > 0 => t.moved_forward += 1,
                    Some(p) if p > 0 && sub == 0 => t.moved_back += 1,
                    _ => {}
                }
            }
        }
        lock(&self.window).push(s);
    }
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied()
}
