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
        // Raised and not yet taken: its task was woken by the raise that set it (or
        // looks at it before it waits), so this one costs a read, not a write to the
        // line the task's worker reads (the event thread raises a busy file's signal at
        // each write, while its tailer waits for `tail.min_read_interval`).
        if self.raised.load(Ordering::Acquire) {
            return;
        }
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Raised and not yet taken (a look, which takes nothing).
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
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

    /// Waits for `signal` to wake its task, `what` failing it after 5 s. Not a timeout
    /// around the wait: the timeout's own wake-up would let the wait look at the signal
    /// once more and pass over a raise that woke nobody.
    async fn woken(signal: &Signal, what: impl FnOnce() -> String) {
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("{}", what()),
            _ = signal.taken() => {}
        }
    }

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
        woken(&signal, || "not woken by the raise".into()).await;
        thread.join().unwrap();
        assert!(signal.taken().now_or_never().is_none());
    }

    /// A raise that finds the signal raised does nothing (`raise`): the raise that set it
    /// wakes the task. Two threads raise once after each of the task's takes, racing
    /// each other and the task: the task is never left waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raises_racing_with_each_other_and_a_take_should_never_be_lost() {
        let signal = Arc::new(Signal::default());
        let raisers: Vec<_> = (0..2)
            .map(|_| {
                let (go, rounds) = std::sync::mpsc::channel::<()>();
                let signal = signal.clone();
                let thread = std::thread::spawn(move || {
                    while rounds.recv().is_ok() {
                        signal.raise();
                    }
                });
                (go, thread)
            })
            .collect();
        for round in 0..10_000 {
            for (go, _) in &raisers {
                go.send(()).unwrap();
            }
            woken(&signal, || {
                format!("round {round}: the raises after the take were lost")
            })
            .await;
        }
        for (go, thread) in raisers {
            drop(go);
            thread.join().unwrap();
        }
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
