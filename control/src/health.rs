//! Active health checks: one task per concrete endpoint, each on its own jittered schedule, all
//! sharing one semaphore that bounds the checks in flight. An endpoint flips only after its
//! threshold of consecutive results ([`Verdict`]); a flip is sent to the reconciler as an event.
//!
//! A check is `GET http://<addr><path>` over a kept-alive connection, healthy when the status is
//! the expected one within the timeout. TLS endpoints get a TCP connect check instead (the
//! control plane holds no client certificates).
//!
//! A new endpoint is *unknown*, which the table treats as healthy; its first result sets its state
//! at once (no threshold applies to leaving unknown). Schedules keep their planned times, so a slow
//! check does not push every later check back; how late each check started is measured
//! ([`CheckStats`]) and that is how falling behind shows.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use meridian_api::intent::HealthCheck;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::reconcile::Event;

/// An endpoint as the checker knows it: its service (whose spec applies) and its address.
pub type Key = (String, SocketAddr);

/// The consecutive-result state machine of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `None` until the first result.
    pub healthy: Option<bool>,
    passes: u32,
    failures: u32,
}

impl Verdict {
    /// Records one result. Returns the new state when it changed (including the first result).
    pub fn observe(&mut self, ok: bool, spec: &HealthCheck) -> Option<bool> {
        match self.healthy {
            None => {
                self.healthy = Some(ok);
                self.passes = 0;
                self.failures = 0;
                Some(ok)
            }
            Some(true) if ok => {
                self.failures = 0;
                None
            }
            Some(false) if !ok => {
                self.passes = 0;
                None
            }
            Some(true) => {
                self.failures += 1;
                (self.failures >= spec.unhealthy_threshold).then(|| self.flip(false))
            }
            Some(false) => {
                self.passes += 1;
                (self.passes >= spec.healthy_threshold).then(|| self.flip(true))
            }
        }
    }

    fn flip(&mut self, to: bool) -> bool {
        self.healthy = Some(to);
        self.passes = 0;
        self.failures = 0;
        to
    }
}

/// Counters of the checker as a whole.
#[derive(Debug, Default)]
pub struct CheckStats {
    /// Checks finished.
    pub checks: AtomicU64,
    /// Worst lateness of a check's start against its plan, in microseconds, since last taken.
    pub max_lag_us: AtomicU64,
}

impl CheckStats {
    /// Returns and resets the worst lateness.
    pub fn take_max_lag(&self) -> Duration {
        Duration::from_micros(self.max_lag_us.swap(0, Ordering::Relaxed))
    }
}

/// One endpoint to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Service and address.
    pub key: Key,
    /// The service's check.
    pub spec: HealthCheck,
    /// TCP-only check.
    pub tls: bool,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The checker: its tasks, their shared verdicts and the semaphore.
#[derive(Debug)]
pub struct Checker {
    sem: Arc<Semaphore>,
    client: HttpClient,
    tasks: HashMap<Key, (Target, AbortHandle)>,
    verdicts: Arc<Mutex<HashMap<Key, Verdict>>>,
    events: mpsc::UnboundedSender<Event>,
    /// Shared counters.
    pub stats: Arc<CheckStats>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        for (_, (_, t)) in self.tasks.drain() {
            t.abort();
        }
    }
}

impl Checker {
    /// A checker allowing `concurrency` checks in flight, sending flips to `events`. With
    /// `keep_alive`, each endpoint's connection is reused between checks (one idle connection
    /// per endpoint); without, every check opens and closes its own (fewer file descriptors at
    /// very large endpoint counts).
    pub fn new(
        concurrency: usize,
        keep_alive: bool,
        events: mpsc::UnboundedSender<Event>,
    ) -> Checker {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::from(keep_alive))
            .pool_idle_timeout(Duration::from_secs(90))
            .build(http);
        Checker {
            sem: Arc::new(Semaphore::new(concurrency)),
            client,
            tasks: HashMap::new(),
            verdicts: Arc::new(Mutex::new(HashMap::new())),
            events,
            stats: Arc::new(CheckStats::default()),
        }
    }

    /// Makes the running checks exactly `targets`: new ones start (unknown), removed ones stop
    /// and forget their state, and a changed spec restarts its endpoint's schedule.
    pub fn sync(&mut self, targets: Vec<Target>) {
        let want: HashMap<Key, Target> = targets.into_iter().map(|t| (t.key.clone(), t)).collect();
        let gone: Vec<Key> = self
            .tasks
            .iter()
            .filter(|(k, (t, _))| want.get(*k) != Some(t))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some((_, h)) = self.tasks.remove(&k) {
                h.abort();
            }
            if !want.contains_key(&k) {
                lock(&self.verdicts).remove(&k);
            }
        }
        for (k, t) in want {
            if self.tasks.contains_key(&k) {
                continue;
            }
            let task = tokio::spawn(run_one(
                t.clone(),
                self.sem.clone(),
                self.client.clone(),
                self.verdicts.clone(),
                self.events.clone(),
                self.stats.clone(),
            ));
            self.tasks.insert(k, (t, task.abort_handle()));
        }
    }

    /// Known states (endpoints without a result yet are left out).
    pub fn health(&self) -> BTreeMap<Key, bool> {
        lock(&self.verdicts)
            .iter()
            .filter_map(|(k, v)| v.healthy.map(|h| (k.clone(), h)))
            .collect()
    }

    /// True when every endpoint has at least one result.
    pub fn all_known(&self) -> bool {
        let v = lock(&self.verdicts);
        self.tasks
            .keys()
            .all(|k| v.get(k).is_some_and(|v| v.healthy.is_some()))
    }

    /// Endpoints being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when nothing is checked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The interval drawn within ± `jitter_percent`.
pub fn jittered(spec: &HealthCheck) -> Duration {
    let base = spec.interval_ms as f64;
    let j = f64::from(spec.jitter_percent) / 100.0;
    let f = 1.0 + j * (2.0 * fastrand::f64() - 1.0);
    Duration::from_micros((base * f * 1000.0) as u64)
}

async fn run_one(
    t: Target,
    sem: Arc<Semaphore>,
    client: HttpClient,
    verdicts: Arc<Mutex<HashMap<Key, Verdict>>>,
    events: mpsc::UnboundedSender<Event>,
    stats: Arc<CheckStats>,
) {
    let uri: http::Uri = match format!("http://{}{}", t.key.1, t.spec.path).parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(endpoint = %t.key.1, "health check URI: {e}");
            return;
        }
    };
    let timeout = Duration::from_millis(t.spec.timeout_ms);
    // The first check runs at once, the schedule is jittered from then on.
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let Ok(permit) = sem.acquire().await else {
            return;
        };
        let started = Instant::now();
        let lag = started.saturating_duration_since(next).as_micros() as u64;
        stats.max_lag_us.fetch_max(lag, Ordering::Relaxed);
        let ok = if t.tls {
            matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(t.key.1)).await,
                Ok(Ok(_))
            )
        } else {
            probe(&client, &uri, t.spec.expect_status, timeout).await
        };
        drop(permit);
        stats.checks.fetch_add(1, Ordering::Relaxed);
        let flip = lock(&verdicts)
            .entry(t.key.clone())
            .or_default()
            .observe(ok, &t.spec);
        if let Some(healthy) = flip {
            let _ = events.send(Event::Health {
                service: t.key.0.clone(),
                addr: t.key.1,
                healthy,
            });
        }
        next += jittered(&t.spec);
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

async fn probe(client: &HttpClient, uri: &http::Uri, expect: u16, timeout: Duration) -> bool {
    let req = match http::Request::get(uri.clone())
        .header(http::header::USER_AGENT, "meridian-control/health")
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(_) => return false,
    };
    let fut = async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        // Drain the body so the connection can be reused.
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        Some(status)
    };
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(s)) if s == expect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(healthy: u32, unhealthy: u32) -> HealthCheck {
        HealthCheck {
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            ..HealthCheck::default()
        }
    }

    #[test]
    fn the_first_result_decides() {
        let s = spec(2, 3);
        let mut v = Verdict::default();
        assert_eq!(v.observe(false, &s), Some(false));
        let mut v = Verdict::default();
        assert_eq!(v.observe(true, &s), Some(true));
    }

    #[test]
    fn one_failure_in_five_never_flaps_with_threshold_three() {
        let s = spec(2, 3);
        let mut v = Verdict::default();
        v.observe(true, &s);
        for i in 0..10_000 {
            assert_eq!(v.observe(i % 5 != 0, &s), None, "flipped at result {i}");
        }
        assert_eq!(v.healthy, Some(true));
    }

    #[test]
    fn two_failures_in_a_row_of_every_three_never_flap_either() {
        let s = spec(2, 3);
        let mut v = Verdict::default();
        v.observe(true, &s);
        for i in 0..999 {
            assert_eq!(v.observe(i % 3 == 2, &s), None);
        }
    }

    #[test]
    fn thresholds_flip_both_ways() {
        let s = spec(2, 3);
        let mut v = Verdict::default();
        v.observe(true, &s);
        assert_eq!(v.observe(false, &s), None);
        assert_eq!(v.observe(false, &s), None);
        assert_eq!(v.observe(false, &s), Some(false));
        assert_eq!(v.observe(true, &s), None);
        assert_eq!(
            v.observe(false, &s),
            None,
            "a failure resets the pass streak"
        );
        assert_eq!(v.observe(true, &s), None);
        assert_eq!(v.observe(true, &s), Some(true));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let s = HealthCheck {
            interval_ms: 1000,
            jitter_percent: 10,
            ..HealthCheck::default()
        };
        for _ in 0..1000 {
            let d = jittered(&s);
            assert!(d >= Duration::from_millis(900) && d <= Duration::from_millis(1100));
        }
    }
}
