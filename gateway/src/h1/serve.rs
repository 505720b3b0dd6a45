//! One request on the HTTP/1 engine, from its parsed head to the last byte of its response:
//! route and split, read the body, run the attempts (retries one after another, or a hedge race),
//! relay the winner's response, then count and log it. The decisions are the shared ones in
//! [`crate::request`]; this file only sequences them and moves bytes.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora::{Error, ErrorType};
use tokio::io::AsyncWriteExt;

use super::body::{self, Body, BodyError, Relay, Sent};
use super::head::{Framing, RequestHead};
use super::timer::Timer;
use super::upstream::{self, Answer, Conn, Failure};
use super::write::{self, ClientFraming, Origin};
use super::Engine;
use crate::accesslog::{unix_ms, Entry};
use crate::balance::{now_ns, InflightGuard};
use crate::errors::{self, status_for, CIRCUIT_ENDPOINT, NO_ENDPOINT, TOTAL_TIMEOUT};
use crate::headers::Headers;
use crate::metrics::RetryReason;
use crate::request::{choose_subset, Ctx};
use crate::snapshot::{EndpointRt, RouteRt, SubsetRt};
use crate::{hedge, retry, trace};

/// The client side of one request.
pub(super) struct Client<'a> {
    /// The connection.
    pub stream: &'a mut Conn,
    /// Bytes read past the request head (body, then perhaps the next request).
    pub buf: &'a mut BytesMut,
    /// Address and TLS, for the forwarding fields.
    pub origin: Origin,
    /// Set when the server begins shutting down: an answer written after that closes.
    pub draining: &'a AtomicBool,
    /// The connection's timer, for the limits on this request's waits.
    pub timer: Timer<'a>,
}

impl Client<'_> {
    /// The server is shutting down: answer, then close. Read as each answer is written, so a
    /// request already in flight when the drain begins also closes its connection.
    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// How the request ended, for the log and the connection.
struct Done {
    /// Status sent (0: nothing could be sent).
    status: u16,
    /// Response body bytes sent.
    bytes: usize,
    /// The client connection may serve another request.
    keep: bool,
}

/// A request that will not be proxied, and how to answer it.
struct Refusal {
    code: u16,
    reject: Option<&'static str>,
    /// The request body was not (fully) read: close after answering.
    close: bool,
}

impl Refusal {
    fn of(e: &Error, close: bool) -> Refusal {
        Refusal {
            code: status_for(e),
            reject: errors::reject_reason(e),
            close,
        }
    }
}

/// Serves one request; returns true when the connection may take another.
pub(super) async fn serve(engine: &Engine, head: RequestHead, client: &mut Client<'_>) -> bool {
    let mut ctx = Ctx::new();
    ctx.request_id = trace::request_id(head.first("x-request-id"), &mut ctx.rng);
    ctx.traceparent = trace::traceparent(head.first("traceparent"), &mut ctx.rng);
    ctx.idempotent = retry::idempotent(&head.method, &head);
    ctx.hop_limited = head.has(retry::ATTEMPT_HEADER);
    let (done, error) = match proxy(engine, &head, &mut ctx, client).await {
        Ok(done) => (done, None),
        Err((refusal, e)) => {
            let done = refuse(&head, &ctx, client, &refusal).await;
            (done, e)
        }
    };
    finish(engine, &head, &mut ctx, &done, error.as_deref());
    done.keep
}

/// Writes the gateway's own answer for `r`.
async fn refuse(head: &RequestHead, ctx: &Ctx, client: &mut Client<'_>, r: &Refusal) -> Done {
    if r.code == 0 {
        return Done {
            status: 0,
            bytes: 0,
            keep: false,
        };
    }
    let grpc = head
        .first("content-type")
        .is_some_and(|v| v.starts_with(b"application/grpc"));
    let keep = head.keep_alive && !r.close && !client.draining();
    let out = write::own_response(
        r.code,
        ctx.request_id.as_bytes(),
        r.reject,
        grpc,
        !keep,
        head.method == http::Method::HEAD,
    );
    let stream = &mut *client.stream;
    let wrote = client
        .timer
        .within(Duration::from_secs(10), async {
            stream.write_all(&out).await?;
            stream.flush().await
        })
        .await;
    Done {
        status: r.code,
        bytes: 0,
        keep: keep && matches!(wrote, Ok(Ok(()))),
    }
}

type Refused = (Refusal, Option<Box<Error>>);

fn refused(code: u16, reject: Option<&'static str>, close: bool) -> Refused {
    (
        Refusal {
            code,
            reject,
            close,
        },
        None,
    )
}

/// Routes, reads the body, runs the attempts and relays the response.
async fn proxy(
    engine: &Engine,
    head: &RequestHead,
    ctx: &mut Ctx,
    client: &mut Client<'_>,
) -> Result<Done, Refused> {
    let has_body = head.framing != Framing::Empty;
    if head.method == http::Method::CONNECT {
        return Err(refused(405, None, true));
    }
    let Some(snap) = engine.gw.snapshot.load_full() else {
        return Err(refused(503, Some("no-table"), has_body));
    };
    let host = crate::headers::host_of(head.host_raw());
    let found = snap.router.find(&host, head.path(), &head.method, head);
    ctx.snap = Some(snap.clone());
    let Some(ri) = found else {
        return Err(refused(404, None, has_body));
    };
    ctx.route = Some(ri);
    ctx.subset = choose_subset(&snap, ri, head);
    let r = &snap.routes[ri];
    ctx.deadline = Some(ctx.start + r.timeouts.total);
    r.state.budget.record_request(now_ns());

    if head.expect_continue && has_body {
        let _ = client
            .stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await;
    }
    let cfg = &engine.gw.config;
    let mut body = body::read_request(
        client.stream,
        client.buf,
        head.framing,
        cfg.client_body_timeout,
        &mut client.timer,
    )
    .await
    .map_err(|e| match e {
        BodyError::Gone => refused(0, None, true),
        BodyError::Timeout => refused(408, None, true),
        BodyError::Malformed => refused(400, None, true),
    })?;
    let common = write::upstream_head(head, ctx, client.origin);
    let subset = r.subsets[ctx.subset].subset.clone();
    let hedged = r.hedge.is_some()
        && ctx.idempotent
        && !ctx.hop_limited
        && !head.upgrade
        && !matches!(body, Body::Streaming { .. });
    let won = if hedged {
        race(engine, r, &subset, ctx, &common, &body).await
    } else {
        attempts(engine, r, &subset, ctx, &common, &mut body, client).await
    };
    // A streamed body left unread on the client connection means it cannot be reused.
    let body_done = !matches!(body, Body::Streaming { .. } | Body::Broken);
    let (ans, ep, _guard) = won.map_err(|e| (Refusal::of(&e, !body_done), Some(e)))?;
    relay(engine, head, ctx, r, ans, &ep, client, body_done).await
}

/// A pooled connection to `ep`, or a new one.
async fn dial(
    engine: &Engine,
    ep: &EndpointRt,
    connect: Duration,
    timer: &mut Timer<'_>,
) -> Result<(Conn, bool), Failure> {
    if let Some(c) = ep.stats.pool.take(engine.gw.config.upstream_idle_timeout) {
        return Ok((c, true));
    }
    let c = upstream::connect(ep, connect, &engine.tls, timer).await?;
    Ok((c, false))
}

/// One attempt with a buffered (or no) body: dial, send, read the response head.
async fn attempt(
    engine: &Engine,
    r: &RouteRt,
    ep: &EndpointRt,
    out: &[u8],
    deadline: Option<Instant>,
    timer: &mut Timer<'_>,
) -> Result<Answer, Failure> {
    let (connect, wait) = crate::request::attempt_waits(r, deadline);
    let (mut conn, reused) = dial(engine, ep, connect, timer).await?;
    upstream::send(&mut conn, out, wait, reused, timer).await?;
    upstream::receive(conn, wait, reused, timer).await
}

type Won = Result<(Answer, EndpointRt, Option<InflightGuard>), Box<Error>>;

/// Attempts one after another, within the retry policy.
async fn attempts(
    engine: &Engine,
    r: &RouteRt,
    subset: &Arc<SubsetRt>,
    ctx: &mut Ctx,
    common: &[u8],
    body: &mut Body,
    client: &mut Client<'_>,
) -> Won {
    loop {
        let (tier, ep) = ctx.next_endpoint(r, subset).await?;
        ctx.admit(subset)?;
        ctx.start_attempt(subset, tier, &ep)?;
        let res = match std::mem::replace(body, Body::Empty) {
            Body::Streaming { prefix, rest } => {
                // Past the replay limit: this attempt carries the body, and once any of it is
                // sent nothing can be retried but a failed connect.
                let out = write::finish_upstream_head(common, ctx.attempts, &prefix);
                let (connect, wait) = crate::request::attempt_waits(r, ctx.deadline);
                match dial(engine, &ep, connect, &mut client.timer).await {
                    Err(f) => {
                        // Nothing was sent: keep the body for the next attempt.
                        *body = Body::Streaming { prefix, rest };
                        Err(f)
                    }
                    Ok((mut conn, reused)) => {
                        *body = Body::Broken;
                        let timer = &mut client.timer;
                        let sent = async {
                            upstream::send(&mut conn, &out, wait, reused, timer).await?;
                            body::pump_request(
                                client.stream,
                                client.buf,
                                rest,
                                &mut conn,
                                engine.gw.config.client_body_timeout,
                                timer,
                            )
                            .await
                            .map_err(|error| Failure {
                                error,
                                reused: false,
                            })
                        }
                        .await;
                        match sent {
                            Ok(()) => {
                                *body = Body::Sent;
                                upstream::receive(conn, wait, reused, &mut client.timer).await
                            }
                            Err(f) => Err(f),
                        }
                    }
                }
            }
            kept => {
                *body = kept;
                let payload: &[u8] = match &*body {
                    Body::Buffered(b) => b,
                    _ => &[],
                };
                let out = write::finish_upstream_head(common, ctx.attempts, payload);
                attempt(engine, r, &ep, &out, ctx.deadline, &mut client.timer).await
            }
        };
        // The body is no longer all in hand: no retry can carry it.
        let truncated = matches!(body, Body::Sent | Body::Broken);
        match res {
            Ok(ans) => {
                let code = ans.head.status;
                if let Some(t) = ctx.upstream_start {
                    r.state.latency.record(t.elapsed(), now_ns());
                }
                ctx.end_attempt(code < 500);
                if r.retry.retry_on_status.contains(&code)
                    && ctx.grant_retry(RetryReason::Status, truncated)
                {
                    // The answer's connection closes here, unread.
                    continue;
                }
                let guard = ctx.guard.take();
                return Ok((ans, ep, guard));
            }
            Err(f) => {
                let reason = retry::classify(&f.error);
                let stale = f.reused
                    && reason == Some(RetryReason::Reset)
                    && !ctx.stale_retried
                    && ctx.idempotent;
                if stale {
                    // Not the endpoint's fault: latency only.
                    ctx.abandon_attempt();
                } else {
                    ctx.end_attempt(false);
                }
                let again = match reason {
                    _ if stale => ctx.grant_retry(RetryReason::StaleConnection, truncated),
                    Some(reason) => ctx.grant_retry(reason, truncated),
                    None => false,
                };
                if !again {
                    return Err(f.error);
                }
            }
        }
    }
}

/// One attempt of a hedged request.
struct Leg {
    tier: usize,
    ep: EndpointRt,
    guard: InflightGuard,
    started: Instant,
    hedge: bool,
}

type LegFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, Failure>> + Send + 'a>>;
type Slot<'a> = Option<(Leg, LegFuture<'a>)>;

/// What every leg of one race shares.
struct Race<'a, 'b> {
    engine: &'a Engine,
    r: &'a RouteRt,
    subset: &'b SubsetRt,
    common: &'b [u8],
    body: &'b [u8],
}

impl<'a> Race<'a, '_> {
    /// Starts a leg, or refuses it when the endpoint is at its in-flight limit.
    fn leg(&self, ctx: &mut Ctx, target: (usize, EndpointRt), hedge: bool) -> Slot<'a> {
        let guard = self.subset.endpoint_slot(&target.1)?;
        Some(self.leg_with(ctx, target, guard, hedge))
    }

    /// A retry leg after `reason`, when the policy and the budget grant one.
    fn retry(&self, ctx: &mut Ctx, reason: RetryReason) -> Slot<'a> {
        if !ctx.grant_retry(reason, false) {
            return None;
        }
        let (tier, ep, _) = ctx.next.take()?;
        self.leg(ctx, (tier, ep), false)
    }

    /// Starts a leg that already holds its endpoint's slot.
    fn leg_with(
        &self,
        ctx: &mut Ctx,
        (tier, ep): (usize, EndpointRt),
        guard: InflightGuard,
        hedge: bool,
    ) -> (Leg, LegFuture<'a>) {
        let (engine, r) = (self.engine, self.r);
        ctx.tried.push(ep.addr);
        ctx.attempts += 1;
        let out = write::finish_upstream_head(self.common, ctx.attempts, self.body);
        let deadline = ctx.deadline;
        let target = ep.clone();
        let fut: LegFuture<'a> =
            // Legs run side by side: each has a timer of its own.
            Box::pin(async move {
                let mut timer = Timer::Fast;
                attempt(engine, r, &target, &out, deadline, &mut timer).await
            });
        let leg = Leg {
            tier,
            guard,
            ep,
            started: Instant::now(),
            hedge,
        };
        (leg, fut)
    }
}

/// What woke the race.
enum Event {
    Finished(Box<(Leg, Result<Answer, Failure>)>),
    Hedge,
    Deadline,
}

/// The hedged path: a second attempt after the hedge delay, the first usable response head wins,
/// and the other attempt is dropped with its connection (never pooled half-read).
async fn race(
    engine: &Engine,
    r: &RouteRt,
    subset: &Arc<SubsetRt>,
    ctx: &mut Ctx,
    common: &[u8],
    body: &Body,
) -> Won {
    let payload: &[u8] = match body {
        Body::Buffered(b) => b,
        _ => &[],
    };
    let first = ctx.first_pick(r, subset)?;
    ctx.admit(subset)?;
    let race = Race {
        engine,
        r,
        subset,
        common,
        body: payload,
    };
    let mut legs: [Slot<'_>; 2] = [None, None];
    legs[0] = race.leg(ctx, first, false);
    if legs[0].is_none() {
        return Err(Error::new(CIRCUIT_ENDPOINT));
    }
    let mut hedge_at = hedge::delay(r, now_ns()).map(|d| tokio::time::Instant::now() + d);
    let deadline = ctx.deadline.map(tokio::time::Instant::from_std);
    let mut last_err: Option<Box<Error>> = None;
    let mut held: Option<(Leg, Answer)> = None;
    let (winner, ans) = loop {
        let next = poll_fn(|cx| {
            let mut any = false;
            for slot in legs.iter_mut() {
                let Some((_, f)) = slot else { continue };
                any = true;
                if let Poll::Ready(res) = f.as_mut().poll(cx) {
                    if let Some((leg, _)) = slot.take() {
                        return Poll::Ready(Some((leg, res)));
                    }
                }
            }
            if any {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        });
        let event = tokio::select! {
            done = next => match done {
                Some(done) => Event::Finished(Box::new(done)),
                None => {
                    // Nothing in flight: a held retryable answer is the best there is.
                    if let Some(h) = held.take() {
                        break h;
                    }
                    return Err(last_err.unwrap_or_else(|| Error::new(NO_ENDPOINT)));
                }
            },
            _ = sleep_until(hedge_at) => Event::Hedge,
            _ = sleep_until(deadline) => Event::Deadline,
        };
        let in_flight = legs.iter().filter(|l| l.is_some()).count();
        match event {
            Event::Deadline => {
                return Err(Error::explain(
                    TOTAL_TIMEOUT,
                    "no attempt answered within the route's total timeout",
                ))
            }
            Event::Hedge => {
                hedge_at = None;
                // The endpoint's slot before the budget: a full endpoint (counted) costs no
                // token, and the first attempt goes on alone.
                let next = (in_flight == 1)
                    .then(|| hedge::pick_hedge(ctx, r))
                    .flatten()
                    .and_then(|next| Some((subset.endpoint_slot(&next.1)?, next)));
                if let Some((guard, next)) = next {
                    if r.state.budget.try_spend(now_ns()) {
                        r.state.counters.hedges.inc();
                        put(&mut legs, race.leg_with(ctx, next, guard, true));
                    } else {
                        r.state.counters.budget_exhausted.inc();
                    }
                }
            }
            Event::Finished(done) => {
                let (leg_done, res) = *done;
                let now = now_ns();
                let took = leg_done.started.elapsed();
                leg_done.ep.stats.observe(took, now);
                match res {
                    Ok(ans) => {
                        let code = ans.head.status;
                        r.state.latency.record(took, now);
                        hedge::record_outcome(ctx, &leg_done.ep, code < 500, now);
                        if !r.retry.retry_on_status.contains(&code) {
                            break (leg_done, ans);
                        }
                        // A retryable status: keep it unless something better arrives.
                        if in_flight == 0 {
                            if let Some(f) = race.retry(ctx, RetryReason::Status) {
                                put(&mut legs, f);
                            }
                        }
                        held = Some((leg_done, ans));
                    }
                    Err(f) => {
                        hedge::record_outcome(ctx, &leg_done.ep, false, now);
                        let reason = retry::classify(&f.error).filter(|_| in_flight == 0);
                        if let Some(reason) = reason.filter(|_| held.is_none()) {
                            if let Some(f) = race.retry(ctx, reason) {
                                put(&mut legs, f);
                            }
                        }
                        last_err = Some(f.error);
                    }
                }
            }
        }
    };
    // A loser's time so far is a lower bound on its latency: when that is above its
    // endpoint's estimate the balancer learns from it (a slow endpoint must not keep winning
    // first picks). Then it is dropped, closing its connection.
    let now = now_ns();
    for (loser, f) in legs.iter_mut().filter_map(Option::take) {
        drop(f);
        let took = loser.started.elapsed();
        if took.as_nanos() as f64 > loser.ep.stats.estimate(now) {
            loser.ep.stats.observe(took, now);
        }
    }
    drop(held.take());
    if winner.hedge {
        r.state.counters.hedge_wins.inc();
    }
    ctx.region = winner.tier;
    ctx.upstream = Some(winner.ep.addr);
    Ok((ans, winner.ep, Some(winner.guard)))
}

fn put<'a>(legs: &mut [Slot<'a>; 2], f: (Leg, LegFuture<'a>)) {
    if let Some(slot) = legs.iter_mut().find(|l| l.is_none()) {
        *slot = Some(f);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Relays the winning response to the client and returns the upstream connection to the pool
/// when its body was read to the end.
#[allow(clippy::too_many_arguments)]
async fn relay(
    engine: &Engine,
    head: &RequestHead,
    ctx: &mut Ctx,
    r: &RouteRt,
    ans: Answer,
    ep: &EndpointRt,
    client: &mut Client<'_>,
    body_done: bool,
) -> Result<Done, Refused> {
    let Answer {
        mut conn,
        head: resp,
        rest,
    } = ans;
    let upgrade = resp.status == 101;
    if upgrade && !head.upgrade {
        let mut e = Error::explain(
            ErrorType::InvalidHTTPHeader,
            "101 to a request without Upgrade",
        );
        e.as_up();
        return Err((Refusal::of(&e, true), Some(e)));
    }
    let framing = resp.body_framing(&head.method);
    let dechunk = head.http10 && framing == Framing::Chunked;
    let keep = head.keep_alive
        && !client.draining()
        && body_done
        && framing != Framing::Close
        && !dechunk
        && !upgrade;
    let how = ClientFraming {
        close: !keep,
        keep_alive_10: keep && head.http10,
        dechunk,
    };
    let cfg = &engine.gw.config;
    let mut out = Vec::with_capacity(resp.bytes().len() + 128 + rest.len().min(16 * 1024));
    ctx.sent_downstream = true;
    write::client_head(&mut out, &resp, ctx, cfg.debug_headers, how);
    let head_len = out.len();
    let (_, read_wait) = crate::request::attempt_waits(r, None);
    let mut relay = Relay {
        down: client.stream,
        read_wait,
        write_wait: cfg.client_write_timeout,
        deadline: ctx.deadline,
        dechunk,
        timer: client.timer.reborrow(),
    };
    if upgrade {
        out.extend_from_slice(&rest);
        let status = resp.status;
        if body::write_down(&mut relay, &out).await.is_ok() {
            // Bytes the client sent after its head belong to the new protocol.
            let early = client.buf.split();
            if conn.write_all(&early).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(client.stream, &mut conn).await;
            }
        }
        return Ok(Done {
            status,
            bytes: 0,
            keep: false,
        });
    }
    match body::copy_response(&mut relay, out, head_len, framing, rest, &mut conn).await {
        Ok((sent, bytes)) => {
            if sent == Sent::Complete && !resp.close {
                ep.stats.pool.put(conn, cfg.upstream_keepalive_pool);
            }
            Ok(Done {
                status: resp.status,
                bytes,
                keep,
            })
        }
        Err(e) => {
            tracing::debug!(error = %e, upstream = %ep.addr, "response relay ended early");
            // Headers are out: the client sees the truncation when the connection closes.
            Ok(Done {
                status: resp.status,
                bytes: 0,
                keep: false,
            })
        }
    }
}

/// Metrics, balancer and access log for a finished request.
fn finish(engine: &Engine, head: &RequestHead, ctx: &mut Ctx, done: &Done, e: Option<&Error>) {
    let elapsed = ctx.start.elapsed();
    if ctx.upstream_start.is_some() {
        ctx.abandon_attempt();
    }
    ctx.guard = None;
    ctx.subset_guard = None;
    let status = if done.status == 0 {
        e.map(status_for).unwrap_or(0)
    } else {
        done.status
    };
    if let Some(h) = ctx.handles() {
        h.record(status, elapsed.as_secs_f64());
    }
    if let Some(e) = e {
        tracing::debug!(error = %e, status, "request not proxied");
    }
    if let Some(log) = &engine.gw.access_log {
        let (route, subset) = ctx.names();
        let entry = Entry {
            time_ms: unix_ms(),
            request_id: ctx.request_id.as_bytes(),
            method: head.method.as_str(),
            path: head.path(),
            route,
            subset,
            upstream: ctx.upstream,
            status,
            duration_us: elapsed.as_micros() as u64,
            bytes: done.bytes,
        };
        log.write(&entry, head);
    }
}
