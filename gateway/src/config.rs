//! The gateway's bootstrap config: where it listens, which region it is, where its routing table
//! comes from, and its defaults. Two layers: the serde file model ([`GatewayFile`]) and the
//! validated model ([`GatewayConfig`]) built with `TryFrom`, which resolves relative paths against
//! the config file's folder and collects every error with its path.
//!
//! ```yaml
//! region: eu-west
//! listeners:
//!   - address: "127.0.0.1:8080"
//!   - address: "127.0.0.1:8443"
//!     tls:
//!       http2: true
//!       certificates:
//!         - { hosts: ["api.example.com"], cert: certs/api.pem, key: certs/api.key }
//! admin: "127.0.0.1:9901"
//! table: { file: table.yaml }
//! ```
//!
//! Or, fed by control planes (see [`ControlSourceFile`]):
//!
//! ```yaml
//! table:
//!   control: { urls: ["http://10.0.0.5:7100", "http://10.0.1.5:7100"], token: "..." }
//!   last_known_good: /var/lib/meridian/table.json
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_api::errors::{index, join};
use meridian_api::validate::{is_header_name, MAX_TIMEOUT_MS};
use meridian_api::{parse_yaml_or_json, Errors};
use serde::{Deserialize, Serialize};

/// The file model of a gateway's bootstrap config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// This gateway's region; its endpoints there are preferred. Required.
    pub region: String,
    /// Where clients connect. At least one.
    pub listeners: Vec<ListenerFile>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/table`). Required.
    pub admin: String,
    /// Where the routing table comes from. Required.
    pub table: TableSourceFile,
    /// Default upstream timeouts; a route may override each. Defaults: 1000/10000/30000 ms.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Worker threads for the proxy. Default: 1.
    #[serde(default = "one")]
    pub workers: usize,
    /// Idle upstream connections kept per endpoint (with `http1_engine: pingora`, per gateway,
    /// as Pingora pools them). Default: 128.
    #[serde(default = "pool")]
    pub upstream_keepalive_pool: usize,
    /// How long an idle pooled upstream connection is kept. Default: 60000 ms.
    #[serde(default = "idle")]
    pub upstream_idle_timeout_ms: u64,
    /// How long a client's keep-alive connection may sit idle between requests before the
    /// gateway closes it (Pingora counts whole seconds, so this is rounded up to one). Without
    /// it, an HTTP/1.1 connection that has served a request is kept open forever, and idle
    /// clients pile up. Between 1000 and 3600000. Default: 60000 ms.
    #[serde(default = "idle")]
    pub client_idle_timeout_ms: u64,
    /// How long a client may take to send a whole request head, from its first byte (bounds
    /// slow-header clients). Between 100 and 600000. Default: 10000 ms.
    #[serde(default = "header_timeout")]
    pub client_header_timeout_ms: u64,
    /// How long a client may pause while sending a request body (each read), and how long it may
    /// leave a response unread (each write). Between 100 and 3600000. Default: 30000 ms.
    #[serde(default = "body_timeout")]
    pub client_body_timeout_ms: u64,
    /// Which engine serves HTTP/1.x clients: `meridian`, the gateway's own HTTP/1 loop on
    /// Pingora's listeners, or `pingora`, Pingora's proxy (HTTP/2 clients always take Pingora's).
    /// Default: `meridian`.
    #[serde(default)]
    pub http1_engine: Http1Engine,
    /// JSON access log. Default: off.
    #[serde(default)]
    pub access_log: Option<AccessLogFile>,
    /// Add `x-meridian-route`, `-subset`, `-region`, `-upstream` and `-attempts` to responses.
    /// Default: false.
    #[serde(default)]
    pub debug_headers: bool,
}

/// The engine for HTTP/1.x client connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Http1Engine {
    /// The gateway's own HTTP/1 loop (the default).
    #[default]
    Meridian,
    /// Pingora's `pingora-proxy`.
    Pingora,
}

/// One client-facing listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// `ip:port`; port 0 picks a free port, reported in the ports file and the log.
    pub address: String,
    /// Terminate TLS here. Default: plain HTTP/1.1.
    #[serde(default)]
    pub tls: Option<TlsFile>,
}

/// TLS on a listener: a certificate per SNI host, and HTTP/2 by ALPN.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Certificates; the first also serves clients that send no or an unknown SNI. At least one.
    pub certificates: Vec<CertFile>,
    /// Offer h2 by ALPN (HTTP/1.1 stays available). Default: true.
    #[serde(default = "yes")]
    pub http2: bool,
}

/// A certificate and the SNI hosts it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    /// Exact names or `*.suffix` wildcards.
    pub hosts: Vec<String>,
    /// PEM certificate chain, relative to the config file.
    pub cert: PathBuf,
    /// PEM private key, relative to the config file.
    pub key: PathBuf,
}

/// Where the table comes from: exactly one of a watched `file` or a `control` plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSourceFile {
    /// Table file, relative to the config file. Watched; a valid change is applied atomically.
    /// Default: none.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How often the file is checked for changes. Default: 500 ms.
    #[serde(default = "poll")]
    pub poll_ms: u64,
    /// Control planes to watch for tables. Default: none.
    #[serde(default)]
    pub control: Option<ControlSourceFile>,
    /// With `control`: where the last applied table is written (atomically), and served from
    /// when the gateway starts with no control plane reachable. Relative to the config file.
    /// Default: `last-known-good.json` next to the config file.
    #[serde(default)]
    pub last_known_good: Option<PathBuf>,
}

/// The control-plane table source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSourceFile {
    /// Base URLs of the control-plane replicas, e.g. `http://10.0.0.5:7100`. At least one;
    /// the gateway fails over between them in order.
    pub urls: Vec<String>,
    /// Bearer token. Default: none.
    #[serde(default)]
    pub token: Option<String>,
    /// Region whose table to watch. Default: the gateway's region.
    #[serde(default)]
    pub region: Option<String>,
    /// This gateway's identity in reports. Default: `<hostname>-<pid>`.
    #[serde(default)]
    pub id: Option<String>,
    /// How often applied version and SLIs are reported. Default: 2000 ms.
    #[serde(default = "report_every")]
    pub report_interval_ms: u64,
    /// How long a long poll may be held by the control plane. Default: 25000 ms.
    #[serde(default = "long_poll")]
    pub long_poll_ms: u64,
    /// How often the gateway measures its round-trip time to the other regions of its table
    /// (the fastest TCP connect to up to 3 endpoints of each, 1 s timeout) and reports it, so
    /// the control plane can order `failover: auto` from this region's point of view. 0 turns
    /// probing off; otherwise 1000 to 20000 (the control plane forgets a figure after 60 s, so
    /// at least 3 rounds fit). Default: 5000 ms.
    #[serde(default = "rtt_probe_every")]
    pub rtt_probe_interval_ms: u64,
    /// Limits this gateway puts on any table, on top of the table's own validation. A table
    /// over them is refused (NACKed). Default: see [`TableLimits`].
    #[serde(default)]
    pub limits: TableLimits,
}

/// The most a gateway accepts in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableLimits {
    /// Routes. Default: 10000.
    #[serde(default = "ten_k")]
    pub max_routes: usize,
    /// Subsets. Default: 10000.
    #[serde(default = "ten_k")]
    pub max_subsets: usize,
    /// Endpoints, all subsets together. Default: 100000.
    #[serde(default = "hundred_k")]
    pub max_endpoints: usize,
}

impl Default for TableLimits {
    fn default() -> Self {
        TableLimits {
            max_routes: ten_k(),
            max_subsets: ten_k(),
            max_endpoints: hundred_k(),
        }
    }
}

fn report_every() -> u64 {
    2_000
}
fn long_poll() -> u64 {
    25_000
}
fn rtt_probe_every() -> u64 {
    5_000
}
fn ten_k() -> usize {
    10_000
}
fn hundred_k() -> usize {
    100_000
}

/// A validated control-plane source.
#[derive(Debug, Clone)]
pub struct ControlSource {
    /// Base URLs, without a trailing `/`.
    pub urls: Vec<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// Region whose table is watched.
    pub region: String,
    /// Identity in reports.
    pub id: String,
    /// Report interval.
    pub report_interval: Duration,
    /// Long-poll hold asked for.
    pub long_poll: Duration,
    /// RTT probe interval; `None`: no probing.
    pub rtt_probe_interval: Option<Duration>,
    /// Table limits.
    pub limits: TableLimits,
}

/// Default upstream timeouts in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Connect. Default: 1000.
    #[serde(default = "connect")]
    pub connect_ms: u64,
    /// Any single upstream read. Default: 10000.
    #[serde(default = "read")]
    pub read_ms: u64,
    /// Whole upstream exchange. Default: 30000.
    #[serde(default = "total")]
    pub total_ms: u64,
}

impl Default for TimeoutsFile {
    fn default() -> Self {
        TimeoutsFile {
            connect_ms: connect(),
            read_ms: read(),
            total_ms: total(),
        }
    }
}

/// The access log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    /// File to append JSON lines to, relative to the config file; `-` is standard output.
    pub path: PathBuf,
    /// Request headers whose values may be logged. Default: none, because requests carry patient
    /// data. Query strings are never logged.
    #[serde(default)]
    pub allow_headers: Vec<String>,
}

fn one() -> usize {
    1
}
fn pool() -> usize {
    128
}
fn idle() -> u64 {
    60_000
}
fn header_timeout() -> u64 {
    10_000
}
fn body_timeout() -> u64 {
    30_000
}
fn yes() -> bool {
    true
}
fn poll() -> u64 {
    500
}
fn connect() -> u64 {
    1_000
}
fn read() -> u64 {
    10_000
}
fn total() -> u64 {
    30_000
}

/// The validated config, with paths resolved.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This gateway's region.
    pub region: String,
    /// Client listeners.
    pub listeners: Vec<Listener>,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Table file: the watched file, or with `control`, the last-known-good file.
    pub table_file: PathBuf,
    /// The control-plane source, when the table comes from one.
    pub control: Option<ControlSource>,
    /// Table file poll interval.
    pub table_poll: Duration,
    /// Default upstream timeouts.
    pub timeouts: Timeouts,
    /// Worker threads.
    pub workers: usize,
    /// Pool size.
    pub upstream_keepalive_pool: usize,
    /// Pool idle timeout.
    pub upstream_idle_timeout: Duration,
    /// Client keep-alive idle timeout, in whole seconds (at least 1).
    pub client_idle_timeout_s: u64,
    /// Client keep-alive idle timeout.
    pub client_idle_timeout: Duration,
    /// Whole request head, from its first byte.
    pub client_header_timeout: Duration,
    /// Each read of a request body.
    pub client_body_timeout: Duration,
    /// Each write of a response to the client.
    pub client_write_timeout: Duration,
    /// The HTTP/1.x engine.
    pub http1_engine: Http1Engine,
    /// Access log target and header allowlist (lower case).
    pub access_log: Option<(PathBuf, Vec<String>)>,
    /// Debug response headers.
    pub debug_headers: bool,
}

/// A validated listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Bind address (port may be 0).
    pub address: SocketAddr,
    /// TLS, with resolved paths.
    pub tls: Option<TlsFile>,
}

/// Resolved upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect.
    pub connect: Duration,
    /// Single read.
    pub read: Duration,
    /// Whole exchange.
    pub total: Duration,
}

impl GatewayConfig {
    /// Reads and validates a config file. Errors carry field paths.
    pub fn load(path: &Path) -> Result<GatewayConfig, Errors> {
        let text = meridian_api::load::read_text(path)?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates config text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<GatewayConfig, Errors> {
        let file: GatewayFile = parse_yaml_or_json(text)?;
        GatewayConfig::try_from((file, base))
    }
}

impl TryFrom<(GatewayFile, &Path)> for GatewayConfig {
    type Error = Errors;

    fn try_from((f, base): (GatewayFile, &Path)) -> Result<Self, Errors> {
        let mut errs = Errors::default();
        if f.region.trim().is_empty() {
            errs.push("region", "must not be empty");
        }
        if f.listeners.is_empty() {
            errs.push("listeners", "must have at least one listener");
        }
        let mut listeners = Vec::new();
        for (i, l) in f.listeners.iter().enumerate() {
            let p = index("listeners", i);
            let address = parse_addr(&l.address, &join(&p, "address"), &mut errs);
            let tls = l
                .tls
                .as_ref()
                .map(|t| resolve_tls(t, base, &join(&p, "tls"), &mut errs));
            if let Some(address) = address {
                listeners.push(Listener { address, tls });
            }
        }
        let admin = parse_addr(&f.admin, "admin", &mut errs);
        if let Some(a) = admin {
            // Port 0 picks a free port for each; any other shared address would split
            // connections between the proxy and the admin server at random.
            if a.port() != 0 && listeners.iter().any(|l| l.address == a) {
                errs.push("admin", "must not be one of the listeners' addresses");
            }
        }
        for (i, l) in listeners.iter().enumerate() {
            let dup = listeners[..i].iter().any(|o| o.address == l.address);
            if l.address.port() != 0 && dup {
                errs.push(index("listeners", i), "listed twice");
            }
        }
        if f.upstream_keepalive_pool > 100_000 {
            errs.push("upstream_keepalive_pool", "must be at most 100000");
        }
        if !(1_000..=3_600_000).contains(&f.upstream_idle_timeout_ms) {
            errs.push(
                "upstream_idle_timeout_ms",
                "must be between 1000 and 3600000",
            );
        }
        if f.workers == 0 || f.workers > 256 {
            errs.push("workers", "must be between 1 and 256");
        }
        if f.table.poll_ms == 0 || f.table.poll_ms > 60_000 {
            errs.push("table.poll_ms", "must be between 1 and 60000");
        }
        let (table_file, control) = table_source(&f, base, &mut errs);
        for (name, v) in [
            ("connect_ms", f.timeouts.connect_ms),
            ("read_ms", f.timeouts.read_ms),
            ("total_ms", f.timeouts.total_ms),
        ] {
            if v == 0 || v > MAX_TIMEOUT_MS {
                errs.push(
                    join("timeouts", name),
                    format!("must be between 1 and {MAX_TIMEOUT_MS}"),
                );
            }
        }
        let access_log = f.access_log.as_ref().map(|a| {
            for (i, h) in a.allow_headers.iter().enumerate() {
                if !is_header_name(h) {
                    errs.push(
                        index("access_log.allow_headers", i),
                        format!("'{h}' is not a header name"),
                    );
                }
            }
            let path = if a.path.as_os_str() == "-" {
                a.path.clone()
            } else {
                base.join(&a.path)
            };
            let allow = a
                .allow_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            (path, allow)
        });
        if !(100..=600_000).contains(&f.client_header_timeout_ms) {
            errs.push("client_header_timeout_ms", "must be between 100 and 600000");
        }
        if !(100..=3_600_000).contains(&f.client_body_timeout_ms) {
            errs.push("client_body_timeout_ms", "must be between 100 and 3600000");
        }
        if !(1_000..=3_600_000).contains(&f.client_idle_timeout_ms) {
            errs.push("client_idle_timeout_ms", "must be between 1000 and 3600000");
        }
        let admin = errs.is_empty().then_some(admin).flatten();
        let Some(admin) = admin else {
            return Err(errs);
        };
        errs.into_result(GatewayConfig {
            region: f.region,
            listeners,
            admin,
            table_file,
            control,
            table_poll: Duration::from_millis(f.table.poll_ms),
            timeouts: Timeouts {
                connect: Duration::from_millis(f.timeouts.connect_ms),
                read: Duration::from_millis(f.timeouts.read_ms),
                total: Duration::from_millis(f.timeouts.total_ms),
            },
            workers: f.workers,
            upstream_keepalive_pool: f.upstream_keepalive_pool,
            upstream_idle_timeout: Duration::from_millis(f.upstream_idle_timeout_ms),
            client_idle_timeout_s: f.client_idle_timeout_ms.div_ceil(1000).max(1),
            client_idle_timeout: Duration::from_millis(f.client_idle_timeout_ms),
            client_header_timeout: Duration::from_millis(f.client_header_timeout_ms),
            client_body_timeout: Duration::from_millis(f.client_body_timeout_ms),
            client_write_timeout: Duration::from_millis(f.client_body_timeout_ms),
            http1_engine: f.http1_engine,
            access_log,
            debug_headers: f.debug_headers,
        })
    }
}

fn table_source(
    f: &GatewayFile,
    base: &Path,
    errs: &mut Errors,
) -> (PathBuf, Option<ControlSource>) {
    let t = &f.table;
    match (&t.file, &t.control) {
        (Some(file), None) => {
            if t.last_known_good.is_some() {
                errs.push("table.last_known_good", "only applies with table.control");
            }
            (base.join(file), None)
        }
        (None, Some(c)) => {
            if c.urls.is_empty() {
                errs.push("table.control.urls", "must list at least one URL");
            }
            let mut urls = Vec::new();
            for (i, u) in c.urls.iter().enumerate() {
                let ok = (u.starts_with("http://") || u.starts_with("https://"))
                    && u.parse::<http::Uri>().is_ok_and(|x| x.host().is_some());
                if !ok {
                    errs.push(
                        index("table.control.urls", i),
                        format!("'{u}' is not an http:// or https:// URL"),
                    );
                }
                urls.push(u.trim_end_matches('/').to_string());
            }
            if let Some(tok) = &c.token {
                if tok.is_empty() || http::HeaderValue::from_str(tok).is_err() {
                    errs.push(
                        "table.control.token",
                        "must be a non-empty header-safe string",
                    );
                }
            }
            if !(100..=600_000).contains(&c.report_interval_ms) {
                errs.push(
                    "table.control.report_interval_ms",
                    "must be between 100 and 600000",
                );
            }
            if !(100..=60_000).contains(&c.long_poll_ms) {
                errs.push(
                    "table.control.long_poll_ms",
                    "must be between 100 and 60000",
                );
            }
            if c.rtt_probe_interval_ms != 0 && !(1_000..=20_000).contains(&c.rtt_probe_interval_ms)
            {
                errs.push(
                    "table.control.rtt_probe_interval_ms",
                    "must be 0 (off) or between 1000 and 20000",
                );
            }
            let l = &c.limits;
            for (name, v) in [
                ("max_routes", l.max_routes),
                ("max_subsets", l.max_subsets),
                ("max_endpoints", l.max_endpoints),
            ] {
                if v == 0 {
                    errs.push(join("table.control.limits", name), "must be >= 1");
                }
            }
            let lkg = t
                .last_known_good
                .clone()
                .unwrap_or_else(|| PathBuf::from("last-known-good.json"));
            let region = c.region.clone().unwrap_or_else(|| f.region.clone());
            let id = c.id.clone().unwrap_or_else(default_id);
            let control = ControlSource {
                urls,
                token: c.token.clone(),
                region,
                id,
                report_interval: Duration::from_millis(c.report_interval_ms),
                long_poll: Duration::from_millis(c.long_poll_ms),
                rtt_probe_interval: (c.rtt_probe_interval_ms > 0)
                    .then(|| Duration::from_millis(c.rtt_probe_interval_ms)),
                limits: c.limits,
            };
            (base.join(lkg), Some(control))
        }
        _ => {
            errs.push("table", "give exactly one of file or control");
            (PathBuf::new(), None)
        }
    }
}

/// `<hostname>-<pid>`.
fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!("{host}-{}", std::process::id())
}

fn parse_addr(text: &str, path: &str, errs: &mut Errors) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(path, format!("'{text}' is not an ip:port address"));
            None
        }
    }
}

fn resolve_tls(t: &TlsFile, base: &Path, p: &str, errs: &mut Errors) -> TlsFile {
    if t.certificates.is_empty() {
        errs.push(
            join(p, "certificates"),
            "must have at least one certificate",
        );
    }
    let mut out = t.clone();
    for (i, c) in out.certificates.iter_mut().enumerate() {
        let cp = index(&join(p, "certificates"), i);
        if c.hosts.is_empty() {
            errs.push(join(&cp, "hosts"), "must name at least one host");
        }
        c.cert = base.join(&c.cert);
        c.key = base.join(&c.key);
        if let Err(e) = crate::tls::load_certified_key(&c.cert, &c.key) {
            errs.push(cp, e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_paths_resolve() {
        let text = "region: eu\nlisteners: [{address: '127.0.0.1:0'}]\nadmin: '127.0.0.1:0'\ntable: {file: t.yaml}\n";
        let c = GatewayConfig::parse(text, Path::new("/etc/meridian")).expect("valid");
        assert_eq!(c.table_file, Path::new("/etc/meridian/t.yaml"));
        assert_eq!(c.timeouts.connect, Duration::from_millis(1000));
        assert_eq!(c.workers, 1);
        assert_eq!(c.client_idle_timeout_s, 60);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let text = "region: ''\nlisteners: [{address: 'nope'}]\nadmin: 'x'\ntable: {file: t.yaml, poll_ms: 0}\nworkers: 0\ntimeouts: {connect_ms: 0}\nclient_idle_timeout_ms: 10\n";
        let err = GatewayConfig::parse(text, Path::new("."))
            .expect_err("invalid")
            .to_string();
        for want in [
            "region: must not be empty",
            "listeners[0].address: 'nope'",
            "admin: 'x'",
            "workers: must be",
            "table.poll_ms: must be",
            "timeouts.connect_ms: must be",
            "client_idle_timeout_ms: must be between 1000 and 3600000",
        ] {
            assert!(err.contains(want), "missing {want} in {err}");
        }
    }

    #[test]
    fn admin_and_listeners_may_not_share_an_address() {
        let text = "region: r\nlisteners: [{address: '127.0.0.1:18080'}, {address: '127.0.0.1:18080'}, {address: '127.0.0.1:0'}]\nadmin: '127.0.0.1:18080'\ntable: {file: t.yaml}\nupstream_idle_timeout_ms: 0\n";
        let err = GatewayConfig::parse(text, Path::new("."))
            .expect_err("invalid")
            .to_string();
        for want in [
            "admin: must not be one of the listeners' addresses",
            "listeners[1]: listed twice",
            "upstream_idle_timeout_ms: must be between 1000 and 3600000",
        ] {
            assert!(err.contains(want), "missing {want} in {err}");
        }
        let ok = "region: r\nlisteners: [{address: '127.0.0.1:0'}, {address: '127.0.0.1:0'}]\nadmin: '127.0.0.1:0'\ntable: {file: t.yaml}\n";
        GatewayConfig::parse(ok, Path::new(".")).expect("port 0 may repeat");
    }

    #[test]
    fn a_control_source_takes_defaults() {
        let text = "region: eu\nlisteners: [{address: '127.0.0.1:0'}]\nadmin: '127.0.0.1:0'\ntable: {control: {urls: ['http://127.0.0.1:7100/'], token: 'abc'}}\n";
        let c = GatewayConfig::parse(text, Path::new("/etc/m")).expect("valid");
        let ctl = c.control.expect("control source");
        assert_eq!(ctl.urls, vec!["http://127.0.0.1:7100".to_string()]);
        assert_eq!(ctl.region, "eu");
        assert_eq!(c.table_file, Path::new("/etc/m/last-known-good.json"));
        assert_eq!(ctl.rtt_probe_interval, Some(Duration::from_secs(5)));
    }

    #[test]
    fn rtt_probing_can_be_tuned_or_turned_off() {
        let parse = |v: &str| {
            let text = format!("region: eu\nlisteners: [{{address: '127.0.0.1:0'}}]\nadmin: '127.0.0.1:0'\ntable: {{control: {{urls: ['http://127.0.0.1:7100'], rtt_probe_interval_ms: {v}}}}}\n");
            GatewayConfig::parse(&text, Path::new("."))
                .map(|c| c.control.and_then(|c| c.rtt_probe_interval))
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("0"), Ok(None));
        assert_eq!(parse("2000"), Ok(Some(Duration::from_secs(2))));
        for bad in ["500", "60000"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("table.control.rtt_probe_interval_ms"), "{err}");
        }
    }

    #[test]
    fn exactly_one_table_source() {
        for table in [
            "{}",
            "{file: t.yaml, control: {urls: ['http://x:1']}}",
            "{control: {urls: ['ftp://x']}}",
        ] {
            let text = format!("region: eu\nlisteners: [{{address: '127.0.0.1:0'}}]\nadmin: '127.0.0.1:0'\ntable: {table}\n");
            let err = GatewayConfig::parse(&text, Path::new("."));
            assert!(err.is_err(), "{table} should be refused");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = "region: eu\nlisteners: []\nadmin: '127.0.0.1:0'\ntable: {file: t}\nworkrs: 2\n";
        let err = GatewayConfig::parse(text, Path::new("."))
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("workrs"), "{err}");
    }
}
