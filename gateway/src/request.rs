//! Per-request state and the decisions both HTTP engines share: the first pick, admission to a
//! subset, whether a failure is retried and where, and passive health after each attempt. The
//! engines ([`crate::h1`], and Pingora's proxy in [`crate::proxy`]) only move bytes and call
//! these.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use pingora::{Error, Result};
use smallvec::SmallVec;

use crate::balance::{now_ns, InflightGuard};
use crate::errors::{CIRCUIT_ENDPOINT, CIRCUIT_SUBSET, NO_ENDPOINT, RESIDENCY};
use crate::headers::Headers;
use crate::metrics::{RequestHandles, RetryReason};
use crate::outlier::Verdict;
use crate::retry;
use crate::snapshot::{EndpointRt, PickOpts, Picked, RouteRt, Snapshot, StickyKey, SubsetRt};

/// Releases one in-flight slot of a subset on drop.
#[derive(Debug)]
pub struct SubsetGuard(Arc<SubsetRt>);

impl Drop for SubsetGuard {
    fn drop(&mut self) {
        self.0.state.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    pub(crate) start: Instant,
    pub(crate) rng: fastrand::Rng,
    pub(crate) snap: Option<Arc<Snapshot>>,
    pub(crate) route: Option<usize>,
    pub(crate) subset: usize,
    pub(crate) region: usize,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) guard: Option<InflightGuard>,
    pub(crate) subset_guard: Option<SubsetGuard>,
    pub(crate) upstream_start: Option<Instant>,
    /// Upstream response headers of the current attempt arrived.
    pub(crate) got_headers: bool,
    /// Response headers went to the client: nothing may be retried any more.
    pub(crate) sent_downstream: bool,
    pub(crate) request_id: HeaderValue,
    pub(crate) traceparent: HeaderValue,
    pub(crate) deadline: Option<Instant>,
    pub(crate) idempotent: bool,
    /// The request came from another gateway (it carried `x-meridian-attempt`).
    pub(crate) hop_limited: bool,
    /// Attempts started.
    pub(crate) attempts: u32,
    /// Endpoints this request tried (inline up to 4: no allocation on the common path).
    pub(crate) tried: SmallVec<[SocketAddr; 4]>,
    /// The endpoint a granted retry will use, and why the retry happens.
    pub(crate) next: Option<(usize, EndpointRt, RetryReason)>,
    pub(crate) stale_retried: bool,
    pub(crate) fail_open: bool,
    /// Failed attempts per region index (regions past 8 share the last slot).
    pub(crate) region_failures: [u8; 8],
    /// The failure of a hedged request, for logging.
    pub(crate) hedge_error: Option<Box<Error>>,
}

impl Default for Ctx {
    fn default() -> Ctx {
        Ctx::new()
    }
}

impl Ctx {
    /// Regions to avoid on a retry: those where this request failed twice or more.
    pub(crate) fn avoid(&self) -> u64 {
        self.region_failures
            .iter()
            .enumerate()
            .filter(|(_, n)| **n >= 2)
            .fold(0, |m, (i, _)| m | (1 << i))
    }

    pub(crate) fn route_rt(&self) -> Option<&RouteRt> {
        Some(&self.snap.as_ref()?.routes[self.route?])
    }

    pub(crate) fn subset_rt(&self) -> Option<&Arc<SubsetRt>> {
        Some(&self.route_rt()?.subsets[self.subset].subset)
    }

    pub(crate) fn handles(&self) -> Option<&Arc<RequestHandles>> {
        let snap = self.snap.as_ref()?;
        match self.route {
            Some(r) => snap.routes[r].subsets[self.subset].handles.get(self.region),
            None => Some(&snap.unrouted),
        }
    }

    /// The route's and the subset's names, or empty ones before routing.
    pub(crate) fn names(&self) -> (&str, &str) {
        match (self.route_rt(), self.subset_rt()) {
            (Some(r), Some(s)) => (&r.name, &s.name),
            _ => ("", ""),
        }
    }

    /// The endpoint for the next attempt: the retry's, after its backoff (none after a stale
    /// connection), or the first pick.
    pub(crate) async fn next_endpoint(
        &mut self,
        r: &RouteRt,
        subset: &SubsetRt,
    ) -> Result<(usize, EndpointRt)> {
        match self.next.take() {
            Some((tier, ep, reason)) => {
                if reason != RetryReason::StaleConnection {
                    let wait = retry::backoff(&r.retry, self.attempts, &mut self.rng);
                    tokio::time::sleep(wait).await;
                }
                Ok((tier, ep))
            }
            None => self.first_pick(r, subset),
        }
    }

    /// Counts an attempt to `ep` (in region `tier`) as started and takes the endpoint's
    /// in-flight slot, or refuses it when the endpoint is at its limit.
    pub(crate) fn start_attempt(
        &mut self,
        subset: &SubsetRt,
        tier: usize,
        ep: &EndpointRt,
    ) -> Result<()> {
        let Some(guard) = subset.endpoint_slot(ep) else {
            return Err(Error::new(CIRCUIT_ENDPOINT));
        };
        self.region = tier;
        self.upstream = Some(ep.addr);
        self.tried.push(ep.addr);
        self.attempts += 1;
        self.guard = Some(guard);
        self.upstream_start = Some(Instant::now());
        Ok(())
    }

    /// Closes the current attempt for the balancer and passive health.
    pub(crate) fn end_attempt(&mut self, ok: bool) {
        let now = now_ns();
        let (Some(g), Some(t)) = (&self.guard, self.upstream_start.take()) else {
            return;
        };
        let stats = g.stats().clone();
        stats.observe(t.elapsed(), now);
        let Some(subset) = self.subset_rt().cloned() else {
            return;
        };
        if ok {
            stats.outlier.success(&subset.outlier, now);
            return;
        }
        let slot = &mut self.region_failures[self.region.min(7)];
        *slot = slot.saturating_add(1);
        let verdict = stats
            .outlier
            .failure(&subset.outlier, now, || subset.ejection_counts(now));
        let c = &subset.state.counters;
        match verdict {
            Verdict::Ejected(d) => {
                c.ejections.inc();
                tracing::warn!(subset = %subset.name, endpoint = ?self.upstream, ejected_for = ?d, "outlier ejected");
            }
            Verdict::CapReached => c.ejections_skipped.inc(),
            Verdict::None => {}
        }
    }

    /// Closes the current attempt without a verdict on the endpoint (a stale pooled connection,
    /// a client that left): its latency is learned, its health untouched.
    pub(crate) fn abandon_attempt(&mut self) {
        if let (Some(g), Some(t)) = (&self.guard, self.upstream_start.take()) {
            g.stats().observe(t.elapsed(), now_ns());
        }
    }

    /// Decides whether to retry after `reason`; on yes, picks the next endpoint and spends a
    /// budget token (except for a stale connection).
    pub(crate) fn grant_retry(&mut self, reason: RetryReason, truncated: bool) -> bool {
        let (Some(snap), Some(ri)) = (self.snap.clone(), self.route) else {
            return false;
        };
        let route = &snap.routes[ri];
        let policy = &route.retry;
        let free = reason == RetryReason::StaleConnection;
        let reached_upstream = reason != RetryReason::ConnectFailure && !free;
        // The free retry after a stale pooled connection does not use up one of the route's
        // attempts either: it was not the endpoint's failure.
        let counted = self.attempts.saturating_sub(u32::from(self.stale_retried));
        if self.sent_downstream
            || truncated
            || !retry::allows(policy, reason)
            || (reached_upstream && (!self.idempotent || self.hop_limited))
            || (!free && counted >= policy.attempts.max(1) as u32)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return false;
        }
        let state = route.state.clone();
        let opts = PickOpts {
            allowed: &route.allowed,
            restricted: route.restricted,
            tried: &self.tried,
            avoid: self.avoid(),
            now: now_ns(),
        };
        let subset = route.subsets[self.subset].subset.clone();
        let picked = match subset.pick(&mut self.rng, &opts) {
            Picked::Endpoint {
                tier,
                ep,
                fail_open,
            } => {
                // The documented fail-open policy holds for retries too: counted and shown.
                note_fail_open(&mut self.fail_open, &subset, fail_open);
                (tier, ep.clone())
            }
            // A stale connection may go back to the same endpoint on a fresh connection.
            _ if free => match self.tried.last().and_then(|a| find_endpoint(&subset, *a)) {
                Some(found) => found,
                None => return false,
            },
            _ => return false,
        };
        if !free && !state.budget.try_spend(opts.now) {
            state.counters.budget_exhausted.inc();
            return false;
        }
        state.counters.retry(reason);
        self.stale_retried |= free;
        self.next = Some((picked.0, picked.1, reason));
        true
    }
}

/// Timeouts of one attempt: (connect, per try), each within what is left of `deadline`.
pub(crate) fn attempt_waits(r: &RouteRt, deadline: Option<Instant>) -> (Duration, Duration) {
    let remaining = deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(r.timeouts.total)
        .max(Duration::from_millis(1));
    let per_try = r
        .retry
        .per_try_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(r.timeouts.read);
    (r.timeouts.connect.min(remaining), per_try.min(remaining))
}

/// Counts and remembers in `flag` (for the response header) a pick made although ejected.
fn note_fail_open(flag: &mut bool, subset: &SubsetRt, fail_open: bool) {
    if fail_open {
        *flag = true;
        subset.state.counters.fail_open.inc();
    }
}

impl Ctx {
    /// A fresh context for a request that starts now.
    pub fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            rng: fastrand::Rng::new(),
            snap: None,
            route: None,
            subset: 0,
            region: 0,
            upstream: None,
            guard: None,
            subset_guard: None,
            upstream_start: None,
            got_headers: false,
            sent_downstream: false,
            request_id: HeaderValue::from_static(""),
            traceparent: HeaderValue::from_static(""),
            deadline: None,
            idempotent: false,
            hop_limited: false,
            attempts: 0,
            tried: SmallVec::new(),
            next: None,
            stale_retried: false,
            fail_open: false,
            region_failures: [0; 8],
            hedge_error: None,
        }
    }

    /// The first attempt's endpoint, or the refusal to send back.
    pub(crate) fn first_pick(
        &mut self,
        r: &RouteRt,
        subset: &SubsetRt,
    ) -> Result<(usize, EndpointRt)> {
        let opts = PickOpts {
            allowed: &r.allowed,
            restricted: r.restricted,
            tried: &self.tried,
            avoid: 0,
            now: now_ns(),
        };
        match subset.pick(&mut self.rng, &opts) {
            Picked::Endpoint {
                tier,
                ep,
                fail_open,
            } => {
                note_fail_open(&mut self.fail_open, subset, fail_open);
                Ok((tier, ep.clone()))
            }
            Picked::Residency => {
                r.state.counters.residency_refusals.inc();
                Err(Error::explain(RESIDENCY, format!("route {}", r.name)))
            }
            Picked::Nothing => Err(Error::explain(
                NO_ENDPOINT,
                format!("subset {}", subset.name),
            )),
        }
    }

    /// Takes the request's in-flight slot in the subset, once; refuses over the limit.
    pub(crate) fn admit(&mut self, subset: &Arc<SubsetRt>) -> Result<()> {
        if self.subset_guard.is_none() {
            // Take the slot first, then check: two requests racing for the last slot cannot
            // both get it.
            let before = subset.state.inflight.fetch_add(1, Ordering::Relaxed);
            if before >= subset.limits.max_inflight {
                subset.state.inflight.fetch_sub(1, Ordering::Relaxed);
                subset.state.counters.circuit_subset.inc();
                return Err(Error::new(CIRCUIT_SUBSET));
            }
            self.subset_guard = Some(SubsetGuard(subset.clone()));
        }
        Ok(())
    }
}

/// Digits for `x-meridian-attempt`, so the usual attempt numbers need no formatting.
pub(crate) const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// A small number as a header value: static when it is a single digit.
pub(crate) fn number_value(n: u32) -> HeaderValue {
    match DIGITS.get(n as usize) {
        Some(d) => HeaderValue::from_static(d),
        None => HeaderValue::from(n),
    }
}

/// `X-Forwarded-For`: the previous value, if any, then the client's address. The address is
/// formatted into a stack buffer, so the only allocation is the header value itself.
pub(crate) fn forwarded_for(
    prev: Option<&HeaderValue>,
    ip: std::net::IpAddr,
) -> Option<HeaderValue> {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut w = &mut buf[..];
    write!(w, "{ip}").ok()?;
    let ip_len = 64 - w.len();
    match prev.map(|p| p.as_bytes()).filter(|p| !p.is_empty()) {
        None => HeaderValue::from_bytes(&buf[..ip_len]).ok(),
        Some(p) => {
            let mut v = Vec::with_capacity(p.len() + 2 + ip_len);
            v.extend_from_slice(p);
            v.extend_from_slice(b", ");
            v.extend_from_slice(&buf[..ip_len]);
            HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
        }
    }
}

pub(crate) fn find_endpoint(subset: &SubsetRt, addr: SocketAddr) -> Option<(usize, EndpointRt)> {
    subset
        .tiers
        .iter()
        .enumerate()
        .find_map(|(t, eps)| eps.iter().find(|e| e.addr == addr).map(|e| (t, e.clone())))
}

/// Picks the subset: pinning header, then sticky key, then weights.
pub(crate) fn choose_subset<H: Headers>(snap: &Snapshot, route: usize, headers: &H) -> usize {
    let r = &snap.routes[route];
    if let Some((name, map)) = &r.pin {
        if let Some(i) = headers
            .first(name.as_str())
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| map.get(v))
        {
            return *i;
        }
    }
    let key = match &r.sticky {
        Some(StickyKey::Header(h)) => headers.first(h.as_str()),
        Some(StickyKey::Cookie(c)) => {
            headers.find_map("cookie", |v| crate::split::cookie_value(v, c))
        }
        None => None,
    };
    match key {
        Some(k) if !k.is_empty() => r.splitter.for_key(k),
        _ => r.splitter.next(),
    }
}
