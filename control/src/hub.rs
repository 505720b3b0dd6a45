//! State shared by the API handlers and the reconciler: the published tables (behind one
//! `watch` channel that long polls wait on), the gateways' reports, the intent's status, and the
//! tokens.
//!
//! Reported RTTs are checked here ([`crate::rtt::check_sample`]) against the regions of the
//! intent in force; the valid ones go on to the RTT smoother ([`crate::rtt::run`]) through a
//! bounded channel, the others are counted per gateway and logged (at most every few seconds).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_api::wire::{
    EndpointStatus, GatewayStatus, IntentStatus, Nack, RegionStatus, Report, Status, SubsetSli,
    WIRE_VERSION,
};
use tokio::sync::{mpsc, watch};

use crate::audit::Audit;
use crate::builder::Published;
use crate::config::Identity;
use crate::reconcile::Event;
use crate::rtt::{check_sample, Reported};

/// Shortest time between two warnings about ignored RTT values.
const RTT_WARN_EVERY_MS: u64 = 10_000;
/// Shortest time between two warnings about calls refused by role (403).
const FORBIDDEN_WARN_EVERY_MS: u64 = 10_000;

/// The published tables.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// False until the first build after warm-up; long polls hold until then.
    pub ready: bool,
    /// Current table per region.
    pub by_region: BTreeMap<String, Arc<Published>>,
}

/// A gateway as last heard from.
#[derive(Debug, Clone, Default)]
pub struct GatewayRecord {
    /// Region.
    pub region: String,
    /// Applied version and hash, and where from.
    pub applied: Option<(u64, String, String)>,
    /// Last report or poll, Unix ms.
    pub last_seen_unix_ms: u64,
    /// Last refusal.
    pub last_nack: Option<Nack>,
    /// Last SLIs (cumulative).
    pub slis: Vec<SubsetSli>,
    /// Last accepted RTTs, ms by region.
    pub rtt_ms: BTreeMap<String, f64>,
    /// Reported RTT values ignored as invalid.
    pub rtt_ignored: u64,
}

/// The shared state.
#[derive(Debug)]
pub struct Hub {
    tokens: BTreeMap<String, Identity>,
    /// Calls refused with 403 (a known token used beyond its role).
    forbidden: AtomicU64,
    /// When a 403 was last logged, Unix ms.
    forbidden_warned_unix_ms: AtomicU64,
    tables: watch::Sender<Arc<Tables>>,
    gateways: Mutex<BTreeMap<String, GatewayRecord>>,
    intent: Mutex<IntentStatus>,
    endpoints: Mutex<Vec<EndpointStatus>>,
    /// Events to the reconciler (pushes go this way).
    pub events: mpsc::UnboundedSender<Event>,
    /// The audit log.
    pub audit: Arc<Audit>,
    /// Hash of the watched intent files as last read.
    pub watched_hash: Mutex<Option<String>>,
    /// Longest long-poll hold.
    pub long_poll_max: Duration,
    /// The regions of the intent in force (reported RTTs naming others are ignored).
    regions: Mutex<BTreeSet<String>>,
    /// Valid reported RTTs, to the smoother.
    rtt_reports: mpsc::Sender<Reported>,
    /// Reported RTT values ignored as invalid, all gateways together.
    rtt_ignored: AtomicU64,
    /// Valid reported RTT values dropped because the smoother's queue was full.
    rtt_dropped: AtomicU64,
    /// When ignored RTT values were last logged, Unix ms.
    rtt_warned_unix_ms: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub with `tokens` (token -> identity and role). Valid reported RTTs are sent to
    /// `rtt_reports`.
    pub fn new(
        tokens: BTreeMap<String, Identity>,
        events: mpsc::UnboundedSender<Event>,
        rtt_reports: mpsc::Sender<Reported>,
        audit: Arc<Audit>,
        long_poll_max: Duration,
    ) -> Hub {
        let (tables, _) = watch::channel(Arc::new(Tables::default()));
        Hub {
            tokens,
            forbidden: AtomicU64::new(0),
            forbidden_warned_unix_ms: AtomicU64::new(0),
            tables,
            gateways: Mutex::new(BTreeMap::new()),
            intent: Mutex::new(IntentStatus::default()),
            endpoints: Mutex::new(Vec::new()),
            events,
            audit,
            watched_hash: Mutex::new(None),
            long_poll_max,
            regions: Mutex::new(BTreeSet::new()),
            rtt_reports,
            rtt_ignored: AtomicU64::new(0),
            rtt_dropped: AtomicU64::new(0),
            rtt_warned_unix_ms: AtomicU64::new(0),
        }
    }

    /// Sets the regions of the intent in force.
    pub fn set_regions(&self, regions: BTreeSet<String>) {
        *lock(&self.regions) = regions;
    }

    /// Reported RTT values ignored as invalid so far.
    pub fn rtt_ignored(&self) -> u64 {
        self.rtt_ignored.load(Ordering::Relaxed)
    }

    /// Valid reported RTT values dropped so far because the smoother's queue was full.
    pub fn rtt_dropped(&self) -> u64 {
        self.rtt_dropped.load(Ordering::Relaxed)
    }

    /// The identity (name and role) of an `Authorization` header value, if its bearer token is
    /// known. Every token is compared in full, so the time taken does not tell how much of a
    /// guess matched.
    pub fn identity(&self, authorization: Option<&str>) -> Option<Identity> {
        let given = authorization?.strip_prefix("Bearer ")?.trim().as_bytes();
        let mut found = None;
        for (token, name) in &self.tokens {
            let t = token.as_bytes();
            let mut diff = (t.len() ^ given.len()) as u8 | u8::from(t.len() != given.len());
            for (i, b) in t.iter().enumerate() {
                diff |= b ^ given.get(i).copied().unwrap_or(0);
            }
            if diff == 0 {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Calls refused so far because the token's role does not allow them (403).
    pub fn forbidden(&self) -> u64 {
        self.forbidden.load(Ordering::Relaxed)
    }

    /// Counts and logs a call refused because `who`'s role does not allow it. Every refusal is
    /// counted; the log gets at most one line every few seconds, so a misconfigured fleet
    /// polling with the wrong token does not flood it. A refused intent push is also audited,
    /// next to the pushes.
    pub fn refused_by_role(&self, who: &Identity, call: &str, needs: &str) {
        let total = self.forbidden.fetch_add(1, Ordering::Relaxed) + 1;
        if call == "PUT /v1/intent" {
            self.audit.append(
                "push-forbidden",
                serde_json::json!({ "identity": who.name, "role": who.role.as_str(), "needs": needs }),
            );
        }
        let now = crate::now_unix_ms();
        let last = self.forbidden_warned_unix_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= FORBIDDEN_WARN_EVERY_MS
            && self
                .forbidden_warned_unix_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                identity = %who.name,
                role = %who.role,
                call,
                needs,
                total_forbidden = total,
                "call refused (403): the token's role does not allow it"
            );
        }
    }

    /// Publishes a new set of tables; wakes every long poll.
    pub fn set_tables(&self, t: Tables) {
        self.tables.send_replace(Arc::new(t));
    }

    /// The current tables.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.borrow().clone()
    }

    /// A receiver for long polls.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Tables>> {
        self.tables.subscribe()
    }

    /// Sets the intent's status line.
    pub fn set_intent_status(&self, s: IntentStatus) {
        *lock(&self.intent) = s;
    }

    /// Records a refused edit of the watched intent (or clears it).
    pub fn set_intent_error(&self, e: Option<String>) {
        lock(&self.intent).last_error = e;
    }

    /// Sets the endpoint list.
    pub fn set_endpoints(&self, e: Vec<EndpointStatus>) {
        *lock(&self.endpoints) = e;
    }

    /// Notes that `gateway` in `region` polled.
    pub fn seen(&self, gateway: &str, region: &str) {
        let mut g = lock(&self.gateways);
        let r = g.entry(gateway.to_string()).or_default();
        r.region = region.to_string();
        r.last_seen_unix_ms = crate::now_unix_ms();
    }

    /// Takes a report. A NACK not seen before from this gateway goes to the audit log. Its RTTs
    /// are checked: valid ones go to the smoother, the others are counted and logged.
    pub fn report(&self, rep: Report) {
        let (rtt_ok, rtt_bad) = self.take_rtt(&rep);
        let mut g = lock(&self.gateways);
        let r = g.entry(rep.gateway.clone()).or_default();
        r.region = rep.region.clone();
        r.last_seen_unix_ms = crate::now_unix_ms();
        r.applied = rep
            .applied
            .as_ref()
            .map(|a| (a.version, a.hash.clone(), a.source.clone()));
        if let Some(n) = &rep.nack {
            if r.last_nack.as_ref() != Some(n) {
                tracing::warn!(gateway = %rep.gateway, region = %rep.region, version = n.version, reason = %n.reason, "gateway refused a table");
                self.audit.append(
                    "nack",
                    serde_json::json!({
                        "gateway": rep.gateway, "region": rep.region,
                        "version": n.version, "hash": n.hash, "reason": n.reason,
                    }),
                );
                r.last_nack = Some(n.clone());
            }
        }
        r.slis = rep.slis;
        r.rtt_ignored += rtt_bad;
        if !rtt_ok.is_empty() {
            r.rtt_ms = rtt_ok.into_iter().collect();
        }
    }

    /// Checks a report's RTTs and forwards the valid ones. Returns them, and how many were not.
    fn take_rtt(&self, rep: &Report) -> (Vec<(String, f64)>, u64) {
        if rep.rtt_ms.is_empty() {
            return (Vec::new(), 0);
        }
        let mut ok = Vec::new();
        let mut bad: Vec<(String, f64, &'static str)> = Vec::new();
        {
            let regions = lock(&self.regions);
            for (to, ms) in &rep.rtt_ms {
                match check_sample(&rep.region, to, *ms, &regions) {
                    Ok(()) => ok.push((to.clone(), *ms)),
                    Err(why) => bad.push((to.clone(), *ms, why)),
                }
            }
        }
        if !ok.is_empty() {
            let sent = self.rtt_reports.try_send(Reported {
                from: rep.region.clone(),
                rtt_ms: ok.clone(),
            });
            if sent.is_err() {
                // The smoother is behind (or stopping): this round of samples is lost, which
                // the next round makes good. The report itself never waits on it.
                self.rtt_dropped
                    .fetch_add(ok.len() as u64, Ordering::Relaxed);
                tracing::debug!(gateway = %rep.gateway, "RTT samples dropped: the smoother is behind");
            }
        }
        if !bad.is_empty() {
            self.rtt_ignored
                .fetch_add(bad.len() as u64, Ordering::Relaxed);
            let now = crate::now_unix_ms();
            let last = self.rtt_warned_unix_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= RTT_WARN_EVERY_MS
                && self
                    .rtt_warned_unix_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let shown: Vec<String> = bad
                    .iter()
                    .map(|(to, ms, why)| format!("{to}={ms}: {why}"))
                    .collect();
                tracing::warn!(
                    gateway = %rep.gateway,
                    region = %rep.region,
                    total_ignored = self.rtt_ignored(),
                    "reported RTTs ignored: {}",
                    shown.join("; ")
                );
            }
        }
        (ok, bad.len() as u64)
    }

    /// The last SLIs of every gateway (for the rollout controller).
    pub fn slis(&self) -> BTreeMap<String, Vec<SubsetSli>> {
        lock(&self.gateways)
            .iter()
            .map(|(k, v)| (k.clone(), v.slis.clone()))
            .collect()
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Status {
        let tables = self.tables();
        let regions = tables
            .by_region
            .values()
            .map(|p| RegionStatus {
                region: p.region.clone(),
                version: p.version,
                hash: p.hash.clone(),
                built_unix_ms: p.built_unix_ms,
                failover: p
                    .table
                    .regions
                    .iter()
                    .find(|r| r.name == p.region)
                    .map(|r| r.failover.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let gateways = lock(&self.gateways)
            .iter()
            .map(|(id, r)| GatewayStatus {
                gateway: id.clone(),
                region: r.region.clone(),
                applied_version: r.applied.as_ref().map(|a| a.0),
                source: r.applied.as_ref().map(|a| a.2.clone()).unwrap_or_default(),
                in_sync: match (&r.applied, tables.by_region.get(&r.region)) {
                    (Some(a), Some(p)) => a.1 == p.hash,
                    _ => false,
                },
                last_seen_unix_ms: r.last_seen_unix_ms,
                last_nack: r.last_nack.clone(),
                rtt_ms: r.rtt_ms.clone(),
                rtt_ignored: r.rtt_ignored,
            })
            .collect();
        Status {
            wire: WIRE_VERSION,
            intent: lock(&self.intent).clone(),
            regions,
            gateways,
            endpoints: lock(&self.endpoints).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> (Hub, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("dir");
        let audit = Arc::new(Audit::open(&dir.path().join("a.jsonl")).expect("audit"));
        let (tx, _rx) = mpsc::unbounded_channel();
        let (rtt_tx, _rtt_rx) = mpsc::channel(4);
        let tokens = BTreeMap::from([(
            "s3cret-token".to_string(),
            Identity {
                name: "alice".to_string(),
                role: crate::config::Role::Operator,
            },
        )]);
        (
            Hub::new(tokens, tx, rtt_tx, audit, Duration::from_secs(1)),
            dir,
        )
    }

    #[test]
    fn only_a_whole_known_token_is_an_identity() {
        let (h, _d) = hub();
        assert_eq!(
            h.identity(Some("Bearer s3cret-token")),
            Some(Identity {
                name: "alice".into(),
                role: crate::config::Role::Operator
            })
        );
        for bad in [
            None,
            Some("s3cret-token"),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-token2"),
            Some("Bearer "),
            Some("Basic s3cret-token"),
        ] {
            assert_eq!(h.identity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_nack_is_audited_once_and_shown() {
        let (h, d) = hub();
        let nack = Nack {
            version: 4,
            hash: "h".into(),
            reason: "too big".into(),
        };
        for _ in 0..3 {
            h.report(Report {
                wire: 1,
                gateway: "g1".into(),
                region: "eu".into(),
                applied: None,
                nack: Some(nack.clone()),
                slis: Vec::new(),
                rtt_ms: BTreeMap::new(),
            });
        }
        let s = h.status();
        assert_eq!(s.gateways[0].last_nack.as_ref(), Some(&nack));
        let audit = std::fs::read_to_string(d.path().join("a.jsonl")).expect("audit");
        assert_eq!(audit.lines().count(), 1);
    }

    #[test]
    fn valid_rtts_go_to_the_smoother_and_bad_ones_are_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let audit = Arc::new(Audit::open(&dir.path().join("a.jsonl")).expect("audit"));
        let (tx, _rx) = mpsc::unbounded_channel();
        let (rtt_tx, mut rtt_rx) = mpsc::channel(1);
        let h = Hub::new(BTreeMap::new(), tx, rtt_tx, audit, Duration::from_secs(1));
        h.set_regions(["eu", "us", "ap"].iter().map(|s| s.to_string()).collect());
        let report = |rtt: &[(&str, f64)]| Report {
            wire: 1,
            gateway: "g1".into(),
            region: "eu".into(),
            rtt_ms: rtt.iter().map(|(r, ms)| (r.to_string(), *ms)).collect(),
            ..Report::default()
        };
        h.report(report(&[
            ("us", 71.5),
            ("ap", -3.0),
            ("eu", 0.2),
            ("mars", 9.0),
            ("zz", 1e12),
        ]));
        let got = rtt_rx.try_recv().expect("the valid value is forwarded");
        assert_eq!(got.from, "eu");
        assert_eq!(got.rtt_ms, vec![("us".to_string(), 71.5)]);
        assert_eq!(h.rtt_ignored(), 4);
        // Only bad values: nothing is forwarded; the count grows.
        h.report(report(&[("ap", f64::NAN)]));
        assert!(rtt_rx.try_recv().is_err());
        assert_eq!(h.rtt_ignored(), 5);
        // A full queue drops samples without blocking the report.
        h.report(report(&[("us", 1.0)]));
        h.report(report(&[("ap", 2.0)]));
        assert_eq!(h.rtt_dropped(), 1);
        let s = h.status();
        let g = &s.gateways[0];
        assert_eq!(g.rtt_ignored, 5);
        assert_eq!(g.rtt_ms, BTreeMap::from([("ap".to_string(), 2.0)]));
        // A report without RTTs keeps the last ones shown.
        h.report(report(&[]));
        assert_eq!(h.status().gateways[0].rtt_ms.len(), 1);
    }

    #[test]
    fn before_any_intent_every_rtt_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        let audit = Arc::new(Audit::open(&dir.path().join("a.jsonl")).expect("audit"));
        let (tx, _rx) = mpsc::unbounded_channel();
        let (rtt_tx, mut rtt_rx) = mpsc::channel(4);
        let h = Hub::new(BTreeMap::new(), tx, rtt_tx, audit, Duration::from_secs(1));
        h.report(Report {
            wire: 1,
            gateway: "g1".into(),
            region: "eu".into(),
            rtt_ms: BTreeMap::from([("us".to_string(), 5.0)]),
            ..Report::default()
        });
        assert!(rtt_rx.try_recv().is_err());
        assert_eq!(h.rtt_ignored(), 1);
    }
}
