//! The operator's intent: what the control plane turns into one routing table per region. This
//! is the serde layer plus its whole-document validation; the control plane adds health, DNS and
//! RTT to it (see `meridian-control`'s table builder).
//!
//! ```yaml
//! regions:
//!   - { name: eu-west, failover: [us-east] }
//!   - { name: us-east, failover: auto }      # ordered by measured RTT
//! services:
//!   - name: vitals
//!     health_check: { path: /healthz, interval_ms: 1000, unhealthy_threshold: 3 }
//!     versions:
//!       - name: v1
//!         endpoints:
//!           eu-west: ["10.0.1.5:8080", { address: "vitals.eu.internal:8080", zone: a }]
//!           us-east: ["10.1.1.5:8080"]
//! routes:                                     # the routing table's routes, verbatim
//!   - name: vitals
//!     match: { path: { prefix: /vitals } }
//!     split: [{ subset: vitals@v1, weight: 100 }]
//! ```
//!
//! An intent may be one file or a folder of them (`*.yaml`, `*.yml`, `*.json`, in name order);
//! the lists of every file are concatenated and validated as one document, and each error names
//! the file and the path inside it (`b.yaml: services[1].versions[0].name: ...`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::{index, join, Errors};
use crate::load::parse_yaml_or_json;
use crate::table::{Limits, Outlier, RegionSpec, Route, Subset, Table};
use crate::validate::validate_table;

/// A whole intent document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Regions and their failover order. Default: none.
    #[serde(default)]
    pub regions: Vec<IntentRegion>,
    /// Services, their versions and endpoints. Default: none.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Routes, exactly as in a routing table; `split` names `service@version`. Default: none.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// One region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentRegion {
    /// Region name, e.g. `eu-west`.
    pub name: String,
    /// Where spilled traffic goes: a list of regions in order, or `auto` for every other region
    /// ordered by measured round-trip time. Default: `[]` (the region only serves itself).
    #[serde(default)]
    pub failover: Failover,
}

/// A failover order: given, or `auto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Failover {
    /// The regions, in order.
    Order(Vec<String>),
    /// Must be the word `auto`: the control plane orders every other region by RTT.
    Auto(String),
}

impl Default for Failover {
    fn default() -> Self {
        Failover::Order(Vec::new())
    }
}

impl Failover {
    /// True for `auto`.
    pub fn is_auto(&self) -> bool {
        matches!(self, Failover::Auto(_))
    }
}

/// A service: its health check and its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name without `@`, e.g. `vitals`.
    pub name: String,
    /// Active health check of every endpoint. Default: see [`HealthCheck`].
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Versions; each becomes the subset `name@version`. At least one.
    pub versions: Vec<ServiceVersion>,
}

/// One version of a service: the subset `service@version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceVersion {
    /// Version name without `@`, e.g. `v2`.
    pub name: String,
    /// Endpoints by region. Each region must be declared. Default: none.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Vec<EndpointSpec>>,
    /// Passive health, as in the table. Default: the table's default.
    #[serde(default)]
    pub outlier: Option<Outlier>,
    /// Circuit breaking, as in the table. Default: the table's default.
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// An endpoint: `ip:port` or `dns-name:port`, alone or with details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointSpec {
    /// Just the address.
    Address(String),
    /// The address with zone, weight and TLS.
    Detailed(EndpointDetail),
}

/// An endpoint with details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointDetail {
    /// `ip:port` or `dns-name:port`. A name is resolved and re-resolved within its TTL; every
    /// address it resolves to becomes an endpoint.
    pub address: String,
    /// Zone. Default: empty.
    #[serde(default)]
    pub zone: String,
    /// Relative weight, >= 1. Default: 1.
    #[serde(default = "one")]
    pub weight: i64,
    /// Speak TLS to it. Default: false.
    #[serde(default)]
    pub tls: bool,
    /// SNI when `tls`. Default: the DNS name, or none for an IP.
    #[serde(default)]
    pub sni: Option<String>,
}

fn one() -> i64 {
    1
}

impl EndpointSpec {
    /// The endpoint with every default filled in.
    pub fn detail(&self) -> EndpointDetail {
        match self {
            EndpointSpec::Address(a) => EndpointDetail {
                address: a.clone(),
                zone: String::new(),
                weight: 1,
                tls: false,
                sni: None,
            },
            EndpointSpec::Detailed(d) => d.clone(),
        }
    }
}

/// An active HTTP health check. An endpoint flips only after a threshold of consecutive results.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path to GET. Default: `/healthz`.
    #[serde(default = "health_path")]
    pub path: String,
    /// Status that means healthy. Default: 200.
    #[serde(default = "ok_status")]
    pub expect_status: u16,
    /// Time between checks of one endpoint, 10 ms to 1 h. Default: 1000 ms.
    #[serde(default = "interval")]
    pub interval_ms: u64,
    /// Each interval is drawn uniformly within ± this percentage, 0 to 50. Default: 10.
    #[serde(default = "jitter")]
    pub jitter_percent: u32,
    /// Time a check may take, at most the interval. Default: 500 ms.
    #[serde(default = "timeout")]
    pub timeout_ms: u64,
    /// Consecutive passes that make an unhealthy endpoint healthy, 1 to 100. Default: 2.
    #[serde(default = "healthy")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy, 1 to 100. Default: 3.
    #[serde(default = "unhealthy")]
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: health_path(),
            expect_status: ok_status(),
            interval_ms: interval(),
            jitter_percent: jitter(),
            timeout_ms: timeout(),
            healthy_threshold: healthy(),
            unhealthy_threshold: unhealthy(),
        }
    }
}

fn health_path() -> String {
    "/healthz".into()
}
fn ok_status() -> u16 {
    200
}
fn interval() -> u64 {
    1_000
}
fn jitter() -> u32 {
    10
}
fn timeout() -> u64 {
    500
}
fn healthy() -> u32 {
    2
}
fn unhealthy() -> u32 {
    3
}

/// An endpoint address once parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// A literal `ip:port`.
    Ip(SocketAddr),
    /// A DNS name (lower case, without a trailing dot) and port.
    Dns {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

/// Parses `ip:port`, `[v6]:port` or `dns-name:port`.
pub fn parse_address(text: &str) -> Result<Address, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("'{text}': port must not be 0"));
        }
        return Ok(Address::Ip(a));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("'{text}' is not ip:port or dns-name:port"));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("'{text}': port must be 1 to 65535")),
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if !valid_dns_name(&host) {
        return Err(format!("'{text}': '{host}' is not a DNS name"));
    }
    Ok(Address::Dns { host, port })
}

fn valid_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.parse::<std::net::IpAddr>().is_err()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn valid_part(name: &str) -> bool {
    !name.trim().is_empty() && !name.contains('@') && !name.contains(char::is_whitespace)
}

/// The keyword `failover: auto`.
pub const AUTO: &str = "auto";

/// Checks a parsed intent as a whole. `Ok(())` means the control plane may use it.
pub fn validate_intent(intent: &Intent) -> Result<(), Errors> {
    let mut errs = Errors::default();
    let mut regions = BTreeSet::new();
    for (i, r) in intent.regions.iter().enumerate() {
        let p = index("regions", i);
        if !valid_part(&r.name) {
            errs.push(
                join(&p, "name"),
                "must be a non-empty name without '@' or spaces",
            );
        }
        if !regions.insert(r.name.as_str()) {
            errs.push(join(&p, "name"), format!("duplicate region '{}'", r.name));
        }
    }
    for (i, r) in intent.regions.iter().enumerate() {
        let p = join(&index("regions", i), "failover");
        match &r.failover {
            Failover::Auto(word) if word != AUTO => {
                errs.push(p, format!("'{word}' must be 'auto' or a list of regions"))
            }
            Failover::Auto(_) => {}
            Failover::Order(list) => {
                let mut seen = BTreeSet::new();
                for (j, f) in list.iter().enumerate() {
                    if !regions.contains(f.as_str()) {
                        errs.push(index(&p, j), format!("unknown region '{f}'"));
                    } else if *f == r.name {
                        errs.push(index(&p, j), "a region cannot fail over to itself");
                    } else if !seen.insert(f.as_str()) {
                        errs.push(index(&p, j), format!("'{f}' appears twice"));
                    }
                }
            }
        }
    }

    // Subsets as the table sees them, remembering where each came from.
    let mut subsets = Vec::new();
    let mut origin = Vec::new();
    let mut services = BTreeSet::new();
    for (i, s) in intent.services.iter().enumerate() {
        let p = index("services", i);
        if !valid_part(&s.name) {
            errs.push(
                join(&p, "name"),
                "must be a non-empty name without '@' or spaces",
            );
        }
        if !services.insert(s.name.as_str()) {
            errs.push(join(&p, "name"), format!("duplicate service '{}'", s.name));
        }
        check_health(&s.health_check, &join(&p, "health_check"), &mut errs);
        if s.versions.is_empty() {
            errs.push(join(&p, "versions"), "must have at least one version");
        }
        let mut versions = BTreeSet::new();
        for (j, v) in s.versions.iter().enumerate() {
            let vp = index(&join(&p, "versions"), j);
            if !valid_part(&v.name) {
                errs.push(
                    join(&vp, "name"),
                    "must be a non-empty name without '@' or spaces",
                );
            }
            if !versions.insert(v.name.as_str()) {
                errs.push(join(&vp, "name"), format!("duplicate version '{}'", v.name));
            }
            check_endpoints(v, &vp, &regions, &mut errs);
            subsets.push(Subset {
                name: format!("{}@{}", s.name, v.name),
                endpoints: Vec::new(),
                outlier: v.outlier.clone(),
                limits: v.limits.clone(),
            });
            origin.push(vp);
        }
    }

    // Routes and subset policies: the table's own rules, relocated to the intent's paths.
    let table = Table {
        version: 0,
        regions: regions
            .iter()
            .map(|r| RegionSpec {
                name: r.to_string(),
                failover: Vec::new(),
            })
            .collect(),
        routes: intent.routes.clone(),
        subsets,
    };
    if let Err(table_errs) = validate_table(&table) {
        for e in table_errs.0 {
            if e.path.starts_with("routes") {
                errs.0.push(e);
            } else if let Some(rest) = e.path.strip_prefix("subsets[") {
                let Some((k, tail)) = rest.split_once(']') else {
                    continue;
                };
                // A duplicate subset is reported as a duplicate version above.
                if tail == ".name" {
                    continue;
                }
                if let Some(o) = k.parse::<usize>().ok().and_then(|k| origin.get(k)) {
                    errs.push(format!("{o}{tail}"), e.message);
                }
            }
        }
    }
    errs.into_result(())
}

fn check_health(h: &HealthCheck, p: &str, errs: &mut Errors) {
    if !h.path.starts_with('/') {
        errs.push(join(p, "path"), format!("'{}' must start with '/'", h.path));
    }
    if !(100..=599).contains(&h.expect_status) {
        errs.push(
            join(p, "expect_status"),
            "must be an HTTP status, 100 to 599",
        );
    }
    if !(10..=3_600_000).contains(&h.interval_ms) {
        errs.push(join(p, "interval_ms"), "must be between 10 and 3600000");
    }
    if h.jitter_percent > 50 {
        errs.push(join(p, "jitter_percent"), "must be between 0 and 50");
    }
    if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
        errs.push(join(p, "timeout_ms"), "must be between 1 and interval_ms");
    }
    for (name, v) in [
        ("healthy_threshold", h.healthy_threshold),
        ("unhealthy_threshold", h.unhealthy_threshold),
    ] {
        if !(1..=100).contains(&v) {
            errs.push(join(p, name), "must be between 1 and 100");
        }
    }
}

fn check_endpoints(v: &ServiceVersion, vp: &str, regions: &BTreeSet<&str>, errs: &mut Errors) {
    let ep = join(vp, "endpoints");
    let mut seen = BTreeSet::new();
    for (region, list) in &v.endpoints {
        let rp = join(&ep, region);
        if !regions.contains(region.as_str()) {
            errs.push(
                rp.clone(),
                format!("unknown region '{region}' (declare it under regions)"),
            );
        }
        for (k, e) in list.iter().enumerate() {
            let p = index(&rp, k);
            let d = e.detail();
            let ap = match e {
                EndpointSpec::Address(_) => p.clone(),
                EndpointSpec::Detailed(_) => join(&p, "address"),
            };
            match parse_address(&d.address) {
                Ok(a) => {
                    if !seen.insert(a) {
                        errs.push(
                            ap,
                            format!("duplicate endpoint '{}' in this version", d.address),
                        );
                    }
                }
                Err(msg) => errs.push(ap, msg),
            }
            if d.weight < 1 {
                errs.push(join(&p, "weight"), "must be >= 1");
            }
            if d.sni.is_some() && !d.tls {
                errs.push(join(&p, "sni"), "only applies when tls is true");
            }
        }
    }
}

/// Parses and validates intent text (YAML or JSON).
pub fn parse_intent(text: &str) -> Result<Intent, Errors> {
    let intent: Intent = parse_yaml_or_json(text)?;
    validate_intent(&intent)?;
    Ok(intent)
}

/// The files an intent path stands for: the file itself, or a folder's `*.yaml`, `*.yml` and
/// `*.json` files in name order (not recursive).
pub fn intent_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The bytes of each file of an intent, by file name.
pub type RawFiles = Vec<(String, Vec<u8>)>;

/// Reads, merges and validates the intent at `path` (a file or a folder). Returns the intent and
/// the exact bytes read (file name, content), so a caller can tell whether anything changed.
pub fn read_intent(path: &Path) -> Result<(Intent, RawFiles), Errors> {
    let mut errs = Errors::default();
    let files = intent_files(path).map_err(|e| {
        let mut errs = Errors::default();
        errs.push("", format!("cannot read {}: {e}", path.display()));
        errs
    })?;
    if files.is_empty() {
        errs.push(
            "",
            format!("{}: no .yaml, .yml or .json file", path.display()),
        );
        return Err(errs);
    }
    let mut parts = Vec::new();
    let mut raw = Vec::new();
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match std::fs::read(f) {
            Ok(bytes) => {
                match parse_yaml_or_json::<Intent>(&String::from_utf8_lossy(&bytes)) {
                    Ok(i) => parts.push((name.clone(), i)),
                    Err(e) => prefix_into(&mut errs, &name, e),
                }
                raw.push((name, bytes));
            }
            Err(e) => errs.push(name, format!("cannot read: {e}")),
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let single = parts.len() == 1;
    let (intent, owners) = merge(parts);
    if let Err(e) = validate_intent(&intent) {
        if single {
            return Err(e);
        }
        for fe in e.0 {
            let (file, local) = relocate(&fe.path, &owners);
            errs.push(format!("{file}: {local}"), fe.message);
        }
        return Err(errs);
    }
    Ok((intent, raw))
}

fn prefix_into(errs: &mut Errors, file: &str, e: Errors) {
    for fe in e.0 {
        let path = if fe.path.is_empty() {
            file.to_string()
        } else {
            format!("{file}: {}", fe.path)
        };
        errs.push(path, fe.message);
    }
}

/// Which file and local index each merged list item came from.
type Owners = BTreeMap<&'static str, Vec<(String, usize)>>;

fn merge(parts: Vec<(String, Intent)>) -> (Intent, Owners) {
    let mut out = Intent::default();
    let mut owners: Owners = BTreeMap::new();
    for (file, i) in parts {
        for (k, r) in i.regions.into_iter().enumerate() {
            owners.entry("regions").or_default().push((file.clone(), k));
            out.regions.push(r);
        }
        for (k, s) in i.services.into_iter().enumerate() {
            owners
                .entry("services")
                .or_default()
                .push((file.clone(), k));
            out.services.push(s);
        }
        for (k, r) in i.routes.into_iter().enumerate() {
            owners.entry("routes").or_default().push((file.clone(), k));
            out.routes.push(r);
        }
    }
    (out, owners)
}

/// `services[7].name` in the merged document -> (`b.yaml`, `services[2].name`).
fn relocate(path: &str, owners: &Owners) -> (String, String) {
    for (list, own) in owners {
        let Some(rest) = path.strip_prefix(&format!("{list}[")) else {
            continue;
        };
        let Some((k, tail)) = rest.split_once(']') else {
            continue;
        };
        if let Some((file, local)) = k.parse::<usize>().ok().and_then(|k| own.get(k)) {
            return (file.clone(), format!("{list}[{local}]{tail}"));
        }
    }
    ("(merged)".into(), path.to_string())
}

#[cfg(test)]
mod tests;
