//! Sinks take batches of lines and acknowledge them once durably accepted; only
//! acknowledged lines advance checkpoints. One trait: stdout, file (JSON lines), null.
//! Kafka values are the lines or JSON objects (`json_value.rs`).

mod json_lines;
pub mod json_value;
pub mod kafka;
mod null;

pub use json_lines::JsonLinesSink;
pub use kafka::KafkaSink;
pub use null::NullSink;

use crate::config::{Config, SinkKind};
use crate::ports::Events;
use crate::record::Batch;
use futures::future::BoxFuture;
use std::path::PathBuf;
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
