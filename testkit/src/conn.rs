//! Per-connection plumbing: the socket wrapper that can abort with a TCP RST
//! and the task that serves one accepted connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use crate::service;
use crate::upstream::Inner;

/// Shared between a connection task, its socket wrapper and the response
/// bodies served on it.
#[derive(Debug, Default)]
pub(crate) struct ConnCtl {
    /// Set once the connection must be aborted with an RST.
    reset: AtomicBool,
    /// Wakes the connection task so it drops the connection.
    kill: Notify,
    /// Requests that arrived on this connection so far.
    requests: AtomicU64,
}

impl ConnCtl {
    /// Asks the connection task to abort the connection with a TCP RST.
    /// Idempotent.
    pub(crate) fn request_reset(&self) {
        if !self.reset.swap(true, Ordering::SeqCst) {
            // `notify_one` stores a permit if the task is not waiting yet.
            self.kill.notify_one();
        }
    }

    /// Counts a request arriving on the connection; true when it is the
    /// first one.
    pub(crate) fn first_request(&self) -> bool {
        self.requests.fetch_add(1, Ordering::SeqCst) == 0
    }

    fn reset_requested(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }
}

/// A `TcpStream` that turns its close into an abortive one (`SO_LINGER` 0,
/// hence RST instead of FIN) when [`ConnCtl::request_reset`] was called.
pub(crate) struct ConnIo {
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.ctl.reset_requested() {
            // Best effort: if this fails the peer sees a FIN instead, which
            // still truncates the body.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Serves one accepted connection (HTTP/1.1, or h2c with prior knowledge)
/// on the current runtime until the peer closes it, the upstream goes down
/// (`shutdown` changes) or a [`Fault::ResetMidBody`](crate::Fault) response
/// (or a [`Fault::ResetBeforeHeaders`](crate::Fault) request) asks for an
/// abort.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    stream: TcpStream,
    mut shutdown: watch::Receiver<u64>,
    builder: auto::Builder<TokioExecutor>,
) {
    let guard = inner.conn_guard();
    tokio::spawn(async move {
        let _guard = guard;
        let ctl = Arc::new(ConnCtl::default());
        let io = TokioIo::new(ConnIo {
            stream,
            ctl: Arc::clone(&ctl),
        });
        let svc_ctl = Arc::clone(&ctl);
        let svc =
            service_fn(move |req| service::handle(Arc::clone(&inner), Arc::clone(&svc_ctl), req));
        let conn = builder.serve_connection(io, svc);
        // Every branch ends by dropping `conn`, which closes the socket (with
        // an RST if a reset was requested). Serve errors are expected here
        // (peers vanish, faults abort) and carry no information for tests.
        tokio::select! {
            _ = conn => {}
            _ = shutdown.changed() => {}
            _ = ctl.kill.notified() => {}
        }
    });
}
