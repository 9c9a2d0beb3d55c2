//! Background tasks that must not die unseen: the HTTP server, the checkpoint writer, the
//! etcd source and the config watcher each run under a supervisor that starts them again
//! after a panic (or an end before shutdown), after a delay that doubles up to
//! `MAX_DELAY`. Each restart is logged, counted in `logcatch_task_restarts_total{task}`
//! and shown in `/status` `tasks`. (Tailers are restarted by the reconcile loop, Kafka
//! producers by the sink; the reconcile loop itself cannot be replaced: the agent exits
//! with an error when it dies.)

use crate::ports::health::Health;
use crate::ports::Events;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Starts supervised tasks; each stops for good once its own token is cancelled.
#[derive(Clone)]
pub struct Supervisor {
    pub events: Arc<dyn Events>,
    pub health: Arc<Health>,
}

impl Supervisor {
    /// Runs what `make` returns as task `name` until `stop`, starting it again whenever
    /// it panics or ends before `stop`. The handle ends once the task ended after `stop`.
    pub fn spawn<F, Fut>(
        &self,
        name: &'static str,
        stop: CancellationToken,
        mut make: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let supervisor = self.clone();
        tokio::spawn(async move {
            let mut delay = FIRST_DELAY;
            loop {
                let run = make();
                let ended = tokio::spawn(async move {
                    crate::fault::panic_once(name);
                    run.await
                })
                .await;
                if stop.is_cancelled() {
                    return;
                }
                let why = match ended {
                    Ok(()) => "ended".to_string(),
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e)),
                    Err(e) => format!("failed: {e}"),
                };
                tracing::error!(
                    task = name,
                    ?delay,
                    "background task {name} {why}; starting it again"
                );
                supervisor.events.task_restarted(name);
                supervisor.health.task_restarted(name, why);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_DELAY);
            }
        })
    }
}

/// What a panic said (its `&str` or `String` payload).
pub fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::NoEvents;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_should_be_started_again_and_reported() {
        let health = Arc::new(Health::new("c".as_ref(), "s".as_ref()));
        let supervisor = Supervisor {
            events: Arc::new(NoEvents),
            health: health.clone(),
        };
        let stop = CancellationToken::new();
        let started = Arc::new(AtomicUsize::new(0));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let mut done_tx = Some(done_tx);
        supervisor.spawn("t", stop.clone(), {
            let started = started.clone();
            move || {
                let n = started.fetch_add(1, Ordering::SeqCst);
                let done = (n == 2).then(|| done_tx.take()).flatten();
                async move {
                    if n < 2 {
                        panic!("boom {n}");
                    }
                    let _ = done.map(|d| d.send(()));
                    std::future::pending::<()>().await
                }
            }
        });
        done.await.unwrap();
        let view = health.view().tasks["t"].clone();
        assert_eq!(view.restarts, 2);
        assert_eq!(view.last_error, "panicked: boom 1");
        stop.cancel();
    }
}
