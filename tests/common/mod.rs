//! Shared helpers for Meridian's end-to-end tests: start a real `meridian gateway` process on
//! `127.0.0.1:0`, wait until it is ready, write routing tables, scrape its admin listener, and
//! drive bounded concurrent load through it.
//!
//! Every wait is deadline-based polling; nothing sleeps a fixed time to wait for readiness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_api::{Route, Subset, Table};
use meridian_testkit::MockUpstream;

/// The region every test gateway runs in.
pub const REGION: &str = "eu-west";

/// How long a gateway may take to start and become ready (debug builds, busy 2-core machine).
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a written table may take to be applied (the tests poll the file every 50 ms; a
/// first table also waits for the process to start, which a busy 2-core machine can stretch).
pub const APPLY_DEADLINE: Duration = Duration::from_secs(20);

/// Poll interval of every deadline loop here.
const POLL: Duration = Duration::from_millis(10);

/// The `meridian` binary built by cargo for these tests.
pub fn meridian_bin() -> &'static str {
    env!("CARGO_BIN_EXE_meridian")
}

/// A gateway config with one plain listener, the admin listener, `table.yaml` polled every 50 ms
/// and debug headers on. `extra` is appended as more top-level YAML keys.
pub fn config_yaml(extra: &str) -> String {
    format!(
        "region: {REGION}\n\
         listeners:\n  - address: \"127.0.0.1:0\"\n\
         admin: \"127.0.0.1:0\"\n\
         table: {{file: table.yaml, poll_ms: 50}}\n\
         debug_headers: true\n\
         {extra}"
    )
}

/// The JSON the gateway writes to `--ports-file`.
#[derive(Debug, serde::Deserialize)]
struct Ports {
    region: String,
    listeners: Vec<SocketAddr>,
    admin: SocketAddr,
}

/// A running `meridian gateway` child process; killed (and reaped) on drop.
pub struct Gw {
    child: Child,
    /// The temp dir holding the config, table, ports file and the gateway's log.
    pub dir: tempfile::TempDir,
    /// Client listeners, in config order.
    pub listeners: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
    client: reqwest::Client,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- gateway log ({}) ----\n{}",
                self.log_path().display(),
                self.log_tail(6000)
            );
        }
    }
}

impl Gw {
    /// Writes `table` and a default config (plus `extra` config keys) into a new temp dir, starts
    /// the gateway and waits until it is ready and serving.
    pub async fn start(table: &Table, extra: &str) -> Gw {
        let dir = tempfile::tempdir().expect("temp dir");
        write_table_at(&dir.path().join("table.yaml"), table);
        let gw = Gw::spawn(dir, &config_yaml(extra)).await;
        gw.wait_ready().await;
        gw.wait_version(table.version).await;
        gw
    }

    /// Writes `config` as `gateway.yaml` into `dir`, starts the gateway and waits only until it
    /// reports its bound addresses and its listeners accept connections (not for readiness).
    pub async fn spawn(dir: tempfile::TempDir, config: &str) -> Gw {
        let cfg = dir.path().join("gateway.yaml");
        std::fs::write(&cfg, config).expect("write gateway config");
        let ports = dir.path().join("ports.json");
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
        let child = Command::new(meridian_bin())
            .arg("gateway")
            .arg("--config")
            .arg(&cfg)
            .arg("--ports-file")
            .arg(&ports)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn meridian gateway");
        let mut gw = Gw {
            child,
            dir,
            listeners: Vec::new(),
            admin: "127.0.0.1:0".parse().expect("addr"),
            client: client(),
        };
        let end = Instant::now() + START_DEADLINE;
        let parsed: Ports = loop {
            if let Ok(text) = std::fs::read_to_string(&ports) {
                if let Ok(p) = serde_json::from_str(&text) {
                    break p;
                }
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("gateway exited early with {status}:\n{}", gw.log_tail(4000));
            }
            assert!(
                Instant::now() < end,
                "no ports file after {START_DEADLINE:?}:\n{}",
                gw.log_tail(4000)
            );
            tokio::time::sleep(POLL).await;
        };
        assert_eq!(parsed.region, REGION);
        gw.listeners = parsed.listeners;
        gw.admin = parsed.admin;
        // The ports file is written before Pingora binds; wait until everything accepts.
        let mut addrs = gw.listeners.clone();
        addrs.push(gw.admin);
        for a in addrs {
            loop {
                if tokio::net::TcpStream::connect(a).await.is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "{a} does not accept connections:\n{}",
                    gw.log_tail(4000)
                );
                tokio::time::sleep(POLL).await;
            }
        }
        gw
    }

    /// The first client listener.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0]
    }

    /// `http://<first listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The table file the gateway watches.
    pub fn table_path(&self) -> PathBuf {
        self.dir.path().join("table.yaml")
    }

    /// The gateway's stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// The last `n` bytes of the gateway's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = text.len().saturating_sub(n);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    /// Sends SIGTERM: the gateway's graceful shutdown.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Atomically replaces the table file with `table`.
    pub fn write_table(&self, table: &Table) {
        write_table_at(&self.table_path(), table);
    }

    /// Atomically replaces the table file with raw text (for invalid tables).
    pub fn write_table_text(&self, text: &str) {
        write_atomic(&self.table_path(), text);
    }

    /// GET on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.text().await.expect("admin body"))
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self) {
        let end = Instant::now() + START_DEADLINE;
        loop {
            let (code, body) = self.admin_get("/readyz").await;
            if code == 200 {
                return;
            }
            assert!(
                Instant::now() < end,
                "/readyz still {code} ({body}) after {START_DEADLINE:?}:\n{}",
                self.log_tail(4000)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (code, body) = self.admin_get("/metrics").await;
        assert_eq!(code, 200, "/metrics: {body}");
        body
    }

    /// The version in `/table`, if a table is in force.
    pub async fn table_version(&self) -> Option<u64> {
        let (_, body) = self.admin_get("/table").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("/table is JSON");
        v["table"]["version"].as_u64()
    }

    /// Polls `/table` until `version` is in force.
    pub async fn wait_version(&self, version: u64) {
        let end = Instant::now() + APPLY_DEADLINE;
        loop {
            let now = self.table_version().await;
            if now == Some(version) {
                return;
            }
            assert!(
                Instant::now() < end,
                "table version is {now:?}, not {version}, after {APPLY_DEADLINE:?}:\n{}",
                self.log_tail(4000)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `/metrics` until `name{labels}` equals `want`, then asserts it. Request metrics are
    /// recorded in the logging phase, which may finish just after the client has its response.
    pub async fn assert_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let end = Instant::now() + APPLY_DEADLINE;
        loop {
            let m = self.metrics().await;
            let v = metric(&m, name, labels);
            if v == Some(want) {
                return;
            }
            assert!(
                Instant::now() < end,
                "{name}{labels:?} is {v:?}, wanted {want}:\n{m}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `/metrics` until `name{labels}` reaches at least `want`; returns the value seen.
    pub async fn wait_metric_at_least(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        want: f64,
    ) -> f64 {
        let end = Instant::now() + APPLY_DEADLINE;
        loop {
            let v = metric(&self.metrics().await, name, labels).unwrap_or(0.0);
            if v >= want {
                return v;
            }
            assert!(
                Instant::now() < end,
                "{name}{labels:?} is {v}, wanted >= {want}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Writes `text` to a sibling temp file and renames it over `path`, so a poller never sees half.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// Serialises `table` to YAML and writes it atomically to `path`.
pub fn write_table_at(path: &Path, table: &Table) {
    let text = serde_yaml::to_string(table).expect("table to yaml");
    write_atomic(path, &text);
}

/// A table in [`REGION`].
pub fn table(version: u64, routes: Vec<Route>, subsets: Vec<Subset>) -> Table {
    Table {
        version,
        regions: Vec::new(),
        routes,
        subsets,
    }
}

/// A subset whose endpoints are `addrs`, all in [`REGION`] and healthy. Built through serde so
/// that fields added to the table later take their documented defaults.
pub fn subset_addrs(name: &str, addrs: &[SocketAddr]) -> Subset {
    let endpoints: Vec<serde_json::Value> = addrs
        .iter()
        .map(|a| {
            serde_json::json!({
                "address": a.to_string(),
                "region": REGION,
                "zone": format!("{REGION}-1a"),
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "name": name, "endpoints": endpoints }))
        .expect("subset")
}

/// A subset made of mock upstreams.
pub fn subset(name: &str, ups: &[&MockUpstream]) -> Subset {
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr()).collect();
    subset_addrs(name, &addrs)
}

/// A route taking any host, paths under `prefix` (any path when `None`), split by weight. Built
/// through serde, like [`subset_addrs`].
pub fn route(name: &str, prefix: Option<&str>, split: &[(&str, i64)]) -> Route {
    let split: Vec<serde_json::Value> = split
        .iter()
        .map(|(s, w)| serde_json::json!({ "subset": s, "weight": w }))
        .collect();
    let matcher = match prefix {
        Some(p) => serde_json::json!({ "path": { "prefix": p } }),
        None => serde_json::json!({}),
    };
    serde_json::from_value(serde_json::json!({ "name": name, "match": matcher, "split": split }))
        .expect("route")
}

/// Starts `n` mock upstreams named `<prefix>-<i>`.
pub async fn upstreams(prefix: &str, n: usize) -> Vec<MockUpstream> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let cfg = meridian_testkit::UpstreamConfig::new(format!("{prefix}-{i}"));
        out.push(MockUpstream::start(cfg).await.expect("start mock upstream"));
    }
    out
}

/// An HTTP client for tests: no proxy from the environment, keep-alive, a per-request timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(128)
        .build()
        .expect("reqwest client")
}

/// Parses Prometheus text and sums every sample of `name` whose labels include `labels`.
/// `None` when no sample matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (n, lbls) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let have: Vec<(&str, &str)> = lbls
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        if labels.iter().all(|l| have.contains(l)) {
            let v: f64 = value.parse().expect("metric value");
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// What a bounded load run saw.
#[derive(Debug, Default, Clone)]
pub struct Load {
    /// Requests sent (and answered or failed).
    pub sent: u64,
    /// 2xx responses whose body was read completely.
    pub ok: u64,
    /// Anything else: transport errors and non-2xx statuses.
    pub errors: u64,
    /// Count by `x-meridian-subset`.
    pub by_subset: BTreeMap<String, u64>,
    /// Count by `x-upstream` (the mock upstream's name).
    pub by_upstream: BTreeMap<String, u64>,
    /// Count by status (0 for transport errors).
    pub statuses: BTreeMap<u16, u64>,
    /// Count by the gateway's `x-meridian-attempts` debug header (attempts the request took),
    /// over every response, whatever its status; "-" when absent.
    pub by_attempts: BTreeMap<String, u64>,
    /// The first few errors, for the failure message.
    pub first_errors: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Load {
    /// The share of `subset` in percent of all requests sent.
    pub fn share(&self, subset: &str) -> f64 {
        let n = self.by_subset.get(subset).copied().unwrap_or(0);
        100.0 * n as f64 / self.sent.max(1) as f64
    }

    /// Responses whose `x-meridian-attempts` said `n`.
    pub fn with_attempts(&self, n: u32) -> u64 {
        self.by_attempts.get(&n.to_string()).copied().unwrap_or(0)
    }

    fn merge(&mut self, o: Load) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.errors += o.errors;
        for (k, v) in o.by_subset {
            *self.by_subset.entry(k).or_default() += v;
        }
        for (k, v) in o.by_upstream {
            *self.by_upstream.entry(k).or_default() += v;
        }
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in o.by_attempts {
            *self.by_attempts.entry(k).or_default() += v;
        }
        for e in o.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(e);
            }
        }
    }
}

/// A bounded load run: at most `max` requests, `concurrency` at a time, for at most `limit`, and
/// until `stop` is set when given.
#[derive(Clone)]
pub struct LoadSpec {
    /// URL to GET.
    pub url: String,
    /// Request cap.
    pub max: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Time cap.
    pub limit: Duration,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Stops the run early when set.
    pub stop: Option<Arc<AtomicBool>>,
    /// Requests per second over all workers: request `i` is not sent before `i / rate` seconds
    /// into the run. `None` sends as fast as answers come back.
    pub rate: Option<f64>,
}

impl LoadSpec {
    /// `max` GETs of `url`, `concurrency` at a time, within 60 s.
    pub fn new(url: String, max: usize, concurrency: usize) -> LoadSpec {
        LoadSpec {
            url,
            max,
            concurrency,
            limit: Duration::from_secs(60),
            headers: Vec::new(),
            stop: None,
            rate: None,
        }
    }
}

/// Runs `spec` with `client` and counts what came back.
pub async fn run_load(client: &reqwest::Client, spec: LoadSpec) -> Load {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(Mutex::new(Load::default()));
    let mut tasks = Vec::new();
    for _ in 0..spec.concurrency {
        let (client, spec, next, total) =
            (client.clone(), spec.clone(), next.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Load::default();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if start.elapsed() >= spec.limit
                    || spec.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
                    || i >= spec.max
                {
                    break;
                }
                if let Some(rate) = spec.rate {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                mine.sent += 1;
                let mut req = client.get(&spec.url);
                for (k, v) in &spec.headers {
                    req = req.header(k, v);
                }
                match req.send().await {
                    Ok(r) => {
                        let status = r.status();
                        let h = |n: &str| {
                            r.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let (subset, upstream) = (h("x-meridian-subset"), h("x-upstream"));
                        *mine.statuses.entry(status.as_u16()).or_default() += 1;
                        *mine
                            .by_attempts
                            .entry(h("x-meridian-attempts"))
                            .or_default() += 1;
                        match r.bytes().await {
                            Ok(_) if status.is_success() => {
                                mine.ok += 1;
                                *mine.by_subset.entry(subset).or_default() += 1;
                                *mine.by_upstream.entry(upstream).or_default() += 1;
                            }
                            Ok(body) => {
                                mine.errors += 1;
                                if mine.first_errors.len() < 5 {
                                    mine.first_errors.push(format!(
                                        "{status}: {}",
                                        String::from_utf8_lossy(&body)
                                    ));
                                }
                            }
                            Err(e) => {
                                mine.errors += 1;
                                if mine.first_errors.len() < 5 {
                                    mine.first_errors.push(format!("{status}, body: {e}"));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        mine.errors += 1;
                        *mine.statuses.entry(0).or_default() += 1;
                        if mine.first_errors.len() < 5 {
                            mine.first_errors.push(format!("{e:?}"));
                        }
                    }
                }
            }
            total.lock().expect("load totals").merge(mine);
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    let mut out = total.lock().expect("load totals").clone();
    out.elapsed = start.elapsed();
    out
}

/// GET `url` with `headers`; panics on a transport error.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"))
}

/// A response header as text ("" when absent).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}
