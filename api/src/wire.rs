//! The control plane <-> gateway contract, version [`WIRE_VERSION`]: the JSON bodies of
//! `GET /v1/tables/{region}`, `POST /v1/reports`, `GET /v1/status`, `PUT /v1/intent` and of every
//! error. Calls carry `Authorization: Bearer <token>`.
//!
//! Compatibility rules: every body names its `wire` version. Within one wire version fields are
//! only ever added, with defaults, and readers ignore fields they do not know (so these types do
//! not deny unknown fields, unlike the operator-facing documents). A breaking change bumps the
//! version and the URL prefix (`/v2`); a reader refuses a body whose `wire` is newer than its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::errors::Errors;
use crate::table::Table;

/// The wire version this build speaks.
pub const WIRE_VERSION: u32 = 1;

fn wire() -> u32 {
    WIRE_VERSION
}

/// Refuses a body from a newer, incompatible wire version.
pub fn check_wire(got: u32) -> Result<(), String> {
    if got == 0 || got > WIRE_VERSION {
        Err(format!(
            "wire version {got} is not supported (this build speaks {WIRE_VERSION})"
        ))
    } else {
        Ok(())
    }
}

/// The hash of a table's content, its version left out: equal content, equal hash. Lower-case
/// hex SHA-256 of the table's JSON with `version` set to 0.
pub fn content_hash(table: &Table) -> String {
    let mut t = table.clone();
    t.version = 0;
    let bytes = serde_json::to_vec(&t).unwrap_or_default();
    hex(&Sha256::digest(&bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /v1/tables/{region}?since=V[&wait_ms=W][&gateway=ID]`: the region's table. Answered at
/// once when the control plane's version differs from `since`, otherwise held until it does or
/// `wait_ms` (default 30000, at most 60000) passes, then `304 Not Modified` with no body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableResponse {
    /// Wire version.
    #[serde(default = "wire")]
    pub wire: u32,
    /// The region the table is for.
    pub region: String,
    /// The table's version (also `table.version`).
    pub version: u64,
    /// [`content_hash`] of the table.
    pub hash: String,
    /// When the control plane built this version, in Unix milliseconds.
    #[serde(default)]
    pub built_unix_ms: u64,
    /// The table.
    pub table: Table,
}

/// `POST /v1/reports`: what a gateway runs, what it refused, its SLIs, and its RTTs to the other
/// regions. Sent after every apply or refusal, after every RTT probe round, and periodically.
/// Answered `204 No Content`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Wire version.
    #[serde(default = "wire")]
    pub wire: u32,
    /// The gateway's identity, unique in the fleet (default: `host/pid`).
    pub gateway: String,
    /// The gateway's region.
    pub region: String,
    /// The table in force. `None` before the first.
    #[serde(default)]
    pub applied: Option<Applied>,
    /// The most recent refusal, if any since the last applied table.
    #[serde(default)]
    pub nack: Option<Nack>,
    /// Cumulative per-subset counters since the gateway started.
    #[serde(default)]
    pub slis: Vec<SubsetSli>,
    /// Round-trip times from this gateway to the other regions of its table, in milliseconds by
    /// region: the fastest TCP connect of the gateway's latest probe round to up to 3 endpoints
    /// of that region. Sent once per round, in the first report after it; a region the round
    /// could not reach is left out. The control plane smooths these per pair (this region, that
    /// region) and orders `failover: auto` by them. A value must be finite, at least 0 and below
    /// 60000, and both regions must be in the intent; any other value is ignored (and counted in
    /// [`GatewayStatus::rtt_ignored`]). Default: empty (older gateways send none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rtt_ms: BTreeMap<String, f64>,
}

/// A table a gateway applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Its version.
    pub version: u64,
    /// Its content hash.
    pub hash: String,
    /// Where it came from: `control` or `last-known-good`.
    pub source: String,
}

/// A table a gateway refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The refused version.
    pub version: u64,
    /// Its content hash.
    pub hash: String,
    /// Every reason, one per line.
    pub reason: String,
}

/// One subset's service-level indicators as a gateway saw them, for one endpoint region.
/// Counters are cumulative since the gateway started; the control plane takes differences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubsetSli {
    /// `service@version`.
    pub subset: String,
    /// Region of the endpoints that served.
    pub region: String,
    /// Requests finished.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors: u64,
    /// Request latency.
    pub latency: Histogram,
}

/// A latency histogram in the Prometheus form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds of the buckets, in seconds, ascending.
    pub bounds_s: Vec<f64>,
    /// Cumulative counts, one per bound.
    pub cumulative: Vec<u64>,
    /// Sum of all observations, in seconds.
    pub sum_s: f64,
    /// Number of observations.
    pub count: u64,
}

/// `GET /v1/status`: the intent in force, every region's table, every gateway, every endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Wire version.
    #[serde(default = "wire")]
    pub wire: u32,
    /// The intent in force.
    pub intent: IntentStatus,
    /// Tables by region.
    pub regions: Vec<RegionStatus>,
    /// Gateways seen (by report or by long poll).
    pub gateways: Vec<GatewayStatus>,
    /// Endpoints and their health.
    pub endpoints: Vec<EndpointStatus>,
}

/// The intent in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntentStatus {
    /// Where it came from: `file <path>` or `push by <token name>`.
    pub source: String,
    /// SHA-256 of its canonical JSON.
    pub hash: String,
    /// The last refused edit of the watched files, if the refusal still stands.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One region's current table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionStatus {
    /// Region.
    pub region: String,
    /// Current version.
    pub version: u64,
    /// Content hash.
    pub hash: String,
    /// Build time, Unix ms.
    pub built_unix_ms: u64,
    /// Failover order in the table.
    pub failover: Vec<String>,
}

/// One gateway as last seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Identity.
    pub gateway: String,
    /// Region.
    pub region: String,
    /// Applied version, if any.
    pub applied_version: Option<u64>,
    /// Where the applied table came from.
    #[serde(default)]
    pub source: String,
    /// True when the applied hash is the region's current hash.
    pub in_sync: bool,
    /// Last report or poll, Unix ms.
    pub last_seen_unix_ms: u64,
    /// The last refusal, if any.
    pub last_nack: Option<Nack>,
    /// The valid RTTs (ms by region) of this gateway's latest report that carried any.
    #[serde(default)]
    pub rtt_ms: BTreeMap<String, f64>,
    /// How many reported RTT values were ignored as invalid (bad number, unknown region).
    #[serde(default)]
    pub rtt_ignored: u64,
}

/// One concrete endpoint and its health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// Service.
    pub service: String,
    /// `ip:port`.
    pub address: String,
    /// The DNS name it was resolved from, if any.
    #[serde(default)]
    pub from_name: Option<String>,
    /// `healthy`, `unhealthy` or `unknown` (not checked yet; treated as healthy).
    pub health: String,
}

/// `PUT /v1/intent` answer: the tables the new intent produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Wire version.
    #[serde(default = "wire")]
    pub wire: u32,
    /// False when the pushed intent equals the one in force (no new versions).
    pub changed: bool,
    /// Hash of the intent now in force.
    pub intent_hash: String,
    /// Every region's table version after the push.
    pub versions: BTreeMap<String, u64>,
}

/// The body of every 4xx/5xx answer except 401 (which has none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Wire version.
    #[serde(default = "wire")]
    pub wire: u32,
    /// What went wrong, in one line.
    pub error: String,
    /// Located problems, when the body was a document that failed validation.
    #[serde(default)]
    pub errors: Vec<WireFieldError>,
}

/// A located problem on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFieldError {
    /// Path in the document (`services[0].versions[1].name`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ErrorResponse {
    /// An error with located problems.
    pub fn located(error: impl Into<String>, errs: &Errors) -> ErrorResponse {
        ErrorResponse {
            wire: WIRE_VERSION,
            error: error.into(),
            errors: errs
                .0
                .iter()
                .map(|e| WireFieldError {
                    path: e.path.clone(),
                    message: e.message.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_the_version_only() {
        let mut a = Table {
            version: 1,
            regions: Vec::new(),
            routes: Vec::new(),
            subsets: Vec::new(),
        };
        let h1 = content_hash(&a);
        a.version = 9;
        assert_eq!(content_hash(&a), h1);
        a.regions.push(crate::RegionSpec {
            name: "x".into(),
            failover: Vec::new(),
        });
        assert_ne!(content_hash(&a), h1);
        assert_eq!(h1.len(), 64);
    }

    #[test]
    fn readers_ignore_unknown_fields_and_refuse_newer_wires() {
        let r: Report =
            serde_json::from_str(r#"{"wire":1,"gateway":"g","region":"r","future_field":[1,2]}"#)
                .expect("unknown fields are tolerated");
        assert!(check_wire(r.wire).is_ok());
        assert!(check_wire(WIRE_VERSION + 1).is_err());
    }

    #[test]
    fn rtt_in_reports_is_optional_and_round_trips() {
        // An older gateway sends no `rtt_ms`.
        let old: Report = serde_json::from_str(r#"{"wire":1,"gateway":"g","region":"r"}"#)
            .expect("a report without rtt_ms");
        assert!(old.rtt_ms.is_empty());
        // Nothing to say, nothing sent: older control planes see the report they know.
        let text = serde_json::to_string(&old).expect("json");
        assert!(!text.contains("rtt_ms"), "{text}");
        let new = Report {
            rtt_ms: BTreeMap::from([("us-east".to_string(), 71.5)]),
            ..old
        };
        let back: Report =
            serde_json::from_str(&serde_json::to_string(&new).expect("json")).expect("parse");
        assert_eq!(back, new);
        // A value of the wrong type is a malformed report, not a silently dropped one.
        assert!(serde_json::from_str::<Report>(
            r#"{"wire":1,"gateway":"g","region":"r","rtt_ms":{"x":"fast"}}"#
        )
        .is_err());
    }
}
