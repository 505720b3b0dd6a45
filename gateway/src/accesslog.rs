//! The JSON access log. The request path pushes a record onto a bounded lock-free queue and never
//! waits or wakes anyone; a writer thread drains the queue every few milliseconds, formats and
//! writes lines. When the writer falls behind, records are dropped and counted rather than slowing
//! requests. Query strings are never logged, and header values only
//! when allowlisted, because these requests carry patient data.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};
use prometheus::IntCounter;
use serde::Serialize;

/// Records buffered before new ones are dropped.
const QUEUE: usize = 65_536;
/// How often the writer drains the queue.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// One finished request.
#[derive(Debug, Serialize)]
pub struct Record {
    /// Unix time in milliseconds at the end of the request.
    pub time_ms: u64,
    /// Request id.
    #[serde(serialize_with = "as_str")]
    pub request_id: HeaderValue,
    /// Method.
    #[serde(serialize_with = "method_str")]
    pub method: Method,
    /// Path without query string.
    pub path: String,
    /// Route name ("" when none matched).
    pub route: Arc<str>,
    /// Subset name.
    pub subset: Arc<str>,
    /// Upstream address.
    pub upstream: Option<SocketAddr>,
    /// Status sent to the client (0 when the client went away first).
    pub status: u16,
    /// Total duration in microseconds.
    pub duration_us: u64,
    /// Response body bytes sent.
    pub bytes: usize,
    /// Allowlisted request headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

fn as_str<S: serde::Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.to_str().unwrap_or(""))
}

fn method_str<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// The sending side, held by the proxy.
#[derive(Debug)]
pub struct AccessLog {
    queue: Arc<ArrayQueue<Record>>,
    allow: Vec<String>,
    dropped: IntCounter,
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
        let queue = Arc::new(ArrayQueue::new(QUEUE));
        let drain = queue.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(drain, out))?;
        Ok(AccessLog {
            queue,
            allow,
            dropped,
        })
    }

    /// Header names whose values may be logged (lower case).
    pub fn allowlist(&self) -> &[String] {
        &self.allow
    }

    /// Queues a record without waiting.
    /// The allowlisted headers of a request, by name, for its record.
    pub fn allowed_headers(&self, h: &impl crate::headers::Headers) -> Vec<(String, String)> {
        self.allow
            .iter()
            .filter_map(|name| {
                let v = std::str::from_utf8(h.first(name)?).ok()?;
                Some((name.clone(), v.to_string()))
            })
            .collect()
    }

    pub fn send(&self, r: Record) {
        if self.queue.push(r).is_err() {
            self.dropped.inc();
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_loop(queue: Arc<ArrayQueue<Record>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    loop {
        let mut wrote = false;
        while let Some(r) = queue.pop() {
            if serde_json::to_writer(&mut out, &r).is_ok() {
                let _ = out.write_all(b"\n");
            }
            wrote = true;
        }
        if wrote {
            let _ = out.flush();
        }
        // The queue's only other owner is the gateway; when it is gone, stop.
        if Arc::strong_count(&queue) == 1 && queue.is_empty() {
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}
