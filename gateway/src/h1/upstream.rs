//! Upstream connections for the HTTP/1 engine: dialling (plain TCP directly, TLS through
//! Pingora's transport connector), a lock-free keep-alive pool per endpoint, and one exchange:
//! write the request, read the response head.
//!
//! The pool is a bounded lock-free queue inside each endpoint's live stats, so a table swap keeps
//! the connections of endpoints that stay. A pooled connection is checked before reuse without a
//! syscall when epoll has not reported it readable since its last read (an idle connection with
//! nothing to read is alive); otherwise one non-blocking read tells a closed one (end of file)
//! from a live one. What slips through (a close racing the reuse) is the stale-connection case
//! the retry policy covers.

use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;
use pingora::connectors::TransportConnector;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use super::conn::Conn;
use super::head::{HeadError, ResponseHead, MAX_HEAD};
use super::timer::Timer;
use crate::snapshot::EndpointRt;

/// One idle connection and when it went idle.
#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// An endpoint's idle keep-alive connections; the queue is made on first use, so endpoints
/// that never get traffic cost nothing.
#[derive(Debug, Default)]
pub struct Pool {
    queue: OnceLock<ArrayQueue<Idle>>,
}

impl Pool {
    /// A live idle connection younger than `max_idle`, if there is one. Older or closed ones
    /// are dropped on the way.
    pub fn take(&self, max_idle: Duration) -> Option<Conn> {
        let q = self.queue.get()?;
        while let Some(idle) = q.pop() {
            if idle.since.elapsed() < max_idle && idle.conn.looks_alive() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse; when `cap` connections are already idle it is closed instead.
    pub fn put(&self, conn: Conn, cap: usize) {
        if cap == 0 {
            return;
        }
        let q = self.queue.get_or_init(|| ArrayQueue::new(cap));
        let _ = q.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Idle connections held now.
    pub fn idle(&self) -> usize {
        self.queue.get().map_or(0, ArrayQueue::len)
    }
}

/// An attempt that failed before a response head arrived.
#[derive(Debug)]
pub struct Failure {
    /// What failed (source: upstream).
    pub error: Box<Error>,
    /// The connection came from the pool.
    pub reused: bool,
}

fn fail(etype: ErrorType, why: String, reused: bool) -> Failure {
    let mut error = Error::explain(etype, why);
    error.as_up();
    Failure { error, reused }
}

/// Dials `ep` within `timeout`.
pub async fn connect(
    ep: &EndpointRt,
    timeout: Duration,
    tls: &TransportConnector,
    timer: &mut Timer<'_>,
) -> Result<Conn, Failure> {
    if ep.tls {
        let mut peer = HttpPeer::new(ep.addr, true, ep.sni.to_string());
        peer.options.connection_timeout = Some(timeout);
        peer.options.total_connection_timeout = Some(timeout);
        // Boxed: Pingora's TLS connect future is several KiB, and every attempt's future
        // would carry it inline (and be copied whole into its box) although most attempts
        // take a pooled connection.
        return Box::pin(tls.new_stream(&peer))
            .await
            .map(Conn::Tls)
            .map_err(|mut e| {
                e.as_up();
                Failure {
                    error: e,
                    reused: false,
                }
            });
    }
    match timer.within(timeout, TcpStream::connect(ep.addr)).await {
        Err(_) => Err(fail(
            ErrorType::ConnectTimedout,
            format!("connect to {} timed out", ep.addr),
            false,
        )),
        Ok(Err(e)) => {
            let etype = match e.kind() {
                io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    ErrorType::ConnectNoRoute
                }
                _ => ErrorType::ConnectError,
            };
            Err(fail(etype, format!("connect to {}: {e}", ep.addr), false))
        }
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(Conn::Tcp(s))
        }
    }
}

/// A response head, the connection it came on, and the bytes read past the head.
#[derive(Debug)]
pub struct Answer {
    /// The connection, positioned after `rest`.
    pub conn: Conn,
    /// The final response head (interim 1xx answers other than 101 are skipped).
    pub head: ResponseHead,
    /// Body bytes already read.
    pub rest: BytesMut,
}

/// Writes `out` on `conn`, within `write_timeout`.
pub async fn send(
    conn: &mut Conn,
    out: &[u8],
    write_timeout: Duration,
    reused: bool,
    timer: &mut Timer<'_>,
) -> Result<(), Failure> {
    match timer
        .within(write_timeout, async {
            conn.write_all(out).await?;
            conn.flush().await
        })
        .await
    {
        Ok(Ok(())) => Ok(()),
        // A write that fails on a pooled connection means the upstream had closed it.
        Ok(Err(e)) => Err(fail(
            ErrorType::WriteError,
            format!("writing the request: {e}"),
            reused,
        )),
        Err(_) => Err(fail(
            ErrorType::WriteTimedout,
            "writing the request timed out".into(),
            reused,
        )),
    }
}

/// Reads the response head from `conn` within `wait` (the attempt's time to first byte).
pub async fn receive(
    conn: Conn,
    wait: Duration,
    reused: bool,
    timer: &mut Timer<'_>,
) -> Result<Answer, Failure> {
    match timer.within(wait, read_head(conn, reused)).await {
        Ok(r) => r,
        Err(_) => Err(fail(
            ErrorType::ReadTimedout,
            "no response head within the attempt's timeout".into(),
            false,
        )),
    }
}

async fn read_head(mut conn: Conn, reused: bool) -> Result<Answer, Failure> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let bad = |why: String| Err(fail(ErrorType::InvalidHTTPHeader, why, false));
        match ResponseHead::parse(&mut buf) {
            Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => continue,
            Ok(Some(head)) => {
                return Ok(Answer {
                    conn,
                    head,
                    rest: buf,
                })
            }
            Ok(None) if buf.len() >= MAX_HEAD => return bad("response head too large".into()),
            Ok(None) => {}
            Err(HeadError::TooLarge) => return bad("response head has too many fields".into()),
            Err(HeadError::Malformed(why)) => return bad(format!("invalid response head: {why}")),
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        // Nothing at all back on a pooled connection: it was stale.
        let stale = reused && buf.is_empty();
        match conn.read_buf(&mut buf).await {
            Ok(0) => {
                return Err(fail(
                    ErrorType::ConnectionClosed,
                    "the upstream closed the connection before a whole response head".into(),
                    stale,
                ))
            }
            Ok(_) => {}
            Err(e) => {
                return Err(fail(
                    ErrorType::ReadError,
                    format!("reading the response head: {e}"),
                    stale,
                ))
            }
        }
    }
}
