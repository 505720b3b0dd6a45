//! In-process mock HTTP upstreams for Meridian's end-to-end tests and the
//! `meridian demo` command.
//!
//! Each [`MockUpstream`] is a real hyper server on a real socket bound to
//! `127.0.0.1:0`. It speaks HTTP/1.1 and, with prior knowledge, h2c. It can
//! be slowed down ([`Latency`]), broken ([`Fault`]), marked unhealthy, and
//! inspected (request counters and recorded bodies).
//!
//! Every response carries `x-upstream: <name>` and echoes some request
//! headers back (see [`ECHOED_HEADERS`]): `x-meridian-attempt` as
//! `x-seen-attempt`, `traceparent` as `x-seen-traceparent`, `x-request-id` as
//! `x-seen-request-id`, and `x-forwarded-for`, `-proto` and `-host` as
//! `x-seen-forwarded-for`, `-proto` and `-host`.
//! `GET /healthz` answers `200 ok` or `503 unhealthy` and is counted
//! separately from ordinary requests.
//!
//! Request handling, in order: count the request when its head arrives,
//! snapshot the fault and draw a latency sample, read and record the whole
//! body, then (unless hanging) sleep for the latency and answer.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use meridian_testkit::{Fault, Latency, MockUpstream, UpstreamConfig};
//!
//! let up = MockUpstream::start(
//!     UpstreamConfig::new("alpha").latency(Latency::Fixed(Duration::from_millis(5))),
//! )
//! .await?;
//! println!("listening on {}", up.addr());
//! up.set_fault(Fault::Refuse); // connections are refused now
//! up.set_fault(Fault::None); // same port, serving again
//! up.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! Non-async callers use [`start_blocking`], which runs the upstreams on a
//! dedicated runtime kept alive by the returned [`UpstreamRuntime`].

mod config;
mod conn;
mod fault;
mod latency;
mod runtime;
mod service;
mod upstream;

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::time::Instant;

pub use config::UpstreamConfig;
pub use fault::{Fault, RESET_MISSING_BYTES};
pub use latency::{Latency, MAX_SAMPLE};
pub use runtime::{start_blocking, UpstreamRuntime, BLOCKING_WORKER_THREADS};
pub use service::{ECHOED_HEADERS, HEALTH_PATH, UPSTREAM_HEADER};
pub use upstream::{MockUpstream, MAX_RECORDED_BODIES};

/// Interval at which [`assert_eventually`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `f` every [`POLL_INTERVAL`] (10 ms) until it returns `true`.
///
/// `f` is checked once immediately and once more at the deadline. Time is
/// measured with tokio's clock, so this also works with paused time.
///
/// # Panics
///
/// Panics with a message containing `what` if `f` is still `false` after
/// `deadline`.
pub async fn assert_eventually<F: FnMut() -> bool>(deadline: Duration, what: &str, mut f: F) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - elapsed)).await;
    }
}
