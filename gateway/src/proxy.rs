//! The `ProxyHttp` glue. Each phase calls one policy module; per-request state lives in [`Ctx`].
//! The request path loads the snapshot once (one `ArcSwap` load) and then touches only atomics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, Result};

use crate::accesslog::{unix_ms, Record};
use crate::balance::{now_ns, InflightGuard};
use crate::errors::{body_for, status_for, NO_ENDPOINT, TOTAL_TIMEOUT};
use crate::metrics::RequestHandles;
use crate::routing::request_host;
use crate::snapshot::{Snapshot, StickyKey};
use crate::state::Gateway;
use crate::trace;

/// The proxy of one gateway.
#[derive(Debug, Clone)]
pub struct Proxy(pub Arc<Gateway>);

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    start: Instant,
    rng: fastrand::Rng,
    snap: Option<Arc<Snapshot>>,
    route: Option<usize>,
    subset: usize,
    region: usize,
    upstream: Option<std::net::SocketAddr>,
    guard: Option<InflightGuard>,
    upstream_start: Option<Instant>,
    measured: bool,
    request_id: String,
    traceparent: String,
    deadline: Option<Instant>,
}

impl Ctx {
    fn handles(&self) -> Option<&Arc<RequestHandles>> {
        let snap = self.snap.as_ref()?;
        match self.route {
            Some(r) => snap.routes[r].subsets[self.subset].handles.get(self.region),
            None => Some(&snap.unrouted),
        }
    }

    fn names(&self) -> (Arc<str>, Arc<str>) {
        match (&self.snap, self.route) {
            (Some(s), Some(r)) => (
                s.routes[r].name.clone(),
                s.routes[r].subsets[self.subset].subset.name.clone(),
            ),
            _ => (Arc::from(""), Arc::from("")),
        }
    }
}

/// Writes a generated error response with a JSON body.
async fn respond(session: &mut Session, code: u16, request_id: &str) -> Result<()> {
    let body = body_for(code, request_id);
    let mut h = ResponseHeader::build(code, Some(4))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("x-request-id", request_id)?;
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

/// Picks the subset: pinning header, then sticky key, then weights.
fn choose_subset(snap: &Snapshot, route: usize, req: &RequestHeader) -> usize {
    let r = &snap.routes[route];
    if let Some((name, map)) = &r.pin {
        if let Some(i) = req
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| map.get(v))
        {
            return *i;
        }
    }
    let key = match &r.sticky {
        Some(StickyKey::Header(h)) => req.headers.get(h).map(|v| v.as_bytes()),
        Some(StickyKey::Cookie(c)) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|v| crate::split::cookie_value(v.as_bytes(), c)),
        None => None,
    };
    match key {
        Some(k) if !k.is_empty() => r.splitter.for_key(k),
        _ => r.splitter.next(),
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            rng: fastrand::Rng::new(),
            snap: None,
            route: None,
            subset: 0,
            region: 0,
            upstream: None,
            guard: None,
            upstream_start: None,
            measured: false,
            request_id: String::new(),
            traceparent: String::new(),
            deadline: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = trace::request_id(
            req.headers.get("x-request-id").map(|v| v.as_bytes()),
            &mut ctx.rng,
        );
        ctx.traceparent = trace::traceparent(
            req.headers.get("traceparent").map(|v| v.as_bytes()),
            &mut ctx.rng,
        );
        let Some(snap) = self.0.snapshot.load_full() else {
            respond(session, 503, &ctx.request_id).await?;
            return Ok(true);
        };
        let host = request_host(&req.headers, &req.uri);
        let found = snap
            .router
            .find(&host, req.uri.path(), &req.method, &req.headers);
        ctx.snap = Some(snap.clone());
        let Some(route) = found else {
            respond(session, 404, &ctx.request_id).await?;
            return Ok(true);
        };
        ctx.route = Some(route);
        ctx.subset = choose_subset(&snap, route, session.req_header());
        ctx.deadline = Some(ctx.start + snap.routes[route].timeouts.total);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(snap), Some(route)) = (ctx.snap.clone(), ctx.route) else {
            return Err(Error::new(NO_ENDPOINT));
        };
        let r = &snap.routes[route];
        let subset = &r.subsets[ctx.subset].subset;
        let now = now_ns();
        let Some((tier, ep)) = subset.pick(&mut ctx.rng, now) else {
            return Err(Error::explain(
                NO_ENDPOINT,
                format!("subset {}", subset.name),
            ));
        };
        ctx.region = tier;
        ctx.upstream = Some(ep.addr);
        ctx.guard = Some(ep.stats.begin());
        ctx.upstream_start = Some(Instant::now());
        ctx.measured = false;
        let mut peer = HttpPeer::new(ep.addr, ep.tls, ep.sni.clone());
        let remaining = ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(r.timeouts.total)
            .max(Duration::from_millis(1));
        let o = &mut peer.options;
        o.connection_timeout = Some(r.timeouts.connect.min(remaining));
        o.total_connection_timeout = Some(r.timeouts.connect.min(remaining));
        o.read_timeout = Some(r.timeouts.read.min(remaining));
        o.write_timeout = Some(r.timeouts.read.min(remaining));
        o.idle_timeout = Some(self.0.config.upstream_idle_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string());
        if let Some(ip) = client_ip {
            let xff = match up
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
                _ => ip,
            };
            up.insert_header("x-forwarded-for", xff)?;
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        up.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                let a = session.req_header().uri.authority()?;
                http::HeaderValue::from_str(a.as_str()).ok()
            });
        if let Some(h) = host {
            up.insert_header("x-forwarded-host", h.clone())?;
            if up.headers.get(http::header::HOST).is_none() {
                up.insert_header(http::header::HOST, h)?;
            }
        }
        up.insert_header("x-request-id", ctx.request_id.as_str())?;
        up.insert_header("traceparent", ctx.traceparent.as_str())?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(g), Some(t)) = (&ctx.guard, ctx.upstream_start) {
            g.stats().observe(t.elapsed(), now_ns());
            ctx.measured = true;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        if self.0.config.debug_headers {
            let (route, subset) = ctx.names();
            resp.insert_header("x-meridian-route", &*route)?;
            resp.insert_header("x-meridian-subset", &*subset)?;
            if let (Some(snap), Some(r)) = (&ctx.snap, ctx.route) {
                let s = &snap.routes[r].subsets[ctx.subset].subset;
                if let Some(reg) = s.regions.get(ctx.region) {
                    resp.insert_header("x-meridian-region", &**reg)?;
                }
            }
            if let Some(a) = ctx.upstream {
                resp.insert_header("x-meridian-upstream", a.to_string())?;
            }
        }
        Ok(())
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
                TOTAL_TIMEOUT,
                "response body still arriving at the route's total timeout",
            )),
            _ => Ok(None),
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = status_for(e);
        if code > 0 && session.response_written().is_none() {
            if let Err(werr) = respond(session, code, &ctx.request_id).await {
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
        if !ctx.measured {
            // A failed attempt counts as slow as it was, so the balancer learns from failures.
            if let (Some(g), Some(t)) = (&ctx.guard, ctx.upstream_start) {
                g.stats().observe(t.elapsed(), now_ns());
            }
        }
        ctx.guard = None;
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| e.map(status_for))
            .unwrap_or(0);
        if let Some(h) = ctx.handles() {
            h.record(status, elapsed.as_secs_f64());
        }
        if let Some(log) = &self.0.access_log {
            let req = session.req_header();
            let headers = log
                .allowlist()
                .iter()
                .filter_map(|name| {
                    let v = req.headers.get(name.as_str())?.to_str().ok()?;
                    Some((name.clone(), v.to_string()))
                })
                .collect();
            let (route, subset) = ctx.names();
            log.send(Record {
                time_ms: unix_ms(),
                request_id: std::mem::take(&mut ctx.request_id),
                method: req.method.as_str().to_string(),
                path: req.uri.path().to_string(),
                route,
                subset,
                upstream: ctx.upstream,
                status,
                duration_us: elapsed.as_micros() as u64,
                bytes: session.body_bytes_sent(),
                headers,
            });
        }
    }
}
