//! The immutable snapshot a request reads: compiled routes, splits, subsets with their region
//! tiers, endpoints with their live stats, and pre-resolved metric handles. Built off the request
//! path from a validated [`Table`]; swapped in whole through one `ArcSwap`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use meridian_api::Table;

use crate::balance::EndpointStats;
use crate::config::Timeouts;
use crate::locality::{self, RegionHealth};
use crate::metrics::{Metrics, RequestHandles};
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
    /// Cumulative load share per region (see [`locality`]).
    pub cumulative: Vec<f64>,
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
    /// SNI when `tls`.
    pub sni: String,
    /// Live stats, shared across snapshots.
    pub stats: Arc<EndpointStats>,
}

/// Live endpoint stats by address, carried from one snapshot to the next. Only the builder
/// touches it.
pub type StatsBook = HashMap<SocketAddr, Arc<EndpointStats>>;

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
        let mut subsets: HashMap<&str, Arc<SubsetRt>> = HashMap::new();
        for s in &table.subsets {
            let mut tiers: Vec<Vec<EndpointRt>> = vec![Vec::new(); order.len()];
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
                    .get(&addr)
                    .or_else(|| next_book.get(&addr))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(EndpointStats::new(metrics.inflight_gauge(&e.address)))
                    });
                next_book.insert(addr, stats.clone());
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
                        sni: e.sni.clone().unwrap_or_else(|| addr.ip().to_string()),
                        stats,
                    });
                }
            }
            let mut acc = 0.0;
            let cumulative = locality::loads(&health)
                .into_iter()
                .map(|l| {
                    acc += l;
                    acc
                })
                .collect();
            subsets.insert(
                s.name.as_str(),
                Arc::new(SubsetRt {
                    name: Arc::from(s.name.as_str()),
                    regions: order.clone(),
                    tiers,
                    cumulative,
                }),
            );
        }
        *book = next_book;

        let routes = table
            .routes
            .iter()
            .map(|r| {
                let weights: Vec<u64> = r.split.iter().map(|s| s.weight.max(0) as u64).collect();
                let refs = r
                    .split
                    .iter()
                    .map(|s| {
                        let subset = subsets.get(s.subset.as_str()).cloned().unwrap_or_else(|| {
                            Arc::new(SubsetRt {
                                name: Arc::from(s.subset.as_str()),
                                regions: order.clone(),
                                tiers: vec![Vec::new(); order.len()],
                                cumulative: vec![0.0; order.len()],
                            })
                        });
                        let handles = order
                            .iter()
                            .map(|reg| metrics.handles(&r.name, &s.subset, reg))
                            .collect();
                        SubsetRef { subset, handles }
                    })
                    .collect();
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
                }
            })
            .collect();
        Snapshot {
            version: table.version,
            router: Router::new(&table.routes),
            routes,
            unrouted: metrics.handles("", "", local),
            table,
        }
    }
}

impl SubsetRt {
    /// Picks a region by load share, then an endpoint in it by power of two choices.
    /// Returns `(region index, endpoint)`; `None` when no region has a healthy endpoint.
    pub fn pick(&self, rng: &mut fastrand::Rng, now: u64) -> Option<(usize, &EndpointRt)> {
        let tier = locality::pick(&self.cumulative, rng.f64())?;
        let eps = &self.tiers[tier];
        let i = crate::balance::p2c(
            eps.len(),
            rng,
            |i| eps[i].stats.cost(now),
            |i| eps[i].weight,
        )?;
        Some((tier, &eps[i]))
    }
}

#[cfg(test)]
mod tests;
