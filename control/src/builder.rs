//! The table builder: a pure function from (intent, resolved names, health, RTT) to one routing
//! table per region, and a pure versioner that gives changed tables new versions.
//!
//! What a region's table holds:
//! - every region (so routes' `allowed_regions` validate), but only this region's failover order
//!   (the others get none: this gateway never uses them);
//! - every subset (`service@version`), with only the endpoints in this region and in the regions
//!   it fails over to, so a health change elsewhere does not touch this region's table;
//! - every route, verbatim.
//!
//! Health: an endpoint absent from the health map is *unknown* and listed healthy. RTT: a region
//! whose failover is `auto` fails over to every other region in order of RTT: the pair
//! `(region, other)` as measured by the region's own gateways when it is known, else the control
//! plane's own measurement of `other`; unmeasured regions last, then by name. So two regions can
//! get different orders (see [`crate::rtt`] for where the figures come from).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meridian_api::intent::{parse_address, Address, Failover, Intent};
use meridian_api::wire::{content_hash, TableResponse, WIRE_VERSION};
use meridian_api::{Endpoint, RegionSpec, Subset, Table};

/// One concrete endpoint: a subset's address in a region, DNS names already resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Concrete {
    /// Service name (health is kept per service and address).
    pub service: String,
    /// `service@version`.
    pub subset: String,
    /// Region.
    pub region: String,
    /// Address.
    pub addr: SocketAddr,
    /// The DNS name it came from, if any.
    pub from_name: Option<String>,
    /// Zone.
    pub zone: String,
    /// Weight.
    pub weight: i64,
    /// TLS.
    pub tls: bool,
    /// SNI.
    pub sni: Option<String>,
}

/// RTTs: `("", to)` measured by the control plane itself, `(from, to)` measured by the gateways
/// of region `from` (both smoothed, see [`crate::rtt`]).
pub type Rtt = BTreeMap<(String, String), Duration>;

/// Health by (service, address); absent = unknown = healthy.
pub type Health = BTreeMap<(String, SocketAddr), bool>;

/// Every concrete endpoint of the intent. A DNS name not resolved yet contributes none.
pub fn concrete_endpoints(
    intent: &Intent,
    resolved: &BTreeMap<String, Vec<IpAddr>>,
) -> Vec<Concrete> {
    let mut out = Vec::new();
    for s in &intent.services {
        for v in &s.versions {
            let subset = format!("{}@{}", s.name, v.name);
            for (region, list) in &v.endpoints {
                for e in list {
                    let d = e.detail();
                    let (addrs, from_name) = match parse_address(&d.address) {
                        Ok(Address::Ip(a)) => (vec![a], None),
                        Ok(Address::Dns { host, port }) => (
                            resolved
                                .get(&host)
                                .map(|ips| {
                                    ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
                                })
                                .unwrap_or_default(),
                            Some(host),
                        ),
                        Err(_) => (Vec::new(), None),
                    };
                    for addr in addrs {
                        out.push(Concrete {
                            service: s.name.clone(),
                            subset: subset.clone(),
                            region: region.clone(),
                            addr,
                            sni: d
                                .sni
                                .clone()
                                .or_else(|| from_name.clone().filter(|_| d.tls)),
                            from_name: from_name.clone(),
                            zone: d.zone.clone(),
                            weight: d.weight,
                            tls: d.tls,
                        });
                    }
                }
            }
        }
    }
    out
}

/// The DNS names the intent uses.
pub fn dns_names(intent: &Intent) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in &intent.services {
        for v in &s.versions {
            for list in v.endpoints.values() {
                for e in list {
                    if let Ok(Address::Dns { host, .. }) = parse_address(&e.detail().address) {
                        out.insert(host);
                    }
                }
            }
        }
    }
    out
}

/// Each region's failover order, `auto` resolved by RTT.
pub fn failover_orders(intent: &Intent, rtt: &Rtt) -> BTreeMap<String, Vec<String>> {
    let names: Vec<&str> = intent.regions.iter().map(|r| r.name.as_str()).collect();
    intent
        .regions
        .iter()
        .map(|r| {
            let order = match &r.failover {
                Failover::Order(list) => list.clone(),
                Failover::Auto(_) => {
                    let mut others: Vec<(Option<Duration>, &str)> = names
                        .iter()
                        .filter(|n| **n != r.name)
                        .map(|n| {
                            let d = rtt
                                .get(&(r.name.clone(), n.to_string()))
                                .or_else(|| rtt.get(&(String::new(), n.to_string())));
                            (d.copied(), *n)
                        })
                        .collect();
                    others.sort_by(|a, b| match (a.0, b.0) {
                        (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(b.1)),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => a.1.cmp(b.1),
                    });
                    others.into_iter().map(|(_, n)| n.to_string()).collect()
                }
            };
            (r.name.clone(), order)
        })
        .collect()
}

/// Builds one table per region, all with version 0. Pure: same inputs, same tables.
pub fn build(
    intent: &Intent,
    resolved: &BTreeMap<String, Vec<IpAddr>>,
    health: &Health,
    rtt: &Rtt,
) -> BTreeMap<String, Table> {
    let orders = failover_orders(intent, rtt);
    let mut endpoints = concrete_endpoints(intent, resolved);
    endpoints.sort();
    // A name may resolve to an address also listed literally: keep the first.
    let mut seen = BTreeSet::new();
    endpoints.retain(|c| seen.insert((c.subset.clone(), c.addr)));
    let mut out = BTreeMap::new();
    for region in &intent.regions {
        let order = orders.get(&region.name).cloned().unwrap_or_default();
        let reach: BTreeSet<&str> = std::iter::once(region.name.as_str())
            .chain(order.iter().map(String::as_str))
            .collect();
        let regions = intent
            .regions
            .iter()
            .map(|r| RegionSpec {
                name: r.name.clone(),
                failover: if r.name == region.name {
                    order.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let mut subsets = Vec::new();
        for s in &intent.services {
            for v in &s.versions {
                let name = format!("{}@{}", s.name, v.name);
                let eps = endpoints
                    .iter()
                    .filter(|c| c.subset == name && reach.contains(c.region.as_str()))
                    .map(|c| Endpoint {
                        address: c.addr.to_string(),
                        region: c.region.clone(),
                        zone: c.zone.clone(),
                        weight: c.weight,
                        healthy: health
                            .get(&(c.service.clone(), c.addr))
                            .copied()
                            .unwrap_or(true),
                        tls: c.tls,
                        sni: c.sni.clone(),
                    })
                    .collect();
                subsets.push(Subset {
                    name,
                    endpoints: eps,
                    outlier: v.outlier.clone(),
                    limits: v.limits.clone(),
                });
            }
        }
        out.insert(
            region.name.clone(),
            Table {
                version: 0,
                regions,
                routes: intent.routes.clone(),
                subsets,
            },
        );
    }
    out
}

/// A table as published: versioned, hashed, and its response body serialised once.
#[derive(Debug, Clone)]
pub struct Published {
    /// Region.
    pub region: String,
    /// Version.
    pub version: u64,
    /// Content hash.
    pub hash: String,
    /// Build time, Unix ms.
    pub built_unix_ms: u64,
    /// The table.
    pub table: Arc<Table>,
    /// The JSON [`TableResponse`].
    pub body: bytes::Bytes,
}

/// What a region's table was: version and hash.
pub type Prior = BTreeMap<String, (u64, String)>;

/// Gives new versions to the tables whose content changed. `last_version` is the highest
/// version ever handed out (across regions and restarts); every new version is above it, so
/// versions only grow. Returns the changed regions with their versioned tables and hashes, and
/// the new highest version.
/// Regions whose hash is unchanged keep their version and are not returned.
pub fn assign_versions(
    prior: &Prior,
    built: BTreeMap<String, Table>,
    last_version: u64,
) -> (Vec<(String, Table, String)>, u64) {
    let mut last = last_version;
    let mut out = Vec::new();
    for (region, mut table) in built {
        let hash = content_hash(&table);
        if prior.get(&region).is_some_and(|(_, h)| *h == hash) {
            continue;
        }
        last += 1;
        table.version = last;
        out.push((region, table, hash));
    }
    (out, last)
}

/// Wraps a versioned table for publishing.
pub fn publish(region: &str, table: Table, hash: String, now_unix_ms: u64) -> Published {
    let resp = TableResponse {
        wire: WIRE_VERSION,
        region: region.to_string(),
        version: table.version,
        hash: hash.clone(),
        built_unix_ms: now_unix_ms,
        table,
    };
    let body = serde_json::to_vec(&resp).unwrap_or_default();
    Published {
        region: region.to_string(),
        version: resp.version,
        hash,
        built_unix_ms: now_unix_ms,
        table: Arc::new(resp.table),
        body: bytes::Bytes::from(body),
    }
}

#[cfg(test)]
mod tests;
