//! The routing table: the file a gateway serves from, and the document the control plane will
//! push. This is the serde layer; [`crate::validate`] checks it as a whole.
//!
//! ```yaml
//! version: 3
//! regions:
//!   - name: eu-west
//!     failover: [us-east]
//! routes:
//!   - name: vitals
//!     match: { hosts: ["api.example.com"], path: { prefix: "/vitals" } }
//!     split:
//!       - { subset: vitals@v1, weight: 90 }
//!       - { subset: vitals@v2, weight: 10 }
//!     sticky: { header: x-user-id }
//!     pin: { header: x-canary, values: { always: vitals@v2, never: vitals@v1 } }
//! subsets:
//!   - name: vitals@v1
//!     endpoints:
//!       - { address: "127.0.0.1:8081", region: eu-west, zone: eu-west-1a }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole routing table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Monotonic version; a gateway reports the version it applied. Required.
    pub version: u64,
    /// Regions and their failover order. Default: none, so every region only serves itself.
    #[serde(default)]
    pub regions: Vec<RegionSpec>,
    /// Routes in precedence order (see [`Route`]). Default: none, so every request gets 404.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Subsets (`service@version`) and their endpoints. Default: none.
    #[serde(default)]
    pub subsets: Vec<Subset>,
}

/// One region and where its traffic goes when it degrades.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    /// Region name, e.g. `eu-west`.
    pub name: String,
    /// Other regions in the order they take spilled traffic. Default: none.
    #[serde(default)]
    pub failover: Vec<String>,
}

/// A route: which requests it takes and how it splits them.
///
/// Precedence: a route whose host matches exactly beats a wildcard host (`*.example.com`, the
/// longest suffix first), which beats a route with no hosts. Among routes for the same host,
/// an exact path beats a prefix path (the longest first), which beats a regex path; ties keep
/// file order. Method and header conditions then filter; the first route that passes wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name; used in metrics and logs.
    pub name: String,
    /// What the route takes. Default: every request.
    #[serde(default, rename = "match")]
    pub matcher: RouteMatch,
    /// Weighted subsets. At least one entry, and weights must not all be 0.
    pub split: Vec<SplitEntry>,
    /// Sticky split: the same key always lands on the same subset. Default: off.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// A header that pins a subset, e.g. `x-canary: always`. Default: off.
    #[serde(default)]
    pub pin: Option<Pin>,
    /// Upstream timeouts. Default: the gateway's configured timeouts.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// Retry policy. Default: see [`RetryPolicy`]'s field defaults (2 attempts).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Hedging. Default: off.
    #[serde(default)]
    pub hedge: Option<HedgePolicy>,
    /// The budget retries and hedges share. Default: see [`Budget`].
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Data residency: the only regions this route's traffic may reach, including failover,
    /// retries and hedges. Default: empty, meaning any region.
    #[serde(default)]
    pub allowed_regions: Vec<String>,
}

/// When and how a failed attempt is tried again, always on another endpoint.
///
/// Only idempotent requests are retried (GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or any method
/// with an `Idempotency-Key` header), except after a connect failure, which provably never
/// reached the upstream. A request that arrives with `x-meridian-attempt` is not retried again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, the first included, 1 to 10. Default: 2.
    #[serde(default = "two")]
    pub attempts: i64,
    /// Failure kinds that are retried: `connect-failure`, `refused-stream`, `reset` (before
    /// response headers) and `per-try-timeout`. Default: all four.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<String>,
    /// Response statuses that are retried. Default: 502, 503, 504.
    #[serde(default = "default_retry_status")]
    pub retry_on_status: Vec<u16>,
    /// Timeout of each attempt, headers included. Default: none (the route's timeouts apply).
    #[serde(default)]
    pub per_try_timeout_ms: Option<u64>,
    /// Backoff before a retry: full jitter over `min(max, base × 2^n)`. Default: 25 ms.
    #[serde(default = "backoff_base")]
    pub backoff_base_ms: u64,
    /// Backoff cap. Default: 250 ms.
    #[serde(default = "backoff_max")]
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: two(),
            retry_on: default_retry_on(),
            retry_on_status: default_retry_status(),
            per_try_timeout_ms: None,
            backoff_base_ms: backoff_base(),
            backoff_max_ms: backoff_max(),
        }
    }
}

/// Retry kinds `retry_on` accepts.
pub const RETRY_KINDS: [&str; 4] = [
    "connect-failure",
    "refused-stream",
    "reset",
    "per-try-timeout",
];

/// A second attempt raced against a slow first one. Exactly one of `delay_ms` or `adaptive`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgePolicy {
    /// Fixed delay before the hedge. Default: none.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Delay from the route's live latency. Default: none.
    #[serde(default)]
    pub adaptive: Option<AdaptiveHedge>,
}

/// Hedge after the route's live latency percentile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveHedge {
    /// Percentile of recent attempt latencies, 50 to 99.9. Default: 95.
    #[serde(default = "p95")]
    pub percentile: f64,
    /// Samples needed in the window before hedging starts. Default: 100.
    #[serde(default = "hundred")]
    pub min_samples: u64,
    /// Lowest delay used, so a very fast route does not hedge everything. Default: 1 ms.
    #[serde(default = "one_ms")]
    pub min_delay_ms: u64,
}

/// One budget per route bounds retries and hedges together: over a sliding window they may add
/// at most `ratio` × requests, plus `min_per_s` × window seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Extra attempts per request. Default: 0.2.
    #[serde(default = "ratio")]
    pub ratio: f64,
    /// Window in seconds, 1 to 60. Default: 10.
    #[serde(default = "ten")]
    pub window_s: u64,
    /// Extra attempts always allowed per second. Default: 10.
    #[serde(default = "ten")]
    pub min_per_s: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            ratio: ratio(),
            window_s: ten(),
            min_per_s: ten(),
        }
    }
}

fn two() -> i64 {
    2
}
fn ten() -> u64 {
    10
}
fn hundred() -> u64 {
    100
}
fn one_ms() -> u64 {
    1
}
fn p95() -> f64 {
    95.0
}
fn ratio() -> f64 {
    0.2
}
fn backoff_base() -> u64 {
    25
}
fn backoff_max() -> u64 {
    250
}
fn default_retry_on() -> Vec<String> {
    RETRY_KINDS.iter().map(|s| s.to_string()).collect()
}
fn default_retry_status() -> Vec<u16> {
    vec![502, 503, 504]
}

/// What a route matches. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host names, exact (`api.example.com`) or wildcard (`*.example.com`), without port.
    /// Default: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path condition. Default: any path.
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Methods, upper case. Default: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions, all of which must hold. Default: none.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

/// A path condition: exactly one of the three forms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// The whole path, query string excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// A leading part of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A regular expression (Rust `regex` syntax), anchored by the writer if wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A header condition. With neither `exact` nor `regex`, the header only has to be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, case-insensitive.
    pub name: String,
    /// The value must equal this. Default: not checked.
    #[serde(default)]
    pub exact: Option<String>,
    /// The value must match this regular expression. Default: not checked.
    #[serde(default)]
    pub regex: Option<String>,
}

/// A subset and its share of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitEntry {
    /// The subset's name, as declared in `subsets`.
    pub subset: String,
    /// Relative weight, >= 0. Kept signed so a negative number is reported, not mis-parsed.
    pub weight: i64,
}

/// Where a sticky key comes from: exactly one of a header or a cookie.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// Request header holding the key. Default: none.
    #[serde(default)]
    pub header: Option<String>,
    /// Cookie holding the key. Default: none.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// A header that pins a subset: when its value is a key of `values`, that subset serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Header name, e.g. `x-canary`.
    pub header: String,
    /// Header value to subset name, e.g. `always: vitals@v2`.
    pub values: BTreeMap<String, String>,
}

/// Upstream timeouts, in milliseconds. Each left out falls back to the gateway's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP (and TLS) connect. Gateway default: 1000 ms.
    #[serde(default)]
    pub connect_ms: Option<u64>,
    /// Longest wait for any single read from the upstream. Gateway default: 10000 ms.
    #[serde(default)]
    pub read_ms: Option<u64>,
    /// Whole exchange with the upstream, headers and body. Gateway default: 30000 ms.
    #[serde(default)]
    pub total_ms: Option<u64>,
}

/// A named group of endpoints running one version of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    /// `service@version`, e.g. `vitals@v2`.
    pub name: String,
    /// The endpoints. May be empty (requests routed here then get 503).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Passive health. Default: see [`Outlier`].
    #[serde(default)]
    pub outlier: Option<Outlier>,
    /// Circuit breaking. Default: see [`Limits`].
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// Outlier ejection: an endpoint with `consecutive_failures` in a row (5xx answers, connect
/// failures, resets, timeouts) is taken out for `base_ejection_ms` × 2^(ejections so far), up to
/// `max_ejection_ms`. At most `max_ejection_percent` of a subset's endpoints are out at once; a
/// failing endpoint over that cap stays in and is counted. When every endpoint of the subset is
/// ejected, the gateway fails open to them, counts it and says so in `x-meridian-fail-open`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Failures in a row that eject. Default: 5.
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// First ejection time. Default: 30000 ms (as Envoy).
    #[serde(default = "base_ejection")]
    pub base_ejection_ms: u64,
    /// Longest ejection time. Default: 300000 ms.
    #[serde(default = "max_ejection")]
    pub max_ejection_ms: u64,
    /// Most endpoints out at once, in percent. Default: 50.
    #[serde(default = "fifty")]
    pub max_ejection_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: five(),
            base_ejection_ms: base_ejection(),
            max_ejection_ms: max_ejection(),
            max_ejection_percent: fifty(),
        }
    }
}

/// Circuit breaking: requests over a limit get a fast 503 with `x-meridian-reject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most requests in flight to the whole subset. Default: 10000.
    #[serde(default = "ten_thousand")]
    pub max_inflight: u64,
    /// Most requests in flight to one endpoint. Default: 1000.
    #[serde(default = "thousand")]
    pub max_inflight_per_endpoint: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflight: ten_thousand(),
            max_inflight_per_endpoint: thousand(),
        }
    }
}

fn five() -> u32 {
    5
}
fn fifty() -> u32 {
    50
}
fn base_ejection() -> u64 {
    30_000
}
fn max_ejection() -> u64 {
    300_000
}
fn ten_thousand() -> u64 {
    10_000
}
fn thousand() -> u64 {
    1_000
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `ip:port`.
    pub address: String,
    /// Region the endpoint runs in.
    pub region: String,
    /// Zone within the region. Default: empty.
    #[serde(default)]
    pub zone: String,
    /// Relative weight among the endpoints of one region, >= 1. Default: 1.
    #[serde(default = "one")]
    pub weight: i64,
    /// Health as the control plane sees it. Default: true.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Speak TLS to this endpoint. Default: false.
    #[serde(default)]
    pub tls: bool,
    /// SNI and certificate name when `tls` is set. Default: the address's IP.
    #[serde(default)]
    pub sni: Option<String>,
}

fn one() -> i64 {
    1
}

fn yes() -> bool {
    true
}
