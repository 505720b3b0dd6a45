//! Starting a control plane: in this process for tests and benchmarks ([`start`]), or as the
//! `meridian control` command ([`run_blocking`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::audit::Audit;
use crate::config::ControlConfig;
use crate::dns::{DnsWatcher, HickoryResolve, Resolve};
use crate::health::Checker;
use crate::hub::Hub;
use crate::reconcile::{Event, Reconciler};
use crate::store::Store;

/// Reported RTTs queued for the smoother at most (one entry per report that carries any).
const RTT_REPORT_QUEUE: usize = 4096;

/// A running control plane; its tasks stop when it is dropped.
#[derive(Debug)]
pub struct Running {
    /// The API's address.
    pub addr: SocketAddr,
    /// Shared state (status, tables).
    pub hub: Arc<Hub>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a control plane with the system's (or the configured) DNS resolver.
pub async fn start(cfg: ControlConfig) -> anyhow::Result<Running> {
    let resolver = HickoryResolve::new(&cfg.dns_servers).map_err(anyhow::Error::msg)?;
    start_with_resolver(cfg, Arc::new(resolver)).await
}

/// Starts a control plane resolving names with `resolver`.
pub async fn start_with_resolver(
    cfg: ControlConfig,
    resolver: Arc<dyn Resolve>,
) -> anyhow::Result<Running> {
    let store = Store::open(&cfg.state_dir)
        .with_context(|| format!("state_dir {}", cfg.state_dir.display()))?;
    let audit = Arc::new(
        Audit::open(&cfg.audit_log)
            .with_context(|| format!("audit_log {}", cfg.audit_log.display()))?,
    );
    if !cfg.tokens_without_role.is_empty() {
        tracing::warn!(
            tokens = %cfg.tokens_without_role.join(", "),
            "tokens without a role are gateway tokens (tables and reports only); give people and \
             tools that push the intent or read the status `{{ token: ..., role: operator }}`"
        );
    }
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    // Gateways' reported RTTs, validated by the hub, on their way to the smoother. Bounded: a
    // flood of reports drops samples rather than memory.
    let (rtt_reports_tx, rtt_reports_rx) = mpsc::channel(RTT_REPORT_QUEUE);
    let hub = Arc::new(Hub::new(
        cfg.tokens.clone(),
        tx.clone(),
        rtt_reports_tx,
        audit,
        cfg.long_poll_max,
    ));
    let init = crate::intent_watch::initial(&cfg.intent, &store);
    *hub.watched_hash.lock().unwrap_or_else(|p| p.into_inner()) = init.watched_hash.clone();
    if let Some(e) = &init.error {
        tracing::error!(path = %cfg.intent.display(), "intent files refused:\n{e}");
        hub.set_intent_error(Some(e.clone()));
    }
    if let Some((intent, source)) = init.intent {
        let _ = tx.send(Event::Intent {
            intent: Box::new(intent),
            source,
            reply: None,
        });
    } else {
        tracing::warn!("no valid intent yet; tables are published once one is pushed or written");
    }
    let (rtt_tx, rtt_rx) = watch::channel(Default::default());
    let checker = Checker::new(cfg.health_concurrency, cfg.health_keep_alive, tx.clone());
    let dns = DnsWatcher::new(resolver, cfg.dns_min_refresh, tx.clone());
    let reconciler = Reconciler::new(hub.clone(), store, checker, dns, rtt_tx, cfg.warmup);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let tasks = vec![
        tokio::spawn(reconciler.run(rx)),
        tokio::spawn(crate::intent_watch::watch(
            cfg.intent.clone(),
            cfg.intent_poll,
            init.watched_hash,
            hub.clone(),
        )),
        tokio::spawn(crate::rtt::run(
            rtt_rx,
            rtt_reports_rx,
            cfg.rtt_interval,
            cfg.rtt_endpoints,
            tx,
        )),
        tokio::spawn(crate::publisher::serve(listener, hub.clone())),
    ];
    tracing::info!(%addr, intent = %cfg.intent.display(), "meridian control plane listening");
    Ok(Running { addr, hub, tasks })
}

/// `meridian control --config PATH [--ports-file P]`: runs until SIGINT or SIGTERM. The ports
/// file gets `{"listen": "ip:port"}` once the API listens.
pub fn run_blocking(config: &Path, ports_file: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = ControlConfig::load(config)
        .map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", config.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("meridian-control")
        .build()?;
    rt.block_on(async move {
        let running = start(cfg).await?;
        if let Some(p) = ports_file {
            let body = serde_json::json!({ "listen": running.addr.to_string() }).to_string();
            crate::store::write_atomic(&p, body.as_bytes())?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("meridian control plane stopping");
        drop(running);
        Ok(())
    })
}
