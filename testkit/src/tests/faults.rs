//! Fault injection: Refuse, Hang, ResetMidBody, ResetBeforeHeaders, CloseReused, SlowBody,
//! Status.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::net::TcpStream;

use super::*;
use crate::{assert_eventually, Fault, RESET_MISSING_BYTES};

#[tokio::test]
async fn refuse_then_recover_on_same_port() {
    let up = start("phoenix").await;
    let addr = up.addr();
    let mut idle = connect(addr).await.unwrap();
    send_on(&mut idle, request(Method::GET, "/", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(up.requests(), 1);

    up.set_fault(Fault::Refuse);
    assert_eq!(up.fault(), Fault::Refuse);
    // The listener is closed synchronously...
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // ...and open keep-alive connections are closed shortly after.
    assert_eventually(SOON, "idle keep-alive connection closed", || {
        idle.is_closed()
    })
    .await;
    assert!(send_on(&mut idle, request(Method::GET, "/", Bytes::new()))
        .await
        .is_err());
    // Setting Refuse again is a no-op.
    up.set_fault(Fault::Refuse);
    assert!(TcpStream::connect(addr).await.is_err());
    assert_eq!(up.requests(), 1);

    // Any other fault re-binds the very same port.
    up.set_fault(Fault::Status(418));
    assert_eq!(up.addr(), addr);
    let r = get(addr, "/").await.unwrap();
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT);
    up.set_fault(Fault::None);
    let r = get(addr, "/").await.unwrap();
    assert_eq!(
        (r.status, r.header("x-upstream")),
        (StatusCode::OK, Some("phoenix"))
    );
    assert_eq!(up.requests(), 3);

    // Several cycles in a row keep working.
    for _ in 0..5 {
        up.set_fault(Fault::Refuse);
        assert!(TcpStream::connect(addr).await.is_err());
        up.set_fault(Fault::None);
        assert_eq!(get(addr, "/").await.unwrap().status, StatusCode::OK);
    }
}

#[tokio::test]
async fn hang_reads_request_but_never_answers() {
    let up = start("sloth").await;
    up.set_fault(Fault::Hang);
    let res = tokio::time::timeout(
        Duration::from_millis(300),
        send(up.addr(), request(Method::POST, "/", "hung body")),
    )
    .await;
    assert!(res.is_err(), "expected the client to time out, got {res:?}");
    assert_eq!(up.requests(), 1);
    assert_eq!(up.received_bodies(), vec![Bytes::from_static(b"hung body")]);
    // Health checks still answer.
    assert_eq!(
        get(up.addr(), "/healthz").await.unwrap().status,
        StatusCode::OK
    );

    // New requests recover once the fault is lifted.
    up.set_fault(Fault::None);
    assert_eq!(get(up.addr(), "/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn refuse_kills_hung_requests() {
    let up = start("zombie").await;
    up.set_fault(Fault::Hang);
    let addr = up.addr();
    let pending = tokio::spawn(async move { get(addr, "/").await });
    assert_eventually(SOON, "hung request arrived", || up.requests() == 1).await;
    up.set_fault(Fault::Refuse);
    let res = tokio::time::timeout(SOON, pending).await.unwrap().unwrap();
    assert!(res.is_err(), "expected an error, got {res:?}");
}

#[tokio::test]
async fn stop_kills_hung_requests() {
    let up = start("stuck").await;
    up.set_fault(Fault::Hang);
    let addr = up.addr();
    let pending = tokio::spawn(async move { get(addr, "/").await });
    assert_eventually(SOON, "hung request arrived", || up.requests() == 1).await;
    tokio::time::timeout(SOON, up.stop()).await.unwrap();
    let res = tokio::time::timeout(SOON, pending).await.unwrap().unwrap();
    assert!(res.is_err());
}

#[tokio::test]
async fn reset_mid_body_sends_rst() {
    let up = start("rst").await;
    up.set_fault(Fault::ResetMidBody);
    let (got, err) = raw_get(up.addr()).await;
    let text = String::from_utf8_lossy(&got);
    let err = err.unwrap_or_else(|| panic!("expected a reset, got EOF after {text:?}"));
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    let declared = format!("content-length: {}", 4 + RESET_MISSING_BYTES);
    assert!(text.contains(&declared), "{text:?}");
    assert!(text.contains("x-upstream: rst"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nrst\n"), "{text:?}");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn reset_mid_body_is_an_error_for_hyper_clients() {
    let up = start("rst2").await;
    up.set_fault(Fault::ResetMidBody);
    let res = tokio::time::timeout(SOON, get(up.addr(), "/"))
        .await
        .unwrap();
    assert!(res.is_err(), "expected an error, got {res:?}");
    // The upstream keeps serving other connections.
    up.set_fault(Fault::None);
    assert_eq!(get(up.addr(), "/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn reset_before_headers_sends_rst_and_no_byte() {
    let up = start("rst0").await;
    up.set_fault(Fault::ResetBeforeHeaders);
    let (got, err) = tokio::time::timeout(SOON, raw_get(up.addr()))
        .await
        .unwrap();
    let err = err.unwrap_or_else(|| panic!("expected a reset, got EOF after {got:?}"));
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(up.requests(), 1);
    // The body was read and recorded before the reset.
    let res = tokio::time::timeout(SOON, send(up.addr(), request(Method::PUT, "/", "doomed")))
        .await
        .unwrap();
    assert!(res.is_err(), "expected an error, got {res:?}");
    assert_eq!(up.requests(), 2);
    assert_eq!(
        up.received_bodies().last(),
        Some(&Bytes::from_static(b"doomed"))
    );
    // The upstream serves again once the fault is lifted.
    up.set_fault(Fault::None);
    assert_eq!(get(up.addr(), "/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn close_reused_serves_the_first_request_of_each_connection_only() {
    let up = start("tired").await;
    up.set_fault(Fault::CloseReused);
    let mut conn = connect(up.addr()).await.unwrap();
    let r = send_on(&mut conn, request(Method::GET, "/", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // The second request on the same connection is not answered.
    let res = tokio::time::timeout(
        SOON,
        send_on(&mut conn, request(Method::GET, "/", Bytes::new())),
    )
    .await
    .unwrap();
    assert!(res.is_err(), "expected an error, got {res:?}");
    assert_eq!(up.requests(), 1, "the unanswered request is not counted");
    // A fresh connection is served again.
    assert_eq!(get(up.addr(), "/").await.unwrap().status, StatusCode::OK);
    assert_eq!((up.requests(), up.connections()), (2, 2));
    // Health checks are not affected.
    let mut conn = connect(up.addr()).await.unwrap();
    for _ in 0..2 {
        let r = send_on(&mut conn, request(Method::GET, "/healthz", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn slow_body_streams_chunks() {
    let up = start("drip").await;
    up.set_fault(Fault::SlowBody {
        chunk_delay: Duration::from_millis(40),
        chunks: 5,
    });
    let mut conn = connect(up.addr()).await.unwrap();
    let t = Instant::now();
    let resp = conn
        .send_request(request(Method::GET, "/", Bytes::new()))
        .await
        .unwrap();
    let head_after = t.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "25");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let total = t.elapsed();
    assert_eq!(body, Bytes::from("drip\n".repeat(5)));
    assert!(
        head_after < Duration::from_millis(150),
        "head after {head_after:?}"
    );
    assert!(total >= Duration::from_millis(200), "total {total:?}");

    // Zero chunks: an empty body right away.
    up.set_fault(Fault::SlowBody {
        chunk_delay: Duration::from_secs(10),
        chunks: 0,
    });
    let r = tokio::time::timeout(SOON, get(up.addr(), "/"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn status_fault_and_invalid_codes() {
    let up = MockUpstream::start(UpstreamConfig::new("st").error_every(1, 42))
        .await
        .unwrap();
    // error_every(1, invalid) -> every request is a 500.
    let r = get(up.addr(), "/").await.unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    // A Status fault wins over error_every.
    up.set_fault(Fault::Status(502));
    let r = get(up.addr(), "/").await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("x-upstream"), Some("st"));
    assert_eq!(r.body, Bytes::from_static(b"st: injected 502\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_toggling_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let up = start("toggle").await;
    let addr = up.addr();
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !done.load(Ordering::SeqCst) {
                match get(addr, "/").await {
                    Ok(r) if r.status == StatusCode::OK => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        up.set_fault(Fault::Refuse);
        tokio::time::sleep(Duration::from_millis(5)).await;
        up.set_fault(Fault::None);
    }
    done.store(true, Ordering::SeqCst);
    let (ok, failed) = tokio::time::timeout(SOON, client).await.unwrap().unwrap();
    assert!(ok > 0 && failed > 0, "ok={ok} failed={failed}");
    // Counted on arrival, so answered requests never exceed the count.
    assert!(up.requests() >= ok, "requests={} ok={ok}", up.requests());
    assert_eq!(get(addr, "/").await.unwrap().status, StatusCode::OK);
}
