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
        self.snapshot.store(Some(Arc::new(snap)));
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

    /// True once a table is in force.
    pub fn ready(&self) -> bool {
        self.snapshot.load().is_some()
    }
}
