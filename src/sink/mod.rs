//! Sinks take batches of lines and acknowledge them once durably accepted; only
//! acknowledged lines advance checkpoints. One trait: stdout, file (JSON lines), null.

mod json_lines;
pub mod kafka;
mod null;

pub use json_lines::JsonLinesSink;
pub use kafka::KafkaSink;
pub use null::NullSink;

use crate::config::{Config, SinkKind};
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

/// Lines of one file on one topic, stored back to back in one buffer (no allocation per
/// line on the hot path).
#[derive(Debug, Clone)]
pub struct Batch {
    pub topic: Arc<str>,
    pub path: Arc<Path>,
    data: Vec<u8>,
    lines: Vec<LineRef>,
}

impl Batch {
    pub fn new(topic: Arc<str>, path: Arc<Path>) -> Self {
        Batch {
            topic,
            path,
            data: Vec::new(),
            lines: Vec::new(),
        }
    }

    pub fn push(&mut self, offset: u64, line: &[u8]) {
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

    /// Splits into batches of at most `max_bytes` of line content (at least one line each).
    pub fn split(self, max_bytes: usize) -> Vec<Batch> {
        if self.data.len() <= max_bytes {
            return vec![self];
        }
        let mut parts = Vec::new();
        let mut part = Batch::new(self.topic.clone(), self.path.clone());
        for (offset, line) in self.lines() {
            if !part.is_empty() && part.bytes() + line.len() > max_bytes {
                let full =
                    std::mem::replace(&mut part, Batch::new(self.topic.clone(), self.path.clone()));
                parts.push(full);
            }
            part.push(offset, line);
        }
        if !part.is_empty() {
            parts.push(part);
        }
        parts
    }

    /// `(file offset of the line start, line bytes)` for every line, in file order.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.lines
            .iter()
            .map(|l| (l.offset, &self.data[l.start as usize..l.end as usize]))
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
