//! What the tailers, reconciler and sources report, as a small trait, so that the logic
//! stays free of metric plumbing and tests pass [`NoEvents`].

pub trait Events: Send + Sync {
    fn lines_read(&self, _topic: &str, _lines: u64, _bytes: u64) {}
    fn line_truncated(&self, _topic: &str) {}
    fn file_truncated(&self, _topic: &str) {}
    fn file_rotated(&self, _topic: &str) {}
    /// A file that was at a followed path and was never read (`reason`: `deleted`).
    fn file_skipped(&self, _topic: &str, _reason: &str) {}
    /// The kernel's queue of file notifications overflowed: events were lost
    /// (`tail/wakeup.rs`).
    fn notifications_overflowed(&self) {}
    fn records_sent(&self, _topic: &str, _records: u64) {}
    /// Records a declaration's line filters kept from the sink (`reason`: `include_lines`,
    /// `exclude_lines`).
    fn records_filtered(&self, _topic: &str, _reason: &str, _records: u64) {}
    /// Records sent to a declaration's `fallback_topic` because its topic template
    /// rendered no legal name for their file.
    fn topic_fallback(&self, _topic: &str, _records: u64) {}
    /// A record the sink cut to fit the most a record may take there.
    fn record_cut(&self, _topic: &str) {}
    /// `count` records dropped on purpose (`reason`: `too_large`, the sink could not ship
    /// them even cut; `throttled`, over a declaration's `throttle` with `on_limit: drop`).
    fn records_dropped(&self, _topic: &str, _reason: &str, _count: u64) {}
    /// A tailer paused reading for `seconds` over its declaration's `throttle`.
    fn throttled(&self, _topic: &str, _seconds: f64) {}
    fn send_error(&self, _topic: &str, _kind: &str) {}
    fn tailer_restarted(&self, _topic: &str) {}
    fn checkpoint_written(&self, _ok: bool) {}
    /// What the deleted files held open are: how many, their bytes, the oldest's age.
    fn deleted_files(&self, _files: u64, _bytes: u64, _oldest_seconds: u64) {}
    /// A deleted file closed at a bound (`reason`: `max_bytes`, `max_age`); `lost`: its
    /// bytes never handed to the sink.
    fn deleted_file_released(&self, _topic: &str, _reason: &str, _lost: u64) {}
    /// A supervised background task ended unexpectedly (a panic) and was started again.
    fn task_restarted(&self, _task: &str) {}
    /// A look for gone files: the checkpoints `kept`, and how many `expired`.
    fn checkpoints_swept(&self, _kept: usize, _expired: usize) {}
    fn config_reloaded(&self, _ok: bool) {}
    fn reconciled(&self, _ok: bool, _seconds: f64) {}
    fn produce_latency(&self, _seconds: f64) {}
    /// A line its format could not parse, shipped raw (`format`: `cri`, `docker`).
    fn parse_error(&self, _topic: &str, _format: &str) {}
    /// A multiline record cut at `max_lines` / `max_bytes`.
    fn multiline_cut(&self, _topic: &str) {}
    /// Container-log fragments shipped without their rest, which never came.
    fn unfinished_record(&self, _topic: &str) {}
}

/// Reports nothing.
pub struct NoEvents;

impl Events for NoEvents {}
