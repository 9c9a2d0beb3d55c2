//! A tailer's batches in flight, in the order it submitted them, and every move of its
//! checkpoints: where a file is followed from, how far the sink acknowledged it, and a
//! truncation. A checkpoint moves past a batch only once the sink acknowledged it and
//! every batch before it (acknowledgements are taken in submission order, and the first
//! failure stops them). No I/O: the sink's acknowledgements are futures, the checkpoint
//! store is memory written by its own task.

use super::checkpoint::Checkpoints;
use super::fingerprint::FileIdentity;
use crate::ports::Events;
use crate::sink::{Ack, SinkError};
use futures::FutureExt;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Batches awaiting acknowledgement before the tailer waits for one.
pub const MAX_PENDING: usize = 16;

/// A batch the sink acknowledged, with every one before it: its file is checkpointed up
/// to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub file: FileIdentity,
    pub end: u64,
}

/// A batch in flight: its file, where it ends, how many records it holds (counted sent
/// once acknowledged) and the sink's acknowledgement (`None`: nothing was shipped, the
/// checkpoint only waits for the batches before it).
struct Pending {
    file: FileIdentity,
    end: u64,
    records: u64,
    ack: Option<Ack>,
}

pub struct InFlight {
    topic: Arc<str>,
    path: Arc<Path>,
    checkpoints: Arc<Checkpoints>,
    events: Arc<dyn Events>,
    /// Oldest first. Only the oldest is polled: the rest cannot settle before it, so
    /// their answers wait in their channels (no wake-up for an answer out of order, and
    /// no task or box per batch, which `FuturesOrdered` cost: BENCHMARKS.md).
    pending: VecDeque<Pending>,
}

impl InFlight {
    pub fn new(
        topic: Arc<str>,
        path: Arc<Path>,
        checkpoints: Arc<Checkpoints>,
        events: Arc<dyn Events>,
    ) -> Self {
        InFlight {
            topic,
            path,
            checkpoints,
            events,
            pending: VecDeque::new(),
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

    /// Queues the acknowledgement of a batch of `records` records of `file` ending at
    /// `end`; they are counted sent once it is acknowledged.
    pub fn push(&mut self, file: FileIdentity, end: u64, records: u64, ack: Ack) {
        self.pending.push_back(Pending {
            file,
            end,
            records,
            ack: Some(ack),
        });
    }

    /// Without a batch (lines the decoder holds or skipped), the checkpoint still
    /// advances to `end` once everything before it is acknowledged.
    pub fn advance(&mut self, file: FileIdentity, end: u64) {
        self.pending.push_back(Pending {
            file,
            end,
            records: 0,
            ack: None,
        });
    }

    /// Waits for the oldest batch; `None` when nothing is in flight. Cancel-safe: a batch
    /// is taken only when it is returned.
    pub async fn next(&mut self) -> Option<Result<Settled, SinkError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The oldest batch if it is settled already.
    pub fn try_next(&mut self) -> Option<Result<Settled, SinkError>> {
        match self.poll_next(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(settled) => settled,
            Poll::Pending => None,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Settled, SinkError>>> {
        let Some(oldest) = self.pending.front_mut() else {
            return Poll::Ready(None);
        };
        let result = match &mut oldest.ack {
            Some(ack) => std::task::ready!(ack.poll_unpin(cx)),
            None => Ok(()),
        };
        let Pending {
            file, end, records, ..
        } = self.pending.pop_front().expect("the oldest");
        Poll::Ready(Some(self.settle(file, end, records, result)))
    }

    fn settle(
        &self,
        file: FileIdentity,
        end: u64,
        records: u64,
        result: Result<(), SinkError>,
    ) -> Result<Settled, SinkError> {
        result?;
        if records > 0 {
            self.events.records_sent(&self.topic, records);
        }
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

    fn in_flight(store: &Arc<Checkpoints>) -> InFlight {
        let events = Arc::new(crate::ports::NoEvents);
        InFlight::new("t".into(), Path::new("/a").into(), store.clone(), events)
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
        let mut inflight = in_flight(&store);
        inflight.start(identity(7), 10);
        assert_eq!(offset(&store, 7), Some(10));
        let (first, first_ack) = ack();
        let (second, second_ack) = ack();
        inflight.push(identity(7), 20, 1, first_ack);
        inflight.push(identity(7), 30, 1, second_ack);
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
        let mut inflight = in_flight(&store);
        inflight.start(identity(7), 0);
        let (failed, failed_ack) = ack();
        inflight.push(identity(7), 20, 1, failed_ack);
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
        let mut inflight = in_flight(&store);
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

    /// Counts the records sent.
    #[derive(Default)]
    struct Sent(std::sync::atomic::AtomicU64);

    impl Events for Sent {
        fn records_sent(&self, _topic: &str, records: u64) {
            self.0
                .fetch_add(records, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Only the oldest acknowledgement is polled: a wait for it ends when it is answered
    /// (not when a later one is), and each batch's records are counted sent once it
    /// settles, none of a failed one.
    #[tokio::test]
    async fn a_wait_should_end_with_the_oldest_answer_and_count_what_settled() {
        let (_dir, store) = store();
        let sent = Arc::new(Sent::default());
        let mut inflight = InFlight::new(
            "t".into(),
            Path::new("/a").into(),
            store.clone(),
            sent.clone(),
        );
        let (first, first_ack) = ack();
        let (second, second_ack) = ack();
        let (third, third_ack) = ack();
        inflight.push(identity(7), 20, 3, first_ack);
        inflight.push(identity(7), 30, 4, second_ack);
        inflight.push(identity(7), 40, 5, third_ack);
        second.send(Ok(())).unwrap();
        let answer = tokio::spawn(async move {
            tokio::task::yield_now().await;
            first.send(Ok(())).unwrap();
        });
        let settled = tokio::time::timeout(std::time::Duration::from_secs(5), inflight.next())
            .await
            .expect("woken by the oldest answer");
        answer.await.unwrap();
        assert_eq!(settled.unwrap().unwrap().end, 20);
        assert_eq!(inflight.try_next().unwrap().unwrap().end, 30);
        assert_eq!(sent.0.load(std::sync::atomic::Ordering::Relaxed), 7);
        third.send(Err(SinkError::Closed { sink: "test" })).unwrap();
        assert!(inflight.next().await.unwrap().is_err());
        assert_eq!(
            sent.0.load(std::sync::atomic::Ordering::Relaxed),
            7,
            "the failed batch's records are not counted sent"
        );
        assert_eq!(offset(&store, 7), Some(30));
    }

    #[test]
    fn a_truncation_should_start_the_file_again_at_zero() {
        let (_dir, store) = store();
        let inflight = in_flight(&store);
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
