//! rskafka has no partitioner: `file` hashes node + path (one partition per file keeps
//! each file's order; stable across restarts and versions), `round_robin` spreads batches.

use crate::config::kafka::Partitioning;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Partitioner {
    mode: Partitioning,
    next: AtomicU64,
}

impl Partitioner {
    pub fn new(mode: Partitioning) -> Self {
        Partitioner {
            mode,
            next: AtomicU64::new(0),
        }
    }

    /// The partition of a batch of `path` on `node`, among `partitions` (≥ 1).
    pub fn choose(&self, node: &str, path: &[u8], partitions: i32) -> i32 {
        let n = partitions.max(1) as u64;
        let slot = match self.mode {
            Partitioning::File => {
                let mut key = Vec::with_capacity(node.len() + 1 + path.len());
                key.extend_from_slice(node.as_bytes());
                key.push(0);
                key.extend_from_slice(path);
                xxhash_rust::xxh3::xxh3_64(&key)
            }
            Partitioning::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
        };
        (slot % n) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_partitioning_should_be_stable_and_spread_files() {
        let p = Partitioner::new(Partitioning::File);
        let first = p.choose("node-1", b"/var/log/a.log", 8);
        for _ in 0..10 {
            assert_eq!(
                p.choose("node-1", b"/var/log/a.log", 8),
                first,
                "same file, same partition"
            );
        }
        // A known value: the hash must not change between versions (order per file).
        assert_eq!(
            p.choose("node-1", b"/var/log/a.log", 1_000_003),
            first_known()
        );
        let used: std::collections::HashSet<i32> = (0..64)
            .map(|i| p.choose("node-1", format!("/var/log/{i}.log").as_bytes(), 8))
            .collect();
        assert!(
            used.len() >= 6,
            "64 files should use most of 8 partitions, used {used:?}"
        );
    }

    fn first_known() -> i32 {
        (xxhash_rust::xxh3::xxh3_64(b"node-1\0/var/log/a.log") % 1_000_003) as i32
    }

    #[test]
    fn round_robin_should_cycle_through_partitions() {
        let p = Partitioner::new(Partitioning::RoundRobin);
        let picks: Vec<i32> = (0..6).map(|_| p.choose("n", b"/a", 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
