//! [`start_blocking`]: mock upstreams for callers without a tokio runtime.

use std::fmt;
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::{MockUpstream, UpstreamConfig};

/// Worker threads of the runtime created by [`start_blocking`].
pub const BLOCKING_WORKER_THREADS: usize = 2;

const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Keeps the runtime created by [`start_blocking`] alive. Dropping it stops
/// every upstream started with it (see [`MockUpstream::stop`]) and shuts the
/// runtime down, waiting up to about 2 s in total.
///
/// Dropping it is safe from any context, including inside another tokio
/// runtime: the runtime lives on its own thread.
pub struct UpstreamRuntime {
    handle: Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl UpstreamRuntime {
    /// Handle of the dedicated runtime, e.g. to spawn helpers next to the
    /// upstreams or to `block_on` their async methods from a plain thread.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl fmt::Debug for UpstreamRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamRuntime").finish_non_exhaustive()
    }
}

impl Drop for UpstreamRuntime {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            // The thread may already be gone; nothing to do then.
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on that thread has already been reported.
            let _ = thread.join();
        }
    }
}

type Started = io::Result<(Vec<MockUpstream>, Handle)>;

/// Starts one upstream per config on a dedicated multi-thread tokio runtime
/// ([`BLOCKING_WORKER_THREADS`] workers) owned by its own thread.
///
/// Meant for non-async callers such as `meridian demo`, but callable from
/// anywhere (it only blocks the calling thread until the upstreams are
/// bound). If any upstream fails to start, the error is returned and the
/// runtime is torn down.
pub fn start_blocking(
    cfgs: Vec<UpstreamConfig>,
) -> io::Result<(Vec<MockUpstream>, UpstreamRuntime)> {
    let (started_tx, started_rx) = mpsc::channel::<Started>();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("meridian-upstreams".into())
        .spawn(move || run(cfgs, started_tx, shutdown_rx))?;
    let started = started_rx
        .recv()
        .map_err(|_| io::Error::other("mock upstream runtime thread exited during startup"));
    match started.and_then(|r| r) {
        Ok((upstreams, handle)) => Ok((
            upstreams,
            UpstreamRuntime {
                handle,
                shutdown: Some(shutdown_tx),
                thread: Some(thread),
            },
        )),
        Err(e) => {
            drop(shutdown_tx);
            let _ = thread.join();
            Err(e)
        }
    }
}

/// Body of the runtime thread.
fn run(cfgs: Vec<UpstreamConfig>, started: mpsc::Sender<Started>, shutdown: oneshot::Receiver<()>) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(BLOCKING_WORKER_THREADS)
        .thread_name("meridian-upstream-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    rt.block_on(async {
        let mut upstreams = Vec::with_capacity(cfgs.len());
        let mut failure = None;
        for cfg in cfgs {
            match MockUpstream::start(cfg).await {
                Ok(u) => upstreams.push(u),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let running = match failure {
            Some(e) => {
                let _ = started.send(Err(e));
                false
            }
            None => started
                .send(Ok((upstreams.clone(), Handle::current())))
                .is_ok(),
        };
        if running {
            // Err means the UpstreamRuntime was dropped without sending;
            // either way it is time to shut down.
            let _ = shutdown.await;
        }
        // Handles may outlive the runtime; close the sockets they own so
        // the ports really go dead.
        for u in &upstreams {
            let _ = tokio::time::timeout(STOP_TIMEOUT, u.stop()).await;
        }
    });
    rt.shutdown_timeout(STOP_TIMEOUT);
}
