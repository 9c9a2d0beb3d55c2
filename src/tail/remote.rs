//! Tailers of files on network or FUSE filesystems run on a thread of their own.
//!
//! On a local filesystem a tailer's `read`, `stat` and `open` run on the async workers,
//! on purpose: a read from the page cache costs microseconds, less than a hop to another
//! thread would (BENCHMARKS.md, "Reading ahead on another thread"). On a network or FUSE
//! filesystem the same call may block for as long as the server is gone (an NFS `hard`
//! mount, a FUSE daemon that stopped answering), and on a worker it would stall the other
//! tailers, the reconcile loop and `/healthz`. There, the whole tailer (its reads, stats,
//! opens and its watch task) runs on a `tail-remote` thread with a one-thread runtime of
//! its own, so a hung call stalls that file only. One thread per such file: a node has
//! few network-mounted logs.

use super::TailError;
use futures::future::{BoxFuture, FutureExt};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use tokio::sync::oneshot;

/// Runs `follow` to its end on a new thread with a runtime of its own; the returned
/// future (for the caller's runtime) resolves with its result.
pub fn on_own_thread<F>(path: PathBuf, follow: F) -> BoxFuture<'static, Result<(), TailError>>
where
    F: Future<Output = Result<(), TailError>> + Send + 'static,
{
    let thread_error = move |source| TailError::Thread {
        path: path.clone(),
        source,
    };
    let (done, result) = oneshot::channel();
    let failed = thread_error.clone();
    let started = std::thread::Builder::new()
        .name("tail-remote".into())
        .spawn(move || {
            let followed = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(follow),
                Err(source) => Err(failed(source)),
            };
            let _ = done.send(followed);
        });
    async move {
        started.map_err(&thread_error)?;
        let ended = || thread_error(io::Error::other("the thread ended without a result"));
        result.await.unwrap_or_else(|_| Err(ended()))
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_result_should_come_back_from_the_thread() {
        let name = on_own_thread(PathBuf::from("/x"), async {
            let name = std::thread::current().name().map(str::to_owned);
            // A runtime of its own: timers work there.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            match name.as_deref() {
                Some("tail-remote") => Ok(()),
                _ => Err(TailError::NotRegular {
                    path: PathBuf::from(format!("{name:?}")),
                }),
            }
        });
        name.await.expect("ran on tail-remote");
    }

    #[tokio::test]
    async fn a_panic_on_the_thread_should_be_an_error_not_a_hang() {
        let followed = on_own_thread(PathBuf::from("/x"), async { panic!("boom") });
        let error = followed.await.expect_err("no result");
        assert!(
            error
                .to_string()
                .contains("/x: cannot start the tailer's own thread")
                || error.to_string().contains("ended without a result"),
            "{error}"
        );
    }
}
