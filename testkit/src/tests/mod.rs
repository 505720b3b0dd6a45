//! Tests against real sockets. Helpers live here; the cases are split into
//! `basics` (happy path, counters, health, runtimes) and `faults`.

#![allow(clippy::unwrap_used)]

mod basics;
mod faults;

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{MockUpstream, UpstreamConfig};

type BoxError = Box<dyn Error + Send + Sync>;

/// Generous bound for things that should happen "at once".
const SOON: Duration = Duration::from_secs(2);

/// A fully received response.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn start(name: &str) -> MockUpstream {
    MockUpstream::start(UpstreamConfig::new(name))
        .await
        .unwrap()
}

/// An HTTP/1.1 connection whose driver runs in the background.
async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(method: Method, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mock")
        .body(Full::new(body.into()))
        .unwrap()
}

/// Sends `req` on `sender` and reads the whole response.
async fn send_on(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Reply, BoxError> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Sends `req` on a fresh connection.
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Reply, BoxError> {
    let mut sender = connect(addr).await?;
    send_on(&mut sender, req).await
}

async fn get(addr: SocketAddr, path: &str) -> Result<Reply, BoxError> {
    send(addr, request(Method::GET, path, Bytes::new())).await
}

/// Writes a raw HTTP/1.1 GET and reads until EOF or error. Returns the bytes
/// read and the terminating error, if any.
async fn raw_get(addr: SocketAddr) -> (Vec<u8>, Option<std::io::Error>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e)),
        }
    }
}
