//! DNS against a real name server on loopback: a tiny UDP server (hickory's own message codec)
//! answers `svc.test` through a CNAME chain with different TTLs, and the control plane's resolver
//! and name watcher are pointed at it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, MessageType, OpCode};
use hickory_resolver::proto::rr::rdata::{A, CNAME};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use meridian_control::dns::{DnsWatcher, HickoryResolve, Resolve};
use meridian_control::reconcile::Event;

/// The name server: `svc.test` CNAME (30 s) `mid.test` CNAME (2 s) `real.test` A (60 s).
struct Server {
    addr: SocketAddr,
    ip: Arc<Mutex<Ipv4Addr>>,
    queries: Arc<AtomicU64>,
}

async fn server() -> Server {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = sock.local_addr().expect("addr");
    let ip = Arc::new(Mutex::new(Ipv4Addr::new(10, 0, 0, 1)));
    let queries = Arc::new(AtomicU64::new(0));
    let (ip2, q2) = (ip.clone(), queries.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
            resp.metadata.recursion_desired = req.metadata.recursion_desired;
            resp.metadata.recursion_available = true;
            resp.metadata.authoritative = true;
            for q in &req.queries {
                resp.add_query(q.clone());
                if q.name().to_ascii().trim_end_matches('.') != "svc.test" {
                    continue;
                }
                let name = |s: &str| Name::from_str(s).expect("name");
                resp.add_answer(Record::from_rdata(
                    name("svc.test."),
                    30,
                    RData::CNAME(CNAME(name("mid.test."))),
                ));
                resp.add_answer(Record::from_rdata(
                    name("mid.test."),
                    2,
                    RData::CNAME(CNAME(name("real.test."))),
                ));
                if q.query_type() == RecordType::A {
                    q2.fetch_add(1, Ordering::SeqCst);
                    let v4 = *ip2.lock().expect("ip");
                    resp.add_answer(Record::from_rdata(name("real.test."), 60, RData::A(A(v4))));
                }
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, from).await;
            }
        }
    });
    Server { addr, ip, queries }
}

#[tokio::test]
async fn the_ttl_of_a_cname_chain_is_its_smallest() {
    let s = server().await;
    let r = HickoryResolve::new(&[s.addr]).expect("resolver");
    let got = r.resolve("svc.test").await.expect("resolves");
    assert_eq!(got.ips, vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
    assert_eq!(got.ttl, Duration::from_secs(2));
}

#[tokio::test]
async fn a_name_is_resolved_again_within_its_ttl_and_changes_propagate() {
    let s = server().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let r = Arc::new(HickoryResolve::new(&[s.addr]).expect("resolver"));
    let mut w = DnsWatcher::new(r, Duration::from_millis(100), tx);
    w.sync(&BTreeSet::from(["svc.test".to_string()]));
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("first answer in time")
        .expect("event");
    assert!(matches!(first, Event::Dns { ref ips, .. } if ips == &[IpAddr::from([10, 0, 0, 1])]));
    let changed = Instant::now();
    *s.ip.lock().expect("ip") = Ipv4Addr::new(10, 0, 0, 2);
    let second = tokio::time::timeout(Duration::from_secs(6), rx.recv())
        .await
        .expect("the change is seen within the TTL")
        .expect("event");
    assert!(matches!(second, Event::Dns { ref ips, .. } if ips == &[IpAddr::from([10, 0, 0, 2])]));
    let took = changed.elapsed();
    // Re-resolved at the chain's 2 s TTL: not at the 30 s or 60 s ones, and not every 100 ms.
    assert!(took <= Duration::from_millis(2_900), "took {took:?}");
    assert!(
        s.queries.load(Ordering::SeqCst) <= 3,
        "asked {} times",
        s.queries.load(Ordering::SeqCst)
    );
}
