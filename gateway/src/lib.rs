//! Meridian's data plane: a Pingora proxy that routes each request to the fastest healthy
//! endpoint, splits traffic between subsets by weight, and serves from an immutable snapshot of
//! the routing table swapped in whole.

pub mod accesslog;
pub mod admin;
pub mod balance;
pub mod budget;
pub mod config;
pub mod control_cli;
pub mod control_sync;
pub mod demo;
pub mod errors;
pub mod h1;
pub mod headers;
pub mod hedge;
pub mod idle;
pub mod latency;
pub mod locality;
pub mod metrics;
pub mod outlier;
pub mod proxy;
pub mod request;
pub mod retry;
pub mod routing;
pub mod rtt_probe;
pub mod server;
pub mod snapshot;
pub mod split;
pub mod state;
pub mod sync;
pub mod tls;
pub mod trace;
pub mod validate;
