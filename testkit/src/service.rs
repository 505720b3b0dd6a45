//! The request handler shared by all mock upstreams.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::conn::ConnCtl;
use crate::fault::MockBody;
use crate::upstream::Inner;
use crate::Fault;

/// Response header naming the upstream that answered.
pub const UPSTREAM_HEADER: &str = "x-upstream";

/// `(request header, response header)` pairs echoed back to the client.
/// Repeated request headers are joined with `", "`.
pub const ECHOED_HEADERS: [(&str, &str); 6] = [
    ("x-meridian-attempt", "x-seen-attempt"),
    ("traceparent", "x-seen-traceparent"),
    ("x-request-id", "x-seen-request-id"),
    ("x-forwarded-for", "x-seen-forwarded-for"),
    ("x-forwarded-proto", "x-seen-forwarded-proto"),
    ("x-forwarded-host", "x-seen-forwarded-host"),
];

/// Path answered by the health endpoint (`GET`/`HEAD` only).
pub const HEALTH_PATH: &str = "/healthz";

type ResponseBody = BoxBody<Bytes, Infallible>;

/// Handles one request. Returning `Err` makes hyper close the connection
/// without answering.
pub(crate) async fn handle(
    inner: Arc<Inner>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, io::Error> {
    if inner.is_down() {
        // A request raced with Fault::Refuse / stop on an open connection:
        // behave like a dead process and drop the connection.
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "mock upstream is down",
        ));
    }
    let first_on_conn = ctl.first_request();
    let headers = response_headers(&inner, req.headers());

    if is_health_check(&req) {
        inner.health_checks.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if inner.is_healthy() {
            (StatusCode::OK, "ok")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
        };
        return Ok(respond(status, headers, MockBody::full(body)));
    }

    if !first_on_conn && inner.current_fault() == Fault::CloseReused {
        // A keep-alive connection closed just as a request came in on it:
        // hyper closes it without an answer.
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "mock upstream closes reused connections",
        ));
    }

    // Counted (and the fault/latency snapshot taken) when the head arrives.
    let seq = inner.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let fault = inner.current_fault();
    let delay = inner.current_latency().sample(&mut rand::thread_rng());

    let body = req
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    inner.record_body(body);

    if fault == Fault::Hang {
        return std::future::pending().await;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fault == Fault::ResetBeforeHeaders {
        // Nothing has been written: the connection task aborts the
        // connection (RST) and drops this pending handler with it.
        ctl.request_reset();
        return std::future::pending().await;
    }

    let injected = match fault {
        Fault::Status(code) => Some(code),
        _ => inner
            .error_every
            .and_then(|(n, code)| (seq.checked_rem(n) == Some(0)).then_some(code)),
    };
    if let Some(code) = injected {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = format!("{}: injected {}\n", inner.name, status.as_u16());
        return Ok(respond(status, headers, MockBody::full(body)));
    }

    let body = match fault {
        Fault::SlowBody {
            chunk_delay,
            chunks,
        } => MockBody::slow(inner.body.clone(), chunks, chunk_delay),
        Fault::ResetMidBody => MockBody::reset(inner.body.clone(), ctl),
        _ => MockBody::full(inner.body.clone()),
    };
    Ok(respond(StatusCode::OK, headers, body))
}

fn is_health_check<B>(req: &Request<B>) -> bool {
    req.uri().path() == HEALTH_PATH && (req.method() == Method::GET || req.method() == Method::HEAD)
}

/// `x-upstream`, `content-type` and the echoed request headers.
fn response_headers(inner: &Inner, req: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(2 + ECHOED_HEADERS.len());
    out.insert(
        HeaderName::from_static(UPSTREAM_HEADER),
        inner.name_header.clone(),
    );
    out.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (from, to) in ECHOED_HEADERS {
        if let Some(v) = joined(req, from) {
            out.insert(HeaderName::from_static(to), v);
        }
    }
    out
}

/// All values of `name`, joined with `", "`; `None` if absent.
fn joined(headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut buf = BytesMut::from(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        buf.extend_from_slice(b", ");
        buf.extend_from_slice(v.as_bytes());
    }
    // Joining valid values with ", " yields a valid value; fall back to the
    // first one just in case.
    Some(HeaderValue::from_maybe_shared(buf.freeze()).unwrap_or_else(|_| first.clone()))
}

fn respond(status: StatusCode, headers: HeaderMap, body: MockBody) -> Response<ResponseBody> {
    let mut resp = Response::new(body.boxed());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}
