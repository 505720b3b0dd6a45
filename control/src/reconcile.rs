//! The reconciler: the single owner of the control plane's view (intent, resolved names, health,
//! RTT, published versions). It takes events from the health checker, the DNS watcher, the RTT
//! smoother (the control plane's own probes combined with the gateways' reported pairs), the
//! intent watcher and pushes, batches whatever is queued, rebuilds every region's table with the
//! pure builder, gives changed tables new versions, appends each to the audit log with its
//! causes, and publishes them to the long polls.
//!
//! Warm-up: after a start, nothing is published until every endpoint has a first health result
//! and every DNS name is resolved, or `warmup` passes, whichever comes first.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meridian_api::intent::Intent;
use meridian_api::wire::{EndpointStatus, IntentStatus, PushResponse, WIRE_VERSION};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::builder::{self, Health, Prior, Published, Rtt};
use crate::dns::{DnsWatcher, ResolvedNames};
use crate::health::{Checker, Target};
use crate::hub::{Hub, Tables};
use crate::rtt::Targets;
use crate::store::{intent_hash, Pushed, Store, Versions};

/// What the reconciler reacts to.
#[derive(Debug)]
pub enum Event {
    /// An endpoint's health changed (or became known).
    Health {
        /// Service.
        service: String,
        /// Endpoint.
        addr: SocketAddr,
        /// New state.
        healthy: bool,
    },
    /// A DNS name resolved to new addresses.
    Dns {
        /// Name.
        host: String,
        /// Addresses.
        ips: Vec<IpAddr>,
    },
    /// The smoothed RTTs, every pair, when the failover order they imply (or the set of pairs)
    /// changed.
    Rtt(Rtt),
    /// A new valid intent.
    Intent {
        /// The intent (already validated).
        intent: Box<Intent>,
        /// Where it came from.
        source: IntentSource,
        /// Where to answer a push.
        reply: Option<oneshot::Sender<Result<PushResponse, String>>>,
    },
}

/// Where an intent came from.
#[derive(Debug, Clone)]
pub enum IntentSource {
    /// The watched files.
    File(String),
    /// A push by a token identity (to be stored before use).
    Push(String),
    /// A push stored earlier, restored at start.
    Restored(String),
}

impl IntentSource {
    fn label(&self) -> String {
        match self {
            IntentSource::File(p) => format!("file {p}"),
            IntentSource::Push(who) | IntentSource::Restored(who) => format!("push by {who}"),
        }
    }
}

type Reply = oneshot::Sender<Result<PushResponse, String>>;

/// The reconciler's state.
pub struct Reconciler {
    hub: Arc<Hub>,
    store: Store,
    checker: Checker,
    dns: DnsWatcher,
    rtt_targets: watch::Sender<Targets>,
    intent: Option<Intent>,
    intent_hash: String,
    source: String,
    resolved: ResolvedNames,
    rtt: Rtt,
    prior: Prior,
    last_version: u64,
    published: BTreeMap<String, Arc<Published>>,
    warm_until: Option<Instant>,
    causes: Vec<Value>,
    replies: Vec<(Reply, bool)>,
}

impl Reconciler {
    /// A reconciler starting from the saved versions.
    pub fn new(
        hub: Arc<Hub>,
        store: Store,
        checker: Checker,
        dns: DnsWatcher,
        rtt_targets: watch::Sender<Targets>,
        warmup: Duration,
    ) -> Reconciler {
        let saved = store.load_versions();
        Reconciler {
            hub,
            store,
            checker,
            dns,
            rtt_targets,
            intent: None,
            intent_hash: String::new(),
            source: String::new(),
            resolved: ResolvedNames::new(),
            rtt: Rtt::new(),
            prior: saved.regions,
            last_version: saved.last_version,
            published: BTreeMap::new(),
            warm_until: Some(Instant::now() + warmup),
            causes: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// Runs until every sender of `rx` is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        loop {
            let first = if self.warm_until.is_some() {
                match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                    Ok(None) => return,
                    Ok(Some(e)) => Some(e),
                    Err(_) => None,
                }
            } else {
                match rx.recv().await {
                    None => return,
                    Some(e) => Some(e),
                }
            };
            let mut dirty = false;
            if let Some(e) = first {
                dirty |= self.apply(e);
                while let Ok(e) = rx.try_recv() {
                    dirty |= self.apply(e);
                }
            }
            if let Some(until) = self.warm_until {
                let Some(intent) = &self.intent else { continue };
                let names_known = builder::dns_names(intent)
                    .iter()
                    .all(|n| self.resolved.contains_key(n));
                if (self.checker.all_known() && names_known) || Instant::now() >= until {
                    tracing::info!(
                        endpoints = self.checker.len(),
                        "warm-up over; publishing tables"
                    );
                    self.warm_until = None;
                    dirty = true;
                } else {
                    // Start checking (and resolving) what the intent names, unpublished.
                    if dirty {
                        self.sync_watchers();
                    }
                    continue;
                }
            }
            if dirty {
                self.rebuild();
            }
        }
    }

    fn apply(&mut self, e: Event) -> bool {
        match e {
            Event::Health {
                service,
                addr,
                healthy,
            } => {
                self.causes.push(json!({ "health": {
                    "service": service, "endpoint": addr.to_string(), "healthy": healthy,
                }}));
            }
            Event::Dns { host, ips } => {
                let shown: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                self.causes
                    .push(json!({ "dns": { "name": host, "addresses": shown } }));
                self.resolved.insert(host, ips);
            }
            Event::Rtt(rtt) => {
                // By measuring side, then destination; the control plane's own figures are
                // under "control plane" (a region name cannot hold a space).
                let mut shown: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
                for ((from, to), d) in &rtt {
                    let from = if from.is_empty() {
                        "control plane"
                    } else {
                        from
                    };
                    shown
                        .entry(from)
                        .or_default()
                        .insert(to, (d.as_secs_f64() * 1e6).round() / 1e3);
                }
                self.causes.push(json!({ "rtt_ms": shown }));
                self.rtt = rtt;
            }
            Event::Intent {
                intent,
                source,
                reply,
            } => return self.apply_intent(*intent, source, reply),
        }
        true
    }

    fn apply_intent(&mut self, intent: Intent, source: IntentSource, reply: Option<Reply>) -> bool {
        let hash = intent_hash(&intent);
        let summary = crate::diff::summarize(self.intent.as_ref(), &intent);
        if let IntentSource::Push(who) = &source {
            let pushed = Pushed {
                identity: who.clone(),
                pushed_unix_ms: crate::now_unix_ms(),
                watched_hash: self
                    .hub
                    .watched_hash
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                intent: intent.clone(),
            };
            if let Err(e) = self.store.save_pushed(&pushed) {
                tracing::error!("cannot store the pushed intent: {e}");
                if let Some(r) = reply {
                    let _ = r.send(Err(format!("cannot store the pushed intent: {e}")));
                }
                return false;
            }
            self.hub.audit.append(
                "push",
                json!({ "identity": who, "intent_hash": hash, "changed": hash != self.intent_hash, "summary": summary }),
            );
        } else {
            self.hub.audit.append(
                "intent",
                json!({ "source": source.label(), "intent_hash": hash, "summary": summary }),
            );
        }
        let changed = hash != self.intent_hash;
        tracing::info!(source = %source.label(), changed, "intent accepted: {}", summary.join("; "));
        if changed {
            self.causes
                .push(json!({ "intent": { "source": source.label(), "summary": summary } }));
        }
        self.hub
            .set_regions(intent.regions.iter().map(|r| r.name.clone()).collect());
        self.intent = Some(intent);
        self.intent_hash = hash;
        self.source = source.label();
        self.hub.set_intent_error(None);
        if let Some(r) = reply {
            self.replies.push((r, changed));
        }
        true
    }

    /// Points the health checker, the DNS watcher and the RTT prober at the intent's endpoints.
    fn sync_watchers(&mut self) -> Vec<builder::Concrete> {
        let Some(intent) = &self.intent else {
            return Vec::new();
        };
        for gone in self.dns.sync(&builder::dns_names(intent)) {
            self.resolved.remove(&gone);
        }
        let concrete = builder::concrete_endpoints(intent, &self.resolved);
        let specs: BTreeMap<&str, _> = intent
            .services
            .iter()
            .map(|s| (s.name.as_str(), &s.health_check))
            .collect();
        let mut targets: BTreeMap<(String, SocketAddr), Target> = BTreeMap::new();
        for c in &concrete {
            if let Some(spec) = specs.get(c.service.as_str()) {
                targets
                    .entry((c.service.clone(), c.addr))
                    .or_insert(Target {
                        key: (c.service.clone(), c.addr),
                        spec: (*spec).clone(),
                        tls: c.tls,
                    });
            }
        }
        self.checker.sync(targets.into_values().collect());
        let mut by_region: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        for c in &concrete {
            by_region.entry(c.region.clone()).or_default().push(c.addr);
        }
        for v in by_region.values_mut() {
            v.sort();
            v.dedup();
        }
        let targets = Targets {
            regions: intent.regions.iter().map(|r| r.name.clone()).collect(),
            addrs: by_region,
        };
        self.rtt_targets.send_if_modified(|t| {
            let differs = *t != targets;
            if differs {
                *t = targets;
            }
            differs
        });
        concrete
    }

    fn rebuild(&mut self) {
        let concrete = self.sync_watchers();
        let Some(intent) = &self.intent else {
            return;
        };
        let health: Health = self.checker.health();
        let built = builder::build(intent, &self.resolved, &health, &self.rtt);
        self.prior.retain(|r, _| built.contains_key(r));
        self.published.retain(|r, _| built.contains_key(r));
        let (changed, last) =
            builder::assign_versions(&self.prior, built.clone(), self.last_version);
        let now = crate::now_unix_ms();
        let causes = std::mem::take(&mut self.causes);
        for (region, table, hash) in changed {
            let version = table.version;
            let unhealthy: Vec<String> = table
                .subsets
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| !e.healthy)
                .map(|e| e.address.clone())
                .collect();
            self.hub.audit.append(
                "table",
                json!({ "region": region, "version": version, "hash": hash,
                        "causes": causes, "unhealthy": unhealthy }),
            );
            tracing::info!(%region, version, "new table version");
            self.prior.insert(region.clone(), (version, hash.clone()));
            self.published.insert(
                region.clone(),
                Arc::new(builder::publish(&region, table, hash, now)),
            );
        }
        // Unchanged since before a restart: publish under the saved version.
        for (region, mut table) in built {
            if self.published.contains_key(&region) {
                continue;
            }
            if let Some((version, hash)) = self.prior.get(&region).cloned() {
                table.version = version;
                self.published.insert(
                    region.clone(),
                    Arc::new(builder::publish(&region, table, hash, now)),
                );
            }
        }
        if last != self.last_version {
            self.last_version = last;
            let v = Versions {
                last_version: last,
                regions: self.prior.clone(),
            };
            if let Err(e) = self.store.save_versions(&v) {
                tracing::error!("cannot save versions: {e}");
            }
        }
        self.hub.set_tables(Tables {
            ready: true,
            by_region: self.published.clone(),
        });
        self.hub.set_intent_status(IntentStatus {
            source: self.source.clone(),
            hash: self.intent_hash.clone(),
            last_error: None,
        });
        self.hub.set_endpoints(endpoint_status(&concrete, &health));
        let versions: BTreeMap<String, u64> = self
            .published
            .iter()
            .map(|(r, p)| (r.clone(), p.version))
            .collect();
        for (reply, changed) in self.replies.drain(..) {
            let _ = reply.send(Ok(PushResponse {
                wire: WIRE_VERSION,
                changed,
                intent_hash: self.intent_hash.clone(),
                versions: versions.clone(),
            }));
        }
    }
}

fn endpoint_status(concrete: &[builder::Concrete], health: &Health) -> Vec<EndpointStatus> {
    let mut out: BTreeMap<(String, SocketAddr), EndpointStatus> = BTreeMap::new();
    for c in concrete {
        let key = (c.service.clone(), c.addr);
        let h = match health.get(&key) {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None => "unknown",
        };
        out.entry(key).or_insert(EndpointStatus {
            service: c.service.clone(),
            address: c.addr.to_string(),
            from_name: c.from_name.clone(),
            health: h.into(),
        });
    }
    out.into_values().collect()
}
