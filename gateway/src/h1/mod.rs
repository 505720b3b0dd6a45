//! The gateway's own HTTP/1.x engine, on Pingora's listeners, TLS and server lifecycle.
//!
//! Pingora's proxy (`pingora-proxy`) costs about 30 µs of CPU per request on a 2-core machine
//! before any gateway feature, against nginx's 13-18 (benches/README.md): two channels and tasks
//! per request, header maps with case maps copied for the upstream, and several layers of polls
//! around every write. A minimal HTTP/1 loop on the same Pingora server and listener costs about
//! 11. So HTTP/1.x client connections are served here: the head is parsed in place
//! ([`head`]), the request goes through the shared decisions in [`crate::request`] (routing,
//! split, admission, retries and hedges within the budget, passive health), upstream
//! connections come from a lock-free pool per endpoint ([`upstream`]), and bodies are relayed
//! in their own framing ([`body`], [`chunked`]). HTTP/2 clients (ALPN `h2`) still go to Pingora's
//! proxy, as does everything when the config says `http1_engine: pingora`.
//!
//! Per connection, between requests, the engine holds no buffer: it waits for the socket to be
//! readable, then reads the next head. A head must arrive whole within the header timeout
//! (slow-header clients are cut off), and each read of a body within the body timeout.

pub mod body;
pub mod chunked;
pub mod head;
mod serve;
pub mod upstream;
pub mod write;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::connectors::TransportConnector;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Http1Engine;
use crate::idle::LeanIdle;
use crate::state::Gateway;
use head::{HeadError, RequestHead, MAX_HEAD};
use serve::Client;
use write::Origin;

/// Bytes first read for a request head. Default: 4 KiB.
const FIRST_READ: usize = 4096;

/// The HTTP/1 engine, in front of Pingora's proxy for what it does not serve itself.
pub struct Engine {
    gw: Arc<Gateway>,
    /// Pingora's proxy with its keep-alive loop, for HTTP/2 and `http1_engine: pingora`.
    pingora: Arc<LeanIdle>,
    /// Dials TLS upstreams.
    tls: TransportConnector,
}

impl Engine {
    /// An engine for `gw`; `pingora` serves what the engine does not.
    pub fn new(gw: Arc<Gateway>, pingora: LeanIdle) -> Engine {
        Engine {
            gw,
            pingora: Arc::new(pingora),
            tls: TransportConnector::new(None),
        }
    }
}

/// How waiting for the next request ended.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    /// The first bytes of the next request are in the buffer.
    Data,
    Stop,
}

/// Waits for the first bytes of the next request and reads them into `buf` (empty on entry),
/// or until the connection has been idle for `idle` since `since`, or until shutdown.
///
/// No buffer is held while waiting: each poll takes a fresh one and lets it go when the socket
/// has nothing, which costs no system call while the socket is known not to be readable. When
/// it is, the same poll reads the bytes, so a request costs one read, not a readiness probe and
/// a read. `timer` and `stopping` live as long as the connection, so waiting costs no timer or
/// watch registration per request: the timer is set once and, when it fires early (the
/// connection served requests meanwhile), moved to the real end of the idle period.
async fn wait_readable<S>(
    stream: &mut Stream,
    buf: &mut BytesMut,
    since: tokio::time::Instant,
    idle: Duration,
    timer: &mut Pin<&mut tokio::time::Sleep>,
    stopping: &mut Pin<&mut S>,
) -> Wait
where
    S: std::future::Future,
{
    loop {
        let readable = poll_fn(|cx| {
            let mut fresh = BytesMut::with_capacity(FIRST_READ);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut fresh) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {
                    *buf = fresh;
                    Poll::Ready(true)
                }
                Poll::Ready(_) => Poll::Ready(false),
            }
        });
        tokio::select! {
            biased;
            got = readable => return if got { Wait::Data } else { Wait::Stop },
            _ = stopping.as_mut() => return Wait::Stop,
            _ = timer.as_mut() => {
                let due = since + idle;
                if tokio::time::Instant::now() >= due {
                    return Wait::Stop;
                }
                timer.as_mut().reset(due);
            }
        }
    }
}

/// Why no request head could be read.
enum NoHead {
    /// The client closed, went idle, or the server is stopping: close quietly.
    Quiet,
    /// Answer this status, then close.
    Answer(u16),
}

impl Engine {
    /// Reads one request head into `buf` (which may already hold its start).
    async fn read_head(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        first_wait: Duration,
        started: Option<tokio::time::Instant>,
    ) -> Result<RequestHead, NoHead> {
        let cfg = &self.gw.config;
        let mut deadline = started.map(|t| t + cfg.client_header_timeout);
        loop {
            if !buf.is_empty() {
                match RequestHead::parse(buf) {
                    Ok(Some(h)) => return Ok(h),
                    Ok(None) if buf.len() >= MAX_HEAD => return Err(NoHead::Answer(431)),
                    Ok(None) => {}
                    Err(HeadError::TooLarge) => return Err(NoHead::Answer(431)),
                    Err(HeadError::Malformed(why)) => {
                        tracing::debug!(why, "malformed request head");
                        return Err(NoHead::Answer(400));
                    }
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(FIRST_READ.max(buf.len()));
            }
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
                None => first_wait,
            };
            let read = pingora_timeout::timeout(wait, stream.read_buf(buf)).await;
            match read {
                Err(_) if buf.is_empty() => return Err(NoHead::Quiet),
                Err(_) => return Err(NoHead::Answer(408)),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(NoHead::Quiet),
                Ok(Ok(_)) => {}
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + cfg.client_header_timeout);
        }
    }

    /// Serves a client connection's requests one after another.
    async fn connection(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let cfg = &self.gw.config;
        let tls = stream.get_ssl_digest().is_some();
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let origin = Origin { ip, tls };
        let mut buf = BytesMut::new();
        let mut down = shutdown.clone();
        let stopping = down.wait_for(|down| *down);
        tokio::pin!(stopping);
        let mut since = tokio::time::Instant::now();
        let timer = tokio::time::sleep_until(since + cfg.client_idle_timeout);
        tokio::pin!(timer);
        loop {
            // Between requests no buffer is held, unless a pipelined request is already in it.
            let (first_wait, started) = if !buf.is_empty() {
                (cfg.client_idle_timeout, None)
            } else {
                let wait = wait_readable(
                    &mut stream,
                    &mut buf,
                    since,
                    cfg.client_idle_timeout,
                    &mut timer,
                    &mut stopping,
                );
                if wait.await != Wait::Data {
                    return;
                }
                (cfg.client_header_timeout, Some(tokio::time::Instant::now()))
            };
            let head = match self
                .read_head(&mut stream, &mut buf, first_wait, started)
                .await
            {
                Ok(h) => h,
                Err(NoHead::Quiet) => return,
                Err(NoHead::Answer(code)) => {
                    let mut rng = fastrand::Rng::new();
                    let id = crate::trace::new_id128(&mut rng);
                    let out = write::own_response(code, id.as_bytes(), None, false, true, false);
                    let _ = pingora_timeout::timeout(Duration::from_secs(5), async {
                        stream.write_all(&out).await?;
                        stream.flush().await
                    })
                    .await;
                    linger(&mut stream).await;
                    return;
                }
            };
            let mut client = Client {
                stream: &mut stream,
                buf: &mut buf,
                origin,
                shutdown: *shutdown.borrow(),
            };
            // Boxed: the request's state lives only while the request does.
            let keep = Box::pin(serve::serve(self, head, &mut client)).await;
            if !keep {
                linger(&mut stream).await;
                return;
            }
            if buf.is_empty() {
                buf = BytesMut::new();
            }
            since = tokio::time::Instant::now();
        }
    }
}

/// Closes our side, then reads and drops what the client still sends for a moment, so that an
/// answer written just before is not destroyed by a reset (a client still sending a body
/// would otherwise get one when the socket closes with unread data).
async fn linger(stream: &mut Stream) {
    let _ = stream.shutdown().await;
    let _ = pingora_timeout::timeout(Duration::from_millis(500), async {
        // On the heap: an array here would sit in every connection's future for its whole life.
        let mut sink = vec![0u8; 4096];
        let mut total = 0usize;
        while total < 256 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

#[async_trait]
impl ServerApp for Engine {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if h2 || self.gw.config.http1_engine == Http1Engine::Pingora {
            return ServerApp::process_new(&self.pingora, stream, shutdown).await;
        }
        self.connection(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.pingora.cleanup().await;
    }
}
