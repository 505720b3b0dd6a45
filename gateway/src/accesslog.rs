//! The JSON access log, one line per request.
//!
//! The request path formats its line into a buffer of its own worker thread (no lock, no
//! allocation once the buffer exists, nothing shared touched per request). A full buffer (32 KiB),
//! or one whose first line is [`HOLD`] old, goes onto a bounded lock-free queue for a writer
//! thread, which writes it to the file and hands the emptied buffer back for reuse. A worker that
//! goes quiet has its buffer handed over by a flush task it arms when the buffer gets its first
//! line, so a line waits at most about [`HOLD`]. When the writer falls behind and the queue is
//! full, the buffer's lines are dropped and counted rather than slowing requests.
//!
//! Query strings are never logged, and header values only when allowlisted, because these
//! requests carry patient data.
//!
//! Before, each request sent a record of owned fields to the writer thread, which serialised it
//! with serde: an allocation for the path, reference counts for the names, a queue slot per
//! request and frees across threads. That cost about 1.2 µs of CPU per request under load
//! (benches/README.md), as much as a fifth of the gateway's own user-space time.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;
use prometheus::IntCounter;

use crate::headers::Headers;

/// A buffer this full goes to the writer.
const CHUNK: usize = 32 * 1024;
/// Buffers queued for the writer before lines are dropped: with lines of about 200 bytes, some
/// 80,000 lines, 1.6 s of writer stall at 50k requests/s.
const QUEUE: usize = 512;
/// Emptied buffers kept for reuse.
const SPARE: usize = 64;
/// Longest a line waits in its worker's buffer.
pub const HOLD: Duration = Duration::from_millis(10);
/// How often the writer looks for buffers.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// One finished request, borrowed from the request's own state.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Unix time in milliseconds at the end of the request.
    pub time_ms: u64,
    /// Request id.
    pub request_id: &'a [u8],
    /// Method.
    pub method: &'a str,
    /// Path without query string.
    pub path: &'a str,
    /// Route name ("" when none matched).
    pub route: &'a str,
    /// Subset name.
    pub subset: &'a str,
    /// Upstream address.
    pub upstream: Option<SocketAddr>,
    /// Status sent to the client (0 when the client went away first).
    pub status: u16,
    /// Total duration in microseconds.
    pub duration_us: u64,
    /// Response body bytes sent.
    pub bytes: usize,
}

/// Lines on their way to the writer.
struct Chunk {
    bytes: Vec<u8>,
    lines: u64,
}

/// What the workers and the writer share.
struct Shared {
    full: ArrayQueue<Chunk>,
    spare: ArrayQueue<Vec<u8>>,
    dropped: IntCounter,
}

impl Shared {
    /// Queues `bytes` (`lines` lines) for the writer, or drops and counts them.
    fn hand_off(&self, bytes: Vec<u8>, lines: u64) {
        if let Err(c) = self.full.push(Chunk { bytes, lines }) {
            self.dropped.inc_by(c.lines);
            self.recycle(c.bytes);
        }
    }

    fn recycle(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        let _ = self.spare.push(bytes);
    }

    fn buffer(&self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK + 1024))
    }
}

/// A worker thread's buffer.
#[derive(Default)]
struct Local {
    /// The log the buffer's lines belong to.
    owner: Option<Arc<Shared>>,
    buf: Vec<u8>,
    lines: u64,
    /// Time of the buffer's first line.
    first_ms: u64,
    /// A flush task will hand the buffer over.
    armed: bool,
}

impl Local {
    fn hand_off(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Some(owner) = &self.owner {
            owner.hand_off(std::mem::take(&mut self.buf), self.lines);
        }
        self.buf.clear();
        self.lines = 0;
    }
}

impl Drop for Local {
    /// The worker thread ends: what it holds goes to the writer.
    fn drop(&mut self) {
        self.hand_off();
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// The sending side, held by the proxy.
pub struct AccessLog {
    shared: Arc<Shared>,
    allow: Vec<String>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Opens `path` (`-` for standard output) and starts the writer thread.
    pub fn start(path: PathBuf, allow: Vec<String>, dropped: IntCounter) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?,
            )
        };
        let shared = Arc::new(Shared {
            full: ArrayQueue::new(QUEUE),
            spare: ArrayQueue::new(SPARE),
            dropped,
        });
        let drain = shared.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(drain, out))?;
        Ok(AccessLog { shared, allow })
    }

    /// Logs one request; `headers` are the request's, for the allowlisted values. Never waits.
    pub fn write(&self, e: &Entry<'_>, headers: &impl Headers) {
        let done = LOCAL.try_with(|local| {
            let Ok(mut l) = local.try_borrow_mut() else {
                return false;
            };
            let l = &mut *l;
            if !l
                .owner
                .as_ref()
                .is_some_and(|o| Arc::ptr_eq(o, &self.shared))
            {
                l.hand_off();
                l.owner = Some(self.shared.clone());
            }
            if l.buf.capacity() == 0 {
                l.buf = self.shared.buffer();
            }
            if l.buf.is_empty() {
                l.first_ms = e.time_ms;
            }
            line(&mut l.buf, e, &self.allow, headers);
            l.lines += 1;
            if l.buf.len() >= CHUNK || e.time_ms >= l.first_ms + HOLD.as_millis() as u64 {
                l.hand_off();
            } else if !l.armed {
                l.armed = arm_flush();
                if !l.armed {
                    l.hand_off();
                }
            }
            true
        });
        if done != Ok(true) {
            // No buffer on this thread (it is ending, or the line came from inside a flush).
            let mut buf = Vec::with_capacity(256);
            line(&mut buf, e, &self.allow, headers);
            self.shared.hand_off(buf, 1);
        }
    }
}

/// Arms a task that hands this thread's buffer to the writer after [`HOLD`]. Only on a
/// single-threaded runtime (each Pingora worker has one), where the task runs on this thread:
/// false elsewhere, and the caller hands the buffer over at once.
fn arm_flush() -> bool {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return false;
    }
    rt.spawn(async {
        tokio::time::sleep(HOLD).await;
        let _ = LOCAL.try_with(|local| {
            if let Ok(mut l) = local.try_borrow_mut() {
                l.armed = false;
                l.hand_off();
            }
        });
    });
    true
}

/// Appends `e` as one JSON line (the fields in this order, `upstream` null when there was
/// none, `headers` left out when none is allowlisted and present).
fn line(out: &mut Vec<u8>, e: &Entry<'_>, allow: &[String], headers: &impl Headers) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"time_ms\":");
    out.extend_from_slice(n.format(e.time_ms).as_bytes());
    out.extend_from_slice(b",\"request_id\":");
    string_bytes(out, e.request_id);
    out.extend_from_slice(b",\"method\":");
    string(out, e.method);
    out.extend_from_slice(b",\"path\":");
    string(out, e.path);
    out.extend_from_slice(b",\"route\":");
    string(out, e.route);
    out.extend_from_slice(b",\"subset\":");
    string(out, e.subset);
    out.extend_from_slice(b",\"upstream\":");
    match e.upstream {
        Some(SocketAddr::V4(a)) => {
            out.push(b'"');
            for (i, o) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(*o).as_bytes());
            }
            out.push(b':');
            out.extend_from_slice(n.format(a.port()).as_bytes());
            out.push(b'"');
        }
        Some(a) => {
            out.push(b'"');
            let _ = write!(out, "{a}");
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(n.format(e.status).as_bytes());
    out.extend_from_slice(b",\"duration_us\":");
    out.extend_from_slice(n.format(e.duration_us).as_bytes());
    out.extend_from_slice(b",\"bytes\":");
    out.extend_from_slice(n.format(e.bytes).as_bytes());
    let mut first = true;
    for name in allow {
        let Some(v) = headers
            .first(name)
            .and_then(|v| std::str::from_utf8(v).ok())
        else {
            continue;
        };
        out.extend_from_slice(if first { b",\"headers\":[[" } else { b",[" });
        first = false;
        string(out, name);
        out.push(b',');
        string(out, v);
        out.push(b']');
    }
    if !first {
        out.push(b']');
    }
    out.extend_from_slice(b"}\n");
}

/// `s` as a JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Bytes as a JSON string; bytes that are not UTF-8 become U+FFFD.
fn string_bytes(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => string(out, s),
        Err(_) => string(out, &String::from_utf8_lossy(b)),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_loop(shared: Arc<Shared>, mut out: Box<dyn Write + Send>) {
    loop {
        let mut wrote = false;
        while let Some(c) = shared.full.pop() {
            let _ = out.write_all(&c.bytes);
            shared.recycle(c.bytes);
            wrote = true;
        }
        if wrote {
            let _ = out.flush();
        }
        // The other owners are the gateway and the worker threads that logged: when they are
        // all gone, stop.
        if Arc::strong_count(&shared) == 1 && shared.full.is_empty() {
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHeaders;
    impl Headers for NoHeaders {
        fn first(&self, _: &str) -> Option<&[u8]> {
            None
        }
        fn find_map<'a, T>(&'a self, _: &str, _: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T> {
            None
        }
    }

    struct Agent(&'static [u8]);
    impl Headers for Agent {
        fn first(&self, name: &str) -> Option<&[u8]> {
            (name == "user-agent").then_some(self.0)
        }
        fn find_map<'a, T>(
            &'a self,
            name: &str,
            mut f: impl FnMut(&'a [u8]) -> Option<T>,
        ) -> Option<T> {
            self.first(name).and_then(&mut f)
        }
    }

    fn entry() -> Entry<'static> {
        Entry {
            time_ms: 1_700_000_000_123,
            request_id: b"req-1",
            method: "GET",
            path: "/a\"b\\c\u{1}\u{e9}",
            route: "r",
            subset: "s@v1",
            upstream: Some("10.0.0.7:8080".parse().expect("addr")),
            status: 200,
            duration_us: 1234,
            bytes: 22,
        }
    }

    #[test]
    fn a_line_is_the_json_serde_would_write_for_the_same_fields() {
        let mut out = Vec::new();
        let allow = vec!["user-agent".to_string(), "x-absent".to_string()];
        line(&mut out, &entry(), &allow, &Agent(b"curl/8 \"q\""));
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.ends_with("}\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let want = serde_json::json!({
            "time_ms": 1_700_000_000_123u64,
            "request_id": "req-1",
            "method": "GET",
            "path": "/a\"b\\c\u{1}\u{e9}",
            "route": "r",
            "subset": "s@v1",
            "upstream": "10.0.0.7:8080",
            "status": 200,
            "duration_us": 1234,
            "bytes": 22,
            "headers": [["user-agent", "curl/8 \"q\""]],
        });
        assert_eq!(v, want);
        // Key order and layout as the serde record wrote them before.
        let before = concat!(
            r#"{"time_ms":1700000000123,"request_id":"req-1","method":"GET","#,
            r#""path":"/a\"b\\c\u0001é","route":"r","subset":"s@v1","#,
            r#""upstream":"10.0.0.7:8080","status":200,"duration_us":1234,"bytes":22,"#,
            r#""headers":[["user-agent","curl/8 \"q\""]]}"#,
        );
        assert_eq!(text.trim_end(), before);

        let mut out = Vec::new();
        let e = Entry {
            upstream: Some("[::1]:443".parse().expect("addr")),
            request_id: b"\xffbad",
            ..entry()
        };
        line(&mut out, &e, &allow, &NoHeaders);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["upstream"], "[::1]:443");
        assert_eq!(v["request_id"], "\u{fffd}bad");
        assert!(
            v.get("headers").is_none(),
            "no headers key when none is present"
        );
        let mut out = Vec::new();
        line(
            &mut out,
            &Entry {
                upstream: None,
                ..entry()
            },
            &[],
            &NoHeaders,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert!(v["upstream"].is_null());
    }

    #[test]
    fn lines_reach_the_file_from_runtime_threads_and_plain_threads_and_a_full_queue_counts_drops() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        let dropped = IntCounter::new("d", "d").expect("counter");
        let log = Arc::new(AccessLog::start(path.clone(), vec![], dropped.clone()).expect("log"));
        // A single-threaded runtime, as on a Pingora worker: lines wait in the thread's buffer
        // and the armed flush hands them over.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            for i in 0..3u64 {
                log.write(
                    &Entry {
                        duration_us: i,
                        ..entry()
                    },
                    &NoHeaders,
                );
            }
            tokio::time::sleep(HOLD * 5).await;
        });
        // A thread with no runtime: each line goes over at once.
        let l = log.clone();
        std::thread::spawn(move || {
            l.write(
                &Entry {
                    duration_us: 9,
                    ..entry()
                },
                &NoHeaders,
            )
        })
        .join()
        .expect("thread");
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() >= 4 || std::time::Instant::now() > end {
                break text;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut us: Vec<u64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                v["duration_us"].as_u64().expect("duration")
            })
            .collect();
        us.sort_unstable();
        assert_eq!(us, vec![0, 1, 2, 9], "{text}");
        assert_eq!(dropped.get(), 0);

        // A full queue: the buffer's lines are counted as dropped, not waited for.
        let shared = Shared {
            full: ArrayQueue::new(1),
            spare: ArrayQueue::new(1),
            dropped: dropped.clone(),
        };
        shared.hand_off(b"a\n".to_vec(), 1);
        shared.hand_off(b"b\nc\n".to_vec(), 2);
        assert_eq!(dropped.get(), 2);
        assert_eq!(shared.full.len(), 1);
    }
}
