//! Happy path, header echo, counters, health, latency and runtimes.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::*;
use crate::{assert_eventually, start_blocking, Fault, Latency, MAX_RECORDED_BODIES};

#[tokio::test]
async fn serves_name_and_echoes_headers() {
    let up = start("alpha").await;
    assert_eq!(up.name(), "alpha");
    assert!(up.addr().ip().is_loopback());
    assert_ne!(up.addr().port(), 0);

    let req = Request::builder()
        .uri("/some/path")
        .header("host", "mock")
        .header("x-meridian-attempt", "2")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-request-id", "req-1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-for", "10.0.0.2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(up.addr(), req).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, Bytes::from_static(b"alpha\n"));
    assert_eq!(r.header("x-upstream"), Some("alpha"));
    assert_eq!(r.header("x-seen-attempt"), Some("2"));
    assert_eq!(
        r.header("x-seen-traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(r.header("x-seen-request-id"), Some("req-1"));
    assert_eq!(r.header("x-seen-forwarded-for"), Some("10.0.0.1, 10.0.0.2"));

    // Absent request headers are not echoed.
    let r = get(up.addr(), "/").await.unwrap();
    assert_eq!(r.header("x-seen-attempt"), None);
    assert_eq!(r.header("x-seen-request-id"), None);
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn custom_body_and_keep_alive() {
    let up = MockUpstream::start(UpstreamConfig::new("beta").body("custom"))
        .await
        .unwrap();
    let mut conn = connect(up.addr()).await.unwrap();
    for _ in 0..3 {
        let r = send_on(&mut conn, request(Method::GET, "/", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(r.body, Bytes::from_static(b"custom"));
        assert_eq!(r.header("x-upstream"), Some("beta"));
    }
    assert_eq!(up.requests(), 3);
}

#[tokio::test]
async fn health_flip_and_counters() {
    let up = start("hc").await;
    let r = get(up.addr(), "/healthz").await.unwrap();
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(r.header("x-upstream"), Some("hc"));

    up.set_healthy(false);
    let r = get(up.addr(), "/healthz").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);

    up.set_healthy(true);
    assert_eq!(
        get(up.addr(), "/healthz").await.unwrap().status,
        StatusCode::OK
    );

    // Health checks are not requests, and ignore injected faults.
    up.set_fault(Fault::Status(500));
    assert_eq!(
        get(up.addr(), "/healthz").await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        get(up.addr(), "/").await.unwrap().status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // POST /healthz is an ordinary request.
    let r = send(up.addr(), request(Method::POST, "/healthz", "x"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);

    assert_eq!(up.health_checks(), 4);
    assert_eq!(up.requests(), 2);
    up.reset_counters();
    assert_eq!((up.health_checks(), up.requests()), (0, 0));
    assert!(up.received_bodies().is_empty());
}

#[tokio::test]
async fn error_every_nth_request() {
    let up = MockUpstream::start(UpstreamConfig::new("flaky").error_every(3, 503))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = get(up.addr(), "/").await.unwrap();
        assert_eq!(r.header("x-upstream"), Some("flaky"));
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 503, 200, 200, 503]);
    // Health checks do not advance the cycle; reset_counters restarts it.
    get(up.addr(), "/healthz").await.unwrap();
    up.reset_counters();
    let r1 = get(up.addr(), "/").await.unwrap().status;
    let r2 = get(up.addr(), "/").await.unwrap().status;
    let r3 = get(up.addr(), "/").await.unwrap().status;
    assert_eq!([r1, r2, r3].map(|s| s.as_u16()), [200, 200, 503]);
}

#[tokio::test]
async fn records_last_bodies() {
    let up = start("rec").await;
    send(up.addr(), request(Method::POST, "/a", "first"))
        .await
        .unwrap();
    get(up.addr(), "/b").await.unwrap();
    get(up.addr(), "/healthz").await.unwrap();
    assert_eq!(
        up.received_bodies(),
        vec![Bytes::from_static(b"first"), Bytes::new()]
    );

    let mut conn = connect(up.addr()).await.unwrap();
    for i in 0..100 {
        let req = request(Method::PUT, "/", format!("body-{i}"));
        send_on(&mut conn, req).await.unwrap();
    }
    let bodies = up.received_bodies();
    assert_eq!(bodies.len(), MAX_RECORDED_BODIES);
    assert_eq!(bodies[0], Bytes::from("body-36"));
    assert_eq!(bodies[63], Bytes::from("body-99"));
    assert_eq!(up.requests(), 102);
}

#[tokio::test]
async fn latency_applies_and_can_change() {
    let up = MockUpstream::start(
        UpstreamConfig::new("slow").latency(Latency::Fixed(Duration::from_millis(80))),
    )
    .await
    .unwrap();
    let t = Instant::now();
    get(up.addr(), "/").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(80),
        "{:?}",
        t.elapsed()
    );

    up.set_latency(Latency::None);
    let t = Instant::now();
    get(up.addr(), "/").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(80), "{:?}", t.elapsed());

    // Latency also delays health-unrelated injected statuses.
    up.set_latency(Latency::Fixed(Duration::from_millis(50)));
    up.set_fault(Fault::Status(429));
    let t = Instant::now();
    let r = get(up.addr(), "/").await.unwrap();
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(t.elapsed() >= Duration::from_millis(50));
    // Health checks skip latency.
    let t = Instant::now();
    get(up.addr(), "/healthz").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(50));
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let up = start("h2").await;
    let stream = TcpStream::connect(up.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{}/", up.addr()))
        .header("x-request-id", "h2-req")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-upstream"], "h2");
    assert_eq!(resp.headers()["x-seen-request-id"], "h2-req");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from_static(b"h2\n"));
    assert_eq!(up.received_bodies(), vec![Bytes::from_static(b"payload")]);
}

#[tokio::test]
async fn invalid_name_is_rejected() {
    let err = MockUpstream::start(UpstreamConfig::new("bad\nname"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn stop_closes_everything_for_good() {
    let up = start("stopme").await;
    let addr = up.addr();
    let mut conn = connect(addr).await.unwrap();
    send_on(&mut conn, request(Method::GET, "/", Bytes::new()))
        .await
        .unwrap();
    tokio::time::timeout(SOON, up.stop()).await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
    assert_eventually(SOON, "keep-alive connection closed", || conn.is_closed()).await;
    // A stopped upstream stays down.
    up.set_fault(Fault::Refuse);
    up.set_fault(Fault::None);
    assert!(TcpStream::connect(addr).await.is_err());
    up.stop().await; // idempotent
}

#[tokio::test]
#[should_panic(expected = "waiting for: the impossible")]
async fn assert_eventually_panics_on_timeout() {
    assert_eventually(Duration::from_millis(30), "the impossible", || false).await;
}

#[tokio::test]
async fn assert_eventually_polls_until_true() {
    let mut n = 0;
    assert_eventually(SOON, "third poll", || {
        n += 1;
        n >= 3
    })
    .await;
    assert_eq!(n, 3);
}

/// Blocking HTTP/1.1 GET over std sockets (no runtime on this thread).
fn blocking_get(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(SOON))?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn start_blocking_without_runtime() {
    let (ups, rt) =
        start_blocking(vec![UpstreamConfig::new("one"), UpstreamConfig::new("two")]).unwrap();
    assert_eq!(ups.len(), 2);
    assert!(rt.handle().metrics().num_workers() >= 1);
    let resp = blocking_get(ups[1].addr()).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: two"), "{resp}");
    assert!(resp.ends_with("two\n"), "{resp}");

    // Control from a thread that is not in any runtime.
    let addr = ups[0].addr();
    ups[0].set_fault(Fault::Refuse);
    assert_eq!(
        std::net::TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    ups[0].set_fault(Fault::None);
    assert!(blocking_get(addr).unwrap().contains("x-upstream: one"));
    assert_eq!(ups[0].requests(), 1);

    drop(rt);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn start_blocking_inside_a_runtime() {
    // Creating and dropping the dedicated runtime must not panic here.
    let (ups, rt) = start_blocking(vec![UpstreamConfig::new("nested")]).unwrap();
    let r = get(ups[0].addr(), "/").await.unwrap();
    assert_eq!(r.header("x-upstream"), Some("nested"));
    ups[0].stop().await;
    drop(rt);
}
