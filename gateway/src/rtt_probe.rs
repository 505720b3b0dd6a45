//! Inter-region RTT probes from this gateway, for the control plane's `failover: auto`.
//!
//! While the gateway is synced to a control plane, every `rtt_probe_interval_ms` (default 5 s)
//! it opens a TCP connection to up to [`PER_REGION`] endpoints of each *other* region of the table
//! in force (healthy endpoints first), closes it at once, and keeps the fastest successful
//! connect of the round per region. A region none of whose probed endpoints connected within
//! [`CONNECT_TIMEOUT`] is left out of the round. The sync client sends the round in its next
//! report (`Report::rtt_ms`), and the control plane orders this region's failover by it (see
//! `meridian_control::rtt`).
//!
//! The probes run as their own task on the sync client's thread and runtime, never on the
//! proxy's: the request path neither waits for them nor shares a lock with them. At most
//! [`CONCURRENCY`] connects are in flight at once. The first round starts after a random part
//! of one interval, so a fleet started together does not probe in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_api::Table;

use crate::state::Gateway;

/// Endpoints probed per region and round.
pub const PER_REGION: usize = 3;
/// Longest wait for one connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connects in flight at once.
pub const CONCURRENCY: usize = 8;

/// The addresses to probe: up to `per_region` distinct endpoint addresses of every region of
/// `table` other than `own`, healthy ones first, then in address order. Addresses that do not
/// parse as `ip:port` are skipped.
pub fn targets(table: &Table, own: &str, per_region: usize) -> BTreeMap<String, Vec<SocketAddr>> {
    // (unhealthy, address) sorts healthy endpoints first; a set dedupes across subsets.
    let mut all: BTreeMap<&str, std::collections::BTreeSet<(bool, SocketAddr)>> = BTreeMap::new();
    for s in &table.subsets {
        for e in &s.endpoints {
            if e.region == own {
                continue;
            }
            if let Ok(addr) = e.address.parse::<SocketAddr>() {
                all.entry(e.region.as_str())
                    .or_default()
                    .insert((!e.healthy, addr));
            }
        }
    }
    all.into_iter()
        .map(|(region, set)| {
            let mut picked: Vec<SocketAddr> = Vec::new();
            for (_, addr) in set {
                // An address listed both healthy and unhealthy (two services) counts once.
                if !picked.contains(&addr) {
                    picked.push(addr);
                }
                if picked.len() == per_region {
                    break;
                }
            }
            (region.to_string(), picked)
        })
        .collect()
}

/// One probe round over `table` from region `own`: the fastest connect per reachable region, in
/// milliseconds.
pub async fn round(table: &Table, own: &str) -> BTreeMap<String, f64> {
    round_of(&targets(table, own, PER_REGION)).await
}

/// One probe round over explicit targets.
pub async fn round_of(targets: &BTreeMap<String, Vec<SocketAddr>>) -> BTreeMap<String, f64> {
    meridian_control::rtt::probe_regions(targets, PER_REGION, CONNECT_TIMEOUT, CONCURRENCY)
        .await
        .into_iter()
        .map(|(region, d)| (region, d.as_secs_f64() * 1000.0))
        .collect()
}

/// Probes every `interval` for as long as the task runs, from region `own`, and hands each
/// round that reached at least one region to `deliver`. Rounds with no table in force, or no
/// other region in it, are skipped.
pub async fn run(
    gw: Arc<Gateway>,
    own: String,
    interval: Duration,
    mut deliver: impl FnMut(BTreeMap<String, f64>) + Send,
) {
    tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The targets of the table version they were worked out from: a large table is walked once
    // per version, not once per round.
    let mut cached: Option<(u64, BTreeMap<String, Vec<SocketAddr>>)> = None;
    loop {
        tick.tick().await;
        // Work out the targets and let go of the snapshot before any await.
        {
            let Some(snap) = gw.snapshot.load_full() else {
                continue;
            };
            if cached.as_ref().is_none_or(|(v, _)| *v != snap.version) {
                cached = Some((snap.version, targets(&snap.table, &own, PER_REGION)));
            }
        }
        let Some((_, targets)) = &cached else {
            continue;
        };
        if targets.is_empty() {
            continue;
        }
        let rtt = round_of(targets).await;
        tracing::debug!(?rtt, "RTT probe round");
        if !rtt.is_empty() {
            deliver(rtt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(endpoints: &[(&str, &str, bool)]) -> Table {
        let eps: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|(addr, region, healthy)| {
                serde_json::json!({ "address": addr, "region": region, "healthy": healthy })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "version": 1,
            "subsets": [{ "name": "s@v1", "endpoints": eps }],
            "routes": [{ "name": "r", "split": [{ "subset": "s@v1", "weight": 1 }] }],
        }))
        .expect("table")
    }

    /// A port nothing listens on: bound, then closed.
    async fn closed_port() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    }

    #[test]
    fn targets_are_other_regions_healthy_first_at_most_three() {
        let t = table(&[
            ("10.0.0.1:80", "eu", true),
            ("10.1.0.9:80", "us", true),
            ("10.1.0.1:80", "us", false),
            ("10.1.0.2:80", "us", true),
            ("10.1.0.3:80", "us", true),
            ("10.1.0.4:80", "us", true),
            ("10.2.0.1:80", "ap", false),
        ]);
        let got = targets(&t, "eu", 3);
        assert!(!got.contains_key("eu"), "the own region is not probed");
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            got["us"],
            vec![
                addr("10.1.0.2:80"),
                addr("10.1.0.3:80"),
                addr("10.1.0.4:80")
            ]
        );
        assert_eq!(
            got["ap"],
            vec![addr("10.2.0.1:80")],
            "an unhealthy endpoint is still probed when it is all there is"
        );
    }

    #[tokio::test]
    async fn reachable_regions_get_a_time_and_unreachable_ones_none() {
        let us = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ap = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let gone = closed_port().await;
        let (us_addr, ap_addr) = (us.local_addr().expect("a"), ap.local_addr().expect("a"));
        let t = table(&[
            ("127.0.0.1:1", "eu", true),
            (&us_addr.to_string(), "us", true),
            (&ap_addr.to_string(), "ap", true),
            // A second ap endpoint that is down: the reachable one still counts.
            (&closed_port().await.to_string(), "ap", true),
            (&gone.to_string(), "sa", true),
        ]);
        let rtt = round(&t, "eu").await;
        assert_eq!(
            rtt.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["ap", "us"],
            "{rtt:?}"
        );
        for (region, ms) in &rtt {
            assert!(
                ms.is_finite() && *ms >= 0.0 && *ms < 1000.0,
                "{region}: {ms}"
            );
        }
    }
}
