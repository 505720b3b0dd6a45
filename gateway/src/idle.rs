//! Idle keep-alive client connections that cost little memory.
//!
//! Pingora serves an HTTP/1 connection's requests one after another, and for each one builds the
//! whole request pipeline as one boxed future (about 16 KiB with Meridian's context inline), then
//! allocates a 4 KiB header buffer and only then waits for the request to arrive. Between two
//! requests of a keep-alive connection all of that stays allocated, so an idle connection held
//! about 38 KiB (benches/README.md, "Idle connections").
//!
//! [`LeanIdle`] runs the keep-alive loop itself for plain-HTTP/1 connections: it waits until the
//! socket is readable (a read into an empty buffer: it returns as soon as data or EOF is there
//! and consumes nothing), with the client idle timeout and the shutdown signal, and only then
//! hands the connection to Pingora's proxy for one request. TLS connections (ALPN, HTTP/2, the
//! record layer's own buffering) go to Pingora's loop unchanged.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};

use crate::proxy::Proxy;

/// Pingora's HTTP proxy with Meridian's own keep-alive loop for plain HTTP/1 connections.
pub struct LeanIdle {
    proxy: Arc<HttpProxy<Proxy>>,
    idle: Duration,
    idle_s: u64,
}

impl LeanIdle {
    /// Wraps `proxy`; `idle` bounds how long a connection may wait for its next request.
    pub fn new(proxy: HttpProxy<Proxy>, idle: Duration) -> Self {
        LeanIdle {
            proxy: Arc::new(proxy),
            idle,
            idle_s: idle.as_millis().div_ceil(1000).max(1) as u64,
        }
    }
}

/// Why a connection stopped waiting for its next request.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    /// Bytes (or the client's EOF) are there to read.
    Readable,
    /// The client sent nothing within the idle timeout.
    Idle,
    /// The server is shutting down.
    Shutdown,
    /// The socket failed.
    Error,
}

/// Waits until `stream` has something to read, without reading it.
async fn wait_readable(stream: &mut Stream, idle: Duration, shutdown: &ShutdownWatch) -> Wait {
    let mut shutdown = shutdown.clone();
    let readable = poll_fn(|cx| {
        let mut empty = ReadBuf::new(&mut []);
        Pin::new(&mut *stream).poll_read(cx, &mut empty)
    });
    tokio::select! {
        biased;
        r = readable => if r.is_ok() { Wait::Readable } else { Wait::Error },
        _ = shutdown.wait_for(|down| *down) => Wait::Shutdown,
        _ = tokio::time::sleep(idle) => Wait::Idle,
    }
}

#[async_trait]
impl ServerApp for LeanIdle {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.get_ssl_digest().is_some() {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let mut settings: Option<HttpPersistentSettings> = None;
        loop {
            if wait_readable(&mut stream, self.idle, shutdown).await != Wait::Readable {
                return None;
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                // The first request: what Pingora's own loop sets.
                None if *shutdown.borrow() => session.set_keepalive(None),
                None => session.set_keepalive(Some(self.idle_s)),
            }
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            (stream, settings) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
