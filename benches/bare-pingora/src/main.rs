//! `bare-pingora LISTEN UPSTREAM...`: a Pingora reverse proxy that does nothing but forward each
//! request to the next upstream in turn, with Pingora's defaults (1 worker thread, upstream
//! keep-alive pool of 128, work-stealing runtime). `BARE_WORK_STEALING=0` switches to Pingora's
//! per-thread runtimes, to measure that setting on its own. `BARE_MODE=h1` replaces
//! `pingora-proxy` with the minimal hand-written HTTP/1.1 loop of [`h1`].

mod h1;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        Ok(Box::new(HttpPeer::new(
            self.upstreams[i],
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(listen) = args.next() else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM...");
        std::process::exit(2);
    };
    let upstreams: Vec<SocketAddr> = args
        .map(|a| a.parse().unwrap_or_else(|e| panic!("upstream {a}: {e}")))
        .collect();
    assert!(!upstreams.is_empty(), "at least one upstream");
    let steal = std::env::var("BARE_WORK_STEALING").map_or(true, |v| v != "0");
    let make_conf = || {
        let mut conf = ServerConf::default();
        conf.threads = 1;
        conf.work_stealing = steal;
        conf
    };
    let mut server = Server::new_with_opt_and_conf(None, make_conf());
    server.bootstrap();
    let conf = Arc::new(make_conf());
    let bare = Bare {
        upstreams,
        next: AtomicUsize::new(0),
    };
    if std::env::var("BARE_MODE").is_ok_and(|m| m == "h1") {
        use pingora::listeners::{L4BufferSettings, ListenerConfig};
        let mut svc = pingora::services::listening::Service::new(
            "bare h1".to_string(),
            h1::H1::new(bare.upstreams),
        );
        svc.threads = Some(1);
        svc.add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings::new(0, 0)));
        server.add_service(svc);
    } else {
        let mut proxy = pingora::proxy::http_proxy_service_with_name(&conf, bare, "bare pingora");
        proxy.threads = Some(1);
        proxy.add_tcp(&listen);
        server.add_service(proxy);
    }
    server.run_forever();
}
