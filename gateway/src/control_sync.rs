//! The control-plane table source: the gateway's sync client.
//!
//! - **Watch.** `GET {url}/v1/tables/{region}?since=V` long polls, one replica at a time. A
//!   failed call moves to the next replica after a backoff (100 ms doubling to 5 s, with jitter);
//!   a 304 (nothing new within the hold) polls again at once.
//! - **Validate.** Every table is checked before it is applied: wire version, region, content
//!   hash, the table's own validation (`meridian_api::validate`) and this gateway's
//!   [`TableLimits`]. A table that fails is never applied: the gateway keeps its table, records
//!   the refusal (`/table`, `meridian_table_rejections_total`) and NACKs it with the reason.
//! - **Report.** `POST {url}/v1/reports` right after every apply or refusal, and every
//!   `report_interval`: the applied version, the last NACK, and per-subset SLIs read from the
//!   gateway's own Prometheus registry (requests, 5xx, latency histogram).
//! - **RTT probes.** Every `rtt_probe_interval` (unless turned off) a separate task measures the
//!   TCP connect time to the other regions of the table in force ([`crate::rtt_probe`]); each
//!   round is sent at once in a report (`rtt_ms`), and only in that one. A round whose report is
//!   lost is not sent again: the next round replaces it.
//! - **Last-known-good.** Every applied table is written to `last_known_good` atomically
//!   (temporary file, then rename). On start the gateway asks the control planes for a table
//!   for up to [`START_WAIT`]; when none answers it serves the last-known-good file and says so in
//!   `/readyz`, `/table` and the log.
//!
//! The client runs on its own thread and runtime; the request path never waits on it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_api::wire::{
    check_wire, content_hash, Applied, Histogram, Nack, Report, SubsetSli, TableResponse,
    WIRE_VERSION,
};
use meridian_api::Table;
use prometheus::Registry;
use tokio::sync::Notify;

use crate::config::{ControlSource, TableLimits};
use crate::state::Gateway;

/// How long a starting gateway waits for a control plane before serving last-known-good.
pub const START_WAIT: Duration = Duration::from_secs(3);

/// What the reports say.
#[derive(Debug, Default)]
struct Shared {
    applied: Option<Applied>,
    nack: Option<Nack>,
    /// The latest RTT probe round not sent yet.
    rtt_ms: BTreeMap<String, f64>,
}

/// The sync client of one gateway.
#[derive(Debug)]
pub struct ControlSync {
    gw: Arc<Gateway>,
    ctl: ControlSource,
    http: reqwest::Client,
    since: u64,
    url: Arc<AtomicUsize>,
    shared: Arc<Mutex<Shared>>,
    report_now: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the client: the first table (from a control plane, else last-known-good) is in
/// force, or known to be missing, when this returns; watching and reporting go on in a thread.
pub fn start(gw: Arc<Gateway>) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let ctl = gw
        .config
        .control
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no control source configured"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(ctl.long_poll + Duration::from_secs(10))
        .pool_max_idle_per_host(2)
        .build()?;
    let mut sync = ControlSync {
        gw,
        ctl,
        http,
        since: 0,
        url: Arc::new(AtomicUsize::new(0)),
        shared: Arc::new(Mutex::new(Shared::default())),
        report_now: Arc::new(Notify::new()),
    };
    if let Some(why) = rt.block_on(sync.first_table()) {
        sync.load_last_known_good(why);
    }
    let name = format!("table-sync-{}", sync.ctl.region);
    Ok(std::thread::Builder::new().name(name).spawn(move || {
        // Tables are built on this thread: behind the proxy workers.
        crate::sync::lower_thread_priority();
        rt.block_on(async move {
            if let Some(every) = sync.ctl.rtt_probe_interval {
                let (shared, now) = (sync.shared.clone(), sync.report_now.clone());
                tokio::spawn(crate::rtt_probe::run(
                    sync.gw.clone(),
                    sync.ctl.region.clone(),
                    every,
                    move |rtt| {
                        lock(&shared).rtt_ms = rtt;
                        now.notify_one();
                    },
                ));
            }
            tokio::spawn(report_loop(
                sync.gw.clone(),
                sync.ctl.clone(),
                sync.http.clone(),
                sync.url.clone(),
                sync.shared.clone(),
                sync.report_now.clone(),
            ));
            sync.watch().await
        })
    })?)
}

impl ControlSync {
    fn url(&self) -> &str {
        let i = self.url.load(Ordering::Relaxed) % self.ctl.urls.len().max(1);
        self.ctl.urls.get(i).map(String::as_str).unwrap_or("")
    }

    fn next_url(&self) {
        self.url.fetch_add(1, Ordering::Relaxed);
    }

    /// One long poll. `Ok(None)`: nothing new.
    async fn poll(&self, wait: Duration) -> Result<Option<TableResponse>, String> {
        let url = format!(
            "{}/v1/tables/{}?since={}&wait_ms={}&gateway={}",
            self.url(),
            self.ctl.region,
            self.since,
            wait.as_millis(),
            self.ctl.id
        );
        let mut req = self.http.get(&url);
        if let Some(t) = &self.ctl.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        match resp.status().as_u16() {
            304 => Ok(None),
            200 => {
                let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|e| format!("{url}: malformed table response: {e}"))
            }
            code => {
                let body = resp.text().await.unwrap_or_default();
                Err(format!("{url}: {code} {}", body.trim()))
            }
        }
    }

    /// Tries each replica until one gives a table or [`START_WAIT`] passes. `None` when a table
    /// is in force; otherwise why not, for `/readyz`: no replica answered, or one answered with
    /// a table this gateway refused.
    async fn first_table(&mut self) -> Option<&'static str> {
        let end = tokio::time::Instant::now() + START_WAIT;
        let mut why = "control plane unreachable";
        for _ in 0..self.ctl.urls.len() {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, self.poll(left)).await {
                Ok(Ok(Some(t))) => {
                    self.take(t).await;
                    if self.gw.ready() {
                        return None;
                    }
                    why = "the control plane's table was refused";
                }
                Ok(Ok(None)) => why = "the control plane has no table yet",
                Ok(Err(e)) => tracing::warn!("control plane unreachable at start: {e}"),
                Err(_) => tracing::warn!(url = self.url(), "control plane gave no table in time"),
            }
            self.next_url();
        }
        Some(why)
    }

    /// Serves the last-known-good table, saying `why` the control plane's could not be used.
    fn load_last_known_good(&mut self, why: &str) {
        let path = self.gw.config.table_file.clone();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %path.display(), "{why} and no last-known-good table ({e}); not ready until the control plane gives a table this gateway accepts");
                self.gw.source_note.store(Some(Arc::new(format!(
                    "{why}, no last-known-good table at {}",
                    path.display()
                ))));
                return;
            }
        };
        match meridian_api::load::parse_table(&text) {
            Ok(table) => {
                let hash = content_hash(&table);
                let version = table.version;
                self.gw.apply(table);
                self.since = version;
                let note = format!("last-known-good {} ({why})", path.display());
                tracing::warn!(version, path = %path.display(), "serving the last-known-good table: {why}");
                self.gw.source_note.store(Some(Arc::new(note)));
                lock(&self.shared).applied = Some(Applied {
                    version,
                    hash,
                    source: "last-known-good".into(),
                });
            }
            Err(e) => {
                let reason = format!(
                    "last-known-good {}: {}",
                    path.display(),
                    one_line(&e.to_string())
                );
                self.gw.reject(reason);
            }
        }
    }

    /// Watches until the process exits.
    async fn watch(&mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        loop {
            // While serving last-known-good, ask without holding, to learn at once that a
            // control plane is back and serving the same version.
            let from_lkg = lock(&self.shared)
                .applied
                .as_ref()
                .is_some_and(|a| a.source != "control");
            let wait = if from_lkg {
                Duration::ZERO
            } else {
                self.ctl.long_poll
            };
            match self.poll(wait).await {
                Ok(got) => {
                    if failing {
                        tracing::info!(url = self.url(), "control plane reachable again");
                        failing = false;
                        if !from_lkg {
                            self.gw
                                .source_note
                                .store(Some(Arc::new(format!("control {}", self.url()))));
                        }
                    }
                    backoff = Duration::from_millis(100);
                    match got {
                        Some(t) => self.take(t).await,
                        None if from_lkg => self.adopt_in_sync(),
                        None => {}
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!("table watch failed, trying the next replica with backoff; the table in force stays: {e}");
                        failing = true;
                        if !from_lkg {
                            // `/readyz` and `/table` say so; the gateway stays ready.
                            self.gw.source_note.store(Some(Arc::new(format!(
                                "control {} (control plane unreachable; the table in force stays)",
                                self.url()
                            ))));
                        }
                    }
                    self.next_url();
                    let jitter = 0.5 + fastrand::f64() * 0.5;
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The control plane has the version served from last-known-good: it is current.
    fn adopt_in_sync(&mut self) {
        let mut s = lock(&self.shared);
        if let Some(a) = s.applied.as_mut() {
            a.source = "control".into();
        }
        drop(s);
        tracing::info!(
            url = self.url(),
            "control plane reachable; the last-known-good table is its current one"
        );
        self.gw
            .source_note
            .store(Some(Arc::new(format!("control {}", self.url()))));
        self.report_now.notify_one();
    }

    /// Validates a table response and applies it, or NACKs it.
    async fn take(&mut self, t: TableResponse) {
        self.since = t.version;
        match check(&t, &self.ctl.region, &self.ctl.limits) {
            Ok(()) => {
                let (version, hash) = (t.version, t.hash.clone());
                let lkg = self.gw.config.table_file.clone();
                let body = serde_json::to_vec_pretty(&t.table).unwrap_or_default();
                self.gw.apply(t.table);
                if let Err(e) = write_atomic(&lkg, &body) {
                    tracing::error!(path = %lkg.display(), "cannot write the last-known-good table: {e}");
                }
                self.gw
                    .source_note
                    .store(Some(Arc::new(format!("control {}", self.url()))));
                let mut s = lock(&self.shared);
                s.applied = Some(Applied {
                    version,
                    hash,
                    source: "control".into(),
                });
                s.nack = None;
            }
            Err(reason) => {
                self.gw.reject(format!(
                    "table version {} from {}: {reason}",
                    t.version,
                    self.url()
                ));
                lock(&self.shared).nack = Some(Nack {
                    version: t.version,
                    hash: t.hash,
                    reason,
                });
            }
        }
        self.report_now.notify_one();
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', "; ")
}

/// Every check a table passes before it is applied. `Err` holds every reason, one per line.
pub fn check(t: &TableResponse, region: &str, limits: &TableLimits) -> Result<(), String> {
    check_wire(t.wire)?;
    let mut why = Vec::new();
    if t.region != region {
        why.push(format!(
            "table is for region '{}', not '{region}'",
            t.region
        ));
    }
    if t.table.version != t.version {
        why.push(format!(
            "version {} does not match the table's version {}",
            t.version, t.table.version
        ));
    }
    let hash = content_hash(&t.table);
    if hash != t.hash {
        why.push(format!(
            "content hash {hash} does not match the announced {}",
            t.hash
        ));
    }
    if let Err(e) = meridian_api::validate::validate_table(&t.table) {
        why.extend(e.0.iter().map(|e| e.to_string()));
    }
    why.extend(over_limits(&t.table, limits));
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("\n"))
    }
}

fn over_limits(t: &Table, l: &TableLimits) -> Vec<String> {
    let endpoints: usize = t.subsets.iter().map(|s| s.endpoints.len()).sum();
    let mut why = Vec::new();
    for (what, n, max) in [
        ("routes", t.routes.len(), l.max_routes),
        ("subsets", t.subsets.len(), l.max_subsets),
        ("endpoints", endpoints, l.max_endpoints),
    ] {
        if n > max {
            why.push(format!("{n} {what}, over this gateway's limit of {max}"));
        }
    }
    why
}

/// Writes `bytes` to a temporary sibling, then renames it over `path`.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp-write");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

async fn report_loop(
    gw: Arc<Gateway>,
    ctl: ControlSource,
    http: reqwest::Client,
    url: Arc<AtomicUsize>,
    shared: Arc<Mutex<Shared>>,
    now: Arc<Notify>,
) {
    loop {
        let _ = tokio::time::timeout(ctl.report_interval, now.notified()).await;
        let report = {
            let mut s = lock(&shared);
            Report {
                wire: WIRE_VERSION,
                gateway: ctl.id.clone(),
                region: ctl.region.clone(),
                applied: s.applied.clone(),
                nack: s.nack.clone(),
                slis: slis(&gw.metrics.registry),
                rtt_ms: std::mem::take(&mut s.rtt_ms),
            }
        };
        let i = url.load(Ordering::Relaxed) % ctl.urls.len().max(1);
        let Some(base) = ctl.urls.get(i) else { return };
        let mut req = http
            .post(format!("{base}/v1/reports"))
            .timeout(Duration::from_secs(5))
            .json(&report);
        if let Some(t) = &ctl.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::debug!(status = %r.status(), "report refused"),
            Err(e) => tracing::debug!("report not sent: {e}"),
        }
    }
}

/// Per-subset SLIs from the gateway's registry: `meridian_requests_total` and
/// `meridian_request_duration_seconds`, summed over routes, by subset and endpoint region.
pub fn slis(registry: &Registry) -> Vec<SubsetSli> {
    let mut out: BTreeMap<(String, String), SubsetSli> = BTreeMap::new();
    for mf in registry.gather() {
        let name = mf.get_name();
        if name != "meridian_requests_total" && name != "meridian_request_duration_seconds" {
            continue;
        }
        for m in mf.get_metric() {
            let label = |k: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.get_name() == k)
                    .map(|l| l.get_value().to_string())
                    .unwrap_or_default()
            };
            let (subset, region) = (label("subset"), label("region"));
            if subset.is_empty() || subset == "-" {
                continue;
            }
            let e = out
                .entry((subset.clone(), region.clone()))
                .or_insert_with(|| SubsetSli {
                    subset,
                    region,
                    ..SubsetSli::default()
                });
            if name == "meridian_requests_total" {
                let n = m.get_counter().get_value() as u64;
                e.requests += n;
                if label("code").starts_with('5') {
                    e.errors += n;
                }
            } else {
                add_histogram(&mut e.latency, m.get_histogram());
            }
        }
    }
    out.into_values().collect()
}

fn add_histogram(into: &mut Histogram, h: &prometheus::proto::Histogram) {
    let buckets = h.get_bucket();
    if into.bounds_s.is_empty() {
        into.bounds_s = buckets.iter().map(|b| b.get_upper_bound()).collect();
        into.cumulative = vec![0; buckets.len()];
    }
    for (i, b) in buckets.iter().enumerate() {
        if let Some(c) = into.cumulative.get_mut(i) {
            *c += b.get_cumulative_count();
        }
    }
    into.sum_s += h.get_sample_sum();
    into.count += h.get_sample_count();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(table: Table) -> TableResponse {
        TableResponse {
            wire: WIRE_VERSION,
            region: "eu".into(),
            version: table.version,
            hash: content_hash(&table),
            built_unix_ms: 0,
            table,
        }
    }

    fn table(endpoints: usize) -> Table {
        let eps: Vec<serde_json::Value> = (0..endpoints)
            .map(|i| serde_json::json!({ "address": format!("127.0.0.1:{}", 1000 + i), "region": "eu" }))
            .collect();
        serde_json::from_value(serde_json::json!({
            "version": 3,
            "subsets": [{ "name": "s@v1", "endpoints": eps }],
            "routes": [{ "name": "r", "split": [{ "subset": "s@v1", "weight": 1 }] }],
        }))
        .expect("table")
    }

    #[test]
    fn a_good_table_passes() {
        assert_eq!(
            check(&response(table(2)), "eu", &TableLimits::default()),
            Ok(())
        );
    }

    #[test]
    fn every_reason_is_given() {
        let mut r = response(table(5));
        r.hash = "0".repeat(64);
        r.table.routes[0].split[0].weight = -1;
        let limits = TableLimits {
            max_endpoints: 3,
            ..TableLimits::default()
        };
        let why = check(&r, "us", &limits).expect_err("refused");
        for want in [
            "not 'us'",
            "content hash",
            "routes[0].split[0].weight: must be >= 0",
            "5 endpoints, over this gateway's limit of 3",
        ] {
            assert!(why.contains(want), "missing {want} in {why}");
        }
    }

    #[test]
    fn a_newer_wire_is_refused() {
        let mut r = response(table(1));
        r.wire = WIRE_VERSION + 1;
        assert!(check(&r, "eu", &TableLimits::default()).is_err());
    }

    #[test]
    fn slis_come_from_the_registry() {
        let m = crate::metrics::Metrics::new().expect("metrics");
        let h = m.handles("r", "s@v1", "eu");
        h.record(200, 0.002);
        h.record(503, 0.3);
        let s = slis(&m.registry);
        let eu = s
            .iter()
            .find(|x| x.subset == "s@v1")
            .expect("subset listed");
        assert_eq!((eu.requests, eu.errors), (2, 1));
        assert_eq!(eu.latency.count, 2);
        assert_eq!(eu.latency.cumulative.last().copied(), Some(2));
    }
}
