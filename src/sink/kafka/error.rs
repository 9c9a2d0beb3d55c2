//! Why the Kafka sink could not ship a batch, with rskafka's error kept as the source.

use super::retry::{classify, Class};
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
    #[error("topic {topic}: describing its configs: {}", describe(source))]
    DescribeConfigs {
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

impl Error {
    /// What this failure calls for.
    pub fn class(&self) -> Class {
        match self {
            Error::NoTopic { .. } => Class::Permanent,
            // The same records encode and compress the same way every time.
            Error::Encode { .. } | Error::Compress { .. } => Class::Permanent,
            Error::Timeout { .. } => Class::Retry,
            Error::Metadata { source, .. }
            | Error::DescribeConfigs { source, .. }
            | Error::CreateTopic { source, .. }
            | Error::Produce { source, .. } => classify(source),
        }
    }
}

impl Error {
    /// Whether the broker refused a produce request as too large (`MessageTooLarge`,
    /// `RecordListTooLarge`): the same bytes never pass, smaller requests may.
    pub fn is_too_large(&self) -> bool {
        use rskafka::client::error::ProtocolError as P;
        matches!(
            self,
            Error::Produce {
                source,
                ..
            } if matches!(
                **source,
                ClientError::ServerError {
                    protocol_error: P::MessageTooLarge | P::RecordListTooLarge,
                    ..
                }
            )
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::kafka::retry::server_error;
    use rskafka::client::error::ProtocolError;

    #[test]
    fn class_should_follow_rskafkas_error_only_where_retrying_could_help() {
        let (topic, path): (Arc<str>, Arc<Path>) = ("t".into(), Path::new("/a.log").into());
        // An error that classify retries (no answer within rskafka's deadline).
        let retried = || Arc::new(ClientError::Timeout);
        let too_large = || Arc::new(server_error(ProtocolError::MessageTooLarge));
        let table = [
            (
                Error::NoTopic {
                    topic: topic.clone(),
                },
                Class::Permanent,
            ),
            (
                Error::Timeout {
                    topic: topic.clone(),
                    partition: 0,
                    after: Duration::from_secs(30),
                },
                Class::Retry,
            ),
            // Encoding and compressing fail the same way every time, whatever the error.
            (
                Error::Encode {
                    path,
                    offset: 0,
                    source: retried(),
                },
                Class::Permanent,
            ),
            (Error::Compress { source: retried() }, Class::Permanent),
            // Requests: as rskafka's error says.
            (
                Error::Metadata {
                    topic: topic.clone(),
                    source: retried(),
                },
                Class::Retry,
            ),
            (
                Error::CreateTopic {
                    topic: topic.clone(),
                    source: Arc::new(server_error(ProtocolError::TopicAlreadyExists)),
                },
                Class::Retry,
            ),
            (
                Error::Produce {
                    topic: topic.clone(),
                    partition: 0,
                    source: retried(),
                },
                Class::Retry,
            ),
            (
                Error::Produce {
                    topic,
                    partition: 0,
                    source: too_large(),
                },
                Class::Permanent,
            ),
        ];
        for (error, class) in table {
            assert_eq!(error.class(), class, "{error}");
        }
    }

    #[test]
    fn a_broker_refusal_should_be_named_with_its_message_not_rskafkas_dump() {
        let error = Error::Produce {
            topic: "logs".into(),
            partition: 3,
            source: Arc::new(server_error(ProtocolError::MessageTooLarge)),
        };
        let text = error.to_string();
        assert!(
            text.starts_with("topic logs partition 3: ") && text.ends_with(": from the broker"),
            "{text}"
        );
        assert!(!text.contains("request:"), "{text}");
        let source = std::error::Error::source(&error).expect("the source is kept");
        assert!(source.downcast_ref::<Arc<ClientError>>().is_some());
    }
}
