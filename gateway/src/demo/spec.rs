//! The demo's own spec (`configs/demo/demo.yaml`): which upstreams to start, the load to send and
//! the canary step to take mid-run. The gateways' configs and the table template sit beside it.

use meridian_api::errors::{index, join};
use meridian_api::{parse_yaml_or_json, Errors};
use serde::{Deserialize, Serialize};

/// The demo spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSpec {
    /// Gateway config files, one per region, relative to the spec.
    pub gateways: Vec<String>,
    /// Table template; its subsets' endpoints are filled with the started upstreams.
    pub table: String,
    /// Upstream groups to start.
    pub upstreams: Vec<UpstreamGroup>,
    /// The load generator.
    pub load: Load,
    /// Canary weight to set halfway through (the stable weight takes the rest). Default: none.
    #[serde(default)]
    pub canary_step: Option<CanaryStep>,
}

/// Identical upstreams of one subset in one region.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamGroup {
    /// Region.
    pub region: String,
    /// Zone prefix; endpoint `i` gets `<zone>-<i mod 2>` so there are two zones.
    pub zone: String,
    /// Subset (`service@version`).
    pub subset: String,
    /// How many.
    pub count: usize,
    /// Median latency in milliseconds (log-normal).
    pub median_ms: f64,
    /// Log-normal sigma; 0.3 gives a p99 about 2x the median.
    pub sigma: f64,
}

/// The load.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Host header.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Distinct users, sent as the sticky header.
    pub users: u32,
    /// Sticky header name.
    pub sticky_header: String,
    /// Concurrent connections per gateway.
    pub connections: usize,
}

/// A canary step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// Route to change.
    pub route: String,
    /// The canary subset.
    pub canary: String,
    /// The new canary weight, 0..=100.
    pub weight: i64,
}

impl DemoSpec {
    /// Parses and checks a spec.
    pub fn parse(text: &str) -> Result<DemoSpec, Errors> {
        let spec: DemoSpec = parse_yaml_or_json(text)?;
        let mut errs = Errors::default();
        if spec.gateways.is_empty() {
            errs.push("gateways", "must name at least one gateway config");
        }
        for (i, g) in spec.upstreams.iter().enumerate() {
            let p = index("upstreams", i);
            if g.count == 0 || g.count > 64 {
                errs.push(join(&p, "count"), "must be between 1 and 64");
            }
            if !(g.median_ms > 0.0 && g.median_ms < 10_000.0) {
                errs.push(join(&p, "median_ms"), "must be between 0 and 10000");
            }
            if !(0.0..=2.0).contains(&g.sigma) {
                errs.push(join(&p, "sigma"), "must be between 0 and 2");
            }
        }
        if spec.load.users == 0 {
            errs.push("load.users", "must be >= 1");
        }
        if spec.load.connections == 0 || spec.load.connections > 256 {
            errs.push("load.connections", "must be between 1 and 256");
        }
        if let Some(c) = &spec.canary_step {
            if !(0..=100).contains(&c.weight) {
                errs.push("canary_step.weight", "must be between 0 and 100");
            }
        }
        errs.into_result(spec)
    }
}
