//! End-to-end wire tests of the gateway's own HTTP/1 engine (`gateway/src/h1/`): raw TCP clients
//! write request bytes and read response bytes, so every test sees exactly what is on the wire.
//! Pipelining, `Expect: 100-continue`, the three response framings (and de-chunking for
//! HTTP/1.0 clients), bodiless answers, HTTP/1.0 keep-alive, upgrades, smuggling refusals, large
//! streamed request bodies, and one check that `http1_engine: pingora` still serves.
//!
//! Where an upstream must answer in a framing `MockUpstream` (hyper) does not produce, a tiny raw
//! upstream here answers with hand-written bytes and records what it received, byte for byte.
//!
//! Every read has a deadline; nothing waits a fixed time.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use meridian_testkit::{Latency, MockUpstream, UpstreamConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Deadline of one wire operation (a whole response, a write) on a debug build, busy machine.
const IO: Duration = Duration::from_secs(15);

/// How long a raw upstream connection may sit idle, and how long a raw upstream accepts at all.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);
const UPSTREAM_LIFE: Duration = Duration::from_secs(300);

/// Host sent by every request (the test routes take any host).
const HOST: &str = "h1.test";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The start of `bytes` as text, for failure messages.
fn preview(bytes: &[u8]) -> String {
    let end = bytes.len().min(600);
    format!(
        "{:?}{}",
        String::from_utf8_lossy(&bytes[..end]),
        if bytes.len() > end { "..." } else { "" }
    )
}

/// Asserts two (possibly large) byte strings are equal without printing megabytes.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes, wanted {}; first difference at byte {at}: got {} wanted {}",
        got.len(),
        want.len(),
        preview(&got[at..]),
        preview(&want[at..])
    );
}

/// Deterministic arbitrary bytes (CR, LF and NUL included), so bodies cannot be mistaken for
/// framing.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// `data` in the chunked coding, chunk sizes cycling through `sizes`, hex sizes alternating
/// lower and upper case.
fn chunk(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 16);
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        let size = if i % 2 == 0 {
            format!("{n:x}\r\n")
        } else {
            format!("{n:X}\r\n")
        };
        out.extend_from_slice(size.as_bytes());
        out.extend_from_slice(&data[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Decodes a chunked body at the start of `buf`: `Ok(Some((data, used)))` once it is complete,
/// `Ok(None)` while more is needed.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut data = Vec::new();
    let mut i = 0;
    loop {
        let Some(eol) = find_crlf(&buf[i..]) else {
            return Ok(None);
        };
        let line = &buf[i..i + eol];
        let size_text = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size_text = std::str::from_utf8(size_text)
            .map_err(|_| format!("chunk size {}", preview(line)))?
            .trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("chunk size {}", preview(line)))?;
        i += eol + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let Some(eol) = find_crlf(&buf[i..]) else {
                    return Ok(None);
                };
                i += eol + 2;
                if eol == 0 {
                    return Ok(Some((data, i)));
                }
            }
        }
        if buf.len() < i + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[i..i + size]);
        if &buf[i + size..i + size + 2] != b"\r\n" {
            return Err(format!("no CRLF after chunk data at {}", i + size));
        }
        i += size + 2;
    }
}

/// Header fields as (lower-case name, value).
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn fields_of(headers: &[httparse::Header<'_>]) -> Fields {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The raw client.

/// A response as read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    minor: u8,
    fields: Fields,
    /// The body, decoded when chunked.
    body: Vec<u8>,
    /// The body as on the wire.
    raw_body: Vec<u8>,
    /// The body was chunked.
    chunked: bool,
    /// The body ran to the close of the connection.
    to_close: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        field(&self.fields, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Connection` says close.
    fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }

    /// A gateway's own error: JSON with the status and the request id, which is also the
    /// `x-request-id` header. Returns that id.
    fn assert_own_error(&self, code: u16) -> String {
        assert_eq!(self.status, code, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let rid = self.header("x-request-id").unwrap_or("").to_string();
        assert!(!rid.is_empty(), "no x-request-id: {self:?}");
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{code} body is not JSON ({e}): {}", self.text()));
        assert_eq!(v["status"], code, "{v}");
        assert_eq!(v["request_id"], rid.as_str(), "{v}");
        rid
    }
}

/// The reading side of a raw client connection, with what was read but not yet consumed.
struct Reader {
    r: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    /// Reads more before `end`; 0 at the end of the stream. Panics on a timeout or an error.
    async fn more(&mut self, end: Instant, what: &str) -> usize {
        self.buf.reserve(64 * 1024);
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.r.read_buf(&mut self.buf)).await {
            Err(_) => panic!(
                "timed out reading {what}; holding {} bytes: {}",
                self.buf.len(),
                preview(&self.buf)
            ),
            Ok(Err(e)) => panic!("reading {what}: {e}; holding {}", preview(&self.buf)),
            Ok(Ok(n)) => n,
        }
    }

    /// Reads one response to a request with `method` (HEAD answers carry no body).
    async fn response_to(&mut self, method: &str) -> Resp {
        let end = Instant::now() + IO;
        let (len, status, minor, fields) = loop {
            let parsed = {
                let mut storage = [httparse::EMPTY_HEADER; 128];
                let mut r = httparse::Response::new(&mut storage);
                match r.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => Some((
                        n,
                        r.code.unwrap_or(0),
                        r.version.unwrap_or(9),
                        fields_of(r.headers),
                    )),
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => panic!("bad response head ({e}): {}", preview(&self.buf)),
                }
            };
            if let Some(p) = parsed {
                break p;
            }
            if self.more(end, "a response head").await == 0 {
                panic!(
                    "connection closed before a whole response head: {}",
                    preview(&self.buf)
                );
            }
        };
        self.buf.drain(..len);
        let chunked = field(&fields, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = field(&fields, "content-length").map(|v| {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("content-length {v:?}"))
        });
        let bodiless =
            method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304;
        let mut resp = Resp {
            status,
            minor,
            fields,
            body: Vec::new(),
            raw_body: Vec::new(),
            chunked: chunked && !bodiless,
            to_close: false,
        };
        if bodiless {
            return resp;
        }
        if chunked {
            loop {
                match dechunk(&self.buf) {
                    Ok(Some((data, used))) => {
                        resp.body = data;
                        resp.raw_body = self.buf.drain(..used).collect();
                        return resp;
                    }
                    Ok(None) => {}
                    Err(e) => panic!("bad chunked body: {e}"),
                }
                if self.more(end, "a chunked body").await == 0 {
                    panic!("closed inside a chunked body: {}", preview(&self.buf));
                }
            }
        }
        if let Some(n) = length {
            while self.buf.len() < n {
                if self.more(end, "a content-length body").await == 0 {
                    panic!("closed {} bytes into a {n}-byte body", self.buf.len());
                }
            }
            resp.raw_body = self.buf.drain(..n).collect();
            resp.body = resp.raw_body.clone();
            return resp;
        }
        while self.more(end, "a close-delimited body").await > 0 {}
        resp.raw_body = std::mem::take(&mut self.buf);
        resp.body = resp.raw_body.clone();
        resp.to_close = true;
        resp
    }

    async fn response(&mut self) -> Resp {
        self.response_to("GET").await
    }

    /// Exactly `n` bytes (of a tunnel).
    async fn exact(&mut self, n: usize) -> Vec<u8> {
        let end = Instant::now() + IO;
        while self.buf.len() < n {
            if self.more(end, "tunnel bytes").await == 0 {
                panic!("closed after {} of {n} tunnel bytes", self.buf.len());
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Asserts that the peer closes the connection with nothing more sent.
    async fn assert_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "bytes after the last response: {}",
            preview(&self.buf)
        );
        let mut sink = [0u8; 1024];
        match tokio::time::timeout(IO, self.r.read(&mut sink)).await {
            Err(_) => panic!("the connection stayed open"),
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => panic!("bytes after the last response: {}", preview(&sink[..n])),
            // A reset also closes it (nothing was left unread on our side).
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(Err(e)) => panic!("waiting for the close: {e}"),
        }
    }
}

/// A raw client connection.
struct Wire {
    rd: Reader,
    w: OwnedWriteHalf,
}

impl Wire {
    async fn connect(addr: SocketAddr) -> Wire {
        let s = tokio::time::timeout(IO, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let (r, w) = s.into_split();
        Wire {
            rd: Reader { r, buf: Vec::new() },
            w,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        send(&mut self.w, bytes).await;
    }

    async fn response(&mut self) -> Resp {
        self.rd.response().await
    }

    async fn response_to(&mut self, method: &str) -> Resp {
        self.rd.response_to(method).await
    }

    async fn assert_closed(&mut self) {
        self.rd.assert_closed().await;
    }
}

async fn send(w: &mut OwnedWriteHalf, bytes: &[u8]) {
    tokio::time::timeout(IO, w.write_all(bytes))
        .await
        .expect("write timed out")
        .expect("write");
}

/// `GET path` with the test host and `extra` header lines (each ending in CRLF).
fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n")
}

// ---------------------------------------------------------------------------------------------
// The raw upstream.

/// A request as a raw upstream received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    /// The head's text, request line included.
    head: String,
    fields: Fields,
    /// The body, decoded when chunked.
    body: Vec<u8>,
    /// The body as on the wire.
    raw_body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        field(&self.fields, name)
    }
}

/// How a raw upstream answers one request.
enum Reply {
    /// Write these bytes; the connection takes the next request.
    Keep(Vec<u8>),
    /// Write these bytes, then close.
    Close(Vec<u8>),
    /// Write these bytes (a `101` head, perhaps with bytes of the new protocol), then echo
    /// every byte that arrives in ASCII upper case until the peer closes.
    Tunnel(Vec<u8>),
}

/// The bytes of `200 OK` with a `Content-Length` body.
fn ok_bytes(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `200 OK` with a `Content-Length` body, keeping the connection.
fn ok_length(body: &str) -> Reply {
    Reply::Keep(ok_bytes(body))
}

type Answer = dyn Fn(&Received) -> Reply + Send + Sync;

struct UpState {
    answer: Box<Answer>,
    seen: Mutex<Vec<Received>>,
    tunneled: Mutex<Vec<u8>>,
    conns: AtomicUsize,
}

/// An upstream on `127.0.0.1:0` that answers with hand-written bytes.
struct RawUpstream {
    addr: SocketAddr,
    st: Arc<UpState>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl RawUpstream {
    async fn start(answer: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw upstream");
        let addr = l.local_addr().expect("raw upstream addr");
        let st = Arc::new(UpState {
            answer: Box::new(answer),
            seen: Mutex::new(Vec::new()),
            tunneled: Mutex::new(Vec::new()),
            conns: AtomicUsize::new(0),
        });
        let state = st.clone();
        let accept = tokio::spawn(async move {
            let end = Instant::now() + UPSTREAM_LIFE;
            while let Ok(Ok((s, _))) =
                tokio::time::timeout(end.saturating_duration_since(Instant::now()), l.accept())
                    .await
            {
                state.conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(upstream_conn(s, state.clone()));
            }
        });
        RawUpstream { addr, st, accept }
    }

    /// Every request received so far, in order.
    fn received(&self) -> Vec<Received> {
        lock(&self.st.seen).clone()
    }

    /// Bytes received through tunnels (after a `101`).
    fn tunneled(&self) -> Vec<u8> {
        lock(&self.st.tunneled).clone()
    }

    fn connections(&self) -> usize {
        self.st.conns.load(Ordering::SeqCst)
    }
}

/// Reads more from the gateway; false at the end of the stream, on an error or when idle too long.
async fn up_read(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.reserve(64 * 1024);
    matches!(
        tokio::time::timeout(UPSTREAM_IDLE, s.read_buf(buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Parses a request head at the start of `buf`: its length and the request without its body.
fn parse_request(buf: &[u8]) -> Result<Option<(usize, Received)>, httparse::Error> {
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut r = httparse::Request::new(&mut storage);
    match r.parse(buf)? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(n) => Ok(Some((
            n,
            Received {
                method: r.method.unwrap_or("").to_string(),
                target: r.path.unwrap_or("").to_string(),
                head: String::from_utf8_lossy(&buf[..n]).into_owned(),
                fields: fields_of(r.headers),
                body: Vec::new(),
                raw_body: Vec::new(),
            },
        ))),
    }
}

/// One connection of a raw upstream: requests one after another (keep-alive), each recorded
/// before it is answered.
async fn upstream_conn(mut s: TcpStream, st: Arc<UpState>) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let (len, mut req) = loop {
            match parse_request(&buf) {
                Ok(Some(p)) => break p,
                Ok(None) => {}
                Err(_) => return,
            }
            if !up_read(&mut s, &mut buf).await {
                return;
            }
        };
        buf.drain(..len);
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                match dechunk(&buf) {
                    Ok(Some((data, used))) => {
                        req.body = data;
                        req.raw_body = buf.drain(..used).collect();
                        break;
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
                if !up_read(&mut s, &mut buf).await {
                    return;
                }
            }
        } else if let Some(n) = req.header("content-length").and_then(|v| v.parse().ok()) {
            while buf.len() < n {
                if !up_read(&mut s, &mut buf).await {
                    return;
                }
            }
            req.raw_body = buf.drain(..n).collect();
            req.body = req.raw_body.clone();
        }
        let reply = (st.answer)(&req);
        lock(&st.seen).push(req);
        match reply {
            Reply::Keep(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Close(bytes) => {
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
                return;
            }
            Reply::Tunnel(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
                loop {
                    if !buf.is_empty() {
                        lock(&st.tunneled).extend_from_slice(&buf);
                        if s.write_all(&buf.to_ascii_uppercase()).await.is_err() {
                            return;
                        }
                        buf.clear();
                    }
                    if !up_read(&mut s, &mut buf).await {
                        let _ = s.shutdown().await;
                        return;
                    }
                }
            }
        }
    }
}

/// A gateway (own engine unless `extra` says otherwise) whose one route takes every request to
/// `addr`.
async fn gateway_to(addr: SocketAddr, extra: &str) -> Gw {
    let t = table(
        1,
        vec![route("h1", None, &[("svc@v1", 100)])],
        vec![subset_addrs("svc@v1", &[addr])],
    );
    Gw::start(&t, extra).await
}

// ---------------------------------------------------------------------------------------------
// 1. Pipelining.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let up = RawUpstream::start(|r| {
        ok_length(&format!(
            "{} {} with {} body bytes",
            r.method,
            r.target,
            r.body.len()
        ))
    })
    .await;
    let gw = gateway_to(up.addr, "").await;
    let mut c = Wire::connect(gw.addr()).await;

    // Three requests in one write: a GET, a POST with a body, and a GET that closes.
    let mut burst = get("/first", "");
    burst.push_str(&format!(
        "POST /second HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nabcde"
    ));
    burst.push_str(&get("/third?x=1", "Connection: close\r\n"));
    c.send(burst.as_bytes()).await;

    let a = c.response().await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.text(), "GET /first with 0 body bytes");
    assert!(!a.says_close(), "{a:?}");
    assert!(a.header("x-request-id").is_some_and(|v| !v.is_empty()));
    let b = c.response().await;
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(b.text(), "POST /second with 5 body bytes");
    assert!(!b.says_close(), "{b:?}");
    let d = c.response().await;
    assert_eq!(d.status, 200, "{d:?}");
    assert_eq!(d.text(), "GET /third?x=1 with 0 body bytes");
    assert!(d.says_close(), "the client asked to close: {d:?}");
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
    c.assert_closed().await;

    let seen = up.received();
    let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/first", "/second", "/third?x=1"]);
    assert_eq!(seen[1].body, b"abcde");
    assert_eq!(seen[1].header("content-length"), Some("5"));
    for r in &seen {
        assert!(r
            .head
            .starts_with(&format!("{} {} HTTP/1.1\r\n", r.method, r.target)));
        assert_eq!(r.header("host"), Some(HOST), "{}", r.head);
        assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"), "{}", r.head);
        assert_eq!(r.header("x-meridian-attempt"), Some("1"), "{}", r.head);
        assert_eq!(r.header("connection"), None, "hop-by-hop: {}", r.head);
    }
    // One after another on one client connection: one pooled upstream connection serves all.
    assert_eq!(up.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// 2. Expect: 100-continue.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_the_body_through() {
    let up = RawUpstream::start(|r| {
        let fin = ok_bytes(&format!("got {}", String::from_utf8_lossy(&r.body)));
        if r.method == "PUT" {
            // An upstream that sends its own interim answer anyway: the client must not see it.
            let mut out = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
            out.extend_from_slice(&fin);
            Reply::Keep(out)
        } else {
            Reply::Keep(fin)
        }
    })
    .await;
    let gw = gateway_to(up.addr, "").await;
    let mut c = Wire::connect(gw.addr()).await;

    // A client that waits for the interim answer before it sends the body.
    c.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\n\
             Content-Length: 11\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let cont = c.response().await;
    assert_eq!(cont.status, 100, "{cont:?}");
    assert!(cont.body.is_empty());
    assert!(up.received().is_empty(), "nothing is sent before the body");
    c.send(b"hello world").await;
    let fin = c.response().await;
    assert_eq!(fin.status, 200, "{fin:?}");
    assert_eq!(fin.text(), "got hello world");

    // A client that sends the body straight away (as curl does after its wait): one interim
    // answer (the gateway's; the upstream's own is not relayed) and the final one, then the
    // connection serves the request pipelined behind.
    c.send(
        format!(
            "PUT /again HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\n\
             Content-Length: 4\r\n\r\nabcd{}",
            get("/after", "")
        )
        .as_bytes(),
    )
    .await;
    let cont = c.response().await;
    assert_eq!(cont.status, 100, "{cont:?}");
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "got abcd");
    let after = c.response().await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(after.text(), "got ");

    let seen = up.received();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].target, "/upload");
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[0].header("content-length"), Some("11"));
    assert_eq!(seen[1].method, "PUT");
    assert_eq!(seen[1].body, b"abcd");
    assert_eq!(seen[2].target, "/after");
    for r in &seen {
        assert_eq!(
            r.header("expect"),
            None,
            "the gateway answers 100-continue itself: {}",
            r.head
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Response framings.

/// 300 KB in 100 chunks, which straddle the gateway's reads.
fn big_chunked_data() -> Vec<u8> {
    pattern(300_000, 7)
}

async fn framing_upstream() -> RawUpstream {
    RawUpstream::start(|r| match r.target.as_str() {
        "/chunked" => Reply::Keep(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n"
                .to_vec(),
        ),
        "/big-chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            out.extend_from_slice(&chunk(&big_chunked_data(), &[3000]));
            Reply::Keep(out)
        }
        "/length" => ok_length("hello, length"),
        "/close" => Reply::Close(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello until the close".to_vec(),
        ),
        _ => Reply::Keep(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec()),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_length_and_close_delimited_answers_reach_an_http11_client_whole() {
    let up = framing_upstream().await;
    let gw = gateway_to(up.addr, "").await;
    let mut c = Wire::connect(gw.addr()).await;

    // Chunked: relayed in its framing, trailers included, and the connection stays.
    c.send(get("/chunked", "").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.chunked, "{r:?}");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.text(), "hello, world");
    assert_same(
        &r.raw_body,
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
        "chunked framing as the upstream sent it",
    );
    assert!(!r.says_close(), "{r:?}");

    c.send(get("/big-chunked", "").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.chunked);
    assert_same(&r.body, &big_chunked_data(), "big chunked body");
    assert_same(
        &r.raw_body,
        &chunk(&big_chunked_data(), &[3000]),
        "big framing",
    );

    // Content-Length: the same length, the same bytes.
    c.send(get("/length", "").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.chunked);
    assert_eq!(r.header("content-length"), Some("13"));
    assert_eq!(r.text(), "hello, length");
    assert!(!r.says_close(), "{r:?}");

    // Close-delimited: the body runs to the close, so the client connection closes too.
    c.send(get("/close", "").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.to_close, "{r:?}");
    assert!(r.says_close(), "{r:?}");
    assert_eq!(r.text(), "hello until the close");
    c.assert_closed().await;

    let targets: Vec<String> = up.received().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/chunked", "/big-chunked", "/length", "/close"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_reaches_an_http10_client_dechunked() {
    let up = framing_upstream().await;
    let gw = gateway_to(up.addr, "").await;

    for (path, want) in [
        ("/chunked", b"hello, world".to_vec()),
        ("/big-chunked", big_chunked_data()),
    ] {
        for keep_alive in ["", "Connection: keep-alive\r\n"] {
            let mut c = Wire::connect(gw.addr()).await;
            c.send(format!("GET {path} HTTP/1.0\r\nHost: {HOST}\r\n{keep_alive}\r\n").as_bytes())
                .await;
            let r = c.response().await;
            assert_eq!(r.status, 200, "{path} {keep_alive:?}: {r:?}");
            assert_eq!(r.header("transfer-encoding"), None, "{r:?}");
            assert!(!r.chunked);
            // No length is known up front: the body runs to the close, de-chunked.
            assert!(r.to_close, "{r:?}");
            assert!(r.says_close(), "{r:?}");
            assert_same(&r.raw_body, &want, path);
            c.assert_closed().await;
        }
    }
    assert_eq!(up.received().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// 4. Bodiless answers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_carry_no_body_and_keep_the_connection() {
    let up = RawUpstream::start(|r| match (r.method.as_str(), r.target.as_str()) {
        // A HEAD answer states the GET's length but sends nothing.
        ("HEAD", _) => Reply::Keep(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\n".to_vec(),
        ),
        (_, "/no-content") => {
            Reply::Keep(b"HTTP/1.1 204 No Content\r\nx-kind: 204\r\n\r\n".to_vec())
        }
        (_, "/not-modified") => Reply::Keep(
            b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 13\r\n\r\n".to_vec(),
        ),
        _ => ok_length("hello, length"),
    })
    .await;
    let gw = gateway_to(up.addr, "").await;
    let mut c = Wire::connect(gw.addr()).await;

    c.send(format!("HEAD /doc HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let r = c.response_to("HEAD").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("13"), "{r:?}");
    assert!(!r.says_close(), "{r:?}");

    c.send(get("/no-content", "").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("x-kind"), Some("204"));
    assert!(!r.says_close(), "{r:?}");

    c.send(get("/not-modified", "If-None-Match: \"v1\"\r\n").as_bytes())
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(!r.says_close(), "{r:?}");

    // Had any of them carried body bytes, this answer would not parse.
    c.send(get("/doc", "").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello, length");

    // And once more, a HEAD pipelined with a GET.
    c.send(
        format!(
            "HEAD /doc HTTP/1.1\r\nHost: {HOST}\r\n\r\n{}",
            get("/doc", "")
        )
        .as_bytes(),
    )
    .await;
    let r = c.response_to("HEAD").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.response().await;
    assert_eq!(r.text(), "hello, length");
    assert!(c.rd.buf.is_empty(), "stray bytes: {}", preview(&c.rd.buf));

    let seen: Vec<(String, String)> = up
        .received()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    let want: Vec<(String, String)> = [
        ("HEAD", "/doc"),
        ("GET", "/no-content"),
        ("GET", "/not-modified"),
        ("GET", "/doc"),
        ("HEAD", "/doc"),
        ("GET", "/doc"),
    ]
    .iter()
    .map(|(m, t)| (m.to_string(), t.to_string()))
    .collect();
    assert_eq!(seen, want);
}

// ---------------------------------------------------------------------------------------------
// 5. HTTP/1.0 keep-alive.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keeps_the_connection_only_when_asked() {
    let up = MockUpstream::start(UpstreamConfig::new("mock").body("hello from mock\n"))
        .await
        .expect("upstream");
    let gw = gateway_to(up.addr(), "").await;

    // With `Connection: keep-alive`: kept, and said so, for as long as the client asks.
    let mut c = Wire::connect(gw.addr()).await;
    for i in 0..2 {
        c.send(
            format!("GET /ka/{i} HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "hello from mock\n");
        assert_eq!(r.header("x-upstream"), Some("mock"));
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "{r:?}"
        );
        assert!(r.header("content-length").is_some(), "{r:?}");
        assert!(!r.to_close);
    }
    // Then without it on the same connection: answered, then closed.
    c.send(format!("GET /ka/last HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello from mock\n");
    assert!(r.says_close(), "{r:?}");
    c.assert_closed().await;

    // Without it from the start (and with no Host at all, which 1.0 allows).
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"GET /plain HTTP/1.0\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello from mock\n");
    assert!(r.says_close(), "{r:?}");
    c.assert_closed().await;

    assert_eq!(up.requests(), 4);
}

// ---------------------------------------------------------------------------------------------
// 6. Upgrades.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_tunnels_bytes_both_ways() {
    let up = RawUpstream::start(|r| {
        if r.header("upgrade") == Some("websocket") {
            let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                            Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .to_vec();
            // The upstream speaks first, in the same write as its 101.
            out.extend_from_slice(b"srv-hello");
            Reply::Tunnel(out)
        } else {
            ok_length("not an upgrade")
        }
    })
    .await;
    let gw = gateway_to(up.addr, "").await;
    let mut c = Wire::connect(gw.addr()).await;

    c.send(
        get(
            "/ws",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        )
        .as_bytes(),
    )
    .await;
    let r = c.response().await;
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("websocket"), "{r:?}");
    assert!(
        r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{r:?}"
    );
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(c.rd.exact(9).await, b"srv-hello");

    // Client to upstream and back, a small message then 256 KiB written while reading.
    c.send(b"ping-1").await;
    assert_eq!(c.rd.exact(6).await, b"PING-1");
    let big: Vec<u8> = (0..256 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let (_, echoed) = tokio::join!(send(&mut c.w, &big), c.rd.exact(big.len()));
    assert_same(
        &echoed,
        &big.to_ascii_uppercase(),
        "echo through the tunnel",
    );

    // The client's half-close goes through; the upstream closes; so does the tunnel.
    c.w.shutdown().await.expect("half-close");
    c.assert_closed().await;

    let seen = up.received();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let req = &seen[0];
    assert_eq!(req.target, "/ws");
    assert_eq!(req.header("upgrade"), Some("websocket"), "{}", req.head);
    assert!(
        req.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{}",
        req.head
    );
    assert_eq!(
        req.header("sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    let mut want = b"ping-1".to_vec();
    want.extend_from_slice(&big);
    assert_same(
        &up.tunneled(),
        &want,
        "what the upstream got through the tunnel",
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Smuggling and oversized heads.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_get_400_and_reach_no_upstream() {
    let up = MockUpstream::start(UpstreamConfig::new("mock").body("ok\n"))
        .await
        .expect("upstream");
    let gw = gateway_to(up.addr(), "").await;

    let cases: [(&str, String); 5] = [
        (
            "two Host fields",
            format!("GET /a HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example\r\n\r\n"),
        ),
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
                get("/smuggled", "")
            ),
        ),
        (
            "Transfer-Encoding with Content-Length",
            format!(
                "POST /a HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: 40\r\n\r\n0\r\n\r\n{}",
                get("/smuggled", "")
            ),
        ),
        (
            "two different Content-Length values",
            format!(
                "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3\r\n\
                 Content-Length: 5\r\n\r\nabcde"
            ),
        ),
        (
            "a bad chunk size",
            format!(
                "POST /a HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\
                 x-request-id: rid-bad-chunk\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{}",
                get("/smuggled", "")
            ),
        ),
    ];
    for (what, bytes) in &cases {
        let mut c = Wire::connect(gw.addr()).await;
        c.send(bytes.as_bytes()).await;
        let r = c.response().await;
        let rid = r.assert_own_error(400);
        assert!(r.says_close(), "{what}: {r:?}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["error"], "bad_request", "{what}: {v}");
        if *what == "a bad chunk size" {
            // The head was fine, so its request id is the client's.
            assert_eq!(rid, "rid-bad-chunk");
        }
        // Nothing after the refusal is read as a request.
        c.assert_closed().await;
    }
    assert_eq!(up.requests(), 0, "a refused request reached the upstream");
    assert_eq!(up.connections(), 0, "the gateway dialled the upstream");

    // The gateway still serves well-formed requests.
    let mut c = Wire::connect(gw.addr()).await;
    c.send(get("/fine", "").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "ok\n");
    assert_eq!(up.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_gets_431() {
    let up = MockUpstream::start(UpstreamConfig::new("mock").body("ok\n"))
        .await
        .expect("upstream");
    let gw = gateway_to(up.addr(), "").await;

    // 100 KiB in one header field, and 100 KiB over 1,000 fields.
    let one_big = get("/big", &format!("X-Big: {}\r\n", "a".repeat(100 * 1024)));
    let many: String = (0..1000)
        .map(|i| format!("X-Field-{i:04}: {}\r\n", "b".repeat(90)))
        .collect();
    let many = get("/many", &many);
    for (what, bytes) in [("one big field", one_big), ("many fields", many)] {
        let mut c = Wire::connect(gw.addr()).await;
        let (_, r) = tokio::join!(send(&mut c.w, bytes.as_bytes()), c.rd.response());
        assert_eq!(r.status, 431, "{what}: {r:?}");
        r.assert_own_error(431);
        assert!(
            r.text().contains("\"error\":\"header_too_large\""),
            "{what}: {r:?}"
        );
        assert!(r.says_close(), "{what}: {r:?}");
        c.assert_closed().await;
    }
    assert_eq!(up.requests(), 0);
    assert_eq!(up.connections(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Large request bodies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1mib_request_body_streams_to_the_upstream_byte_identical() {
    let up =
        RawUpstream::start(|r| ok_length(&format!("{} {} bytes", r.target, r.body.len()))).await;
    let gw = gateway_to(up.addr, "").await;
    let data = pattern(1024 * 1024, 42);
    let wire_chunked = chunk(&data, &[1, 4095, 16 * 1024, 70_000, 333, 64 * 1024, 8192]);
    let mut c = Wire::connect(gw.addr()).await;

    // Content-Length, then chunked, then a GET, all in one go on one connection: each body
    // must end exactly where its framing says, leaving the next request for the next read.
    let mut out = format!(
        "POST /length HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    out.extend_from_slice(&data);
    out.extend_from_slice(
        format!("PUT /chunked HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    );
    out.extend_from_slice(&wire_chunked);
    out.extend_from_slice(get("/after", "").as_bytes());
    let read_three = async {
        let a = c.rd.response().await;
        let b = c.rd.response().await;
        let d = c.rd.response().await;
        (a, b, d)
    };
    let (_, (a, b, d)) = tokio::join!(send(&mut c.w, &out), read_three);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.text(), format!("/length {} bytes", data.len()));
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(b.text(), format!("/chunked {} bytes", data.len()));
    assert_eq!(d.status, 200, "{d:?}");
    assert_eq!(d.text(), "/after 0 bytes");

    let seen = up.received();
    assert_eq!(
        seen.len(),
        3,
        "{:?}",
        seen.iter().map(|r| &r.head).collect::<Vec<_>>()
    );
    assert_eq!(seen[0].target, "/length");
    assert_eq!(
        seen[0].header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(seen[0].header("transfer-encoding"), None);
    assert_same(&seen[0].body, &data, "Content-Length body at the upstream");
    assert_eq!(seen[1].target, "/chunked");
    assert_eq!(seen[1].header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen[1].header("content-length"), None);
    assert_same(
        &seen[1].body,
        &data,
        "chunked body at the upstream, decoded",
    );
    assert_same(
        &seen[1].raw_body,
        &wire_chunked,
        "chunked body at the upstream, as the client framed it",
    );
    assert_eq!(seen[2].target, "/after");
    assert!(seen[2].body.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 9. The other engine.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pingora_engine_still_serves_a_get() {
    let up = MockUpstream::start(UpstreamConfig::new("mock").body("hello from mock\n"))
        .await
        .expect("upstream");
    let gw = gateway_to(up.addr(), "http1_engine: pingora\n").await;
    let mut c = Wire::connect(gw.addr()).await;
    for i in 0..2 {
        c.send(get(&format!("/p/{i}"), "").as_bytes()).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.minor, 1);
        assert_eq!(r.text(), "hello from mock\n");
        assert_eq!(r.header("x-upstream"), Some("mock"));
        assert_eq!(r.header("x-meridian-route"), Some("h1"));
        assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
        assert!(!r.to_close, "{r:?}");
    }
    assert_eq!(up.requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// 10. Graceful shutdown.

/// On SIGTERM the engine drains: an idle keep-alive connection is closed at once (not when the
/// process exits, a grace period later), a request in flight is still answered, with
/// `Connection: close`, and the listener takes no new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_connections_and_finishes_requests_in_flight() {
    let up = MockUpstream::start(UpstreamConfig::new("mock").body("slow\n"))
        .await
        .expect("upstream");
    let mut gw = gateway_to(up.addr(), "").await;

    // An idle keep-alive connection, served once.
    let mut idle = Wire::connect(gw.addr()).await;
    idle.send(get("/warm", "").as_bytes()).await;
    let r = idle.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.says_close(), "{r:?}");

    // A request in flight when the signal comes.
    up.set_latency(Latency::Fixed(Duration::from_millis(600)));
    let mut busy = Wire::connect(gw.addr()).await;
    busy.send(get("/slow", "").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(150)).await;

    let signalled = Instant::now();
    gw.terminate();
    idle.assert_closed().await;
    let idle_closed = signalled.elapsed();
    assert!(
        gw.running(),
        "the idle connection closed only because the process exited ({idle_closed:?})"
    );
    assert!(
        idle_closed < Duration::from_millis(500),
        "the idle connection closed {idle_closed:?} after SIGTERM"
    );

    let r = busy.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "slow\n");
    assert!(
        r.says_close(),
        "an answer during the drain must close: {r:?}"
    );
    busy.assert_closed().await;

    // No new connections once the drain has begun (the listener is closed, or a connection
    // that slips in is closed without an answer).
    match tokio::time::timeout(IO, TcpStream::connect(gw.addr())).await {
        Err(_) => panic!("connect hung"),
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(Ok(s)) => {
            let (r, _w) = s.into_split();
            let mut rd = Reader { r, buf: Vec::new() };
            rd.assert_closed().await;
        }
    }
}
