//! Bodies on the HTTP/1 engine. A request body up to the replay limit (64 KiB) is read whole
//! before the first attempt, so any attempt can send it again byte for byte; a larger one is
//! streamed to the one attempt that may carry it. A response body is streamed to the client as it
//! arrives, in its own framing, and only a connection whose body was read to its exact end goes
//! back to the pool.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chunked::Chunked;
use super::head::Framing;
use super::timer::Timer;
use super::upstream::Conn;
use crate::errors::TOTAL_TIMEOUT;

/// Request bodies up to this size are buffered for replay. Default: 64 KiB.
pub const REPLAY_LIMIT: usize = 64 * 1024;
/// Read size for streamed bodies.
const CHUNK: usize = 16 * 1024;

/// A request body as read before the first attempt.
#[derive(Debug)]
pub enum Body {
    /// No body.
    Empty,
    /// The whole body, in its wire framing.
    Buffered(BytesMut),
    /// A body over the replay limit, streamed to an attempt and read to its end.
    Sent,
    /// A body over the replay limit whose streaming failed part way: the client connection
    /// holds an unknown rest of it.
    Broken,
    /// The first part of a body over the replay limit; the rest is still on the client
    /// connection.
    Streaming {
        /// What was read so far, in wire framing.
        prefix: BytesMut,
        /// What is left.
        rest: Rest,
    },
}

/// What is left of a streamed body.
#[derive(Debug)]
pub enum Rest {
    /// This many bytes.
    Length(u64),
    /// The rest of a chunked body.
    Chunked(Chunked),
}

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The client went away.
    Gone,
    /// The client paused longer than the body timeout: 408.
    Timeout,
    /// Malformed chunked framing: 400.
    Malformed,
}

/// Reads more from the client into `buf` within `wait`.
async fn fill(
    stream: &mut Conn,
    buf: &mut BytesMut,
    wait: Duration,
    timer: &mut Timer<'_>,
) -> Result<(), BodyError> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(CHUNK);
    }
    match timer.within(wait, stream.read_buf(buf)).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(0)) | Ok(Err(_)) => Err(BodyError::Gone),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Reads the request body per `framing` from the bytes after the head (`buf`) and the client.
/// Bytes past the body stay in `buf` (a pipelined next request).
pub async fn read_request(
    stream: &mut Conn,
    buf: &mut BytesMut,
    framing: Framing,
    wait: Duration,
    timer: &mut Timer<'_>,
) -> Result<Body, BodyError> {
    match framing {
        Framing::Empty | Framing::Close => Ok(Body::Empty),
        Framing::Length(n) => {
            let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
            if n_usize <= REPLAY_LIMIT {
                while buf.len() < n_usize {
                    fill(stream, buf, wait, timer).await?;
                }
                return Ok(Body::Buffered(buf.split_to(n_usize)));
            }
            let take = buf.len().min(n_usize);
            Ok(Body::Streaming {
                prefix: buf.split_to(take),
                rest: Rest::Length(n - take as u64),
            })
        }
        Framing::Chunked => {
            let mut c = Chunked::new();
            let mut scanned = 0;
            loop {
                scanned += c
                    .feed(&buf[scanned..], |_| {})
                    .map_err(|_| BodyError::Malformed)?;
                if c.done() {
                    return Ok(Body::Buffered(buf.split_to(scanned)));
                }
                if scanned > REPLAY_LIMIT {
                    return Ok(Body::Streaming {
                        prefix: buf.split_to(scanned),
                        rest: Rest::Chunked(c),
                    });
                }
                fill(stream, buf, wait, timer).await?;
            }
        }
    }
}

/// Copies the rest of a streamed request body from the client to `up`. Bytes past the body stay
/// in `buf`.
pub async fn pump_request(
    stream: &mut Conn,
    buf: &mut BytesMut,
    mut rest: Rest,
    up: &mut Conn,
    wait: Duration,
    timer: &mut Timer<'_>,
) -> Result<(), Box<Error>> {
    let down_err = |e: BodyError| {
        let mut err = Error::explain(
            match e {
                BodyError::Timeout => ErrorType::ReadTimedout,
                BodyError::Malformed => ErrorType::InvalidHTTPHeader,
                BodyError::Gone => ErrorType::ConnectionClosed,
            },
            "reading the request body",
        );
        err.as_down();
        err
    };
    let up_err = |e: std::io::Error| {
        let mut err = Error::explain(ErrorType::WriteError, format!("sending the body: {e}"));
        err.as_up();
        err
    };
    loop {
        let take = match &mut rest {
            Rest::Length(0) => return Ok(()),
            Rest::Length(left) => {
                let take = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                take
            }
            Rest::Chunked(c) if c.done() => return Ok(()),
            Rest::Chunked(c) => c
                .feed(buf, |_| {})
                .map_err(|_| down_err(BodyError::Malformed))?,
        };
        if take > 0 {
            let part = buf.split_to(take);
            timer
                .within(wait, up.write_all(&part))
                .await
                .map_err(|_| {
                    let mut e = Error::new(ErrorType::WriteTimedout);
                    e.as_up();
                    e
                })?
                .map_err(up_err)?;
            continue;
        }
        fill(stream, buf, wait, timer).await.map_err(down_err)?;
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Read to its exact end with nothing after it: the upstream connection can be reused.
    Complete,
    /// Read to its end, but the connection cannot be reused (close-delimited, or extra bytes).
    CompleteNoReuse,
}

/// Where a response body goes and how fast it must move.
pub struct Relay<'a> {
    /// The client.
    pub down: &'a mut Conn,
    /// Per read from the upstream.
    pub read_wait: Duration,
    /// Per write to the client.
    pub write_wait: Duration,
    /// The route's total deadline.
    pub deadline: Option<Instant>,
    /// Decode chunked framing (the client is HTTP/1.0).
    pub dechunk: bool,
    /// The limit on each read and write.
    pub timer: Timer<'a>,
}

/// Sends `out` (the response head, perhaps with body bytes) and then the rest of the body per
/// `framing`, starting with `rest` (bytes already read past the head). Returns how it ended and
/// the body bytes sent.
pub async fn copy_response(
    c: &mut Relay<'_>,
    mut out: Vec<u8>,
    head_len: usize,
    framing: Framing,
    mut rest: BytesMut,
    up: &mut Conn,
) -> Result<(Sent, usize), Box<Error>> {
    let mut sent_body = 0usize;
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunked = Chunked::new();
    let mut extra = false;
    let mut head_left = head_len;
    loop {
        // Move what `rest` holds of the body into `out`.
        let done = match framing {
            Framing::Empty => {
                extra |= !rest.is_empty();
                true
            }
            Framing::Length(_) => {
                let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&rest[..take]);
                left -= take as u64;
                extra |= rest.len() > take;
                rest.clear();
                left == 0
            }
            Framing::Chunked => {
                let used = if c.dechunk {
                    chunked.feed(&rest, |d| out.extend_from_slice(d))
                } else {
                    chunked.feed(&rest, |_| {})
                }
                .map_err(|e| {
                    let mut err = Error::explain(ErrorType::InvalidHTTPHeader, e.0);
                    err.as_up();
                    err
                })?;
                if !c.dechunk {
                    out.extend_from_slice(&rest[..used]);
                }
                extra |= rest.len() > used;
                rest.clear();
                chunked.done()
            }
            Framing::Close => {
                out.extend_from_slice(&rest);
                rest.clear();
                false
            }
        };
        if !out.is_empty() {
            sent_body += out.len() - head_left.min(out.len());
            head_left = 0;
            write_down(c, &out).await?;
            out.clear();
        }
        if done {
            let reuse = !extra && framing != Framing::Close;
            return Ok((
                if reuse {
                    Sent::Complete
                } else {
                    Sent::CompleteNoReuse
                },
                sent_body,
            ));
        }
        if c.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(Error::explain(
                TOTAL_TIMEOUT,
                "response body still arriving at the route's total timeout",
            ));
        }
        rest.reserve(CHUNK);
        match c.timer.within(c.read_wait, up.read_buf(&mut rest)).await {
            Err(_) => {
                let mut e = Error::explain(ErrorType::ReadTimedout, "response body stalled");
                e.as_up();
                return Err(e);
            }
            Ok(Ok(0)) if framing == Framing::Close => {
                return Ok((Sent::CompleteNoReuse, sent_body));
            }
            Ok(Ok(0)) => {
                let mut e = Error::explain(
                    ErrorType::ConnectionClosed,
                    "the upstream closed the connection mid-body",
                );
                e.as_up();
                return Err(e);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let mut e = Error::explain(ErrorType::ReadError, format!("response body: {e}"));
                e.as_up();
                return Err(e);
            }
        }
    }
}

/// Writes `bytes` to the client within the write timeout.
pub async fn write_down(c: &mut Relay<'_>, bytes: &[u8]) -> Result<(), Box<Error>> {
    let down = &mut *c.down;
    let r = c
        .timer
        .within(c.write_wait, async {
            down.write_all(bytes).await?;
            down.flush().await
        })
        .await;
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let mut err = Error::explain(ErrorType::WriteError, format!("to the client: {e}"));
            err.as_down();
            Err(err)
        }
        Err(_) => {
            let mut err = Error::explain(ErrorType::WriteTimedout, "the client stopped reading");
            err.as_down();
            Err(err)
        }
    }
}
