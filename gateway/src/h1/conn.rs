//! The one stream type of the HTTP/1 engine, for both sides: plain TCP directly on tokio, or a
//! stream Pingora set up (TLS).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection, to a client or to an upstream.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP (a plain-HTTP client accepted by the engine, or a dialled upstream).
    Tcp(TcpStream),
    /// A stream set up by Pingora: a TLS client from its listener, or a TLS upstream from its
    /// connector.
    Tls(Stream),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Conn {
    /// Reads what the connection has into a new buffer of `cap` bytes (empty: end of file).
    /// The buffer is allocated only once the socket is readable (on plain TCP; Pingora's
    /// streams give no readiness of their own, so there each poll takes a buffer and drops it
    /// when nothing came), so a wait that is polled before its bytes arrive costs no allocation.
    pub(super) fn poll_read_fresh(
        &mut self,
        cx: &mut Context<'_>,
        cap: usize,
    ) -> Poll<io::Result<BytesMut>> {
        match self {
            Conn::Tcp(s) => {
                if let Err(e) = std::task::ready!(s.poll_read_ready(cx)) {
                    return Poll::Ready(Err(e));
                }
                // Read through `poll_read`, not `try_read`: a short read clears the readiness
                // there, so the next wait costs no read that only says "would block".
                let mut fresh = BytesMut::with_capacity(cap);
                tokio_util::io::poll_read_buf(Pin::new(s), cx, &mut fresh).map_ok(|_| fresh)
            }
            Conn::Tls(s) => {
                let mut fresh = BytesMut::with_capacity(cap);
                tokio_util::io::poll_read_buf(Pin::new(s), cx, &mut fresh).map_ok(|_| fresh)
            }
        }
    }

    /// False when a pooled connection is known to be closed (or to hold unexpected bytes).
    pub(super) fn looks_alive(&self) -> bool {
        let Conn::Tcp(s) = self else {
            return true;
        };
        let mut cx = Context::from_waker(Waker::noop());
        match s.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}
