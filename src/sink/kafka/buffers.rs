//! The producers' encoding buffers, shared by all of them: a producer takes one for each
//! group and gives it back once the group is compressed — or, without compression (the
//! request is the buffer itself), once the request is acknowledged (`producer::send`,
//! `EncodedBatch::into_records`). At most `keep` bytes of emptied
//! buffers are kept for reuse, whatever the number of partitions; the rest is freed.
//!
//! Each producer used to keep its own largest buffer (up to 4 × `max_batch_bytes` with
//! compression) for its next group: at 64 partitions, 256 MiB with the defaults, beyond
//! `max_in_flight_bytes` (issue #23.10). Reuse still matters: a fresh buffer's pages are
//! zeroed by the kernel as they are first written (10 % of the time, BENCHMARKS.md), so a
//! busy partition should find the buffer its last group emptied.

use rskafka::record::EncodedRecords;
use std::sync::Mutex;

pub struct Buffers {
    /// The most bytes (capacity) of emptied buffers kept.
    keep: usize,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    buffers: Vec<EncodedRecords>,
    bytes: usize,
}

impl Buffers {
    pub fn new(keep: usize) -> Self {
        Buffers {
            keep,
            idle: Mutex::new(Idle::default()),
        }
    }

    /// The most bytes of emptied buffers kept for a sink with `max_in_flight_bytes`: an
    /// eighth of it (8 MiB by default: the two buffers of one busy partition compressing
    /// groups of 4 × 1 MiB, one being filled while the other is compressed).
    pub fn keep_for(max_in_flight_bytes: u64) -> usize {
        (max_in_flight_bytes / 8) as usize
    }

    /// A buffer to encode a group into: the one emptied last, or a new (empty) one.
    pub fn take(&self) -> EncodedRecords {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.buffers.pop() {
            Some(buffer) => {
                idle.bytes -= buffer.capacity();
                buffer
            }
            None => EncodedRecords::default(),
        }
    }

    /// Keeps an emptied buffer for reuse when there is room for it, else frees it.
    pub fn give(&self, buffer: EncodedRecords) {
        let bytes = buffer.capacity();
        if bytes == 0 || !buffer.is_empty() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.bytes + bytes <= self.keep {
            idle.bytes += bytes;
            idle.buffers.push(buffer);
        }
    }

    /// Bytes of emptied buffers kept now.
    pub fn kept(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(bytes: usize) -> EncodedRecords {
        let mut buffer = EncodedRecords::default();
        buffer.reserve(bytes);
        buffer
    }

    #[test]
    fn buffers_should_keep_at_most_keep_bytes_and_hand_back_the_last_kept() {
        let buffers = Buffers::new(3000);
        buffers.give(buffer(1000));
        buffers.give(buffer(1500));
        buffers.give(buffer(1000));
        assert_eq!(buffers.kept(), 2500, "no room for the third: freed");
        assert_eq!(buffers.take().capacity(), 1500, "the one emptied last");
        assert_eq!(buffers.kept(), 1000);
        assert_eq!(buffers.take().capacity(), 1000);
        assert_eq!(buffers.take().capacity(), 0, "none kept: a new one");
        buffers.give(buffer(4000));
        assert_eq!(buffers.kept(), 0, "bigger than keep: freed");
    }
}
