//! End-to-end: TLS termination on a real `meridian gateway` process. Two self-signed certificates
//! (`a.test`, `b.test`) on one listener are chosen by SNI, and HTTP/2 is negotiated by ALPN.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use meridian_testkit::{MockUpstream, UpstreamConfig};

/// Writes a self-signed certificate for `host` as `<host>.pem` / `<host>.key` into `dir` and
/// returns the certificate's PEM.
fn self_signed(dir: &Path, host: &str) -> String {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("rcgen");
    let pem = ck.cert.pem();
    std::fs::write(dir.join(format!("{host}.pem")), &pem).expect("write cert");
    std::fs::write(dir.join(format!("{host}.key")), ck.key_pair.serialize_pem()).expect("key");
    pem
}

/// An HTTPS client that resolves both test hosts to `addr` and trusts the given roots only.
fn tls_client(addr: SocketAddr, roots: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .resolve("a.test", addr)
        .resolve("b.test", addr);
    for pem in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem"));
    }
    b.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_sni_certificates_and_http2_by_alpn() {
    let up = MockUpstream::start(UpstreamConfig::new("alpha"))
        .await
        .expect("upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let pem_a = self_signed(dir.path(), "a.test");
    let pem_b = self_signed(dir.path(), "b.test");
    let t = table(
        1,
        vec![route("any", None, &[("svc@v1", 1)])],
        vec![subset("svc@v1", &[&up])],
    );
    write_table_at(&dir.path().join("table.yaml"), &t);
    let cfg = format!(
        "region: {REGION}\n\
         listeners:\n\
         \x20 - address: \"127.0.0.1:0\"\n\
         \x20   tls:\n\
         \x20     http2: true\n\
         \x20     certificates:\n\
         \x20       - {{hosts: [a.test], cert: a.test.pem, key: a.test.key}}\n\
         \x20       - {{hosts: [b.test], cert: b.test.pem, key: b.test.key}}\n\
         admin: \"127.0.0.1:0\"\n\
         table: {{file: table.yaml, poll_ms: 50}}\n\
         debug_headers: true\n"
    );
    let gw = Gw::spawn(dir, &cfg).await;
    gw.wait_ready().await;
    let port = gw.addr().port();

    // Trusting both certificates: each host verifies, which needs its own certificate.
    let both = tls_client(gw.addr(), &[&pem_a, &pem_b]);
    for host in ["a.test", "b.test"] {
        let r = both
            .get(format!("https://{host}:{port}/hello"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https to {host}: {e:?}"));
        assert_eq!(r.status(), 200, "{host}");
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "{host}: h2 by ALPN");
        assert_eq!(header(&r, "x-upstream"), "alpha");
        assert_eq!(header(&r, "x-seen-forwarded-proto"), "https", "{host}");
        assert_eq!(
            header(&r, "x-seen-forwarded-host"),
            format!("{host}:{port}")
        );
        assert_eq!(r.text().await.expect("body"), "alpha\n");
    }

    // Trusting only b.test's certificate: b.test works, a.test does not, so a.test really was
    // served a.test's certificate and b.test b.test's.
    let only_b = tls_client(gw.addr(), &[&pem_b]);
    let r = only_b
        .get(format!("https://b.test:{port}/"))
        .send()
        .await
        .expect("b.test with b's root");
    assert_eq!(r.status(), 200);
    let err = only_b
        .get(format!("https://a.test:{port}/"))
        .send()
        .await
        .expect_err("a.test must present a.test's certificate, not b.test's");
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // HTTP/1.1 stays available on the same listener.
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .http1_only()
        .resolve("a.test", gw.addr())
        .add_root_certificate(reqwest::Certificate::from_pem(pem_a.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let r = h1
        .get(format!("https://a.test:{port}/"))
        .send()
        .await
        .expect("h1 over tls");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(up.requests(), 4);
}
