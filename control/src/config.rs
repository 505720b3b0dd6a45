//! The control plane's bootstrap config. Two layers, as for the gateway: the serde file model
//! ([`ControlFile`]) and the validated model ([`ControlConfig`]) built with `TryFrom`, which
//! resolves relative paths against the config file's folder and collects every error.
//!
//! ```yaml
//! listen: "127.0.0.1:7100"          # port 0 picks a free port (see --ports-file)
//! intent: intent/                   # a file or a folder of them, watched
//! state_dir: /var/lib/meridian      # pushed intent, version counter, audit log
//! tokens:                           # name -> bearer token and role; the name goes to the audit log
//!   gateways: { token: "change-me-gw", role: gateway }
//!   alice: { token: "change-me-alice", role: operator }
//!   edge: "change-me-edge"          # a bare token: role `gateway`
//! health: { concurrency: 256 }
//! ```
//!
//! Roles ([`Role`]) are checked per call by the publisher: a `gateway` token may read tables and
//! post reports; an `operator` token may push the intent, read the status and read tables. A
//! token given without a role (the older `name: token` form) is a `gateway` token.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_api::errors::join;
use meridian_api::{parse_yaml_or_json, Errors};
use serde::{Deserialize, Serialize};

/// The file model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    /// `ip:port` of the API (`/v1/...`). Required; port 0 picks a free port.
    pub listen: String,
    /// Intent file or folder, relative to this file. Required.
    pub intent: PathBuf,
    /// Folder for the pushed intent, the version counter and (by default) the audit log,
    /// relative to this file; created when missing. Required.
    pub state_dir: PathBuf,
    /// Bearer tokens by identity name, each with its role. At least one; each token at least 8
    /// characters.
    pub tokens: BTreeMap<String, TokenFile>,
    /// Audit log (JSON lines), relative to this file. Default: `<state_dir>/audit.jsonl`.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Active health checking. Default: see [`HealthFile`].
    #[serde(default)]
    pub health: HealthFile,
    /// Inter-region RTT probes for `failover: auto`. Default: see [`RttFile`].
    #[serde(default)]
    pub rtt: RttFile,
    /// DNS resolution of endpoint names. Default: the system resolver.
    #[serde(default)]
    pub dns: DnsFile,
    /// How often the intent path is checked for edits. Default: 500 ms.
    #[serde(default = "intent_poll")]
    pub intent_poll_ms: u64,
    /// Longest hold of a table long poll. Default: 30000 ms.
    #[serde(default = "long_poll")]
    pub long_poll_max_ms: u64,
}

/// What a token may do. Checked per call by the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A gateway fleet: `GET /v1/tables/{region}` and `POST /v1/reports`.
    Gateway,
    /// A person or tool running the fleet: `PUT /v1/intent`, `GET /v1/status`, and
    /// `GET /v1/tables/{region}` for debugging. Not `POST /v1/reports`: reports feed failover
    /// ordering and the gateways' sync state, and only gateways observe those.
    Operator,
}

impl Role {
    /// Every role, as written in the config.
    pub const ALL: [Role; 2] = [Role::Gateway, Role::Operator];

    /// The role's name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Operator => "operator",
        }
    }

    /// The role named `s` in the config.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One token in the file: a bare string (role `gateway`), or `{ token, role }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TokenFile {
    /// `name: token`: a `gateway` token (the form from before roles).
    Bare(String),
    /// `name: { token: ..., role: gateway | operator }`.
    Full(TokenSpec),
}

/// A token with its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The bearer token.
    pub token: String,
    /// `gateway` or `operator`. Default: `gateway`. Kept as text here so that an unknown role is
    /// reported by validation with its path, like every other bad value.
    #[serde(default)]
    pub role: Option<String>,
}

impl TokenFile {
    fn token(&self) -> &str {
        match self {
            TokenFile::Bare(t) => t,
            TokenFile::Full(s) => &s.token,
        }
    }

    fn role(&self) -> Option<&str> {
        match self {
            TokenFile::Bare(_) => None,
            TokenFile::Full(s) => s.role.as_deref(),
        }
    }
}

// By hand rather than `#[serde(untagged)]`, so a mistake inside the map form (a misspelt field,
// a missing token) is reported as such, with its path, rather than as "no variant matched".
impl<'de> Deserialize<'de> for TokenFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TokenFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token, or a map with `token` and `role`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TokenFile, E> {
                Ok(TokenFile::Bare(v.to_string()))
            }
            // An unquoted all-digit token reads as a number in YAML; it was a string before.
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TokenFile, E> {
                Ok(TokenFile::Bare(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TokenFile, E> {
                Ok(TokenFile::Bare(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<TokenFile, A::Error> {
                TokenSpec::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(TokenFile::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// A known token's identity: the name written to the audit log, and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name in the config.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Health-check settings of the checker as a whole (per-service specs live in the intent).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// Checks in flight at once, 1 to 100000. Default: 256.
    #[serde(default = "concurrency")]
    pub concurrency: usize,
    /// Longest wait for every endpoint's first result before the first tables are published,
    /// so a restarted control plane does not publish unchecked endpoints. Default: 3000 ms.
    #[serde(default = "warmup")]
    pub warmup_ms: u64,
    /// Reuse each endpoint's connection between checks. Turn off for tens of thousands of
    /// endpoints on a host with a low file-descriptor limit. Default: true.
    #[serde(default = "yes")]
    pub keep_alive: bool,
}

impl Default for HealthFile {
    fn default() -> Self {
        HealthFile {
            concurrency: concurrency(),
            warmup_ms: warmup(),
            keep_alive: yes(),
        }
    }
}

/// RTT probe settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RttFile {
    /// Time between probe rounds. Default: 5000 ms.
    #[serde(default = "rtt_interval")]
    pub interval_ms: u64,
    /// Endpoints probed per region and round. Default: 3.
    #[serde(default = "three")]
    pub endpoints_per_region: usize,
}

impl Default for RttFile {
    fn default() -> Self {
        RttFile {
            interval_ms: rtt_interval(),
            endpoints_per_region: three(),
        }
    }
}

/// DNS settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// Name servers as `ip:port` (UDP). Default: none, meaning the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Shortest time between two resolutions of one name, whatever its TTL. Default: 1000 ms.
    #[serde(default = "min_refresh")]
    pub min_refresh_ms: u64,
}

impl Default for DnsFile {
    fn default() -> Self {
        DnsFile {
            servers: Vec::new(),
            min_refresh_ms: min_refresh(),
        }
    }
}

fn yes() -> bool {
    true
}
fn intent_poll() -> u64 {
    500
}
fn long_poll() -> u64 {
    30_000
}
fn concurrency() -> usize {
    256
}
fn warmup() -> u64 {
    3_000
}
fn rtt_interval() -> u64 {
    5_000
}
fn three() -> usize {
    3
}
fn min_refresh() -> u64 {
    1_000
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// API listen address (port may be 0).
    pub listen: SocketAddr,
    /// Intent file or folder.
    pub intent: PathBuf,
    /// State folder.
    pub state_dir: PathBuf,
    /// Audit log file.
    pub audit_log: PathBuf,
    /// Token -> identity (name and role).
    pub tokens: BTreeMap<String, Identity>,
    /// Names of the tokens given without a role (so `gateway`), to warn about at start.
    pub tokens_without_role: Vec<String>,
    /// Checks in flight at once.
    pub health_concurrency: usize,
    /// Warm-up before the first publish.
    pub warmup: Duration,
    /// Health-check connection reuse.
    pub health_keep_alive: bool,
    /// RTT probe interval.
    pub rtt_interval: Duration,
    /// Endpoints probed per region.
    pub rtt_endpoints: usize,
    /// Name servers (empty: the system's).
    pub dns_servers: Vec<SocketAddr>,
    /// Shortest re-resolution interval.
    pub dns_min_refresh: Duration,
    /// Intent poll interval.
    pub intent_poll: Duration,
    /// Longest long-poll hold.
    pub long_poll_max: Duration,
}

impl ControlConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<ControlConfig, Errors> {
        let text = meridian_api::load::read_text(path)?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates config text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<ControlConfig, Errors> {
        let file: ControlFile = parse_yaml_or_json(text)?;
        ControlConfig::try_from((file, base))
    }
}

impl TryFrom<(ControlFile, &Path)> for ControlConfig {
    type Error = Errors;

    fn try_from((f, base): (ControlFile, &Path)) -> Result<Self, Errors> {
        let mut errs = Errors::default();
        let listen = f.listen.parse::<SocketAddr>().ok();
        if listen.is_none() {
            errs.push(
                "listen",
                format!("'{}' is not an ip:port address", f.listen),
            );
        }
        if f.tokens.is_empty() {
            errs.push("tokens", "must have at least one token");
        }
        let mut tokens = BTreeMap::new();
        let mut tokens_without_role = Vec::new();
        for (name, entry) in &f.tokens {
            let at = join("tokens", name);
            let token = entry.token();
            if token.len() < 8 || token.contains(char::is_whitespace) {
                let at = match entry {
                    TokenFile::Bare(_) => at.clone(),
                    TokenFile::Full(_) => join(&at, "token"),
                };
                errs.push(at, "must be at least 8 characters, without spaces");
            }
            let role = match entry.role() {
                None => {
                    tokens_without_role.push(name.clone());
                    Role::Gateway
                }
                Some(r) => match Role::parse(r) {
                    Some(role) => role,
                    None => {
                        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                        errs.push(
                            join(&at, "role"),
                            format!("unknown role '{r}'; expected one of: {}", known.join(", ")),
                        );
                        Role::Gateway
                    }
                },
            };
            let identity = Identity {
                name: name.clone(),
                role,
            };
            if tokens.insert(token.to_string(), identity).is_some() {
                errs.push(at, "the same token is given twice");
            }
        }
        if !(1..=100_000).contains(&f.health.concurrency) {
            errs.push("health.concurrency", "must be between 1 and 100000");
        }
        if f.health.warmup_ms > 60_000 {
            errs.push("health.warmup_ms", "must be at most 60000");
        }
        if !(10..=3_600_000).contains(&f.rtt.interval_ms) {
            errs.push("rtt.interval_ms", "must be between 10 and 3600000");
        }
        if !(1..=100).contains(&f.rtt.endpoints_per_region) {
            errs.push("rtt.endpoints_per_region", "must be between 1 and 100");
        }
        let mut dns_servers = Vec::new();
        for (i, s) in f.dns.servers.iter().enumerate() {
            match s.parse::<SocketAddr>() {
                Ok(a) => dns_servers.push(a),
                Err(_) => errs.push(
                    format!("dns.servers[{i}]"),
                    format!("'{s}' is not an ip:port address"),
                ),
            }
        }
        if f.dns.min_refresh_ms == 0 || f.dns.min_refresh_ms > 3_600_000 {
            errs.push("dns.min_refresh_ms", "must be between 1 and 3600000");
        }
        if f.intent_poll_ms == 0 || f.intent_poll_ms > 60_000 {
            errs.push("intent_poll_ms", "must be between 1 and 60000");
        }
        if !(100..=60_000).contains(&f.long_poll_max_ms) {
            errs.push("long_poll_max_ms", "must be between 100 and 60000");
        }
        let (Some(listen), true) = (listen, errs.is_empty()) else {
            return Err(errs);
        };
        let state_dir = base.join(&f.state_dir);
        let audit_log = match &f.audit_log {
            Some(p) => base.join(p),
            None => state_dir.join("audit.jsonl"),
        };
        Ok(ControlConfig {
            listen,
            intent: base.join(&f.intent),
            state_dir,
            audit_log,
            tokens,
            tokens_without_role,
            health_concurrency: f.health.concurrency,
            warmup: Duration::from_millis(f.health.warmup_ms),
            health_keep_alive: f.health.keep_alive,
            rtt_interval: Duration::from_millis(f.rtt.interval_ms),
            rtt_endpoints: f.rtt.endpoints_per_region,
            dns_servers,
            dns_min_refresh: Duration::from_millis(f.dns.min_refresh_ms),
            intent_poll: Duration::from_millis(f.intent_poll_ms),
            long_poll_max: Duration::from_millis(f.long_poll_max_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_paths_resolve() {
        let text = "listen: '127.0.0.1:0'\nintent: intent.yaml\nstate_dir: state\ntokens: { gw: 'secret-token-1' }\n";
        let c = ControlConfig::parse(text, Path::new("/etc/m")).expect("valid");
        assert_eq!(c.intent, Path::new("/etc/m/intent.yaml"));
        assert_eq!(c.audit_log, Path::new("/etc/m/state/audit.jsonl"));
        assert_eq!(
            c.tokens.get("secret-token-1"),
            Some(&Identity {
                name: "gw".into(),
                role: Role::Gateway
            })
        );
        assert_eq!(c.tokens_without_role, ["gw"]);
        assert_eq!(c.health_concurrency, 256);
    }

    #[test]
    fn tokens_take_a_role_and_a_bare_token_is_a_gateway() {
        let text = "listen: '127.0.0.1:0'\nintent: i\nstate_dir: s\ntokens:\n  \
                    fleet: fleet-token-1\n  \
                    edge: { token: edge-token-1 }\n  \
                    gw: { token: gw-token-01, role: gateway }\n  \
                    alice: { token: alice-token-1, role: operator }\n  \
                    digits: 123456789\n";
        let c = ControlConfig::parse(text, Path::new(".")).expect("valid");
        let role = |t: &str| c.tokens.get(t).map(|i| (i.name.as_str(), i.role));
        assert_eq!(role("fleet-token-1"), Some(("fleet", Role::Gateway)));
        assert_eq!(role("edge-token-1"), Some(("edge", Role::Gateway)));
        assert_eq!(role("gw-token-01"), Some(("gw", Role::Gateway)));
        assert_eq!(role("alice-token-1"), Some(("alice", Role::Operator)));
        assert_eq!(role("123456789"), Some(("digits", Role::Gateway)));
        assert_eq!(c.tokens_without_role, ["digits", "edge", "fleet"]);
    }

    #[test]
    fn an_unknown_role_is_refused_with_its_path() {
        let text = "listen: '127.0.0.1:0'\nintent: i\nstate_dir: s\ntokens:\n  \
                    alice: { token: alice-token-1, role: admin }\n  \
                    bob: { token: short, role: Operator }\n";
        let err = ControlConfig::parse(text, Path::new("."))
            .expect_err("invalid")
            .to_string();
        for want in [
            "tokens.alice.role: unknown role 'admin'; expected one of: gateway, operator",
            "tokens.bob.role: unknown role 'Operator'",
            "tokens.bob.token: must be at least 8",
        ] {
            assert!(err.contains(want), "missing {want} in {err}");
        }
    }

    #[test]
    fn a_mistake_in_a_token_map_is_located() {
        for (entry, want) in [
            (
                "{ token: alice-token-1, rol: operator }",
                "unknown field `rol`",
            ),
            ("{ role: operator }", "missing field `token`"),
            (
                "[alice-token-1]",
                "a token, or a map with `token` and `role`",
            ),
        ] {
            let text = format!(
                "listen: '127.0.0.1:0'\nintent: i\nstate_dir: s\ntokens:\n  alice: {entry}\n"
            );
            let err = ControlConfig::parse(&text, Path::new("."))
                .expect_err("invalid")
                .to_string();
            assert!(
                err.contains("tokens.alice") && err.contains(want),
                "{entry}: {err}"
            );
        }
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let text = "listen: nope\nintent: i\nstate_dir: s\ntokens: { a: short }\nhealth: { concurrency: 0 }\ndns: { servers: [x] }\n";
        let err = ControlConfig::parse(text, Path::new("."))
            .expect_err("invalid")
            .to_string();
        for want in [
            "listen: 'nope'",
            "tokens.a: must be at least 8",
            "health.concurrency: must be",
            "dns.servers[0]: 'x'",
        ] {
            assert!(err.contains(want), "missing {want} in {err}");
        }
    }
}
