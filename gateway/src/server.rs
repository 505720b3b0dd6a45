//! Assembles Pingora services for one or more gateways in one process: each gateway gets its
//! proxy service (plain and TLS listeners) and its admin service. Listener port 0 is resolved to
//! a free port before binding so the real addresses can be reported.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::prelude::Server;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;
use serde::Serialize;

use crate::admin::Admin;
use crate::config::Http1Engine;
use crate::h1::{Accept, App, Drain, Engine};
use crate::idle::LeanIdle;
use crate::proxy::Proxy;
use crate::state::Gateway;

/// Where a gateway actually listens, after port 0 was resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    /// The gateway's region.
    pub region: String,
    /// Client listeners, in config order.
    pub listeners: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
}

/// A free port on `addr`'s IP when its port is 0; otherwise `addr`, once a trial bind shows it
/// is free. Pingora binds later and retries a busy port every second without end, so without
/// this check a gateway on a taken port would report itself listening while another process
/// answers its clients. The trial socket sets `SO_REUSEADDR` as Pingora does, so connections
/// of a previous run in TIME_WAIT do not count as busy.
pub fn resolve_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        return Ok(addr);
    }
    let l = TcpListener::bind(addr)?;
    l.local_addr()
}

/// A Pingora server for gateways: no config file, threads set per service.
pub fn new_server(grace: Duration) -> anyhow::Result<Server> {
    let conf = ServerConf {
        grace_period_seconds: Some(grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(grace.as_secs().max(1)),
        // One single-threaded runtime per worker (each connection stays on the worker that
        // accepted it), as nginx's workers do: no cross-thread scheduling on the request path.
        work_stealing: false,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    Ok(server)
}

/// Adds one gateway's proxy and admin services to `server`.
pub fn add_gateway(server: &mut Server, gw: &Arc<Gateway>) -> anyhow::Result<Bound> {
    let cfg = &gw.config;
    let conf = ServerConf {
        threads: cfg.workers,
        upstream_keepalive_pool_size: cfg.upstream_keepalive_pool,
        ..Default::default()
    };
    let conf = Arc::new(conf);
    let name = format!("meridian gateway {}", cfg.region);
    let idle = Duration::from_secs(cfg.client_idle_timeout_s);
    let lean = LeanIdle::new(pingora::proxy::http_proxy(&conf, Proxy(gw.clone())), idle);
    let engine = Arc::new(Engine::new(gw.clone(), lean));
    let own_accept = cfg.http1_engine == Http1Engine::Meridian;
    // Meridian's engine writes each response in as few writes as it can on its own; a write
    // buffer under it would only copy. Pingora's proxy relies on it.
    let write_buffer = if own_accept {
        0
    } else {
        DEFAULT_L4_WRITE_BUFFER_SIZE
    };
    let mut proxy = Service::new(name.clone(), App(engine.clone()));
    proxy.threads = Some(cfg.workers);
    let mut listeners = Vec::new();
    let mut plain = Vec::new();
    let mut on_pingora = 0;
    for (i, l) in cfg.listeners.iter().enumerate() {
        let addr = resolve_port(l.address)
            .with_context(|| format!("listeners[{i}].address {}", l.address))?;
        match &l.tls {
            // Plain HTTP under Meridian's engine: its own accept loop (h1/accept.rs), which
            // holds about 10 KiB less per idle connection than Pingora's listener task.
            None if own_accept => plain.push(addr),
            // No read buffer under plain HTTP/1: Pingora's default is a zero-filled 64 KiB
            // per client connection, resident for as long as the connection is open (46 KiB
            // per idle keep-alive connection measured, against nginx's 0.3-0.6). The HTTP/1
            // session reads request heads into its own buffer, so this costs no extra syscalls.
            None => {
                proxy.add_listener(
                    ListenerConfig::tcp(addr.to_string())
                        .l4_buffer(L4BufferSettings::new(0, write_buffer)),
                );
                on_pingora += 1;
            }
            // TLS listeners keep Pingora's read buffer: rustls reads record by record and the
            // buffer saves syscalls there.
            Some(tls) => {
                let settings = crate::tls::settings(tls)
                    .map_err(|e| anyhow::anyhow!("listeners[{i}].tls: {e}"))?;
                proxy.add_tls_with_settings(&addr.to_string(), None, settings);
                on_pingora += 1;
            }
        }
        listeners.push(addr);
    }
    // The engine's drain (idle connections close, answers say `Connection: close`) starts
    // when Pingora's shutdown does.
    let mut drain = pingora::services::background::background_service(&name, Drain(engine.clone()));
    drain.threads = Some(1);
    server.add_service(drain);
    if !plain.is_empty() {
        server.add_service(Accept::new(
            format!("{name} http"),
            plain,
            engine.clone(),
            cfg.workers,
        ));
    }
    let admin_addr = resolve_port(cfg.admin).with_context(|| format!("admin {}", cfg.admin))?;
    let mut admin = Service::new(format!("meridian admin {}", cfg.region), Admin(gw.clone()));
    admin.threads = Some(1);
    admin.add_tcp(&admin_addr.to_string());
    // A listening service without listeners would still start its worker threads.
    if on_pingora > 0 {
        server.add_service(proxy);
    }
    server.add_service(admin);
    Ok(Bound {
        region: cfg.region.clone(),
        listeners,
        admin: admin_addr,
    })
}
