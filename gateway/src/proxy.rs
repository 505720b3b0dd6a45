//! The `ProxyHttp` glue. Each phase calls one policy module; per-request state lives in [`Ctx`].
//! The request path loads the snapshot once (one `ArcSwap` load) and then touches only atomics.
//!
//! Retries ride on Pingora's own loop: a failure that the retry policy grants is marked
//! retryable, and Pingora calls `upstream_peer` again, which hands out the endpoint the decision
//! already picked (never one this request tried) after a jittered backoff. Pingora replays the
//! buffered request body (up to 64 KiB) on each retry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::HeaderName;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::accesslog::{unix_ms, Entry};
use crate::balance::now_ns;
use crate::errors::{self, status_for, NO_ENDPOINT};
use crate::metrics::RetryReason;
pub use crate::request::Ctx;
use crate::request::{choose_subset, forwarded_for, number_value};
use crate::retry;
use crate::routing::request_host;
use crate::snapshot::{EndpointRt, RouteRt};
use crate::state::Gateway;
use crate::trace;

/// The proxy of one gateway.
#[derive(Debug, Clone)]
pub struct Proxy(pub Arc<Gateway>);

/// The upstream peer for one attempt, with the route's timeouts cut to the time left.
pub(crate) fn peer_for(
    r: &RouteRt,
    ep: &EndpointRt,
    deadline: Option<Instant>,
    idle: Duration,
) -> HttpPeer {
    let mut peer = HttpPeer::new(ep.addr, ep.tls, ep.sni.to_string());
    let (connect, per_try) = crate::request::attempt_waits(r, deadline);
    let o = &mut peer.options;
    o.connection_timeout = Some(connect);
    o.total_connection_timeout = Some(connect);
    o.read_timeout = Some(per_try);
    o.write_timeout = Some(per_try);
    o.idle_timeout = Some(idle);
    peer
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Adds the forwarding headers to an upstream request. Values are static, cloned (a reference
/// count) or built once; each `insert_header` still costs Pingora a header-name parse.
pub(crate) fn forward_headers(session: &Session, up: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        if let Some(xff) = forwarded_for(up.headers.get(&X_FORWARDED_FOR), ip) {
            up.insert_header("x-forwarded-for", xff)?;
        }
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    up.insert_header(
        "x-forwarded-proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    )?;
    let host = session
        .req_header()
        .headers
        .get(http::header::HOST)
        .cloned()
        .or_else(|| {
            let a = session.req_header().uri.authority()?;
            HeaderValue::from_str(a.as_str()).ok()
        });
    if let Some(h) = host {
        if up.headers.get(http::header::HOST).is_none() {
            up.insert_header(http::header::HOST, h.clone())?;
        }
        up.insert_header("x-forwarded-host", h)?;
    }
    up.insert_header("x-request-id", ctx.request_id.clone())?;
    up.insert_header("traceparent", ctx.traceparent.clone())?;
    up.insert_header(retry::ATTEMPT_HEADER, number_value(ctx.attempts))?;
    Ok(())
}

/// Adds the gateway's own headers to a response going to the client.
pub(crate) fn decorate_response(
    debug: bool,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
) -> Result<()> {
    ctx.sent_downstream = true;
    resp.insert_header("x-request-id", ctx.request_id.clone())?;
    if ctx.fail_open {
        resp.insert_header("x-meridian-fail-open", "1")?;
    }
    if debug {
        let (route, subset) = ctx.names();
        resp.insert_header("x-meridian-route", route)?;
        resp.insert_header("x-meridian-subset", subset)?;
        if let Some(reg) = ctx.subset_rt().and_then(|s| s.regions.get(ctx.region)) {
            resp.insert_header("x-meridian-region", &**reg)?;
        }
        if let Some(a) = ctx.upstream {
            resp.insert_header("x-meridian-upstream", a.to_string())?;
        }
        resp.insert_header("x-meridian-attempts", number_value(ctx.attempts))?;
    }
    Ok(())
}

/// Writes a generated error response: a small JSON body, or a trailers-only gRPC answer.
pub(crate) async fn respond(
    session: &mut Session,
    code: u16,
    request_id: &HeaderValue,
    reject: Option<&str>,
) -> Result<()> {
    let grpc = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let mut h = ResponseHeader::build(200, Some(4))?;
        h.insert_header("content-type", "application/grpc")?;
        h.insert_header("grpc-status", errors::grpc_status_for(code).to_string())?;
        h.insert_header("grpc-message", errors::reason_for(code))?;
        h.insert_header("x-request-id", request_id.clone())?;
        if let Some(r) = reject {
            h.insert_header("x-meridian-reject", r)?;
        }
        return session.write_response_header(Box::new(h), true).await;
    }
    let body = errors::body_for(code, request_id.to_str().unwrap_or(""));
    let mut h = ResponseHeader::build(code, Some(5))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("x-request-id", request_id.clone())?;
    if let Some(r) = reject {
        h.insert_header("x-meridian-reject", r)?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    /// No downstream modules: Pingora's default adds a (disabled) compression module whose
    /// per-request context costs allocations on every request; the gateway never compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = trace::request_id(
            req.headers.get(&X_REQUEST_ID).map(|v| v.as_bytes()),
            &mut ctx.rng,
        );
        ctx.traceparent = trace::traceparent(
            req.headers.get("traceparent").map(|v| v.as_bytes()),
            &mut ctx.rng,
        );
        // Bound how long this connection may then wait for its next request (Pingora keeps an
        // HTTP/1.1 keep-alive connection open forever otherwise). Only when keep-alive is on:
        // `Connection: close` and HTTP/1.0 stay off.
        if session.get_keepalive().is_some_and(|t| t == 0) {
            session.set_keepalive(Some(self.0.config.client_idle_timeout_s));
        }
        let req = session.req_header();
        ctx.idempotent = retry::idempotent(&req.method, &req.headers);
        ctx.hop_limited = req.headers.contains_key(retry::ATTEMPT_HEADER);
        let Some(snap) = self.0.snapshot.load_full() else {
            respond(session, 503, &ctx.request_id, Some("no-table")).await?;
            return Ok(true);
        };
        let host = request_host(&req.headers, &req.uri);
        let found = snap
            .router
            .find(host.as_ref(), req.uri.path(), &req.method, &req.headers);
        ctx.snap = Some(snap.clone());
        let Some(route) = found else {
            respond(session, 404, &ctx.request_id, None).await?;
            return Ok(true);
        };
        ctx.route = Some(route);
        ctx.subset = choose_subset(&snap, route, &session.req_header().headers);
        let r = &snap.routes[route];
        ctx.deadline = Some(ctx.start + r.timeouts.total);
        r.state.budget.record_request(now_ns());
        if crate::hedge::applies(session, ctx) {
            if let Err(e) = crate::hedge::serve(&self.0, session, ctx).await {
                // Headers already sent: nothing to do but close. Otherwise answer the failure.
                if session.response_written().is_none() {
                    let code = status_for(&e);
                    respond(session, code, &ctx.request_id, errors::reject_reason(&e)).await?;
                }
                ctx.hedge_error = Some(e);
            }
            return Ok(true);
        }
        if r.retry.attempts > 1 {
            session.enable_retry_buffering();
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(snap), Some(route)) = (ctx.snap.clone(), ctx.route) else {
            return Err(Error::new(NO_ENDPOINT));
        };
        let r = &snap.routes[route];
        let subset = r.subsets[ctx.subset].subset.clone();
        let (tier, ep) = ctx.next_endpoint(r, &subset).await?;
        ctx.admit(&subset)?;
        ctx.start_attempt(&subset, tier, &ep)?;
        ctx.got_headers = false;
        Ok(Box::new(peer_for(
            r,
            &ep,
            ctx.deadline,
            self.0.config.upstream_idle_timeout,
        )))
    }
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.end_attempt(false);
        let truncated = session.as_ref().retry_buffer_truncated();
        let again = ctx.grant_retry(RetryReason::ConnectFailure, truncated);
        e.set_retry(again);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if matches!(e.etype(), ErrorType::CustomCode(retry::RETRY_STATUS, _)) {
            // Already decided (and counted) when the status arrived.
            return e;
        }
        let truncated = session.as_ref().retry_buffer_truncated();
        let reason = if ctx.got_headers {
            None
        } else {
            retry::classify(&e)
        };
        if ctx.upstream_start.is_some() {
            ctx.end_attempt(false);
        }
        let again = match reason {
            Some(RetryReason::Reset) if client_reused && !ctx.stale_retried && ctx.idempotent => {
                ctx.grant_retry(RetryReason::StaleConnection, truncated)
            }
            Some(reason) => ctx.grant_retry(reason, truncated),
            None => false,
        };
        e.set_retry(again);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forward_headers(session, up, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        ctx.got_headers = true;
        if let (Some(t), Some(r)) = (ctx.upstream_start, ctx.route_rt()) {
            r.state.latency.record(t.elapsed(), now_ns());
        }
        let code = resp.status.as_u16();
        ctx.end_attempt(code < 500);
        let retried_status = ctx
            .route_rt()
            .is_some_and(|r| r.retry.retry_on_status.contains(&code));
        if retried_status {
            let truncated = session.as_ref().retry_buffer_truncated();
            if ctx.grant_retry(RetryReason::Status, truncated) {
                let mut e = Error::explain(
                    ErrorType::CustomCode(retry::RETRY_STATUS, code),
                    format!("upstream answered {code}"),
                );
                e.set_retry(true);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        decorate_response(self.0.config.debug_headers, resp, ctx)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        match ctx.deadline {
            Some(d) if Instant::now() > d => Err(Error::explain(
                errors::TOTAL_TIMEOUT,
                "response body still arriving at the route's total timeout",
            )),
            _ => Ok(None),
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = status_for(e);
        if code > 0 && session.response_written().is_none() {
            // The connection is not reused after this (see below): say so with
            // `Connection: close`, or a keep-alive client reuses it and gets a reset.
            session.set_keepalive(None);
            let reject = errors::reject_reason(e);
            if let Err(werr) = respond(session, code, &ctx.request_id, reject).await {
                tracing::debug!(error = %werr, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let elapsed = ctx.start.elapsed();
        if ctx.upstream_start.is_some() {
            // The attempt ended without a verdict (e.g. the client left): latency only.
            if let (Some(g), Some(t)) = (&ctx.guard, ctx.upstream_start.take()) {
                g.stats().observe(t.elapsed(), now_ns());
            }
        }
        ctx.guard = None;
        ctx.subset_guard = None;
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| e.or(ctx.hedge_error.as_deref()).map(status_for))
            .unwrap_or(0);
        if let Some(h) = ctx.handles() {
            h.record(status, elapsed.as_secs_f64());
        }
        if let Some(log) = &self.0.access_log {
            let req = session.req_header();
            let (route, subset) = ctx.names();
            let entry = Entry {
                time_ms: unix_ms(),
                request_id: ctx.request_id.as_bytes(),
                method: req.method.as_str(),
                path: req.uri.path(),
                route,
                subset,
                upstream: ctx.upstream,
                status,
                duration_us: elapsed.as_micros() as u64,
                bytes: session.body_bytes_sent(),
            };
            log.write(&entry, &req.headers);
        }
    }
}
