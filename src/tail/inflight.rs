//! A tailer's batches in flight, in the order it submitted them, and every move of its
//! checkpoints: where a file is followed from, how far the sink acknowledged it, and a
//! truncation. A checkpoint moves past a batch only once the sink acknowledged it and
//! every batch before it (acknowledgements are taken in submission order, and the first
//! failure stops them). No I/O: the sink's acknowledgements are futures, the checkpoint
//! store is memory written by its own task.

use super::checkpoint::Checkpoints;
use super::fingerprint::FileIdentity;
use crate::sink::SinkError;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesOrdered, StreamExt};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// Batches awaiting acknowledgement before the tailer waits for one.
pub const MAX_PENDING: usize = 16;

/// A batch the sink acknowledged, with every one before it: its file is checkpointed up
/// to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub file: FileIdentity,
    pub end: u64,
}

type Pending = FuturesOrdered<BoxFuture<'static, (FileIdentity, u64, Result<(), SinkError>)>>;

pub struct InFlight {
    topic: Arc<str>,
    path: Arc<Path>,
    checkpoints: Arc<Checkpoints>,
    pending: Pending,
}

impl InFlight {
    pub fn new(topic: Arc<str>, path: Arc<Path>, checkpoints: Arc<Checkpoints>) -> Self {
        InFlight {
            topic,
            path,
            checkpoints,
            pending: Pending::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether the tailer must wait for an acknowledgement before submitting more.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// `file` is followed from `offset` (its checkpoint, a copy's original, or
    /// `start_at`): a restart resumes there rather than applying `start_at` again.
    pub fn start(&self, file: FileIdentity, offset: u64) {
        self.checkpoints.set(&self.topic, file, offset, &self.path);
    }

    /// `file` was truncated in place once everything in flight was settled (`acked`):
    /// its checkpoint starts again at 0 under `now_file`, what it held before is kept for
    /// a copy of it (`tail/copies.rs`).
    pub fn truncated(&self, file: FileIdentity, acked: u64, now_file: FileIdentity) {
        debug_assert!(self.is_empty(), "truncated with batches in flight");
        self.checkpoints
            .truncated(&self.topic, file, acked, now_file, &self.path);
    }

    /// Queues the acknowledgement of a batch of `file` ending at `end`.
    pub fn push(
        &mut self,
        file: FileIdentity,
        end: u64,
        ack: impl Future<Output = Result<(), SinkError>> + Send + 'static,
    ) {
        let settled = ack.map(move |result| (file, end, result));
        self.pending.push_back(settled.boxed());
    }

    /// Without a batch (lines the decoder holds or skipped), the checkpoint still
    /// advances to `end` once everything before it is acknowledged.
    pub fn advance(&mut self, file: FileIdentity, end: u64) {
        self.push(file, end, futures::future::ready(Ok(())));
    }

    /// Waits for the oldest batch; `None` when nothing is in flight.
    pub async fn next(&mut self) -> Option<Result<Settled, SinkError>> {
        let done = self.pending.next().await?;
        Some(self.settle(done))
    }

    /// The oldest batch if it is settled already.
    pub fn try_next(&mut self) -> Option<Result<Settled, SinkError>> {
        let done = self.pending.next().now_or_never()??;
        Some(self.settle(done))
    }

    fn settle(
        &self,
        (file, end, result): (FileIdentity, u64, Result<(), SinkError>),
    ) -> Result<Settled, SinkError> {
        result?;
        self.checkpoints.set(&self.topic, file, end, &self.path);
        Ok(Settled { file, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Ack;
    use tokio::sync::oneshot;

    fn identity(ino: u64) -> FileIdentity {
        FileIdentity::fake(ino)
    }

    fn store() -> (tempfile::TempDir, Arc<Checkpoints>) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        (dir, store)
    }

    fn offset(store: &Checkpoints, ino: u64) -> Option<u64> {
        store.get("t", 1, ino).map(|c| c.offset)
    }

    fn ack() -> (oneshot::Sender<Result<(), SinkError>>, Ack) {
        let (tx, rx) = oneshot::channel();
        let ack = async move { rx.await.unwrap_or(Err(SinkError::Closed { sink: "test" })) };
        (tx, ack.boxed())
    }

    #[tokio::test]
    async fn the_checkpoint_should_move_only_past_batches_acknowledged_in_order() {
        let (_dir, store) = store();
        let mut inflight = InFlight::new("t".into(), Path::new("/a").into(), store.clone());
        inflight.start(identity(7), 10);
        assert_eq!(offset(&store, 7), Some(10));
        let (first, first_ack) = ack();
        let (second, second_ack) = ack();
        inflight.push(identity(7), 20, first_ack);
        inflight.push(identity(7), 30, second_ack);
        inflight.advance(identity(7), 35);
        // The second acknowledged first: nothing moves until the first is.
        second.send(Ok(())).unwrap();
        assert!(inflight.try_next().is_none());
        assert_eq!(offset(&store, 7), Some(10));
        first.send(Ok(())).unwrap();
        let settled: Vec<u64> = std::iter::from_fn(|| inflight.try_next())
            .map(|s| s.unwrap().end)
            .collect();
        assert_eq!(settled, [20, 30, 35]);
        assert_eq!(offset(&store, 7), Some(35));
        assert!(inflight.is_empty());
    }

    #[tokio::test]
    async fn a_failed_batch_should_stop_the_checkpoint_before_it() {
        let (_dir, store) = store();
        let mut inflight = InFlight::new("t".into(), Path::new("/a").into(), store.clone());
        inflight.start(identity(7), 0);
        let (failed, failed_ack) = ack();
        inflight.push(identity(7), 20, failed_ack);
        failed
            .send(Err(SinkError::Rejected(
                crate::sink::kafka::Error::NoTopic { topic: "t".into() },
            )))
            .unwrap();
        assert!(matches!(
            inflight.next().await,
            Some(Err(SinkError::Rejected { .. }))
        ));
        assert_eq!(offset(&store, 7), Some(0), "not past the failed batch");
    }

    #[tokio::test]
    async fn it_should_bound_what_is_in_flight_and_checkpoint_each_file_apart() {
        let (_dir, store) = store();
        let mut inflight = InFlight::new("t".into(), Path::new("/a").into(), store.clone());
        for i in 0..MAX_PENDING as u64 {
            assert!(!inflight.is_full());
            inflight.advance(identity(7 + i % 2), i);
        }
        assert!(inflight.is_full());
        while let Some(settled) = inflight.next().await {
            settled.unwrap();
        }
        let last = MAX_PENDING as u64 - 1;
        assert_eq!(offset(&store, 8), Some(last), "the rotated-to file");
        assert_eq!(offset(&store, 7), Some(last - 1), "the old file, apart");
    }

    #[test]
    fn a_truncation_should_start_the_file_again_at_zero() {
        let (_dir, store) = store();
        let inflight = InFlight::new("t".into(), Path::new("/a").into(), store.clone());
        inflight.start(identity(7), 500);
        let now = FileIdentity {
            hash: 3,
            ..identity(7)
        };
        inflight.truncated(identity(7), 500, now);
        assert_eq!(store.get("t", 1, 7).unwrap().file, now);
        assert_eq!(offset(&store, 7), Some(0));
    }
}
