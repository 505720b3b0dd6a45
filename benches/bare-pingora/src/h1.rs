//! `BARE_MODE=h1`: the same listener and Pingora server, but with a minimal hand-written
//! HTTP/1.1 proxy loop instead of `pingora-proxy`: parse the request head with httparse, forward
//! it (and a `Content-Length` body) over a pooled upstream connection, forward the response head
//! and body back. No features at all. It measures how much of bare Pingora's cost per request is
//! the proxy loop rather than the server, listener and runtime underneath it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use crossbeam_queue::ArrayQueue;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct H1 {
    upstreams: Vec<(SocketAddr, ArrayQueue<TcpStream>)>,
    next: AtomicUsize,
}

impl H1 {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        H1 {
            upstreams: upstreams
                .into_iter()
                .map(|a| (a, ArrayQueue::new(128)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }
}

/// Reads into `buf` until a whole head parses; returns (head length, content length).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    request: bool,
) -> Option<(usize, usize)> {
    loop {
        if !buf.is_empty() {
            let mut h = [httparse::EMPTY_HEADER; 32];
            let parsed = if request {
                let mut r = httparse::Request::new(&mut h);
                r.parse(buf).ok()?
            } else {
                let mut r = httparse::Response::new(&mut h);
                r.parse(buf).ok()?
            };
            if let httparse::Status::Complete(n) = parsed {
                let cl = h
                    .iter()
                    .take_while(|x| !x.name.is_empty())
                    .find(|x| x.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|x| std::str::from_utf8(x.value).ok()?.trim().parse().ok())
                    .unwrap_or(0);
                return Some((n, cl));
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        let n = s.read_buf(buf).await.ok()?;
        if n == 0 {
            return None;
        }
    }
}

/// Reads until `buf` holds `want` bytes.
async fn fill<S: tokio::io::AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, want: usize) -> bool {
    while buf.len() < want {
        buf.reserve(want - buf.len());
        match s.read_buf(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}

impl H1 {
    async fn one(&self, down: &mut Stream, req: &mut Vec<u8>, resp: &mut Vec<u8>) -> bool {
        let Some((head, cl)) = read_head(down, req, true).await else {
            return false;
        };
        if !fill(down, req, head + cl).await {
            return false;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        let (addr, pool) = &self.upstreams[i];
        let mut up = match pool.pop() {
            Some(c) => c,
            None => match TcpStream::connect(addr).await {
                Ok(c) => {
                    let _ = c.set_nodelay(true);
                    c
                }
                Err(_) => return false,
            },
        };
        if up.write_all(&req[..head + cl]).await.is_err() {
            return false;
        }
        req.drain(..head + cl);
        resp.clear();
        let Some((rhead, rcl)) = read_head(&mut up, resp, false).await else {
            return false;
        };
        if !fill(&mut up, resp, rhead + rcl).await {
            return false;
        }
        if down.write_all(&resp[..rhead + rcl]).await.is_err() {
            return false;
        }
        if down.flush().await.is_err() {
            return false;
        }
        let _ = pool.push(up);
        true
    }
}

#[async_trait]
impl ServerApp for H1 {
    async fn process_new(self: &Arc<Self>, mut down: Stream, _: &ShutdownWatch) -> Option<Stream> {
        let mut req = Vec::with_capacity(4096);
        let mut resp = Vec::with_capacity(4096);
        while self.one(&mut down, &mut req, &mut resp).await {}
        None
    }
}
