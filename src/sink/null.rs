//! Counts and discards: for benchmarks of everything but the output.

use super::{Ack, Batch, Sink, SinkError};
use futures::future::{self, BoxFuture, FutureExt};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct NullSink {
    lines: AtomicU64,
    bytes: AtomicU64,
}

impl NullSink {
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Sink for NullSink {
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>> {
        self.lines.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.bytes
            .fetch_add(batch.bytes() as u64, Ordering::Relaxed);
        future::ready(Ok(future::ready(Ok(())).boxed())).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        future::ready(Ok(())).boxed()
    }
}
