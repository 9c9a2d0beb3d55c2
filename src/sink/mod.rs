//! Sinks take batches of lines and acknowledge them once durably accepted; only
//! acknowledged lines advance checkpoints. One trait: stdout, file (JSON lines), null.

mod json_lines;
pub mod kafka;
mod null;

pub use json_lines::JsonLinesSink;
pub use kafka::KafkaSink;
pub use null::NullSink;

use crate::config::{Config, SinkKind};
use crate::format::{PodMeta, RecordMeta};
use crate::telemetry::Events;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {message}")]
    Io { sink: &'static str, message: String },
    #[error("sink {sink} is closed")]
    Closed { sink: &'static str },
    /// Refused for good (unknown topic, record too large, not authorized).
    #[error("sink {sink}: {message}")]
    Rejected { sink: &'static str, message: String },
}

/// Where a line sits in its batch's buffer, and where it started in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef {
    pub offset: u64,
    start: u32,
    end: u32,
}

/// Records of one file on one topic, stored back to back in one buffer (no allocation per
/// line on the hot path).
#[derive(Debug, Clone)]
pub struct Batch {
    pub topic: Arc<str>,
    pub path: Arc<Path>,
    /// The pod a container log file belongs to (the same for every record).
    pub pod: Option<Arc<PodMeta>>,
    data: Vec<u8>,
    lines: Vec<LineRef>,
    /// Per-record stream, time and parse error, parallel to `lines`; stays empty (and
    /// costs nothing) while no record has any, as with raw files.
    meta: Vec<RecordMeta>,
}

impl Batch {
    pub fn new(topic: Arc<str>, path: Arc<Path>) -> Self {
        Batch {
            topic,
            path,
            pod: None,
            data: Vec::new(),
            lines: Vec::new(),
            meta: Vec::new(),
        }
    }

    /// A record: its first byte's offset in the file and its bytes.
    #[inline]
    pub fn push(&mut self, offset: u64, line: &[u8]) {
        self.push_bytes(offset, line);
        if !self.meta.is_empty() {
            self.meta.push(RecordMeta::default());
        }
    }

    /// A record with its stream, time or parse error.
    pub fn push_with(&mut self, offset: u64, line: &[u8], meta: RecordMeta) {
        if meta.is_empty() && self.meta.is_empty() {
            return self.push_bytes(offset, line);
        }
        self.meta.resize(self.lines.len(), RecordMeta::default());
        self.push_bytes(offset, line);
        self.meta.push(meta);
    }

    #[inline]
    fn push_bytes(&mut self, offset: u64, line: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(line);
        self.lines.push(LineRef {
            offset,
            start,
            end: self.data.len() as u32,
        });
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes of line content held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Makes room for about `bytes` of lines averaging `line_bytes` each, so that a batch
    /// filled from a busy file is allocated once instead of doubling (and copying) its
    /// way up.
    pub fn reserve(&mut self, bytes: usize, line_bytes: usize) {
        self.data.reserve(bytes.saturating_sub(self.data.len()));
        let lines = bytes / line_bytes.max(1);
        self.lines.reserve(lines.saturating_sub(self.lines.len()));
    }

    /// Whether any record carries a stream, time or parse error.
    pub fn has_meta(&self) -> bool {
        !self.meta.is_empty()
    }

    /// Splits into batches of at most `max_bytes` (at least one line each), counting each
    /// line's bytes plus `per_line` (what a sink adds to every line). The first part keeps
    /// this batch's buffers; each other part copies its lines' bytes in one piece.
    pub fn split(mut self, max_bytes: usize, per_line: usize) -> Vec<Batch> {
        let cost = |bytes: usize, lines: usize| bytes + lines * per_line;
        if cost(self.data.len(), self.lines.len()) <= max_bytes {
            return vec![self];
        }
        // The index of the first line of every part but the first.
        let mut starts = Vec::new();
        let (mut bytes, mut lines) = (0, 0);
        for (i, line) in self.lines.iter().enumerate() {
            let len = (line.end - line.start) as usize;
            if lines > 0 && cost(bytes + len, lines + 1) > max_bytes {
                starts.push(i);
                (bytes, lines) = (0, 0);
            }
            bytes += len;
            lines += 1;
        }
        // From the last part to the first, each cut off the end of this batch.
        let mut parts = Vec::with_capacity(starts.len() + 1);
        for &first in starts.iter().rev() {
            let mut lines = self.lines.split_off(first);
            let base = lines[0].start;
            let data = self.data[base as usize..].to_vec();
            self.data.truncate(base as usize);
            for line in &mut lines {
                line.start -= base;
                line.end -= base;
            }
            let meta = if self.meta.is_empty() {
                Vec::new()
            } else {
                self.meta.split_off(first)
            };
            parts.push(Batch {
                topic: self.topic.clone(),
                path: self.path.clone(),
                pod: self.pod.clone(),
                data,
                lines,
                meta,
            });
        }
        parts.push(self);
        parts.reverse();
        parts
    }

    /// `(file offset of the line start, line bytes)` for every line, in file order.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.lines
            .iter()
            .map(|l| (l.offset, &self.data[l.start as usize..l.end as usize]))
    }

    /// `(offset, bytes, metadata)` for every record, in order.
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8], RecordMeta)> + '_ {
        self.lines().enumerate().map(|(i, (offset, line))| {
            (offset, line, self.meta.get(i).copied().unwrap_or_default())
        })
    }
}

/// Resolves once every line of the batch is durably accepted, or with the reason not.
pub type Ack = BoxFuture<'static, Result<(), SinkError>>;

pub trait Sink: Send + Sync {
    /// Hands over a batch. Waits while the sink is full (backpressure); the returned
    /// [`Ack`] resolves when the batch is durable.
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>>;

    /// Delivers whatever is buffered (at shutdown, after the tailers stopped).
    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Whether the sink can currently deliver (for readiness and status).
    fn connected(&self) -> bool {
        true
    }

    /// Why the sink last failed to connect, while it is not connected (for status).
    fn connect_error(&self) -> Option<String> {
        None
    }

    /// Bytes handed over but not yet acknowledged.
    fn in_flight_bytes(&self) -> u64 {
        0
    }
}

/// Builds the sink the config names (inside a tokio runtime: Kafka connects in the
/// background).
pub fn build(config: &Config, events: Arc<dyn Events>) -> Result<Arc<dyn Sink>, SinkError> {
    let node: Arc<str> = config.node_name().into();
    Ok(match config.sink.kind {
        SinkKind::Stdout => Arc::new(JsonLinesSink::stdout(node)),
        SinkKind::File => Arc::new(JsonLinesSink::file(&config.sink.file.path, node)?),
        SinkKind::Null => Arc::new(NullSink::default()),
        SinkKind::Kafka => Arc::new(KafkaSink::new(config.sink.kafka.clone(), node, events)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{ParseError, Stream};

    #[test]
    fn records_should_keep_each_records_metadata_through_a_split() {
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        let out = RecordMeta {
            stream: Stream::Stdout,
            time: Some(7),
            error: None,
        };
        let bad = RecordMeta {
            error: Some(ParseError::CriFields),
            ..RecordMeta::default()
        };
        batch.push(0, b"plain");
        batch.push_with(6, b"out", out);
        batch.push_with(10, b"bad", bad);
        batch.push(14, b"plain again");
        batch.push_with(26, b"out again", out);
        let want = [
            (0, &b"plain"[..], RecordMeta::default()),
            (6, b"out", out),
            (10, b"bad", bad),
            (14, b"plain again", RecordMeta::default()),
            (26, b"out again", out),
        ];
        assert_eq!(batch.records().collect::<Vec<_>>(), want);
        let parts = batch.split(6, 0);
        let joined: Vec<_> = parts.iter().flat_map(|p| p.records()).collect();
        assert_eq!(joined, want);
        assert!(parts.len() > 1);
    }

    #[test]
    fn split_should_count_what_the_sink_adds_to_each_line() {
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        for i in 0..100u64 {
            batch.push(i * 11, b"0123456789");
        }
        // 10 bytes a line plus 30 added: 25 lines fit in 1,000 bytes, not 100.
        let parts = batch.clone().split(1000, 30);
        assert_eq!(parts.iter().map(Batch::len).collect::<Vec<_>>(), [25; 4]);
        assert_eq!(batch.clone().split(1000, 0).len(), 1);
        // A line bigger than the limit on its own still goes, alone.
        let parts = batch.split(35, 30);
        assert_eq!(parts.len(), 100);
        assert!(parts.iter().all(|p| p.len() == 1));
    }

    #[test]
    fn raw_lines_should_carry_no_per_record_metadata() {
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        for i in 0..1000u64 {
            batch.push(i * 2, b"x");
            batch.push_with(i * 2 + 1, b"y", RecordMeta::default());
        }
        assert_eq!(
            batch.meta.capacity(),
            0,
            "nothing allocated for raw records"
        );
        assert!(batch.records().all(|(_, _, meta)| meta.is_empty()));
    }
}
