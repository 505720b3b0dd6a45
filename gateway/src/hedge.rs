//! Hedged requests: a second attempt raced against a slow first one.
//!
//! Pingora's proxy loop drives one upstream attempt at a time, so a hedged request takes its own
//! path from `request_filter`: attempts are driven through a Pingora HTTP connector, raced, and
//! the first to deliver response headers (that the route would not retry) wins and is streamed
//! to the client. The loser is dropped, so its connection is closed rather than pooled half-read.
//!
//! Only idempotent requests without a body take this path. The delay is fixed or the route's live
//! percentile (after `min_samples`); the hedge goes to another endpoint, in another zone when
//! there is one, and spends one token from the route's budget. A failed attempt is retried within
//! the route's retry policy as on the ordinary path.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use tokio::task::JoinSet;

use crate::balance::{now_ns, InflightGuard};
use crate::errors::{self, CIRCUIT_ENDPOINT, TOTAL_TIMEOUT};
use crate::metrics::RetryReason;
use crate::proxy::{decorate_response, forward_headers, peer_for};
use crate::request::Ctx;
use crate::retry;
use crate::snapshot::{EndpointRt, PickOpts, Picked, RouteRt};
use crate::state::Gateway;

/// True when this request takes the hedged path.
pub fn applies(session: &Session, ctx: &Ctx) -> bool {
    let Some(r) = ctx.route_rt() else {
        return false;
    };
    let req = session.req_header();
    let no_body = req.headers.get(http::header::TRANSFER_ENCODING).is_none()
        && req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    r.hedge.is_some() && ctx.idempotent && !ctx.hop_limited && no_body
}

/// The hedge delay now, or `None` while the adaptive estimate lacks samples.
pub fn delay(r: &RouteRt, now: u64) -> Option<Duration> {
    let h = r.hedge.as_ref()?;
    if let Some(ms) = h.delay_ms {
        return Some(Duration::from_millis(ms));
    }
    let a = h.adaptive.as_ref()?;
    let (p, samples) = r.state.latency.percentile(a.percentile, now);
    (samples >= a.min_samples).then(|| p.max(Duration::from_millis(a.min_delay_ms)))
}

/// One attempt: the endpoint, its in-flight slot, and when it started.
struct Leg {
    tier: usize,
    ep: EndpointRt,
    _guard: InflightGuard,
    started: Instant,
    hedge: bool,
}

type Outcome = (Leg, Result<HttpSession>);
type LegFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Connects, sends the request head and reads the response head.
async fn run_leg(
    connector: std::sync::Arc<Connector>,
    peer: pingora::prelude::HttpPeer,
    req: pingora::http::RequestHeader,
    leg: Leg,
) -> Outcome {
    let res = async {
        let (mut s, _reused) = connector.get_http_session(&peer).await?;
        s.write_request_header(Box::new(req)).await?;
        s.finish_request_body().await?;
        s.read_response_header().await?;
        Ok(s)
    }
    .await;
    (leg, res)
}

/// Serves one request on the hedged path. Returns once the response is written or failed.
pub async fn serve(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let (Some(snap), Some(ri)) = (ctx.snap.clone(), ctx.route) else {
        return Err(Error::new(errors::NO_ENDPOINT));
    };
    let r = &snap.routes[ri];
    let subset = r.subsets[ctx.subset].subset.clone();
    let first = ctx.first_pick(r, &subset)?;
    ctx.admit(&subset)?;
    let idle = gw.config.upstream_idle_timeout;
    let connector = gw.connector.0.clone();
    let mut legs: JoinSet<Outcome> = JoinSet::new();
    let prep = |ctx: &mut Ctx, session: &Session, pick: (usize, EndpointRt), hedge: bool| {
        prepare_leg(ctx, session, r, &subset, pick, hedge, &connector, idle)
    };
    legs.spawn(prep(ctx, session, first, false)?);
    let mut hedge_at = delay(r, now_ns()).map(|d| tokio::time::Instant::now() + d);
    let deadline = ctx.deadline.map(tokio::time::Instant::from_std);
    let mut last_err: Option<Box<Error>> = None;
    let mut held: Option<(Leg, HttpSession)> = None;
    let (leg, mut up) = loop {
        let hedge_sleep = async {
            match hedge_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let total_sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = legs.join_next() => {
                let Some(done) = done else {
                    // Nothing in flight: a held retryable answer is the best there is.
                    if let Some(h) = held.take() {
                        break h;
                    }
                    return Err(last_err.unwrap_or_else(|| Error::new(errors::NO_ENDPOINT)));
                };
                let (leg, res) = done.map_err(|e| Error::because(ErrorType::InternalError, "hedge task", e))?;
                let now = now_ns();
                match res {
                    Ok(s) => {
                        let code = s.response_header().map_or(502, |h| h.status.as_u16());
                        r.state.latency.record(leg.started.elapsed(), now);
                        leg.ep.stats.observe(leg.started.elapsed(), now);
                        record_outcome(ctx, &leg.ep, code < 500, now);
                        if !r.retry.retry_on_status.contains(&code) {
                            break (leg, s);
                        }
                        // A retryable status: keep it unless something better arrives.
                        if legs.is_empty() && ctx.grant_retry(RetryReason::Status, false) {
                            if let Some((tier, ep, _)) = ctx.next.take() {
                                legs.spawn(prep(ctx, session, (tier, ep), false)?);
                            }
                        }
                        held = Some((leg, s));
                    }
                    Err(mut e) => {
                        leg.ep.stats.observe(leg.started.elapsed(), now);
                        record_outcome(ctx, &leg.ep, false, now);
                        e.as_up();
                        let reason = retry::classify(&e);
                        if legs.is_empty() && held.is_none() {
                            if let Some(reason) = reason {
                                if ctx.grant_retry(reason, false) {
                                    if let Some((tier, ep, _)) = ctx.next.take() {
                                        legs.spawn(prep(ctx, session, (tier, ep), false)?);
                                    }
                                }
                            }
                        }
                        last_err = Some(e);
                    }
                }
            }
            _ = hedge_sleep => {
                hedge_at = None;
                if legs.len() == 1 {
                    if let Some(next) = pick_hedge(ctx, r) {
                        if r.state.budget.try_spend(now_ns()) {
                            r.state.counters.hedges.inc();
                            legs.spawn(prep(ctx, session, next, true)?);
                        } else {
                            r.state.counters.budget_exhausted.inc();
                        }
                    }
                }
            }
            _ = total_sleep => {
                return Err(Error::explain(TOTAL_TIMEOUT, "no attempt answered within the route's total timeout"));
            }
        }
    };
    // The losers are cancelled here: their connections close instead of going back half-read.
    legs.abort_all();
    if leg.hedge {
        r.state.counters.hedge_wins.inc();
    }
    ctx.region = leg.tier;
    ctx.upstream = Some(leg.ep.addr);
    let mut resp: ResponseHeader = up
        .response_header()
        .cloned()
        .ok_or_else(|| Error::new(ErrorType::InvalidHTTPHeader))?;
    decorate_response(gw.config.debug_headers, &mut resp, ctx)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        loop {
            if ctx.deadline.is_some_and(|d| Instant::now() > d) {
                return Err(Error::new(TOTAL_TIMEOUT));
            }
            match up.read_response_body().await {
                Ok(Some(chunk)) => session.write_response_body(Some(chunk), false).await?,
                Ok(None) => break,
                Err(mut e) => {
                    e.as_up();
                    return Err(e);
                }
            }
        }
        session.write_response_body(None::<Bytes>, true).await?;
    }
    let peer = peer_for(r, &leg.ep, ctx.deadline, idle);
    connector.release_http_session(up, &peer, Some(idle)).await;
    drop(leg);
    Ok(())
}

/// Takes the endpoint's in-flight slot and builds the attempt's future.
#[allow(clippy::too_many_arguments)]
fn prepare_leg(
    ctx: &mut Ctx,
    session: &Session,
    r: &RouteRt,
    subset: &crate::snapshot::SubsetRt,
    (tier, ep): (usize, EndpointRt),
    hedge: bool,
    connector: &std::sync::Arc<Connector>,
    idle: Duration,
) -> Result<LegFuture> {
    let Some(guard) = subset.endpoint_slot(&ep) else {
        return Err(Error::new(CIRCUIT_ENDPOINT));
    };
    ctx.tried.push(ep.addr);
    ctx.attempts += 1;
    let mut req = session.req_header().clone();
    forward_headers(session, &mut req, ctx)?;
    let peer = peer_for(r, &ep, ctx.deadline, idle);
    let leg = Leg {
        tier,
        _guard: guard,
        ep,
        started: Instant::now(),
        hedge,
    };
    Ok(Box::pin(run_leg(connector.clone(), peer, req, leg)))
}

/// Passive health for a finished leg.
pub(crate) fn record_outcome(ctx: &mut Ctx, ep: &EndpointRt, ok: bool, now: u64) {
    let Some(subset) = ctx.subset_rt().cloned() else {
        return;
    };
    if ok {
        ep.stats.outlier.success(&subset.outlier, now);
        return;
    }
    use crate::outlier::Verdict;
    match ep
        .stats
        .outlier
        .failure(&subset.outlier, now, || subset.ejection_counts(now))
    {
        Verdict::Ejected(_) => subset.state.counters.ejections.inc(),
        Verdict::CapReached => subset.state.counters.ejections_skipped.inc(),
        Verdict::None => {}
    }
}

/// The hedge's endpoint: untried, preferably in a zone the request has not used.
pub(crate) fn pick_hedge(ctx: &mut Ctx, r: &RouteRt) -> Option<(usize, EndpointRt)> {
    let subset = r.subsets[ctx.subset].subset.clone();
    let used_zones: Vec<std::sync::Arc<str>> = subset
        .tiers
        .iter()
        .flatten()
        .filter(|e| ctx.tried.contains(&e.addr))
        .map(|e| e.zone.clone())
        .collect();
    let opts = PickOpts {
        allowed: &r.allowed,
        restricted: r.restricted,
        tried: &ctx.tried,
        avoid: ctx.avoid(),
        now: now_ns(),
    };
    // Two draws: keep the first that lands in a new zone, else the first draw.
    let mut fallback = None;
    for _ in 0..2 {
        if let Picked::Endpoint {
            tier,
            ep,
            fail_open: false,
        } = subset.pick(&mut ctx.rng, &opts)
        {
            if !used_zones.contains(&ep.zone) {
                return Some((tier, ep.clone()));
            }
            fallback.get_or_insert((tier, ep.clone()));
        }
    }
    fallback
}
