//! Time limits on the engine's I/O waits without a timer registration per wait.
//!
//! A client connection owns one tokio timer for its whole life (its idle timer). The waits of a
//! request on that connection (the upstream's answer, a write to the client, a body read) use the
//! same timer: a wait that finishes at once touches no clock and no timer; one that has to wait
//! notes its own deadline and arms the timer only when the timer is due later than that. In the
//! usual run of requests each new deadline is later than the one the timer holds, so nothing is
//! registered: when the timer fires early it is moved to the deadline of the wait then running.
//! The idle wait ([`super::poll_wait`]) treats an early fire the same way.
//!
//! Pingora's `pingora_timeout`, which the engine used before, reads the clock on every call,
//! and a wait that has to wait allocates its timer future and registers it in a locked map, with
//! a waiter in a `Notify` shared with Pingora's timer thread: about 2 % of the engine's CPU
//! under load (benches/README.md). Waits that run side by side in one task (the legs of a hedge
//! race) cannot share one deadline, so they keep Pingora's ([`Timer::Fast`]).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A wait ran past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Where a wait's time limit comes from.
pub enum Timer<'a> {
    /// Pingora's fast timeouts: one timer per wait, for waits that run side by side.
    Fast,
    /// The connection's own timer, shared by its waits one after another.
    Conn(Pin<&'a mut Sleep>),
}

impl Timer<'_> {
    /// The same timer, borrowed for a shorter time.
    pub fn reborrow(&mut self) -> Timer<'_> {
        match self {
            Timer::Fast => Timer::Fast,
            Timer::Conn(sleep) => Timer::Conn(sleep.as_mut()),
        }
    }

    /// Runs `fut` for at most `wait`.
    pub async fn within<F: Future>(
        &mut self,
        wait: Duration,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        match self {
            Timer::Fast => pingora_timeout::timeout(wait, fut)
                .await
                .map_err(|_| Elapsed),
            Timer::Conn(sleep) => {
                let mut fut = std::pin::pin!(fut);
                let mut due = None;
                poll_fn(|cx| poll_within(cx, fut.as_mut(), wait, &mut due, sleep.as_mut())).await
            }
        }
    }
}

/// One poll of `fut` within `wait` on the shared timer `sleep`; `due` is set when `fut` first
/// has to wait.
fn poll_within<F: Future>(
    cx: &mut Context<'_>,
    fut: Pin<&mut F>,
    wait: Duration,
    due: &mut Option<Instant>,
    mut sleep: Pin<&mut Sleep>,
) -> Poll<Result<F::Output, Elapsed>> {
    if let Poll::Ready(v) = fut.poll(cx) {
        return Poll::Ready(Ok(v));
    }
    let due = *due.get_or_insert_with(|| Instant::now() + wait);
    if sleep.deadline() > due {
        sleep.as_mut().reset(due);
    }
    while sleep.as_mut().poll(cx).is_ready() {
        if Instant::now() >= due {
            return Poll::Ready(Err(Elapsed));
        }
        // Fired for an earlier wait's deadline: on to this one's.
        sleep.as_mut().reset(due);
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_shared_timer_limits_each_wait_and_moves_on_when_it_fires_early() {
        let sleep = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(sleep);
        let mut timer = Timer::Conn(sleep.as_mut());
        // Done at once: no timer is touched.
        assert_eq!(
            timer.within(Duration::from_secs(1), async { 7 }).await,
            Ok(7)
        );
        // A wait shorter than the timer moves it earlier and ends at its own limit.
        let t0 = Instant::now();
        let r = timer
            .within(Duration::from_secs(2), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        // A timer left due earlier (here: now) does not cut a later wait short.
        let t0 = Instant::now();
        let r = timer
            .within(
                Duration::from_secs(5),
                tokio::time::sleep(Duration::from_secs(3)),
            )
            .await;
        assert_eq!(r, Ok(()));
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        let t0 = Instant::now();
        let r = timer
            .within(Duration::from_secs(4), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(t0.elapsed(), Duration::from_secs(4));
        // Pingora's timeouts, for waits side by side.
        let mut fast = Timer::Fast;
        let r = fast
            .within(Duration::from_millis(30), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(Elapsed));
    }
}
