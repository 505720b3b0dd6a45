//! The control plane's HTTP API (HTTP/1.1, hyper):
//!
//! | call | roles | answer |
//! | --- | --- | --- |
//! | `GET /v1/tables/{region}?since=V&wait_ms=W&gateway=ID` | gateway, operator | 200 [`TableResponse`] when the version differs from `V`; else held up to `W` ms, then 304 |
//! | `POST /v1/reports` ([`Report`]) | gateway | 204; 400 on malformed JSON. Its `rtt_ms` values are checked one by one: bad ones (not finite, outside `0..60000`, unknown region) are ignored and counted, never refused |
//! | `GET /v1/status` | operator | 200 [`Status`] |
//! | `PUT /v1/intent` (YAML or JSON intent) | operator | 200 [`PushResponse`]; 400 unparsable, 422 invalid, both with located errors |
//! | `GET /healthz` | none | 200, without a token (for liveness probes) |
//!
//! Every other call needs `Authorization: Bearer <token>`; without a known token the answer is a
//! bare 401 with no body, whatever the path. A known token whose role (see
//! [`crate::config::Role`]) does not allow the call gets a 403 with an [`ErrorResponse`] naming
//! the role needed, before its body is read: nothing changes. 403s are counted
//! ([`Hub::forbidden`]) and logged; a refused push is also audited (`push-forbidden`). Bodies
//! are capped (reports 1 MiB, intents 8 MiB).
//!
//! [`TableResponse`]: meridian_api::wire::TableResponse
//! [`Report`]: meridian_api::wire::Report
//! [`Status`]: meridian_api::wire::Status
//! [`PushResponse`]: meridian_api::wire::PushResponse

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meridian_api::intent::{validate_intent, Intent};
use meridian_api::wire::{check_wire, ErrorResponse, Report};
use meridian_api::{parse_yaml_or_json, Errors};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Role;
use crate::hub::Hub;
use crate::reconcile::{Event, IntentSource};

type Resp = Response<Full<Bytes>>;

const REPORT_LIMIT: usize = 1 << 20;
const INTENT_LIMIT: usize = 8 << 20;

/// Accepts connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let hub = hub.clone();
                async move { Ok::<_, Infallible>(handle(&hub, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn bare(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn json_resp(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn json_of<T: serde::Serialize>(status: StatusCode, v: &T) -> Resp {
    json_resp(
        status,
        Bytes::from(serde_json::to_vec_pretty(v).unwrap_or_default()),
    )
}

fn error(status: StatusCode, msg: impl Into<String>, errs: Option<&Errors>) -> Resp {
    let body = match errs {
        Some(e) => ErrorResponse::located(msg, e),
        None => ErrorResponse {
            error: msg.into(),
            ..ErrorResponse::located("", &Errors::default())
        },
    };
    json_of(status, &body)
}

/// One of the API's calls (besides `/healthz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call<'a> {
    /// `GET /v1/tables/{region}`.
    Tables(&'a str),
    /// `POST /v1/reports`.
    Report,
    /// `GET /v1/status`.
    Status,
    /// `PUT /v1/intent`.
    Push,
}

impl Call<'_> {
    /// The call named by a method and path; else the answer's status (404 or 405).
    fn of<'p>(method: &Method, path: &'p str) -> Result<Call<'p>, StatusCode> {
        match (method, path) {
            (&Method::GET, p) if p.starts_with("/v1/tables/") => {
                Ok(Call::Tables(&p["/v1/tables/".len()..]))
            }
            (&Method::POST, "/v1/reports") => Ok(Call::Report),
            (&Method::GET, "/v1/status") => Ok(Call::Status),
            (&Method::PUT, "/v1/intent") => Ok(Call::Push),
            (_, "/v1/reports" | "/v1/status" | "/v1/intent") => Err(StatusCode::METHOD_NOT_ALLOWED),
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    /// The roles that may make this call.
    fn roles(self) -> &'static [Role] {
        match self {
            // Operators read tables too, to see what a region's gateways are served.
            Call::Tables(_) => &[Role::Gateway, Role::Operator],
            Call::Report => &[Role::Gateway],
            Call::Status | Call::Push => &[Role::Operator],
        }
    }

    /// The call as written in messages (`{region}` rather than the caller's region).
    fn name(self) -> &'static str {
        match self {
            Call::Tables(_) => "GET /v1/tables/{region}",
            Call::Report => "POST /v1/reports",
            Call::Status => "GET /v1/status",
            Call::Push => "PUT /v1/intent",
        }
    }
}

/// Answers one request.
pub async fn handle(hub: &Hub, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if path == "/healthz" && req.method() == Method::GET {
        return json_resp(StatusCode::OK, Bytes::from_static(b"\"ok\"\n"));
    }
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(identity) = hub.identity(auth) else {
        let mut r = bare(StatusCode::UNAUTHORIZED);
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    let call = match Call::of(req.method(), &path) {
        Ok(c) => c,
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", None)
        }
        Err(code) => return error(code, format!("no such call: {path}"), None),
    };
    let roles = call.roles();
    if !roles.contains(&identity.role) {
        // Refused before the body is read: nothing changes.
        let needs = roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        hub.refused_by_role(&identity, call.name(), &needs);
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "{} needs a token with the {needs} role; this token's role is {}",
                call.name(),
                identity.role
            ),
            None,
        );
    }
    let query = req.uri().query().unwrap_or("").to_string();
    match call {
        Call::Tables(region) => tables(hub, region, &query).await,
        Call::Report => report(hub, req).await,
        Call::Status => json_of(StatusCode::OK, &hub.status()),
        Call::Push => push(hub, &identity.name, req).await,
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn tables(hub: &Hub, region: &str, query: &str) -> Resp {
    let since = match param(query, "since").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(v)) => v,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "since must be a version", None),
    };
    let wait = match param(query, "wait_ms").map(str::parse::<u64>) {
        None => hub.long_poll_max,
        Some(Ok(v)) => Duration::from_millis(v).min(hub.long_poll_max),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "wait_ms must be a number", None),
    };
    if let Some(g) = param(query, "gateway") {
        hub.seen(g, region);
    }
    let mut rx = hub.subscribe();
    let done = |t: &Arc<crate::hub::Tables>| {
        t.ready && t.by_region.get(region).is_none_or(|p| p.version != since)
    };
    let tables = match tokio::time::timeout(wait, rx.wait_for(done)).await {
        Ok(Ok(t)) => t.clone(),
        Ok(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", None),
        Err(_) => return bare(StatusCode::NOT_MODIFIED),
    };
    match tables.by_region.get(region) {
        Some(p) => json_resp(StatusCode::OK, p.body.clone()),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no region '{region}' in the intent"),
            None,
        ),
    }
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Resp> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body refused: {e}"),
            None,
        )),
    }
}

async fn report(hub: &Hub, req: Request<Incoming>) -> Resp {
    let body = match read_body(req, REPORT_LIMIT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rep: Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed report: {e}"),
                None,
            )
        }
    };
    if let Err(e) = check_wire(rep.wire) {
        return error(StatusCode::BAD_REQUEST, e, None);
    }
    if rep.gateway.is_empty() || rep.region.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "gateway and region are required",
            None,
        );
    }
    hub.report(rep);
    bare(StatusCode::NO_CONTENT)
}

async fn push(hub: &Hub, identity: &str, req: Request<Incoming>) -> Resp {
    let body = match read_body(req, INTENT_LIMIT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the intent is not UTF-8", None);
    };
    let intent: Intent = match parse_yaml_or_json(text) {
        Ok(i) => i,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the intent does not parse",
                Some(&e),
            )
        }
    };
    if let Err(e) = validate_intent(&intent) {
        hub.audit.append(
            "push-refused",
            serde_json::json!({ "identity": identity, "errors": e.to_string() }),
        );
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the intent is invalid; nothing changed",
            Some(&e),
        );
    }
    let (tx, rx) = oneshot::channel();
    let sent = hub.events.send(Event::Intent {
        intent: Box::new(intent),
        source: IntentSource::Push(identity.to_string()),
        reply: Some(tx),
    });
    if sent.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", None);
    }
    match rx.await {
        Ok(Ok(resp)) => json_of(StatusCode::OK, &resp),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e, None),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", None),
    }
}
