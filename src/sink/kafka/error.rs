//! Why the Kafka sink could not ship a batch, with rskafka's error kept as the source.

use rskafka::client::error::Error as ClientError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why a batch could not be shipped: a step of the way (metadata, topic creation,
/// encoding, compression, the produce request) and what failed in it. rskafka's error
/// is shared (`Arc`), since one failed request is every batch's answer. What the sink
/// does not retry reaches the tailer as [`SinkError::Rejected`](crate::sink::SinkError).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("topic {topic} does not exist (sink.kafka.create_topics is false)")]
    NoTopic { topic: Arc<str> },
    #[error("topic {topic}: metadata: {}", describe(source))]
    Metadata {
        topic: Arc<str>,
        #[source]
        source: Arc<ClientError>,
    },
    #[error("topic {topic}: cannot create it: {}", describe(source))]
    CreateTopic {
        topic: Arc<str>,
        #[source]
        source: Arc<ClientError>,
    },
    #[error("{}: the line at offset {offset}: {source}", path.display())]
    Encode {
        path: Arc<Path>,
        offset: u64,
        #[source]
        source: Arc<ClientError>,
    },
    #[error("{}", describe(source))]
    Compress {
        #[source]
        source: Arc<ClientError>,
    },
    #[error("topic {topic} partition {partition}: {}", describe(source))]
    Produce {
        topic: Arc<str>,
        partition: i32,
        #[source]
        source: Arc<ClientError>,
    },
    /// rskafka keeps reconnecting to a dead broker within one request: the sink bounds
    /// the request by `request_timeout`.
    #[error("topic {topic} partition {partition}: no answer within {after:?}")]
    Timeout {
        topic: Arc<str>,
        partition: i32,
        after: Duration,
    },
}

/// A short description: the protocol error name and broker message, not rskafka's
/// whole debug dump.
pub fn describe(error: &ClientError) -> String {
    match error {
        ClientError::ServerError {
            protocol_error,
            error_message,
            ..
        } => match error_message {
            Some(message) => format!("{protocol_error}: {message}"),
            None => protocol_error.to_string(),
        },
        other => other.to_string(),
    }
}
