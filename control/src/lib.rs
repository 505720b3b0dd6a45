//! Meridian's control plane: it health-checks every endpoint, resolves DNS names within their
//! TTL, probes inter-region RTT, builds one routing table per region from the operator's intent,
//! and publishes the tables to gateways by long poll (see DESIGN.md, "The control loop").
//!
//! Data flow: the health checker ([`health`]), the DNS watcher ([`dns`]), the RTT prober
//! ([`rtt`]), the intent watcher ([`intent_watch`]) and pushes through the API ([`publisher`])
//! all send events to the reconciler ([`reconcile`]), the only owner of the control plane's view.
//! It rebuilds the tables with the pure [`builder`], versions changed ones, audits them
//! ([`audit`]), saves versions ([`store`]) and hands them to the [`hub`], where long polls wait.
//!
//! This crate has no Pingora in it.

pub mod audit;
pub mod builder;
pub mod config;
pub mod diff;
pub mod dns;
pub mod health;
pub mod hub;
pub mod intent_watch;
pub mod publisher;
pub mod reconcile;
pub mod rtt;
pub mod run;
pub mod store;

pub use config::ControlConfig;
pub use run::{run_blocking, start, start_with_resolver, Running};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
