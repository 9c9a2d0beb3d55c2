//! One producer task per (topic, partition), shared by every tailer writing there: it
//! aggregates queued batches for up to `linger` or `max_batch_bytes`, produces them in
//! one request, retries retryable errors with backoff (forever: the in-flight budget
//! holds the data meanwhile), and acknowledges each batch.
//!
//! One request is in flight per partition, which keeps each file's order: the next
//! request is sent only once the previous one is acknowledged. Meanwhile the batches of
//! the next request are encoded as they arrive and compressed when the group is sealed,
//! so that both overlap the wait for the broker (the request runs on its own task).

use super::{encode, Shared};
use crate::sink::{Batch, SinkError};
use backon::{BackoffBuilder, ExponentialBuilder};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::{EncodedBatch, EncodedRecords};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
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

/// A group closed for more batches: its records compressed, waiting for the request in
/// flight to be acknowledged.
struct Sealed {
    records: EncodedBatch,
    jobs: Vec<Job>,
}

/// The batches of the next request, encoded as they join.
#[derive(Default)]
struct Group {
    jobs: Vec<Job>,
    records: EncodedRecords,
    bytes: usize,
    /// When the first batch joined plus `linger`.
    linger_until: Option<Instant>,
}

impl Group {
    fn add(&mut self, shared: &Shared, job: Job) {
        let batch = &job.batch;
        let path = batch.path.as_os_str().len();
        let mut estimate = batch.bytes() + batch.len() * (ENCODED_OVERHEAD + path);
        if self.jobs.is_empty() {
            // Room for the group this batch starts (up to 4 batches like it, within
            // `max_batch_bytes`), so that a busy file's request is not grown by copying.
            let max_bytes = shared.config.max_batch_bytes as usize;
            let scale = (max_bytes / batch.bytes().max(1)).clamp(1, 4);
            estimate *= scale;
        }
        self.records.reserve(estimate);
        let mark = self.records.mark();
        if let Err(e) = encode(shared, batch, &mut self.records) {
            self.records.truncate(mark);
            let _ = job.ack.send(Err(e));
            return;
        }
        self.bytes += batch.bytes();
        self.linger_until
            .get_or_insert_with(|| Instant::now() + shared.config.linger);
        self.jobs.push(job);
    }

    /// Compresses the records (while the previous request may still be in flight). A
    /// failure is every batch's answer. Returns the emptied record buffer for reuse.
    fn seal(mut self, shared: &Shared) -> (Option<Sealed>, EncodedRecords) {
        let sealed = match self.records.freeze(compression(shared)) {
            Ok(records) => Some(Sealed {
                records,
                jobs: self.jobs,
            }),
            Err(e) => {
                let error = SinkError::Rejected {
                    sink: "kafka",
                    message: describe(&e),
                };
                for job in self.jobs {
                    let _ = job.ack.send(Err(error.clone()));
                }
                None
            }
        };
        (sealed, self.records)
    }
}

/// The request in flight and the batches it acknowledges. The task hands the partition
/// client back for the next request.
struct InFlight {
    task: JoinHandle<(Result<(), SinkError>, Option<PartitionClient>)>,
    jobs: Vec<Job>,
}

impl InFlight {
    fn start(
        shared: &Arc<Shared>,
        topic: &Arc<str>,
        partition: i32,
        mut client: Option<PartitionClient>,
        sealed: Sealed,
    ) -> Self {
        let (shared, topic) = (shared.clone(), topic.clone());
        let records = sealed.records;
        let task = tokio::spawn(async move {
            let result = produce(&shared, &topic, partition, &mut client, records).await;
            (result, client)
        });
        InFlight {
            task,
            jobs: sealed.jobs,
        }
    }
}

/// Waits for the request in `in_flight` (there must be one), acknowledges its batches
/// and returns the partition client.
async fn land(in_flight: &mut Option<InFlight>) -> Option<PartitionClient> {
    let flight = in_flight.as_mut().expect("called with a request in flight");
    let (result, client) = (&mut flight.task)
        .await
        .unwrap_or_else(|_| (Err(SinkError::Closed { sink: "kafka" }), None));
    for job in in_flight.take().into_iter().flat_map(|flight| flight.jobs) {
        let _ = job.ack.send(result.clone());
    }
    client
}

/// Groups smaller than this are compressed on the producer task itself; bigger ones on
/// the blocking pool, so that the next group's encoding goes on meanwhile.
const COMPRESS_INLINE_BYTES: usize = 64 * 1024;

/// The producer task of one partition: gathers batches into groups (`next`), seals a
/// group (compresses it) when it is full, has lingered or the queue closed, and sends a
/// sealed group as soon as no request is in flight. Encoding the next group, compressing
/// the one before it and the request in flight overlap.
pub async fn run(
    shared: Arc<Shared>,
    topic: Arc<str>,
    partition: i32,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let max_bytes = shared.config.max_batch_bytes as usize;
    let compressing = !matches!(compression(&shared), Compression::NoCompression);
    let mut client: Option<PartitionClient> = None;
    let mut in_flight: Option<InFlight> = None;
    let mut sealing: Option<JoinHandle<(Option<Sealed>, EncodedRecords)>> = None;
    // The last sealed group's buffer, emptied: the next group encodes into it instead of
    // into fresh memory (which the kernel would zero page by page).
    let mut spare = EncodedRecords::default();
    let mut sealed: Option<Sealed> = None;
    let mut next = Group::default();
    let mut open = true;
    loop {
        let full = next.bytes >= max_bytes;
        let lingered = next.linger_until.is_some_and(|t| t <= Instant::now());
        let idle_sealer = sealing.is_none() && sealed.is_none();
        if idle_sealer && !next.jobs.is_empty() && (full || lingered || !open) {
            let group = std::mem::take(&mut next);
            if compressing && group.bytes >= COMPRESS_INLINE_BYTES {
                let shared = shared.clone();
                sealing = Some(tokio::task::spawn_blocking(move || group.seal(&shared)));
            } else {
                (sealed, spare) = group.seal(&shared);
            }
            continue;
        }
        if in_flight.is_none() {
            if let Some(group) = sealed.take() {
                in_flight = Some(InFlight::start(
                    &shared,
                    &topic,
                    partition,
                    client.take(),
                    group,
                ));
                continue;
            }
            if !open && next.jobs.is_empty() && sealing.is_none() {
                return;
            }
        }
        let linger_until = next.linger_until.unwrap_or_else(Instant::now);
        tokio::select! {
            landed = land(&mut in_flight), if in_flight.is_some() => client = landed,
            done = async { sealing.as_mut().expect("guarded").await }, if sealing.is_some() => {
                sealing = None;
                // A panicked sealer dropped its batches: their tailers see the sink closed.
                if let Ok((group, buffer)) = done {
                    (sealed, spare) = (group, buffer);
                }
            }
            job = jobs.recv(), if open && !full => match job {
                Some(job) => {
                    if next.jobs.is_empty() {
                        std::mem::swap(&mut next.records, &mut spare);
                    }
                    next.add(&shared, job);
                }
                None => open = false,
            },
            _ = tokio::time::sleep_until(linger_until),
                if idle_sealer && next.linger_until.is_some() => {}
        }
    }
}

async fn produce(
    shared: &Shared,
    topic: &str,
    partition: i32,
    client: &mut Option<PartitionClient>,
    records: EncodedBatch,
) -> Result<(), SinkError> {
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
            // A retry sends the same records (a clone shares them).
            partition_client.produce_encoded(records.clone()).await?;
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
