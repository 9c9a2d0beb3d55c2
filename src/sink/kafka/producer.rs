//! One producer task per (topic, partition), shared by every tailer writing there: it
//! aggregates queued batches for up to `linger` or `max_batch_bytes`, produces them in
//! one request, retries retryable errors with backoff (forever: the in-flight budget
//! holds the data meanwhile), and acknowledges each batch. One request in flight per
//! partition keeps each file's order.

use super::{encode, Shared};
use crate::sink::{Batch, SinkError};
use backon::{BackoffBuilder, ExponentialBuilder};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::EncodedRecords;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

/// A batch waiting to be produced; `_permit` returns its bytes to the in-flight budget
/// when the job is dropped after its acknowledgement.
pub struct Job {
    pub batch: Batch,
    pub ack: oneshot::Sender<Result<(), SinkError>>,
    pub _permit: OwnedSemaphorePermit,
}

/// Room reserved per record beyond its line and path: lengths, the default headers'
/// names, node and offset (a guess: the buffer grows if it is short).
const ENCODED_OVERHEAD: usize = 96;

pub async fn run(
    shared: Arc<Shared>,
    topic: Arc<str>,
    partition: i32,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut client: Option<PartitionClient> = None;
    let max_bytes = shared.config.max_batch_bytes as usize;
    while let Some(first) = jobs.recv().await {
        let mut bytes = first.batch.bytes();
        let mut group = vec![first];
        let linger_until = Instant::now() + shared.config.linger;
        while bytes < max_bytes {
            let next = match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(_) => tokio::time::timeout_at(linger_until, jobs.recv())
                    .await
                    .ok()
                    .flatten(),
            };
            let Some(job) = next else { break };
            bytes += job.batch.bytes();
            group.push(job);
        }
        let result = produce(&shared, &topic, partition, &mut client, &group).await;
        for job in group {
            let _ = job.ack.send(result.clone());
        }
    }
}

async fn produce(
    shared: &Shared,
    topic: &str,
    partition: i32,
    client: &mut Option<PartitionClient>,
    group: &[Job],
) -> Result<(), SinkError> {
    let compression = compression(shared);
    let capacity = group
        .iter()
        .map(|job| {
            let path = job.batch.path.as_os_str().len();
            job.batch.bytes() + job.batch.len() * (ENCODED_OVERHEAD + path)
        })
        .sum();
    let mut encoded = EncodedRecords::with_capacity(capacity);
    for job in group {
        encode(shared, &job.batch, &mut encoded)?;
    }
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        let kafka = shared.client().await;
        let attempt = async {
            if client.is_none() {
                *client = Some(
                    kafka
                        .partition_client(topic, partition, UnknownTopicHandling::Error)
                        .await?,
                );
            }
            let started = std::time::Instant::now();
            let partition_client = client.as_ref().expect("set above");
            // A copy per attempt (cheap beside the request): a retry sends the same records.
            partition_client
                .produce_encoded(encoded.clone(), compression)
                .await?;
            shared
                .events
                .produce_latency(started.elapsed().as_secs_f64());
            Ok::<(), KafkaError>(())
        };
        // rskafka keeps reconnecting to a dead broker inside one request: bound it.
        let outcome = match tokio::time::timeout(shared.config.request_timeout, attempt).await {
            Ok(result) => result.map_err(|e| (is_permanent(&e), describe(&e))),
            Err(_) => Err((
                false,
                format!("no answer within {:?}", shared.config.request_timeout),
            )),
        };
        match outcome {
            Ok(()) => {
                shared.connected.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Err((true, reason)) => {
                shared.events.send_error(topic, "permanent");
                return Err(SinkError::Rejected {
                    sink: "kafka",
                    message: format!("topic {topic} partition {partition}: {reason}"),
                });
            }
            Err((false, reason)) => {
                // Start over with a fresh partition client: an interrupted request may
                // leave the old one's connection in an unknown state.
                *client = None;
                shared.reset_client(&kafka).await;
                shared.events.send_error(topic, "retryable");
                shared.connected.store(false, Ordering::Relaxed);
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(topic, partition, retry_in = ?delay, "kafka produce failed, retrying: {reason}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn compression(shared: &Shared) -> Compression {
    use crate::config::kafka::Compression as C;
    match shared.config.compression {
        C::None => Compression::NoCompression,
        C::Gzip => Compression::Gzip,
        C::Snappy => Compression::Snappy,
        C::Lz4 => Compression::Lz4,
        C::Zstd => Compression::Zstd,
    }
}

/// Errors that retrying cannot fix: the tailer reports them and restarts with backoff.
pub fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ServerError {
            protocol_error: ProtocolError::UnknownTopicOrPartition
                | ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidTopicException
                | ProtocolError::InvalidRecord
                | ProtocolError::TopicAuthorizationFailed
                | ProtocolError::ClusterAuthorizationFailed
                | ProtocolError::SaslAuthenticationFailed
                | ProtocolError::UnsupportedCompressionType,
            ..
        }
    )
}

/// A short description: the protocol error name and broker message, not rskafka's
/// whole debug dump.
pub fn describe(error: &KafkaError) -> String {
    match error {
        KafkaError::ServerError {
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
