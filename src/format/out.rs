//! Where the format stage puts what it decoded: shared by the decoder and the multiline
//! aggregator.

use crate::record::{Batch, RecordMeta};

/// Where records go: the batch, and the line spans `(first, last)` of shipped records
/// that had more than one line.
pub struct Out<'a> {
    pub batch: &'a mut Batch,
    pub spans: &'a mut Vec<(u64, u64)>,
}

impl Out<'_> {
    pub fn ship(&mut self, (start, last): (u64, u64), bytes: &[u8], meta: RecordMeta) {
        self.batch.push_with(start, bytes, meta);
        if last > start {
            self.spans.push((start, last));
        }
    }
}
