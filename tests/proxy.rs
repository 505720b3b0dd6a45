//! End-to-end: the request path of a real `meridian gateway` process. Proxying, 404s, forwarded
//! headers, request ids, trace context, status mapping for upstream failures, and the access log.

mod common;

use std::time::{Duration, Instant};

use common::*;
use meridian_api::Timeouts;
use meridian_testkit::{Fault, MockUpstream, UpstreamConfig};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A table with one route `api` (prefix `/api`, host `api.test`) to `svc@v1`.
fn api_table(up: &MockUpstream) -> meridian_api::Table {
    let mut r = route("api", Some("/api"), &[("svc@v1", 100)]);
    r.matcher.hosts = vec!["api.test".into()];
    table(1, vec![r], vec![subset("svc@v1", &[up])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reaches_the_upstream_and_the_body_comes_back() {
    let up = MockUpstream::start(UpstreamConfig::new("alpha").body("hello from alpha\n"))
        .await
        .expect("upstream");
    let gw = Gw::start(&api_table(&up), "").await;
    let c = client();

    let r = get(&c, &gw.url("/api/vitals"), &[("host", "api.test")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-upstream"), "alpha");
    assert_eq!(header(&r, "x-meridian-route"), "api");
    assert_eq!(header(&r, "x-meridian-subset"), "svc@v1");
    assert_eq!(header(&r, "x-meridian-region"), REGION);
    assert_eq!(header(&r, "x-meridian-upstream"), up.addr().to_string());
    assert_eq!(r.text().await.expect("body"), "hello from alpha\n");
    assert_eq!(up.requests(), 1);

    // Keep-alive: a run of requests on the same client all get through.
    for _ in 0..20 {
        let r = get(&c, &gw.url("/api/x?y=1"), &[("host", "api.test")]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.expect("body"), "hello from alpha\n");
    }
    assert_eq!(up.requests(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_host_or_path_gets_a_json_404() {
    let up = MockUpstream::start(UpstreamConfig::new("alpha"))
        .await
        .expect("upstream");
    let gw = Gw::start(&api_table(&up), "").await;
    let c = client();

    for (host, path) in [("other.test", "/api/vitals"), ("api.test", "/elsewhere")] {
        let r = get(
            &c,
            &gw.url(path),
            &[("host", host), ("x-request-id", "rid-404")],
        )
        .await;
        assert_eq!(r.status(), 404, "{host}{path}");
        assert_eq!(header(&r, "content-type"), "application/json");
        assert_eq!(header(&r, "x-request-id"), "rid-404");
        let v: serde_json::Value =
            serde_json::from_str(&r.text().await.expect("body")).expect("404 body is JSON");
        assert_eq!(v["error"], "no_route", "{v}");
        assert_eq!(v["status"], 404);
        assert_eq!(v["request_id"], "rid-404");
    }
    assert_eq!(up.requests(), 0, "nothing unmatched reaches the upstream");

    gw.assert_metric(
        "meridian_requests_total",
        &[("route", ""), ("code", "404")],
        2.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_request_id_and_traceparent() {
    let up = MockUpstream::start(UpstreamConfig::new("alpha"))
        .await
        .expect("upstream");
    let gw = Gw::start(&api_table(&up), "").await;
    let c = client();
    let url = gw.url("/api/v");

    // X-Forwarded-*: set from the connection; an incoming X-Forwarded-For is appended to.
    let r = get(&c, &url, &[("host", "api.test")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-seen-forwarded-for"), "127.0.0.1");
    assert_eq!(header(&r, "x-seen-forwarded-proto"), "http");
    assert_eq!(header(&r, "x-seen-forwarded-host"), "api.test");
    let r = get(
        &c,
        &url,
        &[("host", "api.test"), ("x-forwarded-for", "10.1.2.3")],
    )
    .await;
    assert_eq!(header(&r, "x-seen-forwarded-for"), "10.1.2.3, 127.0.0.1");

    // X-Request-Id: generated when absent, the same value upstream and back to the client.
    let r = get(&c, &url, &[("host", "api.test")]).await;
    let rid = header(&r, "x-request-id");
    assert!(is_hex(&rid, 32), "generated request id {rid:?}");
    assert_eq!(header(&r, "x-seen-request-id"), rid);
    let r2 = get(&c, &url, &[("host", "api.test")]).await;
    assert_ne!(
        header(&r2, "x-request-id"),
        rid,
        "each request gets its own id"
    );
    // Kept when present.
    let r = get(
        &c,
        &url,
        &[("host", "api.test"), ("x-request-id", "req-abc-123")],
    )
    .await;
    assert_eq!(header(&r, "x-request-id"), "req-abc-123");
    assert_eq!(header(&r, "x-seen-request-id"), "req-abc-123");

    // traceparent: continued with the same trace id and flags and a new parent id.
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let r = get(
        &c,
        &url,
        &[("host", "api.test"), ("traceparent", &incoming)],
    )
    .await;
    let seen = header(&r, "x-seen-traceparent");
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(parts[0], "00", "{seen}");
    assert_eq!(parts[1], TRACE_ID, "trace id continued: {seen}");
    assert!(is_hex(parts[2], 16), "{seen}");
    assert_ne!(
        parts[2], PARENT_ID,
        "the gateway's own span is the parent: {seen}"
    );
    assert_eq!(parts[3], "01", "flags kept: {seen}");

    // Started when absent (and when malformed).
    for hdrs in [
        vec![("host", "api.test")],
        vec![("host", "api.test"), ("traceparent", "not-a-trace")],
    ] {
        let r = get(&c, &url, &hdrs).await;
        let seen = header(&r, "x-seen-traceparent");
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!(parts.len(), 4, "{seen}");
        assert_eq!(parts[0], "00");
        assert!(is_hex(parts[1], 32) && parts[1] != TRACE_ID, "{seen}");
        assert!(parts[1].bytes().any(|b| b != b'0'), "{seen}");
        assert!(is_hex(parts[2], 16), "{seen}");
        assert!(is_hex(parts[3], 2), "{seen}");
    }
}

/// Asserts a generated error response: status, JSON body with the reason, and the request id.
async fn assert_error(r: reqwest::Response, code: u16, reason: &str) {
    assert_eq!(r.status(), code);
    let rid = header(&r, "x-request-id");
    assert!(!rid.is_empty(), "error responses carry x-request-id");
    let body = r.text().await.expect("body");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{code} body {body:?}: {e}"));
    assert_eq!(v["error"], reason, "{body}");
    assert_eq!(v["status"], code, "{body}");
    assert_eq!(v["request_id"], rid.as_str(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_502_503_504() {
    let refusing = MockUpstream::start(UpstreamConfig::new("refusing"))
        .await
        .expect("upstream");
    refusing.set_fault(Fault::Refuse);
    let hanging = MockUpstream::start(UpstreamConfig::new("hanging"))
        .await
        .expect("upstream");
    hanging.set_fault(Fault::Hang);
    let fine = MockUpstream::start(UpstreamConfig::new("fine"))
        .await
        .expect("upstream");

    let mut sick = subset("sick@v1", &[&fine]);
    sick.endpoints[0].healthy = false;
    let mut hang = route("hang", Some("/hang"), &[("hang@v1", 1)]);
    hang.timeouts = Some(Timeouts {
        read_ms: Some(300),
        ..Default::default()
    });
    let t = table(
        1,
        vec![
            route("refuse", Some("/refuse"), &[("refuse@v1", 1)]),
            route("sick", Some("/sick"), &[("sick@v1", 1)]),
            hang,
            route("fine", Some("/fine"), &[("fine@v1", 1)]),
        ],
        vec![
            subset("refuse@v1", &[&refusing]),
            sick,
            subset("hang@v1", &[&hanging]),
            subset("fine@v1", &[&fine]),
        ],
    );
    let gw = Gw::start(&t, "").await;
    let c = client();

    // 502: the endpoint refuses connections.
    assert_error(
        get(&c, &gw.url("/refuse"), &[]).await,
        502,
        "upstream_failed",
    )
    .await;
    assert_eq!(refusing.requests(), 0);

    // 503: the subset has no healthy endpoint; the (healthy in reality) process is not dialled.
    assert_error(
        get(&c, &gw.url("/sick"), &[]).await,
        503,
        "no_healthy_endpoint",
    )
    .await;
    assert_eq!(fine.requests(), 0);

    // 504: the upstream takes the request and never answers; the route's 300 ms read timeout.
    let t0 = Instant::now();
    assert_error(
        get(&c, &gw.url("/hang"), &[]).await,
        504,
        "upstream_timeout",
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "504 after {took:?}, expected about 300 ms"
    );
    assert!(hanging.requests() >= 1);

    // The gateway itself is fine: a healthy route still answers.
    let r = get(&c, &gw.url("/fine"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(fine.requests(), 1);

    // A keep-alive client is never hurt by an error response: the request after one succeeds,
    // whether the gateway keeps the connection or closes it (and then says so).
    for i in 0..20 {
        let r = get(
            &c,
            &gw.url(if i % 2 == 0 { "/refuse" } else { "/sick" }),
            &[],
        )
        .await;
        let code = r.status().as_u16();
        let close = header(&r, "connection").eq_ignore_ascii_case("close");
        let _ = r.bytes().await;
        let r = c.get(gw.url("/fine")).send().await.unwrap_or_else(|e| {
            panic!("request after a {code} (connection: close {close}): {e:?}")
        });
        assert_eq!(r.status(), 200);
    }
    assert_eq!(fine.requests(), 21);

    // And every outcome was counted under its route, subset and code.
    for (route, subset, code, n) in [
        ("refuse", "refuse@v1", "502", 11.0),
        ("sick", "sick@v1", "503", 11.0),
        ("hang", "hang@v1", "504", 1.0),
        ("fine", "fine@v1", "200", 21.0),
    ] {
        gw.assert_metric(
            "meridian_requests_total",
            &[("route", route), ("subset", subset), ("code", code)],
            n,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_json_without_query_strings_or_secret_headers() {
    let up = MockUpstream::start(UpstreamConfig::new("alpha"))
        .await
        .expect("upstream");
    let t = table(
        1,
        vec![route("vitals", Some("/vitals"), &[("vitals@v1", 1)])],
        vec![subset("vitals@v1", &[&up])],
    );
    let gw = Gw::start(
        &t,
        "access_log: {path: access.log, allow_headers: [user-agent]}\n",
    )
    .await;
    let c = client();
    let r = get(
        &c,
        &gw.url("/vitals/heart-rate?patient=123&ward=7"),
        &[
            ("authorization", "Bearer secret-token"),
            ("cookie", "session=secret-cookie"),
            ("user-agent", "meridian-e2e/1.0"),
            ("x-request-id", "log-req-1"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("body");

    let path = gw.dir.path().join("access.log");
    let end = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("log-req-1") && text.ends_with('\n') {
            break text;
        }
        assert!(Instant::now() < end, "no access-log line in {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!text.contains("patient=123"), "query string logged: {text}");
    assert!(!text.contains("ward=7"), "query string logged: {text}");
    assert!(!text.contains("secret"), "secret header logged: {text}");
    let line = text
        .lines()
        .find(|l| l.contains("log-req-1"))
        .expect("the line");
    let v: serde_json::Value = serde_json::from_str(line).expect("access log line is JSON");
    assert_eq!(v["request_id"], "log-req-1", "{line}");
    assert_eq!(v["method"], "GET", "{line}");
    assert_eq!(v["path"], "/vitals/heart-rate", "{line}");
    assert_eq!(v["route"], "vitals", "{line}");
    assert_eq!(v["subset"], "vitals@v1", "{line}");
    assert_eq!(v["upstream"], up.addr().to_string(), "{line}");
    assert_eq!(v["status"], 200, "{line}");
    assert_eq!(v["bytes"].as_u64(), Some(body.len() as u64), "{line}");
    let us = v["duration_us"].as_u64().expect("duration_us");
    assert!(us > 0 && us < 10_000_000, "{line}");
    assert!(v["time_ms"].as_u64().is_some_and(|t| t > 0), "{line}");
    assert!(
        line.contains("meridian-e2e/1.0"),
        "allowlisted user-agent is logged: {line}"
    );
    assert!(
        !line.to_ascii_lowercase().contains("authorization"),
        "{line}"
    );
}

/// Sends one keep-alive GET on `s` and reads its whole response (content-length bodies only).
async fn keepalive_get(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /api/idle HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_client_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::AsyncReadExt;
    let up = MockUpstream::start(UpstreamConfig::new("alpha"))
        .await
        .expect("upstream");
    let gw = Gw::start(&api_table(&up), "client_idle_timeout_ms: 1000\n").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");

    // Requests closer together than the timeout share the connection.
    for _ in 0..3 {
        let r = keepalive_get(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(up.requests(), 3);

    // Then silence: the gateway closes the connection after about 1 s (whole seconds).
    let idle_from = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the gateway closed the idle connection within 10 s")
        .unwrap_or(0);
    let waited = idle_from.elapsed();
    assert_eq!(n, 0, "the close is clean, with no data");
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

/// The engine's waits share the connection's idle timer: a request that outlasts the idle
/// timeout moves the timer to its own (longer) limit, and the idle period after it must still
/// end on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_idle_timeout_does_not_stretch_the_idle_period_after_it() {
    use tokio::io::AsyncReadExt;
    let up = MockUpstream::start(UpstreamConfig::new("alpha"))
        .await
        .expect("upstream");
    // The upstream answers after 1.5 s, within the 10 s default read timeout.
    up.set_latency(meridian_testkit::Latency::Fixed(Duration::from_millis(
        1500,
    )));
    let gw = Gw::start(&api_table(&up), "client_idle_timeout_ms: 1000\n").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let r = keepalive_get(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let idle_from = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
        .await
        .expect("the gateway closed the idle connection within 15 s")
        .unwrap_or(0);
    let waited = idle_from.elapsed();
    assert_eq!(n, 0, "the close is clean, with no data");
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(4),
        "closed {waited:?} after the answer; the idle timeout is 1 s and the read timeout 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_and_a_slow_head_still_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = MockUpstream::start(UpstreamConfig::new("alpha"))
        .await
        .expect("upstream");
    let gw = Gw::start(&api_table(&up), "client_idle_timeout_ms: 1000\n").await;

    // A client that connects and never sends a byte is closed after the idle timeout too.
    let mut silent = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let from = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the gateway closed the silent connection within 10 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed with no data");
    assert!(
        from.elapsed() < Duration::from_secs(5),
        "{:?}",
        from.elapsed()
    );

    // A request head that arrives in pieces, the first of them after a pause, is served whole,
    // and the connection is then reused for a second request.
    let mut s = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"GET /api/piece").await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"s HTTP/1.1\r\nHost: api.te")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"st\r\n\r\n").await.expect("write");
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before the response head");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Read the rest of the first body before the second request.
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    let mut have = body.len();
    while have < len {
        let n = s.read(&mut buf).await.expect("read body");
        assert!(n > 0, "closed mid-body");
        have += n;
    }
    let r = keepalive_get(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(up.requests(), 2);
}
