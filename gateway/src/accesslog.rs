//! The JSON access log. The request path hands a record to a bounded channel and never waits; a
//! writer thread formats and writes lines. When the writer falls behind, records are dropped and
//! counted rather than slowing requests. Query strings are never logged, and header values only
//! when allowlisted, because these requests carry patient data.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::Serialize;

/// Records buffered before new ones are dropped.
const QUEUE: usize = 16_384;

/// One finished request.
#[derive(Debug, Serialize)]
pub struct Record {
    /// Unix time in milliseconds at the end of the request.
    pub time_ms: u64,
    /// Request id.
    pub request_id: String,
    /// Method.
    pub method: String,
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

/// The sending side, held by the proxy.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Record>,
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
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out))?;
        Ok(AccessLog { tx, allow, dropped })
    }

    /// Header names whose values may be logged (lower case).
    pub fn allowlist(&self) -> &[String] {
        &self.allow
    }

    /// Queues a record without waiting.
    pub fn send(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
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

fn write_loop(rx: Receiver<Record>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => {
                if serde_json::to_writer(&mut out, &r).is_ok() {
                    let _ = out.write_all(b"\n");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}
