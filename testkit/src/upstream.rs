//! [`MockUpstream`]: the handle, the shared state behind it and the accept
//! loop.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::{conn, Fault, Latency, UpstreamConfig};

/// How many request bodies [`MockUpstream::received_bodies`] keeps.
pub const MAX_RECORDED_BODIES: usize = 64;

/// How long a failed re-bind (after [`Fault::Refuse`] is lifted) keeps being
/// retried in the background.
const REBIND_RETRY_FOR: Duration = Duration::from_secs(5);
const REBIND_RETRY_EVERY: Duration = Duration::from_millis(20);

/// Handle to a running mock upstream. Cheap to clone; all clones control the
/// same server.
///
/// The server keeps running when every handle is dropped; it stops on
/// [`MockUpstream::stop`] or when its tokio runtime shuts down.
#[derive(Clone)]
pub struct MockUpstream {
    inner: Arc<Inner>,
}

/// State shared by the handle, the accept loop and the connection tasks.
pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) name_header: HeaderValue,
    pub(crate) body: Bytes,
    pub(crate) error_every: Option<(u64, u16)>,
    addr: SocketAddr,
    rt: Handle,
    control: Mutex<Control>,
    latency: Mutex<Latency>,
    /// True while refusing ([`Fault::Refuse`]) or stopped.
    down: AtomicBool,
    healthy: AtomicBool,
    pub(crate) requests: AtomicU64,
    pub(crate) health_checks: AtomicU64,
    /// Connections accepted (and served) since start or the last reset.
    connections: AtomicU64,
    bodies: Mutex<VecDeque<Bytes>>,
    /// Bumped to close every open connection.
    epoch: watch::Sender<u64>,
    active_conns: AtomicUsize,
    conns_idle: Notify,
}

/// Mutable control state; every transition happens under this lock.
struct Control {
    fault: Fault,
    stopped: bool,
    listener: Option<ListenerSlot>,
    accept_tasks: Vec<JoinHandle<()>>,
}

/// Owns the listening socket. The accept loop only holds a `Weak`, so
/// dropping the slot closes the socket right away and wakes the loop.
struct ListenerSlot {
    _listener: Arc<TcpListener>,
    _stop: oneshot::Sender<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected data stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    ///
    /// Fails if called outside a tokio runtime, if binding fails, or if the
    /// name is not a valid header value.
    pub async fn start(cfg: UpstreamConfig) -> io::Result<MockUpstream> {
        let rt = Handle::try_current().map_err(io::Error::other)?;
        let name_header = HeaderValue::from_str(&cfg.name).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("upstream name: {e}"))
        })?;
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = std_listener.local_addr()?;
        let inner = Arc::new(Inner {
            name: cfg.name,
            name_header,
            body: cfg.body,
            error_every: cfg.error_every,
            addr,
            rt,
            control: Mutex::new(Control {
                fault: Fault::None,
                stopped: false,
                listener: None,
                accept_tasks: Vec::new(),
            }),
            latency: Mutex::new(cfg.latency),
            down: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            bodies: Mutex::new(VecDeque::with_capacity(MAX_RECORDED_BODIES)),
            epoch: watch::Sender::new(0),
            active_conns: AtomicUsize::new(0),
            conns_idle: Notify::new(),
        });
        {
            let mut control = lock(&inner.control);
            attach_listener(&inner, &mut control, std_listener)?;
        }
        Ok(MockUpstream { inner })
    }

    /// The bound address (`127.0.0.1:<port>`); stays the same across
    /// [`Fault::Refuse`] and recovery.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:<port>`, convenient for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The configured name (also sent as `x-upstream`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current fault (initially [`Fault::None`]).
    pub fn fault(&self) -> Fault {
        self.inner.current_fault()
    }

    /// Sets the fault for requests whose head arrives from now on.
    ///
    /// Switching *to* [`Fault::Refuse`] closes the listening socket before
    /// returning and closes every open connection shortly after (a request
    /// arriving on one in the meantime gets the connection closed without an
    /// answer and is not counted). Switching *away* from it re-binds the same
    /// port before returning; if that fails (port taken), re-binding is
    /// retried in the background for 5 s. After [`MockUpstream::stop`] the
    /// fault is only recorded.
    pub fn set_fault(&self, f: Fault) {
        let inner = &self.inner;
        let mut control = lock(&inner.control);
        let was_refusing = control.fault == Fault::Refuse;
        control.fault = f;
        if control.stopped {
            return;
        }
        match (was_refusing, f == Fault::Refuse) {
            (false, true) => {
                inner.down.store(true, Ordering::SeqCst);
                control.listener = None;
                inner.close_all_conns();
            }
            (true, false) => {
                inner.down.store(false, Ordering::SeqCst);
                if rebind(inner, &mut control).is_err() {
                    drop(control);
                    inner.rt.spawn(retry_rebind(Arc::clone(inner)));
                }
            }
            _ => {}
        }
    }

    /// Replaces the latency model for requests arriving from now on.
    pub fn set_latency(&self, l: Latency) {
        *lock(&self.inner.latency) = l;
    }

    /// Makes `GET /healthz` answer `200 ok` (`true`, the default) or
    /// `503 unhealthy` (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests received, excluding health checks; counted as soon as the
    /// request head has been parsed.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted and served since start or the last
    /// [`reset_counters`](Self::reset_counters); with keep-alive this stays far
    /// below [`requests`](Self::requests).
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// `GET /healthz` requests received.
    pub fn health_checks(&self) -> u64 {
        self.inner.health_checks.load(Ordering::SeqCst)
    }

    /// The last [`MAX_RECORDED_BODIES`] (64) request bodies, oldest first,
    /// one per fully read non-health-check request (empty bodies included).
    pub fn received_bodies(&self) -> Vec<Bytes> {
        lock(&self.inner.bodies).iter().cloned().collect()
    }

    /// Zeroes [`requests`](Self::requests) and
    /// [`health_checks`](Self::health_checks) (which also restarts the
    /// `error_every` cycle) and forgets recorded bodies.
    pub fn reset_counters(&self) {
        self.inner.requests.store(0, Ordering::SeqCst);
        self.inner.health_checks.store(0, Ordering::SeqCst);
        self.inner.connections.store(0, Ordering::SeqCst);
        lock(&self.inner.bodies).clear();
    }

    /// Closes the listener and all connections and waits until they are gone.
    /// Idempotent; a stopped upstream cannot be restarted.
    pub async fn stop(&self) {
        let inner = &self.inner;
        let tasks = {
            let mut control = lock(&inner.control);
            control.stopped = true;
            inner.down.store(true, Ordering::SeqCst);
            control.listener = None;
            inner.close_all_conns();
            std::mem::take(&mut control.accept_tasks)
        };
        for task in tasks {
            // A JoinError only means the task was cancelled; either way it
            // is gone.
            let _ = task.await;
        }
        loop {
            let idle = inner.conns_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if inner.active_conns.load(Ordering::SeqCst) == 0 {
                break;
            }
            idle.await;
        }
    }
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("name", &self.inner.name)
            .field("addr", &self.inner.addr)
            .field("fault", &self.inner.current_fault())
            .finish()
    }
}

impl Inner {
    pub(crate) fn current_fault(&self) -> Fault {
        lock(&self.control).fault
    }

    pub(crate) fn current_latency(&self) -> Latency {
        *lock(&self.latency)
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    pub(crate) fn record_body(&self, body: Bytes) {
        let mut bodies = lock(&self.bodies);
        if bodies.len() >= MAX_RECORDED_BODIES {
            bodies.pop_front();
        }
        bodies.push_back(body);
    }

    fn close_all_conns(&self) {
        self.epoch.send_modify(|e| *e = e.wrapping_add(1));
    }

    /// Counts a live connection until the guard is dropped.
    pub(crate) fn conn_guard(self: &Arc<Self>) -> ConnGuard {
        self.active_conns.fetch_add(1, Ordering::SeqCst);
        ConnGuard(Arc::clone(self))
    }
}

/// Decrements the live-connection count on drop.
pub(crate) struct ConnGuard(Arc<Inner>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.active_conns.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.conns_idle.notify_waiters();
        }
    }
}

/// Binds the upstream's port again and starts accepting.
fn rebind(inner: &Arc<Inner>, control: &mut Control) -> io::Result<()> {
    let std_listener = std::net::TcpListener::bind(inner.addr)?;
    attach_listener(inner, control, std_listener)
}

/// Background fallback when an immediate re-bind failed.
async fn retry_rebind(inner: Arc<Inner>) {
    let attempts = REBIND_RETRY_FOR.as_millis() / REBIND_RETRY_EVERY.as_millis();
    let mut last_err = None;
    for _ in 0..attempts {
        tokio::time::sleep(REBIND_RETRY_EVERY).await;
        let mut control = lock(&inner.control);
        if control.stopped || control.fault == Fault::Refuse || control.listener.is_some() {
            return;
        }
        match rebind(&inner, &mut control) {
            Ok(()) => return,
            Err(e) => last_err = Some(e),
        }
    }
    if let Some(e) = last_err {
        eprintln!(
            "meridian-testkit: upstream {} could not re-bind {}: {e}",
            inner.name, inner.addr
        );
    }
}

/// Registers `std_listener` with the upstream's runtime and spawns its
/// accept loop. Works from any thread.
fn attach_listener(
    inner: &Arc<Inner>,
    control: &mut Control,
    std_listener: std::net::TcpListener,
) -> io::Result<()> {
    std_listener.set_nonblocking(true)?;
    let listener = {
        let _enter = inner.rt.enter();
        Arc::new(TcpListener::from_std(std_listener)?)
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = inner.rt.spawn(accept_loop(
        Arc::clone(inner),
        Arc::downgrade(&listener),
        stop_rx,
    ));
    control.accept_tasks.retain(|t| !t.is_finished());
    control.accept_tasks.push(task);
    control.listener = Some(ListenerSlot {
        _listener: listener,
        _stop: stop_tx,
    });
    Ok(())
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: Weak<TcpListener>,
    mut stop: oneshot::Receiver<()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        // Upgrade only for the duration of one poll so that dropping the
        // `ListenerSlot` closes the socket immediately.
        let accept = poll_fn(|cx| match listener.upgrade() {
            Some(l) => l.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        });
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => return,
            r = accept => r,
        };
        let stream = match accepted {
            None => return,
            Some(Ok((stream, _peer))) => stream,
            Some(Err(_)) => {
                // Transient (ECONNABORTED, EMFILE, ...): back off briefly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Subscribe before checking `down`: either this connection sees the
        // epoch bump of a concurrent Refuse/stop, or it sees `down` here.
        let shutdown = inner.epoch.subscribe();
        if inner.is_down() {
            continue;
        }
        inner.connections.fetch_add(1, Ordering::SeqCst);
        // Best effort; only affects latency.
        let _ = stream.set_nodelay(true);
        conn::spawn(Arc::clone(&inner), stream, shutdown, builder.clone());
    }
}
