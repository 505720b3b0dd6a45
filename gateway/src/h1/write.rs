//! The bytes the HTTP/1 engine writes: the request head sent upstream, the response head sent to
//! the client, and the gateway's own answers (a small JSON body, or a trailers-only gRPC status).
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1) stop here: `Connection` and every field it lists,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade` (unless this is an upgrade), and `Expect`
//! (the gateway answers `100-continue` itself). The forwarding fields are the gateway's own.

use std::io::Write;
use std::net::IpAddr;

use super::head::{RequestHead, ResponseHead};
use crate::errors;
use crate::request::{Ctx, DIGITS};
use crate::retry::ATTEMPT_HEADER;

/// Request fields the gateway drops or replaces, lower case.
const REQUEST_DROPPED: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"expect",
    b"x-request-id",
    b"traceparent",
    b"x-meridian-attempt",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
];

/// Response fields the gateway drops or replaces, lower case.
const RESPONSE_DROPPED: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"x-request-id",
];

fn listed(list: &[&[u8]], name: &[u8]) -> bool {
    list.iter().any(|d| d.eq_ignore_ascii_case(name))
}

/// Where the request came from, for the forwarding fields.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The client connection is TLS.
    pub tls: bool,
}

/// The upstream request head up to (not including) the attempt number, which
/// [`finish_upstream_head`] adds per attempt.
pub fn upstream_head(req: &RequestHead, ctx: &Ctx, origin: Origin) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.bytes().len() + 256);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    let target = req.origin_target();
    if target.first() != Some(&b'/') && target != b"*" {
        out.push(b'/');
    }
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    let mut prev_xff: Option<&[u8]> = None;
    let mut more_xff = Vec::new();
    for f in &req.fields {
        let name = req.get(f.name);
        let value = req.get(f.value);
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            match prev_xff {
                None => prev_xff = Some(value),
                Some(_) => {
                    more_xff.extend_from_slice(b", ");
                    more_xff.extend_from_slice(value);
                }
            }
            continue;
        }
        // `Upgrade` goes through on an upgrade, though its `Connection: upgrade` lists it.
        let is_upgrade = name.eq_ignore_ascii_case(b"upgrade");
        if listed(REQUEST_DROPPED, name)
            || (is_upgrade && !req.upgrade)
            || (!is_upgrade && req.connection_lists(name))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            // An absolute target's authority is the host; the client's field gives way to it.
            if req.authority.is_some() {
                continue;
            }
            has_host = true;
        }
        field(&mut out, name, value);
    }
    let host = req.host_value();
    if !has_host {
        if let Some(h) = host {
            field(&mut out, b"host", h);
        }
    }
    if req.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    if let Some(ip) = origin.ip {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(p) = prev_xff.filter(|p| !p.is_empty()) {
            out.extend_from_slice(p);
            out.extend_from_slice(&more_xff);
            out.extend_from_slice(b", ");
        }
        let _ = write!(out, "{ip}");
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if origin.tls {
        b"x-forwarded-proto: https\r\n"
    } else {
        b"x-forwarded-proto: http\r\n"
    });
    if let Some(h) = host {
        field(&mut out, b"x-forwarded-host", h);
    }
    field(&mut out, b"x-request-id", ctx.request_id.as_bytes());
    field(&mut out, b"traceparent", ctx.traceparent.as_bytes());
    out
}

/// Completes a request for attempt `n`: the attempt field, the end of the head and, when the
/// body is buffered, the body.
pub fn finish_upstream_head(common: &[u8], n: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(common.len() + 32 + body.len());
    out.extend_from_slice(common);
    out.extend_from_slice(ATTEMPT_HEADER.as_bytes());
    out.extend_from_slice(b": ");
    match DIGITS.get(n as usize) {
        Some(d) => out.extend_from_slice(d.as_bytes()),
        None => {
            let _ = write!(out, "{n}");
        }
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the response head tells the client about its connection and body.
#[derive(Debug, Clone, Copy)]
pub struct ClientFraming {
    /// Say `Connection: close`.
    pub close: bool,
    /// Say `Connection: keep-alive` (an HTTP/1.0 client that asked for it).
    pub keep_alive_10: bool,
    /// The body is sent de-chunked to an HTTP/1.0 client: drop `Transfer-Encoding`.
    pub dechunk: bool,
}

/// The response head for the client, into `out`.
pub fn client_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    ctx: &Ctx,
    debug: bool,
    how: ClientFraming,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = write!(out, "{}", resp.status);
    out.push(b' ');
    out.extend_from_slice(resp.reason());
    out.extend_from_slice(b"\r\n");
    let upgrade = resp.status == 101;
    for f in &resp.fields {
        let name = resp.get(f.name);
        let is_upgrade = name.eq_ignore_ascii_case(b"upgrade");
        if listed(RESPONSE_DROPPED, name)
            || (is_upgrade && !upgrade)
            || (how.dechunk && name.eq_ignore_ascii_case(b"transfer-encoding"))
            || (!is_upgrade && resp.connection_lists(name))
        {
            continue;
        }
        field(out, name, resp.get(f.value));
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    field(out, b"x-request-id", ctx.request_id.as_bytes());
    if ctx.fail_open {
        out.extend_from_slice(b"x-meridian-fail-open: 1\r\n");
    }
    if debug {
        debug_fields(out, ctx);
    }
    if how.close && !upgrade {
        out.extend_from_slice(b"connection: close\r\n");
    } else if how.keep_alive_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn debug_fields(out: &mut Vec<u8>, ctx: &Ctx) {
    let (route, subset) = ctx.names();
    field(out, b"x-meridian-route", route.as_bytes());
    field(out, b"x-meridian-subset", subset.as_bytes());
    if let Some(reg) = ctx.subset_rt().and_then(|s| s.regions.get(ctx.region)) {
        field(out, b"x-meridian-region", reg.as_bytes());
    }
    if let Some(a) = ctx.upstream {
        let _ = write!(out, "x-meridian-upstream: {a}\r\n");
    }
    let _ = write!(out, "x-meridian-attempts: {}\r\n", ctx.attempts);
}

/// A response the gateway makes itself: JSON with the status's reason, or for gRPC a
/// trailers-only answer (HTTP 200 with `grpc-status`). `head_only` leaves out the body (HEAD).
pub fn own_response(
    code: u16,
    request_id: &[u8],
    reject: Option<&str>,
    grpc: bool,
    close: bool,
    head_only: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let tail = |out: &mut Vec<u8>| {
        field(out, b"x-request-id", request_id);
        if let Some(r) = reject {
            field(out, b"x-meridian-reject", r.as_bytes());
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    };
    if grpc {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n");
        let _ = write!(
            out,
            "grpc-status: {}\r\ngrpc-message: {}\r\ncontent-length: 0\r\n",
            errors::grpc_status_for(code),
            errors::reason_for(code)
        );
        tail(&mut out);
        return out;
    }
    let body = errors::body_for(code, std::str::from_utf8(request_id).unwrap_or(""));
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("");
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    tail(&mut out);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn head(text: &str) -> RequestHead {
        RequestHead::parse(&mut BytesMut::from(text))
            .expect("ok")
            .expect("complete")
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8_lossy(v).into_owned()
    }

    #[test]
    fn hop_by_hop_fields_stop_and_forwarding_fields_are_ours() {
        let req = head(
            "GET http://api.test/a?b=1 HTTP/1.1\r\nConnection: keep-alive, x-private\r\n\
             X-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n\
             X-Forwarded-For: 10.0.0.2\r\nX-Request-Id: client\r\nX-Forwarded-Proto: https\r\n\
             Accept: */*\r\n\r\n",
        );
        let mut ctx = Ctx::new();
        ctx.request_id = http::HeaderValue::from_static("rid");
        ctx.traceparent = http::HeaderValue::from_static("tp");
        let origin = Origin {
            ip: Some("127.0.0.9".parse().expect("ip")),
            tls: false,
        };
        let out = text(&finish_upstream_head(
            &upstream_head(&req, &ctx, origin),
            1,
            b"",
        ));
        assert!(out.starts_with("GET /a?b=1 HTTP/1.1\r\n"), "{out}");
        for gone in [
            "X-Private",
            "Keep-Alive",
            "TE:",
            "Connection",
            "client",
            "https",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        for kept in [
            "Accept: */*\r\n",
            "host: api.test\r\n",
            "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.9\r\n",
            "x-forwarded-proto: http\r\n",
            "x-forwarded-host: api.test\r\n",
            "x-request-id: rid\r\n",
            "traceparent: tp\r\n",
            "x-meridian-attempt: 1\r\n\r\n",
        ] {
            assert!(out.contains(kept), "{kept:?} missing in {out}");
        }
    }

    #[test]
    fn an_absolute_target_replaces_the_clients_host_field() {
        let req = head("GET http://api.test/a HTTP/1.1\r\nHost: other.test\r\n\r\n");
        let origin = Origin {
            ip: None,
            tls: false,
        };
        let out = text(&finish_upstream_head(
            &upstream_head(&req, &Ctx::new(), origin),
            1,
            b"",
        ));
        assert!(out.contains("host: api.test\r\n"), "{out}");
        assert!(!out.contains("other.test"), "{out}");
        assert_eq!(
            out.matches("ost: ").count(),
            2,
            "one Host and one X-Forwarded-Host: {out}"
        );
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_field_both_ways() {
        let req = head(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        let ctx = Ctx::new();
        let origin = Origin {
            ip: None,
            tls: false,
        };
        let out = text(&finish_upstream_head(
            &upstream_head(&req, &ctx, origin),
            1,
            b"",
        ));
        assert!(out.contains("Upgrade: websocket\r\n"), "{out}");
        assert!(out.contains("connection: upgrade\r\n"), "{out}");
        let resp = ResponseHead::parse(&mut BytesMut::from(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ))
        .expect("ok")
        .expect("complete");
        let mut down = Vec::new();
        let how = ClientFraming {
            close: false,
            keep_alive_10: false,
            dechunk: false,
        };
        client_head(&mut down, &resp, &ctx, false, how);
        let down = text(&down);
        assert!(down.contains("Upgrade: websocket\r\n"), "{down}");
        assert!(down.contains("connection: upgrade\r\n"), "{down}");
    }

    #[test]
    fn own_answers_are_json_or_grpc() {
        let j = text(&own_response(
            503,
            b"id1",
            Some("subset-limit"),
            false,
            true,
            false,
        ));
        assert!(j.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{j}");
        assert!(j.contains("x-meridian-reject: subset-limit\r\n"));
        assert!(j.contains("connection: close\r\n"));
        let (_, body) = j.split_once("\r\n\r\n").expect("head");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["request_id"], "id1");
        let g = text(&own_response(504, b"id2", None, true, false, false));
        assert!(g.starts_with("HTTP/1.1 200 OK\r\n"), "{g}");
        assert!(g.contains("grpc-status: 4\r\n"), "{g}");
    }
}
