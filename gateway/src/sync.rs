//! Table sources. Today: a file, polled for changes. A changed file is parsed and validated; a
//! valid table is applied through the gateway's single `ArcSwap`, an invalid one is rejected,
//! logged with its reasons and counted, and the table in force stays.

use std::sync::Arc;
use std::time::Duration;

use crate::state::Gateway;

/// Watches the configured table file on a background thread until the process exits.
pub fn watch_file(gw: Arc<Gateway>) -> std::io::Result<std::thread::JoinHandle<()>> {
    watch_file_from(gw, None)
}

/// Like [`watch_file`], continuing from the `last` state of an earlier [`poll_once`], so a file
/// already applied (or refused) at start-up is not applied (or refused and counted) again.
pub fn watch_file_from(
    gw: Arc<Gateway>,
    last: Option<Vec<u8>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("table-watch-{}", gw.config.region);
    std::thread::Builder::new().name(name).spawn(move || {
        lower_thread_priority();
        let mut last = last;
        // The file is only read again when its metadata changed: a large table (100,000
        // endpoints is several MB) is not re-read every poll just to find it unchanged.
        // `None` first: one full read, whatever happened since the caller's last poll.
        let mut seen = None;
        loop {
            std::thread::sleep(gw.config.table_poll);
            let now = file_stamp(&gw.config.table_file);
            if now.is_some() && now == seen {
                continue;
            }
            seen = now;
            poll_once(&gw, &mut last);
        }
    })
}

/// Nice value of the threads that build tables.
const BUILDER_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to nice 10. Tables are built on such threads: a
/// 100,000-endpoint table takes several hundred milliseconds of CPU, and on a busy host the
/// proxy workers must not queue behind it (`benches/load/run.sh --swap`). Linux keeps a nice
/// value per thread, so only the calling thread changes. A failure is logged and ignored.
pub fn lower_thread_priority() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), BUILDER_NICE) {
        tracing::debug!("could not lower the table builder's priority: {e}");
    }
}

/// What changes when a file is replaced or rewritten: device and inode (a rename over it), size,
/// modification and change times (an edit in place). `None` when it cannot be read.
fn file_stamp(path: &std::path::Path) -> Option<(u64, u64, u64, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Reads the table file once and applies it if it changed since `last`. Returns true when a new
/// table was applied.
pub fn poll_once(gw: &Gateway, last: &mut Option<Vec<u8>>) -> bool {
    let path = &gw.config.table_file;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let reason = format!("cannot read {}: {e}", path.display());
            // Only report a missing file once per change of state.
            if last.as_deref() != Some(&[]) {
                gw.reject(reason);
                *last = Some(Vec::new());
            }
            return false;
        }
    };
    if last.as_deref() == Some(bytes.as_slice()) {
        return false;
    }
    *last = Some(bytes.clone());
    let text = String::from_utf8_lossy(&bytes);
    match meridian_api::load::parse_table(&text) {
        Ok(table) => {
            gw.apply(table);
            true
        }
        Err(errs) => {
            gw.reject(format!(
                "{}: {}",
                path.display(),
                errs.to_string().replace('\n', "; ")
            ));
            false
        }
    }
}

/// Polls until the first table is in force or `limit` passes. Used at start-up.
pub fn wait_ready(gw: &Gateway, limit: Duration) -> bool {
    let end = std::time::Instant::now() + limit;
    while !gw.ready() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.ready()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_builder_thread_runs_at_nice_10_and_only_it() {
        let mine = rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let other = std::thread::spawn(|| {
            super::lower_thread_priority();
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        })
        .join()
        .expect("thread");
        assert_eq!(other.expect("getpriority"), super::BUILDER_NICE);
        let after = rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        assert_eq!(mine.expect("getpriority"), after.expect("getpriority"));
    }
}
