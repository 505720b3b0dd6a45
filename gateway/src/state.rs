//! A gateway's shared state: its config, the snapshot in force behind one `ArcSwap`, metrics and
//! the access log. Applying or rejecting a table happens here, off the request path.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use meridian_api::Table;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;

use crate::accesslog::AccessLog;
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, StatsBook};

/// A Pingora HTTP connector shared by a gateway's hedged requests.
pub struct SharedConnector(pub Arc<Connector>);

impl std::fmt::Debug for SharedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedConnector")
    }
}

/// One gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Its validated bootstrap config.
    pub config: GatewayConfig,
    /// The snapshot in force; `None` until a first table is accepted.
    pub snapshot: ArcSwapOption<Snapshot>,
    /// Its metrics.
    pub metrics: Metrics,
    /// Its access log, when configured.
    pub access_log: Option<AccessLog>,
    /// The reason the last table was refused, if the last attempt failed.
    pub last_rejection: ArcSwapOption<String>,
    /// Where the table in force came from, for `/readyz` and `/table`, when the source says
    /// more than the config does (e.g. `last-known-good ... (control plane unreachable)`).
    pub source_note: ArcSwapOption<String>,
    /// The connector hedged requests use (the ordinary path uses Pingora's own).
    pub connector: SharedConnector,
    /// Endpoint stats carried across snapshots; only the (single) applier locks it.
    book: Mutex<StatsBook>,
    /// Snapshots swapped out while requests may still hold them; see [`Retired`].
    retired: Arc<Retired>,
}

/// Snapshots that were replaced, kept until no request holds them any more and then freed by the
/// reaper thread. Without this, the last request to finish with an old snapshot would free it on
/// a proxy worker thread: for a table of 100,000 endpoints that is tens of milliseconds during
/// which that worker serves nobody. Only the applier and the reaper lock the list, never a
/// request.
#[derive(Debug, Default)]
pub struct Retired {
    list: Mutex<Vec<Arc<Snapshot>>>,
}

/// How often the reaper looks for snapshots nobody holds.
const REAP_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Retired {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Snapshot>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `snap` until it is free.
    pub fn push(&self, snap: Arc<Snapshot>) {
        self.lock().push(snap);
    }

    /// Frees the snapshots that only this list still holds; returns how many remain.
    pub fn reap(&self) -> usize {
        // Take the free ones out under the lock, drop them after it.
        let free: Vec<Arc<Snapshot>> = {
            let mut list = self.lock();
            let (free, keep) = list.drain(..).partition(|s| Arc::strong_count(s) == 1);
            *list = keep;
            free
        };
        drop(free);
        self.lock().len()
    }

    /// Snapshots still waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the reaper thread; it stops when the gateway is gone.
    fn start(me: &Arc<Retired>) -> std::io::Result<()> {
        let weak = Arc::downgrade(me);
        std::thread::Builder::new()
            .name("snapshot-reaper".into())
            .spawn(move || {
                // Freeing a large snapshot is background work too.
                crate::sync::lower_thread_priority();
                while let Some(r) = weak.upgrade() {
                    r.reap();
                    drop(r);
                    std::thread::sleep(REAP_EVERY);
                }
            })
            .map(|_| ())
    }
}

impl Gateway {
    /// Creates the gateway's state and starts its access log.
    pub fn new(config: GatewayConfig) -> anyhow::Result<Arc<Gateway>> {
        let metrics = Metrics::new()?;
        let access_log = match &config.access_log {
            Some((path, allow)) => Some(
                AccessLog::start(
                    path.clone(),
                    allow.clone(),
                    metrics.access_log_dropped.clone(),
                )
                .map_err(|e| anyhow::anyhow!("access_log.path {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let retired = Arc::new(Retired::default());
        Retired::start(&retired)?;
        let connector = SharedConnector(Arc::new(Connector::new(Some(ConnectorOptions::new(
            config.upstream_keepalive_pool,
        )))));
        Ok(Arc::new(Gateway {
            config,
            snapshot: ArcSwapOption::empty(),
            metrics,
            access_log,
            last_rejection: ArcSwapOption::empty(),
            source_note: ArcSwapOption::empty(),
            connector,
            book: Mutex::new(StatsBook::new()),
            retired,
        }))
    }

    /// Compiles a validated table and swaps it in. Requests already running keep the snapshot
    /// they loaded; new ones see this one.
    pub fn apply(&self, table: Table) {
        let version = table.version;
        let snap = {
            let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            Snapshot::build(
                table,
                &self.config.region,
                self.config.timeouts,
                &self.metrics,
                &mut book,
            )
        };
        if let Some(old) = self.snapshot.swap(Some(Arc::new(snap))) {
            self.retired.push(old);
        }
        self.retired.reap();
        self.last_rejection.store(None);
        self.metrics
            .table_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.metrics.table_applies.inc();
        tracing::info!(region = %self.config.region, version, "routing table applied");
    }

    /// Records that a table was refused; the table in force stays.
    pub fn reject(&self, reason: String) {
        self.metrics.table_rejections.inc();
        tracing::warn!(region = %self.config.region, %reason, "routing table rejected; keeping the table in force");
        self.last_rejection.store(Some(Arc::new(reason)));
    }

    /// Replaced snapshots not yet freed.
    pub fn retired(&self) -> &Retired {
        &self.retired
    }

    /// True once a table is in force.
    pub fn ready(&self) -> bool {
        self.snapshot.load().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn gateway() -> Arc<Gateway> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let text = std::fs::read_to_string(root.join("gateway.example.yaml")).expect("config");
        let mut cfg = GatewayConfig::parse(&text, &root).expect("valid config");
        cfg.access_log = None;
        Gateway::new(cfg).expect("gateway")
    }

    fn table(version: u64) -> Table {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let text = std::fs::read_to_string(root.join("table.example.yaml")).expect("table");
        let mut t = meridian_api::load::parse_table(&text).expect("valid table");
        t.version = version;
        t
    }

    #[test]
    fn a_replaced_snapshot_waits_for_its_last_reader_then_the_reaper_frees_it() {
        let gw = gateway();
        gw.apply(table(1));
        assert!(gw.retired().is_empty(), "nothing replaced yet");

        // A request holds snapshot 1 while snapshot 2 goes in.
        let held = gw.snapshot.load_full().expect("snapshot 1");
        gw.apply(table(2));
        assert_eq!(gw.retired().len(), 1, "snapshot 1 waits for its reader");
        assert_eq!(
            Arc::strong_count(&held),
            2,
            "the request and the retired list"
        );

        // The request ends. The list still holds a reference, so the request's thread only
        // decrements a count; freeing is the reaper's job.
        let weak = Arc::downgrade(&held);
        drop(held);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while weak.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the reaper never freed it"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(gw.retired().is_empty());

        // A snapshot nobody holds is freed at the next apply at the latest.
        gw.apply(table(3));
        assert_eq!(gw.retired().reap(), 0);
    }
}
