//! Fault injection: the [`Fault`] modes and the response bodies that
//! implement the streaming ones.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::conn::ConnCtl;

/// Extra bytes that a [`Fault::ResetMidBody`] response announces in
/// `content-length` beyond the body it actually sends.
pub const RESET_MISSING_BYTES: u64 = 4096;

/// How long a [`Fault::ResetMidBody`] response waits after handing over the
/// partial body before resetting, so hyper has flushed it to the socket.
pub(crate) const RESET_FLUSH_GRACE: Duration = Duration::from_millis(30);

/// A misbehaviour injected into a [`MockUpstream`](crate::MockUpstream) via
/// [`MockUpstream::set_fault`](crate::MockUpstream::set_fault).
///
/// The default is [`Fault::None`]. Apart from [`Fault::Refuse`], faults do
/// not affect `GET /healthz`, which is controlled by
/// [`MockUpstream::set_healthy`](crate::MockUpstream::set_healthy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave normally.
    #[default]
    None,
    /// Act like a dead process: the listening socket is closed (new
    /// connections get `ECONNREFUSED`) and every open connection, including
    /// idle keep-alive ones, is closed. Switching to any other fault re-binds
    /// the same port.
    Refuse,
    /// Accept the connection and read the whole request, but never answer.
    /// The request is counted and its body recorded.
    Hang,
    /// Send the response head announcing `content-length` = body length +
    /// [`RESET_MISSING_BYTES`], send the configured body, then abort the
    /// connection with a TCP RST (`SO_LINGER` 0, then close). On HTTP/2 the
    /// whole connection is reset.
    ResetMidBody,
    /// Read the whole request (counted, body recorded), wait for the
    /// latency, then abort the connection with a TCP RST (`SO_LINGER` 0,
    /// then close) without sending a single response byte: the upstream died
    /// before its response headers. On HTTP/2 the whole connection is reset.
    ResetBeforeHeaders,
    /// Close a keep-alive connection when a request arrives on it after it
    /// has already served one, without answering (as an upstream whose idle
    /// timeout fires just as the request comes in); that request is not
    /// counted. The first request on every connection is served normally, so
    /// a client that retries on a fresh connection succeeds.
    CloseReused,
    /// Send the response head at once, then the configured body `chunks`
    /// times (so the total body is `chunks` copies of it), sleeping
    /// `chunk_delay` before each chunk. `content-length` announces the total.
    SlowBody {
        /// Delay before each chunk.
        chunk_delay: Duration,
        /// Number of chunks (copies of the body).
        chunks: u32,
    },
    /// Answer every request with this status code (an invalid code becomes
    /// 500). Latency still applies.
    Status(u16),
}

/// Response body type served by mock upstreams.
pub(crate) enum MockBody {
    /// A single in-memory chunk (or nothing once sent).
    Full(Option<Bytes>),
    /// [`Fault::SlowBody`].
    Slow {
        chunk: Bytes,
        left: u32,
        delay: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    },
    /// [`Fault::ResetMidBody`].
    Reset {
        first: Option<Bytes>,
        declared: u64,
        ctl: Arc<ConnCtl>,
        grace: Option<Pin<Box<Sleep>>>,
    },
}

impl MockBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(b.into()))
    }

    pub(crate) fn slow(chunk: Bytes, chunks: u32, delay: Duration) -> Self {
        MockBody::Slow {
            chunk,
            left: chunks,
            delay,
            sleep: None,
        }
    }

    pub(crate) fn reset(first: Bytes, ctl: Arc<ConnCtl>) -> Self {
        let declared = first.len() as u64 + RESET_MISSING_BYTES;
        MockBody::Reset {
            first: Some(first),
            declared,
            ctl,
            grace: None,
        }
    }

    /// Boxes the body into the type hyper serves.
    pub(crate) fn boxed(self) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
        BodyExt::boxed(self)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Slow {
                chunk,
                left,
                delay,
                sleep,
            } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let timer = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(*delay)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *sleep = None;
                *left -= 1;
                Poll::Ready(Some(Ok(Frame::data(chunk.clone()))))
            }
            MockBody::Reset {
                first, ctl, grace, ..
            } => {
                if let Some(b) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                // hyper flushes what it has while this body is pending; give
                // it a moment, then ask the connection task to abort.
                let timer =
                    grace.get_or_insert_with(|| Box::pin(tokio::time::sleep(RESET_FLUSH_GRACE)));
                if timer.as_mut().poll(cx).is_ready() {
                    // Idempotent; the connection task drops the connection.
                    ctl.request_reset();
                }
                // Never finishes: the connection is aborted instead.
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(b) => b.is_none(),
            MockBody::Slow { left, .. } => *left == 0,
            MockBody::Reset { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            MockBody::Slow { chunk, left, .. } => {
                SizeHint::with_exact(chunk.len() as u64 * u64::from(*left))
            }
            MockBody::Reset { declared, .. } => SizeHint::with_exact(*declared),
        }
    }
}
