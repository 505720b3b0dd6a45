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
