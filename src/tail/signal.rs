//! Wake-ups for one waiting task (a tailer, a watch task) without a lock: an atomic flag
//! and the task's waker. Tokio's `Notify` and `CancellationToken` lock a mutex to register
//! each waiter, again to drop it, and `is_cancelled` locks one too; an idle tailer waited
//! on both at each write, 10,000 files a second (BENCHMARKS.md). Each type here has at
//! most one task waiting on it at a time (a second one would take the first one's place).

use futures::task::AtomicWaker;
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// A wake-up that is taken: raised any number of times, it wakes its task once, as
/// `Notify::notify_one` with a stored permit does.
#[derive(Debug, Default)]
pub struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Wakes the waiting task, or the next wait if none waits now.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn take(&self) -> bool {
        // Read first: a signal not raised costs no write to the shared line.
        self.raised.load(Ordering::Relaxed) && self.raised.swap(false, Ordering::AcqRel)
    }

    /// Resolves once the signal is raised (or was since it was last taken), taking it.
    pub fn taken(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| poll_until(&self.waker, cx, || self.take()))
    }
}

/// Ready once `ready` says so, else pending with the task's waker in `waker`.
fn poll_until(waker: &AtomicWaker, cx: &mut Context<'_>, ready: impl Fn() -> bool) -> Poll<()> {
    if ready() {
        return Poll::Ready(());
    }
    waker.register(cx.waker());
    // Ready between the look and the registration: its wake may have gone to the waker
    // registered before.
    match ready() {
        true => Poll::Ready(()),
        false => Poll::Pending,
    }
}

/// How a tailer is told to stop: a level its loop reads between steps, and that ends its
/// waits. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Debug, Default)]
struct StopInner {
    stopped: AtomicBool,
    waker: AtomicWaker,
}

impl Stop {
    pub fn new() -> Self {
        Stop::default()
    }

    pub fn cancel(&self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }

    /// Resolves once [`cancel`](Self::cancel) was called.
    pub fn cancelled(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| poll_until(&self.0.waker, cx, || self.is_cancelled()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_signal_should_wake_its_task_once_per_raise_taken() {
        let signal = Arc::new(Signal::default());
        // Raised before anyone waits: the next wait ends at once, and takes it.
        signal.raise();
        signal.raise();
        assert!(signal.taken().now_or_never().is_some());
        assert!(signal.taken().now_or_never().is_none(), "taken");
        // Raised from another thread while the task waits.
        let raiser = signal.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            raiser.raise();
        });
        tokio::time::timeout(Duration::from_secs(5), signal.taken())
            .await
            .expect("woken by the raise");
        thread.join().unwrap();
        assert!(signal.taken().now_or_never().is_none());
    }

    #[tokio::test]
    async fn a_stop_should_end_every_later_wait_and_stay() {
        let stop = Stop::new();
        assert!(!stop.is_cancelled());
        assert!(stop.cancelled().now_or_never().is_none());
        let other = stop.clone();
        let task = tokio::spawn(async move { other.cancelled().await });
        tokio::task::yield_now().await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("woken by the cancel")
            .unwrap();
        assert!(stop.is_cancelled());
        assert!(
            stop.cancelled().now_or_never().is_some(),
            "a level, not taken"
        );
    }
}
