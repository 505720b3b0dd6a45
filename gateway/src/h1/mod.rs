//! The gateway's own HTTP/1.x engine, on Pingora's server lifecycle and TLS listeners, with its
//! own accept loop for plain-HTTP listeners ([`Accept`]).
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
//! Per connection, between requests, the engine holds no buffer and no request state (its task's
//! future is 376 bytes; benches/README.md, "Idle connections"): it waits for the socket to be
//! readable, then reads the next head. A head must arrive whole within the header timeout
//! (slow-header clients are cut off), and each read of a body within the body timeout.

mod accept;
pub mod body;
pub mod chunked;
pub mod conn;
pub mod head;
mod serve;
pub mod timer;
pub mod upstream;
pub mod write;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::connectors::TransportConnector;
use pingora::protocols::{Stream, ALPN};

pub use accept::Accept;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::config::Http1Engine;
use crate::idle::LeanIdle;
use crate::state::Gateway;
use conn::Conn;
use head::{HeadError, RequestHead, MAX_HEAD};
use serve::Client;
use timer::Timer;
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
    /// Set once shutdown begins ([`Engine::begin_drain`]): every answer says `Connection:
    /// close`, and idle connections close. Read on every request, so an atomic, not Pingora's
    /// shutdown watch (a lock).
    draining: AtomicBool,
    /// Wakes idle connections when draining begins.
    drain: Notify,
}

impl Engine {
    /// An engine for `gw`; `pingora` serves what the engine does not.
    pub fn new(gw: Arc<Gateway>, pingora: LeanIdle) -> Engine {
        Engine {
            gw,
            pingora: Arc::new(pingora),
            tls: TransportConnector::new(None),
            draining: AtomicBool::new(false),
            drain: Notify::new(),
        }
    }

    /// Shutdown has begun: idle connections close now, busy ones after their answer.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.drain.notify_waiters();
    }
}

/// Starts the engine's drain when Pingora's shutdown begins.
pub struct Drain(pub Arc<Engine>);

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.wait_for(|down| *down).await.is_ok() {
            self.0.begin_drain();
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

/// One poll of the wait for the next request: reads its first bytes into `buf` (empty on
/// entry), or ends it when the connection has been idle for `idle` since `since`, or the engine
/// is draining.
///
/// No buffer is held while waiting: one is allocated when the socket is readable
/// ([`Conn::poll_read_fresh`]), and the same poll reads the bytes, so a request costs one read,
/// not a readiness probe and a read. The timer and the drain waiter live as long as the
/// connection, so waiting costs no timer or waiter registration per request: the timer is set
/// once and, when it fires early (the connection served requests meanwhile), moved to the real
/// end of the idle period; the drain waiter was registered once and only wakes the task, so
/// here the drain is the flag. A plain function polled in place, not a future: an idle
/// connection holds only its references.
fn poll_wait(
    cx: &mut Context<'_>,
    stream: &mut Conn,
    buf: &mut BytesMut,
    since: tokio::time::Instant,
    idle: Duration,
    timer: &mut Pin<&mut tokio::time::Sleep>,
    draining: &AtomicBool,
) -> Poll<Wait> {
    match stream.poll_read_fresh(cx, FIRST_READ) {
        Poll::Ready(Ok(fresh)) if !fresh.is_empty() => {
            *buf = fresh;
            return Poll::Ready(Wait::Data);
        }
        Poll::Ready(_) => return Poll::Ready(Wait::Stop),
        Poll::Pending => {}
    }
    if draining.load(Ordering::SeqCst) {
        return Poll::Ready(Wait::Stop);
    }
    let due = since + idle;
    // A request's wait may have left the timer due later than this (its limit was longer
    // than the idle timeout): bring it forward.
    if timer.deadline() > due {
        timer.as_mut().reset(due);
    }
    while timer.as_mut().poll(cx).is_ready() {
        if tokio::time::Instant::now() >= due {
            return Poll::Ready(Wait::Stop);
        }
        timer.as_mut().reset(due);
    }
    Poll::Pending
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
        stream: &mut Conn,
        buf: &mut BytesMut,
        first_wait: Duration,
        started: Option<tokio::time::Instant>,
        timer: &mut Timer<'_>,
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
            let read = timer.within(wait, stream.read_buf(buf)).await;
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
    ///
    /// This future is what an idle keep-alive connection holds, so it holds only the wait: the
    /// socket, the idle timer and the drain waiter. Everything a request needs (its head,
    /// body, attempts and relay, and the error and close paths) is in [`Engine::request`]'s
    /// future, boxed, and gone when the request is.
    ///
    /// A function returning an `async move` block rather than an `async fn`: an `async fn`
    /// keeps its arguments twice in its state (as passed, and as moved into its body), 58 bytes
    /// more per idle connection here.
    #[allow(clippy::manual_async_fn)]
    fn connection(
        self: Arc<Self>,
        mut stream: Conn,
        origin: Origin,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let idle = self.gw.config.client_idle_timeout;
            let mut buf = BytesMut::new();
            // Registered once, in this task, before the flag is first read: a drain then wakes
            // the task and the wait reads the flag. Polling the waiter on every wait instead
            // would take the `Notify`'s list lock, which all workers share, once per request.
            let drained = self.drain.notified();
            tokio::pin!(drained);
            poll_fn(|cx| {
                let _ = drained.as_mut().poll(cx);
                Poll::Ready(())
            })
            .await;
            let mut since = tokio::time::Instant::now();
            let timer = tokio::time::sleep_until(since + idle);
            tokio::pin!(timer);
            loop {
                // Between requests no buffer is held, unless a pipelined request is already in
                // it.
                let fresh = buf.is_empty();
                if fresh {
                    let wait = poll_fn(|cx| {
                        let (s, b, t) = (&mut stream, &mut buf, &mut timer);
                        poll_wait(cx, s, b, since, idle, t, &self.draining)
                    });
                    if wait.await != Wait::Data {
                        return;
                    }
                }
                let request = self.request(&mut stream, &mut buf, origin, fresh, timer.as_mut());
                if !Box::pin(request).await {
                    return;
                }
                if buf.is_empty() {
                    buf = BytesMut::new();
                }
                since = tokio::time::Instant::now();
            }
        }
    }

    /// Reads one request's head (its first bytes are in `buf`: just read when `fresh`, or
    /// pipelined after the previous request) and serves the request. False when the connection
    /// is done; it has then been closed.
    async fn request(
        &self,
        stream: &mut Conn,
        buf: &mut BytesMut,
        origin: Origin,
        fresh: bool,
        timer: Pin<&mut tokio::time::Sleep>,
    ) -> bool {
        let mut timer = Timer::Conn(timer);
        let cfg = &self.gw.config;
        let (first_wait, started) = if fresh {
            (cfg.client_header_timeout, Some(tokio::time::Instant::now()))
        } else {
            (cfg.client_idle_timeout, None)
        };
        let head = match self
            .read_head(stream, buf, first_wait, started, &mut timer)
            .await
        {
            Ok(h) => h,
            Err(NoHead::Quiet) => return false,
            Err(NoHead::Answer(code)) => {
                let mut rng = fastrand::Rng::new();
                let id = crate::trace::new_id128(&mut rng);
                let out = write::own_response(code, id.as_bytes(), None, false, true, false);
                let wrote = async {
                    stream.write_all(&out).await?;
                    stream.flush().await
                };
                let _ = timer.within(Duration::from_secs(5), wrote).await;
                linger(stream, &mut timer).await;
                return false;
            }
        };
        let mut client = Client {
            stream,
            buf,
            origin,
            draining: &self.draining,
            timer,
        };
        let keep = serve::serve(self, head, &mut client).await;
        if !keep {
            linger(client.stream, &mut client.timer).await;
        }
        keep
    }
}

/// Closes our side, then reads and drops what the client still sends for a moment, so that an
/// answer written just before is not destroyed by a reset (a client still sending a body
/// would otherwise get one when the socket closes with unread data).
async fn linger(stream: &mut Conn, timer: &mut Timer<'_>) {
    let _ = stream.shutdown().await;
    let drain = async {
        // On the heap: an array here would sit in every connection's future for its whole life.
        let mut sink = vec![0u8; 4096];
        let mut total = 0usize;
        while total < 256 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timer.within(Duration::from_millis(500), drain).await;
}

/// The engine as Pingora's listeners see it: the TLS listeners, and every listener under
/// `http1_engine: pingora`. Plain-HTTP listeners under the engine use its own accept loop
/// ([`Accept`]), which shares the same engine.
pub struct App(pub Arc<Engine>);

#[async_trait]
impl ServerApp for App {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let this = &self.0;
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if h2 || this.gw.config.http1_engine == Http1Engine::Pingora {
            return ServerApp::process_new(&this.pingora, stream, shutdown).await;
        }
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let origin = Origin {
            ip,
            tls: stream.get_ssl_digest().is_some(),
        };
        this.clone().connection(Conn::Tls(stream), origin).await;
        None
    }

    async fn cleanup(&self) {
        self.0.pingora.cleanup().await;
    }
}
