//! DNS names of endpoints: each name has a task that resolves it, sends the addresses to the
//! reconciler when they change, and resolves again when the answer's TTL runs out. The TTL of an
//! answer is the minimum over every record in it, so for a CNAME chain it is the smallest TTL in
//! the chain. A failed resolution keeps the last addresses (static stability) and is retried
//! with backoff.
//!
//! Resolution goes through the [`Resolve`] trait: [`HickoryResolve`] in production (hickory's
//! tokio resolver, its own cache turned off so every resolution asks the name server), and an
//! injected resolver in tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::reconcile::Event;

/// One answer: the addresses and how long they may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Addresses, sorted and without duplicates.
    pub ips: Vec<IpAddr>,
    /// The smallest TTL of every record in the answer (CNAMEs included).
    pub ttl: Duration,
}

/// Something that resolves a host name.
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `host` to its addresses.
    async fn resolve(&self, host: &str) -> Result<Resolved, String>;
}

/// The production resolver.
pub struct HickoryResolve(TokioResolver);

impl std::fmt::Debug for HickoryResolve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HickoryResolve")
    }
}

impl HickoryResolve {
    /// A resolver asking `servers` over UDP, or the system's name servers when empty.
    pub fn new(servers: &[SocketAddr]) -> Result<HickoryResolve, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| format!("system DNS config: {e}"))?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut c = ConnectionConfig::udp();
                    c.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![c])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), name_servers),
                provider,
            )
        };
        let opts = builder.options_mut();
        // Our own schedule follows the TTL; hickory's cache would answer from memory instead.
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let r = builder.build().map_err(|e| format!("DNS resolver: {e}"))?;
        Ok(HickoryResolve(r))
    }
}

#[async_trait]
impl Resolve for HickoryResolve {
    async fn resolve(&self, host: &str) -> Result<Resolved, String> {
        let lookup = self.0.lookup_ip(host).await.map_err(|e| e.to_string())?;
        let records = lookup.as_lookup().answers();
        let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
        let mut ips: Vec<IpAddr> = lookup.iter().collect();
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            return Err(format!("{host}: no address"));
        }
        Ok(Resolved {
            ips,
            ttl: Duration::from_secs(u64::from(ttl)),
        })
    }
}

/// When to resolve again: at the TTL, but never sooner than `min_refresh`.
pub fn refresh_after(ttl: Duration, min_refresh: Duration) -> Duration {
    ttl.max(min_refresh)
}

/// The name tasks.
pub struct DnsWatcher {
    resolver: Arc<dyn Resolve>,
    min_refresh: Duration,
    events: mpsc::UnboundedSender<Event>,
    tasks: HashMap<String, AbortHandle>,
}

impl std::fmt::Debug for DnsWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsWatcher")
            .field("names", &self.tasks.len())
            .finish()
    }
}

impl Drop for DnsWatcher {
    fn drop(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }
}

impl DnsWatcher {
    /// A watcher sending changes to `events`.
    pub fn new(
        resolver: Arc<dyn Resolve>,
        min_refresh: Duration,
        events: mpsc::UnboundedSender<Event>,
    ) -> DnsWatcher {
        DnsWatcher {
            resolver,
            min_refresh,
            events,
            tasks: HashMap::new(),
        }
    }

    /// Watches exactly `names`. Returns the names no longer watched (their addresses should be
    /// forgotten).
    pub fn sync(&mut self, names: &BTreeSet<String>) -> Vec<String> {
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for n in &gone {
            if let Some(t) = self.tasks.remove(n) {
                t.abort();
            }
        }
        for n in names {
            if !self.tasks.contains_key(n) {
                let t = tokio::spawn(watch_name(
                    n.clone(),
                    self.resolver.clone(),
                    self.min_refresh,
                    self.events.clone(),
                ));
                self.tasks.insert(n.clone(), t.abort_handle());
            }
        }
        gone
    }
}

async fn watch_name(
    host: String,
    resolver: Arc<dyn Resolve>,
    min_refresh: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut last: Option<Vec<IpAddr>> = None;
    let mut backoff = min_refresh;
    loop {
        let wait = match resolver.resolve(&host).await {
            Ok(r) => {
                backoff = min_refresh;
                if last.as_ref() != Some(&r.ips) {
                    tracing::info!(%host, ips = ?r.ips, ttl_s = r.ttl.as_secs(), "DNS name resolved");
                    last = Some(r.ips.clone());
                    if events
                        .send(Event::Dns {
                            host: host.clone(),
                            ips: r.ips,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                refresh_after(r.ttl, min_refresh)
            }
            Err(e) => {
                tracing::warn!(%host, "DNS resolution failed; keeping the last addresses: {e}");
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                w
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Resolved names, as the builder takes them.
pub type ResolvedNames = BTreeMap<String, Vec<IpAddr>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers from a script; counts calls.
    struct Scripted {
        answers: Mutex<Vec<Resolved>>,
        calls: Mutex<Vec<tokio::time::Instant>>,
    }

    #[async_trait]
    impl Resolve for Scripted {
        async fn resolve(&self, _host: &str) -> Result<Resolved, String> {
            self.calls
                .lock()
                .expect("calls")
                .push(tokio::time::Instant::now());
            let mut a = self.answers.lock().expect("answers");
            if a.len() > 1 {
                Ok(a.remove(0))
            } else {
                a.first().cloned().ok_or_else(|| "no answer".to_string())
            }
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test(start_paused = true)]
    async fn names_are_resolved_again_when_their_ttl_runs_out() {
        let script = Arc::new(Scripted {
            answers: Mutex::new(vec![
                Resolved {
                    ips: vec![ip(1)],
                    ttl: Duration::from_secs(5),
                },
                Resolved {
                    ips: vec![ip(2)],
                    ttl: Duration::from_secs(30),
                },
            ]),
            calls: Mutex::new(Vec::new()),
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut w = DnsWatcher::new(script.clone(), Duration::from_secs(1), tx);
        let start = tokio::time::Instant::now();
        w.sync(&BTreeSet::from(["svc.internal".to_string()]));
        let first = rx.recv().await.expect("first answer");
        assert!(matches!(first, Event::Dns { ref ips, .. } if *ips == vec![ip(1)]));
        let second = rx.recv().await.expect("second answer");
        assert!(matches!(second, Event::Dns { ref ips, .. } if *ips == vec![ip(2)]));
        let calls = script.calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[1] - start,
            Duration::from_secs(5),
            "re-resolved at the TTL"
        );
    }

    #[test]
    fn a_tiny_ttl_is_floored() {
        let m = Duration::from_secs(1);
        assert_eq!(refresh_after(Duration::ZERO, m), m);
        assert_eq!(
            refresh_after(Duration::from_secs(60), m),
            Duration::from_secs(60)
        );
    }
}
