//! Sinks take batches of lines and acknowledge them once durably accepted; only
//! acknowledged lines advance checkpoints. One trait: stdout, file (JSON lines), null;
//! `tap` shares what they ship with `logcatch tap`. Kafka values are the lines or JSON
//! objects (`json_value.rs`).

mod json_lines;
mod json_string;
pub mod json_value;
pub mod kafka;
mod null;
pub mod tap;

pub use json_lines::JsonLinesSink;
pub use kafka::KafkaSink;
pub use null::NullSink;

use crate::config::{Config, SinkKind};
use crate::ports::Events;
use crate::record::Batch;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a sink did not take or deliver a batch. I/O errors are shared (`Arc`): one failed
/// write is the answer to every batch it carried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("sink file: cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("sink {sink}: write failed: {source}")]
    Io {
        sink: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("sink {sink} is closed")]
    Closed { sink: &'static str },
    /// Refused for good (unknown topic, record too large, not authorized).
    #[error("sink kafka: {0}")]
    Rejected(#[source] kafka::Error),
    #[error("sink kafka: cannot start the kafka-network runtime: {0}")]
    Network(#[source] Arc<std::io::Error>),
}

/// Resolves once every line of the batch is durably accepted, or with the reason not.
pub type Ack = BoxFuture<'static, Result<(), SinkError>>;

/// A record as a sink ships it (`logcatch tap`): Kafka's topic, key, headers and value;
/// the stdout and file sinks' JSON line as the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    /// By name (Kafka's record carries the static fields first).
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
    pub path: Arc<Path>,
    pub offset: u64,
}

impl Shipped {
    /// The records of `batch` as their lines, without key or headers (the null sink's).
    pub fn lines(batch: &Batch) -> Vec<Shipped> {
        batch
            .lines()
            .map(|(offset, line)| Shipped {
                topic: batch.topic.clone(),
                key: None,
                headers: Vec::new(),
                value: line.to_vec(),
                path: batch.path.clone(),
                offset,
            })
            .collect()
    }
}

pub trait Sink: Send + Sync {
    /// Hands over a batch. Waits while the sink is full (backpressure); the returned
    /// [`Ack`] resolves when the batch is durable.
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>>;

    /// What a tailer waits for before it fills a batch to `topic`, if anything (Kafka: the
    /// topic's partitions and size limit, until known): a tailer holds one of the few
    /// permits to fill a batch (`tail::filling_permits`) until the sink took the batch, and
    /// must not hold it through a wait only its topic has. Errors are `submit`'s to report.
    fn prepare(&self, _topic: &Arc<str>) -> Option<BoxFuture<'_, ()>> {
        None
    }

    /// Delivers whatever is buffered (at shutdown, after the tailers stopped).
    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// What the sink ships for `batch`, record by record, by its own encoding run again
    /// (`logcatch tap`; never on the way to shipping).
    fn shipped(&self, batch: &Batch) -> Result<Vec<Shipped>, SinkError> {
        Ok(Shipped::lines(batch))
    }

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

    /// Bytes of memory in the sink's own buffers (Kafka: encoding buffers, in use or kept
    /// for reuse), besides the batches in flight.
    fn buffer_bytes(&self) -> u64 {
        0
    }

    /// Producer tasks running (Kafka: one per partition written to lately).
    fn producers(&self) -> u64 {
        0
    }
}

/// Builds the sink the config names (inside a tokio runtime: Kafka connects in the
/// background, on a runtime of its own that the sink owns: `kafka::Network`).
pub fn build(config: &Config, events: Arc<dyn Events>) -> Result<Arc<dyn Sink>, SinkError> {
    let node: Arc<str> = config.node_name().into();
    Ok(match config.sink.kind {
        SinkKind::Stdout => Arc::new(JsonLinesSink::stdout(node)),
        SinkKind::File => Arc::new(JsonLinesSink::file(&config.sink.file.path, node)?),
        SinkKind::Null => Arc::new(NullSink::default()),
        SinkKind::Kafka => {
            let network = kafka::Network::start().map_err(|e| SinkError::Network(Arc::new(e)))?;
            Arc::new(KafkaSink::new(
                config.sink.kafka.clone(),
                node,
                events,
                network,
            ))
        }
    })
}
