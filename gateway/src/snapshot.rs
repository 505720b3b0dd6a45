//! The immutable snapshot a request reads: compiled routes, splits, subsets with their region
//! tiers, endpoints with their live stats, and pre-resolved metric handles. Built off the request
//! path from a validated [`Table`]; swapped in whole through one `ArcSwap`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use meridian_api::{Budget, HedgePolicy, Limits, Outlier, RetryPolicy, Table};

use crate::balance::{EndpointStats, InflightGuard};
use crate::budget::RetryBudget;
use crate::config::Timeouts;
use crate::latency::LatencyWindow;
use crate::locality::{self, RegionHealth};
use crate::metrics::{Metrics, RequestHandles, RouteCounters, SubsetCounters};
use crate::routing::Router;
use crate::split::Splitter;

/// Everything a request needs, frozen.
#[derive(Debug)]
pub struct Snapshot {
    /// The table's version.
    pub version: u64,
    /// The table as applied (served by `/table`).
    pub table: Table,
    /// Route matcher.
    pub router: Router,
    /// Routes, by the router's indices.
    pub routes: Vec<RouteRt>,
    /// Counters for requests that matched no route.
    pub unrouted: Arc<RequestHandles>,
}

/// A compiled route.
#[derive(Debug)]
pub struct RouteRt {
    /// Route name.
    pub name: Arc<str>,
    /// Weighted split over `subsets`.
    pub splitter: Splitter,
    /// The split's subsets, in split order.
    pub subsets: Vec<SubsetRef>,
    /// Sticky key source.
    pub sticky: Option<StickyKey>,
    /// Pinning header and its value -> subset index.
    pub pin: Option<(HeaderName, HashMap<String, usize>)>,
    /// Effective upstream timeouts.
    pub timeouts: Timeouts,
    /// Retry policy (the documented default when the table gives none).
    pub retry: RetryPolicy,
    /// Hedging, when on.
    pub hedge: Option<HedgePolicy>,
    /// Budget, attempt-latency window and counters; survive table swaps.
    pub state: Arc<RouteState>,
    /// Regions this route may reach, by region index; all true when unrestricted.
    pub allowed: Vec<bool>,
    /// True when `allowed` excludes some region.
    pub restricted: bool,
}

/// A route's live state, carried from one snapshot to the next while its budget is unchanged.
#[derive(Debug)]
pub struct RouteState {
    /// The budget retries and hedges share.
    pub budget: RetryBudget,
    /// Recent attempt latencies (for adaptive hedging).
    pub latency: LatencyWindow,
    /// Decision counters.
    pub counters: RouteCounters,
    budget_spec: Budget,
}

/// Where a sticky key is read from.
#[derive(Debug)]
pub enum StickyKey {
    /// A request header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
}

/// A subset as seen from one route: the shared subset plus this route's metric handles, one per
/// region in the gateway's priority order.
#[derive(Debug)]
pub struct SubsetRef {
    /// The subset.
    pub subset: Arc<SubsetRt>,
    /// Handles by region index (same order as `subset.regions`).
    pub handles: Vec<Arc<RequestHandles>>,
}

/// A subset's endpoints grouped by region in priority order.
#[derive(Debug)]
pub struct SubsetRt {
    /// `service@version`.
    pub name: Arc<str>,
    /// Regions in priority order: local first, then failover.
    pub regions: Vec<Arc<str>>,
    /// Healthy endpoints per region.
    pub tiers: Vec<Vec<EndpointRt>>,
    /// Cumulative load share per region (see [`locality`]), from table health alone.
    pub cumulative: Vec<f64>,
    /// Weight of all endpoints (healthy or not) per region.
    pub total_weight: Vec<f64>,
    /// Passive-health policy.
    pub outlier: Outlier,
    /// Circuit-breaking limits.
    pub limits: Limits,
    /// In-flight count and counters; survive table swaps.
    pub state: Arc<SubsetState>,
}

/// A subset's live state.
#[derive(Debug)]
pub struct SubsetState {
    /// Requests in flight to the subset.
    pub inflight: std::sync::atomic::AtomicU64,
    /// Decision counters.
    pub counters: SubsetCounters,
}

/// One endpoint, ready to dial.
#[derive(Debug, Clone)]
pub struct EndpointRt {
    /// Address.
    pub addr: SocketAddr,
    /// Address as text (log and metric label).
    pub label: Arc<str>,
    /// Region.
    pub region: Arc<str>,
    /// Zone.
    pub zone: Arc<str>,
    /// Relative weight.
    pub weight: f64,
    /// TLS to the upstream.
    pub tls: bool,
    /// SNI when `tls`; shared, since the endpoint is cloned on every pick.
    pub sni: Arc<str>,
    /// Live stats, shared across snapshots.
    pub stats: Arc<EndpointStats>,
}

/// Live state carried from one snapshot to the next: endpoint stats by address, subset and
/// route state by name. Only the builder touches it.
#[derive(Debug, Default)]
pub struct StatsBook {
    endpoints: HashMap<SocketAddr, Arc<EndpointStats>>,
    /// The label each endpoint's in-flight gauge was registered under, so that the gauge can be
    /// unregistered when the endpoint leaves the table (or `/metrics` grows with every address
    /// ever seen).
    labels: HashMap<SocketAddr, String>,
    subsets: HashMap<String, Arc<SubsetState>>,
    routes: HashMap<String, Arc<RouteState>>,
}

impl StatsBook {
    /// An empty book.
    pub fn new() -> StatsBook {
        StatsBook::default()
    }
}

/// Region priority for a gateway in `local`: itself, then the table's failover order.
pub fn region_order(table: &Table, local: &str) -> Vec<Arc<str>> {
    let mut order: Vec<Arc<str>> = vec![Arc::from(local)];
    if let Some(spec) = table.regions.iter().find(|r| r.name == local) {
        for f in &spec.failover {
            if !order.iter().any(|o| **o == **f) {
                order.push(Arc::from(f.as_str()));
            }
        }
    }
    order
}

impl Snapshot {
    /// Compiles a validated table for a gateway in `local`. Stats for known addresses are reused
    /// from `book`; new ones are added and addresses no longer listed are dropped.
    pub fn build(
        table: Table,
        local: &str,
        defaults: Timeouts,
        metrics: &Metrics,
        book: &mut StatsBook,
    ) -> Snapshot {
        let order = region_order(&table, local);
        let mut next_book = StatsBook::new();
        let mut next_subsets = HashMap::new();
        let mut next_routes = HashMap::new();
        let mut subsets: HashMap<&str, Arc<SubsetRt>> = HashMap::new();
        for s in &table.subsets {
            let mut tiers: Vec<Vec<EndpointRt>> = vec![Vec::new(); order.len()];
            let sstate = book.subsets.get(&s.name).cloned().unwrap_or_else(|| {
                Arc::new(SubsetState {
                    inflight: Default::default(),
                    counters: metrics.subset_counters(&s.name),
                })
            });
            next_subsets.insert(s.name.clone(), sstate.clone());
            let mut health = vec![
                RegionHealth {
                    healthy: 0.0,
                    total: 0.0
                };
                order.len()
            ];
            for e in &s.endpoints {
                let Ok(addr) = e.address.parse::<SocketAddr>() else {
                    continue;
                };
                let Some(tier) = order.iter().position(|r| **r == *e.region) else {
                    continue;
                };
                let stats = book
                    .endpoints
                    .get(&addr)
                    .or_else(|| next_book.endpoints.get(&addr))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(EndpointStats::new(metrics.inflight_gauge(&e.address)))
                    });
                next_book.endpoints.insert(addr, stats.clone());
                next_book.labels.entry(addr).or_insert_with(|| {
                    book.labels
                        .remove(&addr)
                        .unwrap_or_else(|| e.address.clone())
                });
                let weight = e.weight.max(1) as f64;
                health[tier].total += weight;
                if e.healthy {
                    health[tier].healthy += weight;
                    tiers[tier].push(EndpointRt {
                        addr,
                        label: Arc::from(e.address.as_str()),
                        region: order[tier].clone(),
                        zone: Arc::from(e.zone.as_str()),
                        weight,
                        tls: e.tls,
                        sni: match &e.sni {
                            Some(name) => Arc::from(name.as_str()),
                            None => Arc::from(addr.ip().to_string()),
                        },
                        stats,
                    });
                }
            }
            // Endpoints never measured start at their region's measured mean.
            let now = crate::balance::now_ns();
            for eps in &tiers {
                let measured: Vec<f64> = eps
                    .iter()
                    .filter(|e| e.stats.measured())
                    .map(|e| e.stats.estimate(now))
                    .collect();
                if measured.is_empty() || measured.len() == eps.len() {
                    continue;
                }
                let mean = measured.iter().sum::<f64>() / measured.len() as f64;
                for e in eps.iter().filter(|e| !e.stats.measured()) {
                    e.stats.seed(mean, now);
                }
            }
            subsets.insert(
                s.name.as_str(),
                Arc::new(SubsetRt {
                    name: Arc::from(s.name.as_str()),
                    regions: order.clone(),
                    tiers,
                    cumulative: cumulate(locality::loads(&health)),
                    total_weight: health.iter().map(|h| h.total).collect(),
                    outlier: s.outlier.clone().unwrap_or_default(),
                    limits: s.limits.clone().unwrap_or_default(),
                    state: sstate,
                }),
            );
        }

        let routes = table
            .routes
            .iter()
            .map(|r| {
                let weights: Vec<u64> = r.split.iter().map(|s| s.weight.max(0) as u64).collect();
                let refs = r
                    .split
                    .iter()
                    .map(|s| {
                        // Validation guarantees the subset exists; a route naming an unknown one
                        // could not be applied, so this lookup cannot miss for applied tables.
                        let subset = subsets.get(s.subset.as_str()).cloned()?;
                        let handles = order
                            .iter()
                            .map(|reg| metrics.handles(&r.name, &s.subset, reg))
                            .collect();
                        Some(SubsetRef { subset, handles })
                    })
                    .collect::<Option<Vec<_>>>()
                    .unwrap_or_default();
                let sticky = r
                    .sticky
                    .as_ref()
                    .and_then(|s| match (&s.header, &s.cookie) {
                        (Some(h), _) => HeaderName::from_bytes(h.as_bytes())
                            .ok()
                            .map(StickyKey::Header),
                        (None, Some(c)) => Some(StickyKey::Cookie(c.clone())),
                        _ => None,
                    });
                let pin = r.pin.as_ref().and_then(|p| {
                    let name = HeaderName::from_bytes(p.header.as_bytes()).ok()?;
                    let map = p
                        .values
                        .iter()
                        .filter_map(|(v, sub)| {
                            Some((v.clone(), r.split.iter().position(|s| s.subset == *sub)?))
                        })
                        .collect();
                    Some((name, map))
                });
                let budget_spec = r.budget.clone().unwrap_or_default();
                let state = book
                    .routes
                    .get(&r.name)
                    .filter(|st| st.budget_spec == budget_spec)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(RouteState {
                            budget: RetryBudget::new(
                                budget_spec.ratio,
                                budget_spec.window_s,
                                budget_spec.min_per_s,
                            ),
                            latency: LatencyWindow::new(Duration::from_secs(10)),
                            counters: metrics.route_counters(&r.name),
                            budget_spec,
                        })
                    });
                next_routes.insert(r.name.clone(), state.clone());
                let allowed: Vec<bool> = order
                    .iter()
                    .map(|reg| {
                        r.allowed_regions.is_empty()
                            || r.allowed_regions.iter().any(|a| **a == **reg)
                    })
                    .collect();
                let t = r.timeouts.clone().unwrap_or_default();
                let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
                RouteRt {
                    name: Arc::from(r.name.as_str()),
                    splitter: Splitter::new(&weights),
                    subsets: refs,
                    sticky,
                    pin,
                    timeouts: Timeouts {
                        connect: ms(t.connect_ms, defaults.connect),
                        read: ms(t.read_ms, defaults.read),
                        total: ms(t.total_ms, defaults.total),
                    },
                    retry: r.retry.clone().unwrap_or_default(),
                    hedge: r.hedge.clone(),
                    state,
                    restricted: allowed.iter().any(|a| !a),
                    allowed,
                }
            })
            .collect();
        next_book.subsets = next_subsets;
        next_book.routes = next_routes;
        // Whatever is left in the old book's labels left the table.
        for label in book.labels.values() {
            metrics.remove_inflight_gauge(label);
        }
        *book = next_book;
        Snapshot {
            version: table.version,
            router: Router::new(&table.routes),
            routes,
            unrouted: metrics.handles("", "", local),
            table,
        }
    }
}

fn cumulate(loads: Vec<f64>) -> Vec<f64> {
    let mut acc = 0.0;
    loads
        .into_iter()
        .map(|l| {
            acc += l;
            acc
        })
        .collect()
}

/// What a pick may use.
#[derive(Debug, Clone, Copy)]
pub struct PickOpts<'a> {
    /// Regions allowed, by index (the route's residency).
    pub allowed: &'a [bool],
    /// True when `allowed` excludes some region.
    pub restricted: bool,
    /// Endpoints this request already tried.
    pub tried: &'a [SocketAddr],
    /// Regions (bit per index) where this request already failed repeatedly: a retry leaves
    /// them for the next region, as Envoy's `previous_priorities` retry predicate does, unless
    /// nothing else is left.
    pub avoid: u64,
    /// The clock.
    pub now: u64,
}

/// The outcome of a pick.
#[derive(Debug)]
pub enum Picked<'a> {
    /// An endpoint in region `tier`; `fail_open` when every candidate was ejected.
    Endpoint {
        /// Region index.
        tier: usize,
        /// The endpoint.
        ep: &'a EndpointRt,
        /// Chosen although ejected, because nothing else was left.
        fail_open: bool,
    },
    /// Nothing healthy (and untried) anywhere allowed.
    Nothing,
    /// Something healthy exists, but only in regions the route may not reach.
    Residency,
}

impl SubsetRt {
    /// One in-flight slot on `ep` within this subset's per-endpoint limit; a refusal is
    /// counted (`meridian_circuit_open_total{limit="endpoint"}`).
    pub fn endpoint_slot(&self, ep: &EndpointRt) -> Option<InflightGuard> {
        let slot = ep.stats.try_begin(self.limits.max_inflight_per_endpoint);
        if slot.is_none() {
            self.state.counters.circuit_endpoint.inc();
        }
        slot
    }

    /// Picks a region by load share, then an endpoint in it by power of two choices, skipping
    /// ejected and already-tried endpoints and regions outside the route's residency.
    pub fn pick<'a>(&'a self, rng: &mut fastrand::Rng, o: &PickOpts<'_>) -> Picked<'a> {
        let fast = o.tried.is_empty() && !o.restricted && !crate::outlier::any_ejected(o.now);
        if fast {
            let Some(tier) = locality::pick(&self.cumulative, rng.f64()) else {
                return Picked::Nothing;
            };
            let eps = &self.tiers[tier];
            return match crate::balance::p2c(
                eps.len(),
                rng,
                |i| eps[i].stats.cost(o.now),
                |i| eps[i].weight,
            ) {
                Some(i) => Picked::Endpoint {
                    tier,
                    ep: &eps[i],
                    fail_open: false,
                },
                None => Picked::Nothing,
            };
        }
        let usable =
            |e: &EndpointRt| !o.tried.contains(&e.addr) && !e.stats.outlier.is_ejected(o.now);
        let health: Vec<RegionHealth> = self
            .tiers
            .iter()
            .enumerate()
            .map(|(i, eps)| RegionHealth {
                healthy: if o.allowed.get(i).copied().unwrap_or(false)
                    && o.avoid & (1 << i.min(63)) == 0
                {
                    eps.iter().filter(|e| usable(e)).map(|e| e.weight).sum()
                } else {
                    0.0
                },
                total: self.total_weight[i],
            })
            .collect();
        let cumulative = cumulate(locality::loads(&health));
        if cumulative.last().copied().unwrap_or(0.0) <= 0.0 && o.avoid != 0 {
            return self.pick(rng, &PickOpts { avoid: 0, ..*o });
        }
        // Power of two choices among one region's candidates.
        let choose = |rng: &mut fastrand::Rng, cands: Vec<&'a EndpointRt>| {
            let i = crate::balance::p2c(
                cands.len(),
                rng,
                |i| cands[i].stats.cost(o.now),
                |i| cands[i].weight,
            )?;
            Some(cands[i])
        };
        if let Some(tier) = locality::pick(&cumulative, rng.f64()) {
            let cands = self.tiers[tier].iter().filter(|e| usable(e)).collect();
            if let Some(ep) = choose(rng, cands) {
                return Picked::Endpoint {
                    tier,
                    ep,
                    fail_open: false,
                };
            }
        }
        // Nothing usable where the route may go. Usable endpoints outside its regions: refuse
        // (data residency wins over failing open).
        let allowed = |tier: usize| o.allowed.get(tier).copied().unwrap_or(false);
        let outside_usable = self
            .tiers
            .iter()
            .enumerate()
            .any(|(tier, eps)| !allowed(tier) && eps.iter().any(&usable));
        if outside_usable {
            return Picked::Residency;
        }
        // The whole subset is ejected: fail open to the allowed regions, in priority order.
        for (tier, eps) in self.tiers.iter().enumerate() {
            if !allowed(tier) {
                continue;
            }
            let cands = eps.iter().filter(|e| !o.tried.contains(&e.addr)).collect();
            if let Some(ep) = choose(rng, cands) {
                return Picked::Endpoint {
                    tier,
                    ep,
                    fail_open: true,
                };
            }
        }
        let elsewhere =
            self.tiers.iter().enumerate().any(|(tier, eps)| {
                !allowed(tier) && eps.iter().any(|e| !o.tried.contains(&e.addr))
            });
        if elsewhere {
            Picked::Residency
        } else {
            Picked::Nothing
        }
    }

    /// Ejected endpoints and all endpoints of the subset at `now` (for the ejection cap).
    pub fn ejection_counts(&self, now: u64) -> (usize, usize) {
        let all = self.tiers.iter().flatten();
        let total = all.clone().count();
        let ejected = all.filter(|e| e.stats.outlier.is_ejected(now)).count();
        (ejected, total)
    }
}

#[cfg(test)]
mod tests;
