//! The token buckets that enforce a declaration's `throttle` (`throttle.rs`): one per
//! (topic, throttle, scope), the scope being the file, its container or its namespace, in
//! a registry all tailers share; a bucket goes when the last tailer using it does.
//!
//! Written by hand rather than with `governor`: a paused tailer must know how much it may
//! read now (to cut a chunk at the last line the bucket allows) and what a read it could
//! not size beforehand cost (a long line, a rotated file's rest): governor answers only
//! yes/no for a given count, refuses one larger than the burst, and keeps its own clock,
//! where these buckets run on tokio's (paused in the tests).

use crate::record::{Batch, PodMeta};
use crate::throttle::{OnLimit, Per, Throttle};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A paused tailer reads again once its bucket holds this share of its capacity: a few
/// wake-ups per burst, each shipping a batch worth its cost, not one per token.
const RESUME_SHARE: f64 = 1.0 / 8.0;

/// One rate: `level` tokens, refilled at `per_s` up to `capacity`. It may go below 0: a
/// read that could not be sized beforehand is paid for afterwards.
#[derive(Debug)]
struct Tokens {
    per_s: f64,
    capacity: f64,
    level: f64,
    at: Instant,
}

impl Tokens {
    fn new(per_s: u64, burst: Duration, now: Instant) -> Self {
        let per_s = per_s as f64;
        let capacity = per_s * burst.as_secs_f64();
        Tokens {
            per_s,
            capacity,
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let gained = (now - self.at).as_secs_f64() * self.per_s;
            self.level = (self.level + gained).min(self.capacity);
            self.at = now;
        }
    }

    /// What a paused reader waits for: a share of the capacity, and at least one token
    /// (unless the bucket holds less).
    fn resume_level(&self) -> f64 {
        (self.capacity * RESUME_SHARE).max(1.0).min(self.capacity)
    }

    /// When the level reaches `level` (rounded up to the next microsecond, so that the
    /// refill then is not a rounding error short of it).
    fn reaches(&self, level: f64, now: Instant) -> Instant {
        let missing = (level - self.level).max(0.0);
        now + Duration::from_secs_f64(missing / self.per_s) + Duration::from_micros(1)
    }

    /// Whole tokens available, at least 1.
    fn whole(&self) -> u64 {
        (self.level.floor() as u64).max(1)
    }
}

/// What may be read now: at most `lines` newlines and `bytes` bytes (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub lines: Option<u64>,
    pub bytes: Option<u64>,
}

impl Allowance {
    /// The longest prefix of `chunk` within the allowance (ending after its last allowed
    /// newline when lines are limited and the chunk holds more), and the newlines in it.
    pub fn prefix(&self, chunk: &[u8]) -> (usize, u64) {
        let len = self
            .bytes
            .map_or(chunk.len(), |b| chunk.len().min(b as usize));
        let Some(max_lines) = self.lines else {
            return (len, 0);
        };
        let mut lines = 0;
        for at in memchr::memchr_iter(b'\n', &chunk[..len]) {
            lines += 1;
            if lines == max_lines {
                return (at + 1, lines);
            }
        }
        (len, lines)
    }
}

/// A throttle's buckets: lines and bytes, either or both.
#[derive(Debug)]
pub struct Bucket {
    lines: Option<Tokens>,
    bytes: Option<Tokens>,
}

impl Bucket {
    /// A full bucket.
    pub fn new(throttle: &Throttle, now: Instant) -> Self {
        let tokens = |rate: Option<u64>| rate.map(|r| Tokens::new(r, throttle.burst, now));
        Bucket {
            lines: tokens(throttle.lines_per_s),
            bytes: tokens(throttle.bytes_per_s),
        }
    }

    fn each(&mut self) -> impl Iterator<Item = &mut Tokens> + '_ {
        self.lines.iter_mut().chain(self.bytes.iter_mut())
    }

    /// What may be read now, or when to look again: a bucket that went below its resume
    /// level waits to be back at it.
    pub fn allowance(&mut self, now: Instant) -> Result<Allowance, Instant> {
        let mut ready = now;
        for tokens in self.each() {
            tokens.refill(now);
            if tokens.level < tokens.resume_level() {
                ready = ready.max(tokens.reaches(tokens.resume_level(), now));
            }
        }
        if ready > now {
            return Err(ready);
        }
        Ok(Allowance {
            lines: self.lines.as_ref().map(Tokens::whole),
            bytes: self.bytes.as_ref().map(Tokens::whole),
        })
    }

    /// Counts what was read (it may take the bucket below 0).
    pub fn charge(&mut self, lines: u64, bytes: u64, now: Instant) {
        if let Some(tokens) = self.lines.as_mut() {
            tokens.refill(now);
            tokens.level -= lines as f64;
        }
        if let Some(tokens) = self.bytes.as_mut() {
            tokens.refill(now);
            tokens.level -= bytes as f64;
        }
    }

    /// Whether a record of `bytes` passes now (`on_limit: drop`): the bucket is not empty;
    /// it is charged when it passes. A record larger than the bucket passes when it is
    /// full and is paid for afterwards.
    pub fn admit(&mut self, bytes: u64, now: Instant) -> bool {
        let mut open = true;
        for tokens in self.each() {
            tokens.refill(now);
            open &= tokens.level >= 1.0_f64.min(tokens.capacity);
        }
        if open {
            self.charge(1, bytes, now);
        }
        open
    }
}

/// Who shares a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    File(Arc<Path>),
    Container {
        namespace: String,
        pod: String,
        container: String,
    },
    Namespace(String),
}

impl Scope {
    /// A file without pod metadata in its path has a bucket of its own.
    fn of(per: Per, path: &Arc<Path>) -> Scope {
        let pod = match per {
            Per::File => None,
            Per::Container | Per::Namespace => PodMeta::from_path(path),
        };
        match (per, pod) {
            (Per::Container, Some(pod)) => Scope::Container {
                namespace: pod.namespace,
                pod: pod.pod,
                container: pod.container,
            },
            (Per::Namespace, Some(pod)) => Scope::Namespace(pod.namespace),
            _ => Scope::File(path.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    topic: Arc<str>,
    throttle: Throttle,
    scope: Scope,
}

type Shared = Arc<Mutex<Bucket>>;

/// Every bucket in use, shared by the tailers (in `TailerContext`).
#[derive(Debug, Default)]
pub struct Throttles {
    buckets: Mutex<HashMap<Key, Shared>>,
}

impl Throttles {
    /// The limiter of a tailer of `path` on `topic`: the bucket its scope shares, a full
    /// new one when no other tailer uses it.
    pub fn limiter(
        self: &Arc<Self>,
        topic: &Arc<str>,
        throttle: &Throttle,
        path: &Arc<Path>,
    ) -> Limiter {
        let key = Key {
            topic: topic.clone(),
            throttle: throttle.clone(),
            scope: Scope::of(throttle.per, path),
        };
        let bucket = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            buckets
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Bucket::new(throttle, Instant::now()))))
                .clone()
        };
        Limiter {
            on_limit: throttle.on_limit,
            describe: throttle.describe(),
            bucket,
            key,
            registry: self.clone(),
        }
    }

    /// Buckets in use.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tailer's hold on its bucket; the last one dropped removes the bucket.
#[derive(Debug)]
pub struct Limiter {
    pub on_limit: OnLimit,
    /// `100 lines/s per container`, for `/status`.
    pub describe: String,
    bucket: Shared,
    key: Key,
    registry: Arc<Throttles>,
}

impl Limiter {
    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `on_limit: pause`: what may be read now, or when to look again.
    pub fn allowance(&self, now: Instant) -> Result<Allowance, Instant> {
        self.bucket().allowance(now)
    }

    /// What a read that ignores the limit (a file finished at rotation or at stop) may
    /// read: everything, its newlines counted when lines are limited.
    pub fn unlimited(&self) -> Allowance {
        let counts_lines = self.bucket().lines.is_some();
        Allowance {
            lines: counts_lines.then_some(u64::MAX),
            bytes: None,
        }
    }

    pub fn charge(&self, lines: u64, bytes: u64, now: Instant) {
        self.bucket().charge(lines, bytes, now);
    }

    /// `on_limit: drop`: keeps the records the bucket admits; returns how many it dropped.
    pub fn retain(&self, batch: &mut Batch, now: Instant) -> u64 {
        let mut bucket = self.bucket();
        batch.retain(|record| bucket.admit(record.len() as u64, now)) as u64
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        let mut buckets = self
            .registry
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Limiters are only made under this lock: two holders are the map and us.
        if Arc::strong_count(&self.bucket) <= 2 {
            buckets.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn throttle(lines: Option<u64>, bytes: Option<u64>, per: Per) -> Throttle {
        Throttle {
            lines_per_s: lines,
            bytes_per_s: bytes,
            burst: Duration::from_secs(1),
            per,
            on_limit: OnLimit::Pause,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_should_allow_its_burst_then_pause_until_it_refilled_a_share() {
        let start = Instant::now();
        let mut bucket = Bucket::new(&throttle(Some(100), Some(10_000), Per::File), start);
        let allowed = bucket.allowance(start).unwrap();
        assert_eq!(
            allowed,
            Allowance {
                lines: Some(100),
                bytes: Some(10_000)
            }
        );
        bucket.charge(100, 5_000, start);
        // Lines are spent: back at an eighth of the capacity (12.5 lines) in 125 ms.
        let ready = bucket.allowance(start).unwrap_err();
        assert_eq!(ready - start, Duration::from_micros(125_001));
        let later = ready;
        let allowed = bucket.allowance(later).unwrap();
        assert_eq!(allowed.lines, Some(12));
        assert_eq!(allowed.bytes, Some(6_250));
        // Paid for afterwards: a read that went beyond takes the bucket below 0.
        bucket.charge(1_000, 0, later);
        let ready = bucket.allowance(later).unwrap_err();
        let wait = (ready - later).as_secs_f64();
        assert!((9.99..10.01).contains(&wait), "{wait}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_should_deliver_its_rate_over_time() {
        let start = Instant::now();
        let mut bucket = Bucket::new(&throttle(Some(50), None, Per::File), start);
        let mut now = start;
        let mut read = 0;
        // A reader that always has more to read than it may.
        while now < start + Duration::from_secs(10) {
            match bucket.allowance(now) {
                Ok(allowed) => {
                    let lines = allowed.lines.unwrap();
                    bucket.charge(lines, 0, now);
                    read += lines;
                }
                Err(ready) => now = ready,
            }
        }
        // The burst (50) and 10 s at 50 lines/s, give or take the last resume share.
        assert!((540..=560).contains(&read), "{read}");
    }

    #[tokio::test(start_paused = true)]
    async fn admit_should_pass_records_within_the_rate_and_refuse_the_rest() {
        let start = Instant::now();
        let mut bucket = Bucket::new(&throttle(Some(10), None, Per::File), start);
        let passed = (0..100).filter(|_| bucket.admit(10, start)).count();
        assert_eq!(passed, 10, "the burst");
        let later = start + Duration::from_millis(500);
        let passed = (0..100).filter(|_| bucket.admit(10, later)).count();
        assert_eq!(passed, 5, "half a second at 10/s");
        // A record larger than the whole bytes bucket passes when it is full, then waits.
        let mut bucket = Bucket::new(&throttle(None, Some(100), Per::File), start);
        assert!(bucket.admit(1_000, start));
        assert!(!bucket.admit(1, start + Duration::from_secs(5)));
        assert!(bucket.admit(1, start + Duration::from_secs(10)));
    }

    #[test]
    fn a_prefix_should_end_after_the_last_allowed_line_or_byte() {
        let chunk = b"a\nbb\nccc\ndddd";
        let lines = |n| Allowance {
            lines: Some(n),
            bytes: None,
        };
        assert_eq!(lines(1).prefix(chunk), (2, 1));
        assert_eq!(lines(2).prefix(chunk), (5, 2));
        assert_eq!(
            lines(9).prefix(chunk),
            (chunk.len(), 3),
            "a partial line is read"
        );
        let bytes = Allowance {
            lines: Some(9),
            bytes: Some(4),
        };
        assert_eq!(
            bytes.prefix(chunk),
            (4, 1),
            "cut inside a line: it stays partial"
        );
        let none = Allowance {
            lines: None,
            bytes: None,
        };
        assert_eq!(none.prefix(chunk), (chunk.len(), 0));
    }

    #[tokio::test]
    async fn files_of_one_container_should_share_a_bucket_that_goes_with_its_last_tailer() {
        let throttles = Arc::new(Throttles::default());
        let topic: Arc<str> = "k8s".into();
        let path = |p: &str| -> Arc<Path> { PathBuf::from(p).into() };
        let pods = "/var/log/pods/shop_web-1_0b6f/nginx";
        let per_container = throttle(Some(10), None, Per::Container);
        let a = throttles.limiter(&topic, &per_container, &path(&format!("{pods}/0.log")));
        let b = throttles.limiter(&topic, &per_container, &path(&format!("{pods}/1.log")));
        assert_eq!(throttles.len(), 1, "one container, one bucket");
        a.charge(10, 0, Instant::now());
        assert!(
            b.allowance(Instant::now()).is_err(),
            "spent by the other file"
        );
        // Another container of the namespace, a file without pod metadata, another topic,
        // other settings: buckets of their own.
        let other = throttles.limiter(
            &topic,
            &per_container,
            &path("/var/log/pods/shop_web-1_0b6f/php/0.log"),
        );
        let plain = throttles.limiter(&topic, &per_container, &path("/var/log/app.log"));
        let topic2 = throttles.limiter(
            &"t2".into(),
            &per_container,
            &path(&format!("{pods}/0.log")),
        );
        let per_file = throttle(Some(10), None, Per::File);
        let file = throttles.limiter(&topic, &per_file, &path(&format!("{pods}/0.log")));
        assert_eq!(throttles.len(), 5);
        let per_namespace = throttle(Some(10), None, Per::Namespace);
        let ns_a = throttles.limiter(&topic, &per_namespace, &path(&format!("{pods}/0.log")));
        let ns_b = throttles.limiter(
            &topic,
            &per_namespace,
            &path("/var/log/pods/shop_api-2_77aa/php/0.log"),
        );
        assert_eq!(throttles.len(), 6, "one namespace, one bucket");
        drop((other, plain, topic2, file, ns_a, ns_b));
        assert_eq!(throttles.len(), 1);
        drop(a);
        assert_eq!(throttles.len(), 1, "b still uses it");
        assert!(
            b.allowance(Instant::now()).is_err(),
            "the same bucket, still spent"
        );
        drop(b);
        assert!(throttles.is_empty());
    }
}
