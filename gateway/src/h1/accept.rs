//! The engine's own accept loop for plain-HTTP listeners.
//!
//! Pingora's listening service spawns one task per connection whose future holds the TLS
//! handshake state inline even on plain TCP, and wraps the socket in its `Stream` (digests, a
//! boxed trait object); together about 10 KiB per idle keep-alive connection, against nginx's
//! 0.3-0.6 (benches/README.md, "Idle connections"). Here a plain-HTTP connection's task holds
//! the engine's connection future and the bare tokio socket, nothing else.
//!
//! What Pingora's listener gives and this keeps: `SO_REUSEADDR`, a 65,535 backlog, IPv6-only
//! sockets for IPv6 addresses, `TCP_NODELAY` on accepted sockets, connections spread over the
//! worker threads, and no accepts once shutdown begins (connections already open finish within
//! the grace period, as Pingora's own do). What it does not: hand the listening socket to a new
//! process in Pingora's fd-passing upgrade, which Meridian does not offer (SIGQUIT is a graceful
//! shutdown for it, as SIGTERM is).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use tokio::net::{TcpListener, TcpSocket};

use super::conn::Conn;
use super::write::Origin;
use super::Engine;

/// Pingora's listener backlog, kept the same here.
const BACKLOG: u32 = 65_535;

/// A Pingora service that accepts plain-HTTP connections on `addrs` for the engine.
pub struct Accept {
    name: String,
    addrs: Vec<SocketAddr>,
    engine: Arc<Engine>,
    threads: usize,
}

impl Accept {
    /// A service named `name` serving `addrs` with `engine` on `threads` worker threads.
    pub fn new(name: String, addrs: Vec<SocketAddr>, engine: Arc<Engine>, threads: usize) -> Self {
        Accept {
            name,
            addrs,
            engine,
            threads,
        }
    }
}

/// A listening socket on `addr`, set up as Pingora's listener sets up its own.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}

/// The listening socket for `addr`, non-blocking, for tokio.
fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std = bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// Accept errors that say the process or the system is out of a resource: back off instead of
/// spinning on an accept that fails at once.
fn exhausted(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

/// Accepts on `listener` until shutdown, each connection served on one of the worker threads.
async fn run(listener: TcpListener, engine: Arc<Engine>, mut shutdown: ShutdownWatch) {
    let stopping = shutdown.wait_for(|down| *down);
    tokio::pin!(stopping);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping.as_mut() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((socket, peer)) => {
                // As Pingora's listener does: responses are written whole, so Nagle only delays.
                let _ = socket.set_nodelay(true);
                let origin = Origin {
                    ip: Some(peer.ip()),
                    tls: false,
                };
                let serve = engine.clone().connection(Conn::Tcp(socket), origin);
                pingora_runtime::current_handle().spawn(serve);
            }
            Err(e) if exhausted(&e) => {
                tracing::error!(error = %e, "accept failed; pausing accepts for 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // A connection reset before it was accepted, and the like: only that one is lost.
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
    match listener.local_addr() {
        Ok(a) => tracing::info!(listener = %a, "stopped accepting"),
        Err(_) => tracing::info!("stopped accepting"),
    }
}

#[async_trait]
impl Service for Accept {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let mut loops = Vec::new();
        for &addr in &self.addrs {
            match listener(addr) {
                Ok(l) => {
                    tracing::info!(listener = %addr, "listening (plain HTTP)");
                    let run = run(l, self.engine.clone(), shutdown.clone());
                    loops.push(tokio::spawn(run));
                }
                // The address was checked free just before (server::resolve_port); losing it
                // since is a startup failure like any other bind error.
                Err(e) => {
                    tracing::error!(listener = %addr, error = %e, "cannot listen");
                    std::process::exit(1);
                }
            }
        }
        for l in loops {
            let _ = l.await;
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        Some(self.threads)
    }
}
