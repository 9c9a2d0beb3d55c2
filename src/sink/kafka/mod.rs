//! The Kafka sink (rskafka): batches are split to `max_batch_bytes` or the topic's limit
//! (`limit.rs`), charged against the `max_in_flight_bytes` budget (reading pauses when it
//! is spent), routed to a partition and queued to that partition's producer task; each
//! batch is acknowledged when Kafka acknowledged it. The client connects in the
//! background and reconnects as needed.

mod buffers;
mod connect;
mod encode;
mod error;
mod limit;
mod partitioner;
mod producer;
mod retry;

pub use connect::Network;
pub use error::Error;

use super::{Ack, Batch, Shipped, Sink, SinkError};
use crate::config::kafka::KafkaConfig;
use crate::ports::Events;
use buffers::Buffers;
use connect::ConnectError;
use futures::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use limit::{Limit, Source};
use partitioner::Partitioner;
use producer::Job;
use retry::{Backoff, Class};
use rskafka::client::Client;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

/// How long a topic's partition count and limit are trusted before they are asked again.
const METADATA_TTL: Duration = Duration::from_secs(60);

/// The queue of one (topic, partition) producer task.
type ProducerQueue = mpsc::UnboundedSender<Job>;

/// Resolves once a producer task has ended, however it ended.
type Ended = SharedFuture<oneshot::Receiver<()>>;

type PartitionKey = (Arc<str>, i32);

/// A producer task as the sink knows it.
struct Producer {
    queue: ProducerQueue,
    /// Tells a task's entry from its successor's.
    id: u64,
    ended: Ended,
}

/// The producer tasks, one per partition written to within `producer_idle_timeout`.
#[derive(Default)]
struct Producers {
    live: HashMap<PartitionKey, Producer>,
    /// Producers that went idle and are still answering what they held. A partition's
    /// next producer starts sending once the one before it has ended, so that the
    /// partition keeps one request in flight, and its order.
    retiring: HashMap<PartitionKey, (u64, Ended)>,
    next_id: u64,
}

pub struct KafkaSink {
    shared: Arc<Shared>,
    /// Where connections and sender tasks run (`shared.network` is its handle); shut
    /// down when the sink is dropped. The sink holds it, not `Shared`: the sender tasks
    /// hold `Shared` and run on it, and a runtime is not to be dropped by its own task.
    _network: Network,
}

/// What the sink knows of a topic, asked again after `METADATA_TTL`.
struct TopicInfo {
    partitions: i32,
    /// The most bytes of one record batch on the topic (`limit.rs`), shared with its
    /// producers, which read it for every request.
    limit: Arc<AtomicUsize>,
    at: Instant,
}

pub(crate) struct Shared {
    config: KafkaConfig,
    node: Arc<str>,
    /// The runtime of the connections and the sender tasks.
    network: Handle,
    /// The connected client; `None` until connected or after `reset_client`.
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    connected: AtomicBool,
    /// The last connection error, until a connection succeeds.
    connect_error: Mutex<Option<ConnectError>>,
    budget: Arc<Semaphore>,
    partitioner: Partitioner,
    topics: Mutex<HashMap<Arc<str>, TopicInfo>>,
    /// Held while a topic's metadata is asked: the other batches to the topic wait for
    /// that answer rather than each ask again (10,000 tailers starting at once asked
    /// 10,000 times, and their first lines waited seconds for it).
    fetching: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    producers: Mutex<Producers>,
    /// Emptied encoding buffers kept for the producers' next groups, within a bound.
    buffers: Buffers,
    /// Bytes of memory in the encoding buffers producers hold (with those kept,
    /// `logcatch_kafka_buffer_bytes`).
    buffer_bytes: AtomicUsize,
    /// Producer tasks running (`logcatch_kafka_producers`).
    running: AtomicUsize,
    events: Arc<dyn Events>,
    /// The agent's runtime, where producer tasks run: a batch may come from a tailer on a
    /// runtime of its own (a file on a network filesystem, `tail/remote.rs`), which ends
    /// with that tailer.
    runtime: Handle,
}

impl KafkaSink {
    /// Starts connecting in the background; `submit` waits for the connection. The
    /// connections and the sender tasks run on `network`.
    pub fn new(
        config: KafkaConfig,
        node: Arc<str>,
        events: Arc<dyn Events>,
        network: Network,
    ) -> Self {
        let shared = Arc::new(Shared {
            network: network.handle().clone(),
            budget: Arc::new(Semaphore::new(config.max_in_flight_bytes as usize)),
            partitioner: Partitioner::new(config.partitioning),
            buffers: Buffers::new(Buffers::keep_for(config.max_in_flight_bytes)),
            config,
            node,
            client: tokio::sync::Mutex::new(None),
            connected: AtomicBool::new(false),
            connect_error: Mutex::new(None),
            topics: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            producers: Mutex::new(Producers::default()),
            buffer_bytes: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            events,
            runtime: Handle::current(),
        });
        let connecting = shared.clone();
        tokio::spawn(async move {
            connecting.client().await;
        });
        KafkaSink {
            shared,
            _network: network,
        }
    }
}

impl Shared {
    /// The client, connecting when there is none. Connecting is retried whatever the
    /// class of the error: without a client nothing ships, and each attempt reads the TLS
    /// and password files again, so that fixing them heals without a restart. The class
    /// only sets how loudly it is logged.
    async fn client(&self) -> Arc<Client> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return client.clone();
        }
        let mut backoff = Backoff::default();
        let client = loop {
            match connect::connect(&self.config, &self.network).await {
                Ok(client) => break Arc::new(client),
                Err(e) => {
                    let delay = backoff.next_delay();
                    match e.class() {
                        Class::Fatal => tracing::error!(retry_in = ?delay, "kafka: {e}"),
                        Class::Retry | Class::Permanent => {
                            tracing::warn!(retry_in = ?delay, "kafka: {e}")
                        }
                    }
                    *self.connect_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    tokio::time::sleep(delay).await;
                }
            }
        };
        tracing::info!(brokers = %self.config.brokers.join(","), "connected to kafka");
        self.connected.store(true, Ordering::Relaxed);
        *self.connect_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *slot = Some(client.clone());
        client
    }

    /// Drops `stale` so that the next `client()` connects afresh: a request interrupted
    /// by our timeout can leave rskafka's cached broker connections unusable.
    async fn reset_client(&self, stale: &Arc<Client>) {
        let mut slot = self.client.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, stale))
        {
            *slot = None;
        }
    }

    /// The partition count and limit of `topic`, from cached metadata; creates the topic
    /// when allowed. Retries what `Error::class` says is retried; a missing topic is a
    /// permanent error.
    async fn topic(&self, topic: &Arc<str>) -> Result<(i32, Arc<AtomicUsize>), SinkError> {
        if let Some(known) = self.known(topic) {
            return Ok(known);
        }
        let one = self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.clone())
            .or_default()
            .clone();
        let _one = one.lock().await;
        // Asked by another batch while this one waited.
        if let Some(known) = self.known(topic) {
            return Ok(known);
        }
        // Boxed: the ask's state (3.9 KB, rskafka's requests in it) is held only by the
        // batch asking, not by each batch waiting on the lock above — 10,000 files
        // starting at once held 37 MiB while the first ask took its time.
        Box::pin(self.ask_topic(topic)).await
    }

    /// `topic`'s metadata and limit asked of the brokers (retried) and cached.
    async fn ask_topic(&self, topic: &Arc<str>) -> Result<(i32, Arc<AtomicUsize>), SinkError> {
        let mut backoff = Backoff::default();
        let (count, learned) = loop {
            let error = match self.fetch_topic(topic).await {
                Ok(found) => break found,
                Err(error) => error,
            };
            if error.class() != Class::Retry {
                return Err(SinkError::Rejected(error));
            }
            self.connected.store(false, Ordering::Relaxed);
            let delay = backoff.next_delay();
            tracing::warn!(topic = %topic, retry_in = ?delay, "kafka: {error}");
            tokio::time::sleep(delay).await;
        };
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let limit = topics
            .get(topic)
            .map_or_else(|| Arc::new(AtomicUsize::new(0)), |info| info.limit.clone());
        set_limit(topic, &limit, learned);
        topics.insert(
            topic.clone(),
            TopicInfo {
                partitions: count,
                limit: limit.clone(),
                at: Instant::now(),
            },
        );
        Ok((count, limit))
    }

    /// The partition count and limit of `topic`, if asked within `METADATA_TTL`.
    fn known(&self, topic: &Arc<str>) -> Option<(i32, Arc<AtomicUsize>)> {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let info = topics.get(topic)?;
        (info.at.elapsed() < METADATA_TTL).then(|| (info.partitions, info.limit.clone()))
    }

    async fn fetch_topic(&self, topic: &Arc<str>) -> Result<(i32, Limit), Error> {
        let count = self.fetch_partitions(topic).await?;
        let client = self.client().await;
        let learned = limit::learn(&self.config, &client, topic)
            .await
            .map_err(|source| Error::DescribeConfigs {
                topic: topic.clone(),
                source: Arc::new(source),
            })?;
        Ok((count, learned))
    }

    /// The broker refused a request of `refused` bytes to `topic` as too large: asks the
    /// broker's limit again and lowers `limit` (`Limit::after_refusal`). Returns the most
    /// bytes of records a request may now carry, `None` when nothing smaller is left to
    /// try.
    async fn refused(
        &self,
        topic: &Arc<str>,
        limit: &AtomicUsize,
        refused: usize,
    ) -> Option<usize> {
        let client = self.client().await;
        let asked = match limit::learn(&self.config, &client, topic).await {
            Ok(asked) => asked,
            // Unreachable meanwhile: what was known.
            Err(_) => Limit {
                bytes: limit.load(Ordering::Relaxed),
                source: Source::Topic,
            },
        };
        let lowered = Limit::after_refusal(asked, refused)?;
        let bytes = lowered.bytes;
        set_limit(topic, limit, lowered);
        Some(Limit::records_bytes(bytes, &self.config))
    }

    async fn fetch_partitions(&self, topic: &Arc<str>) -> Result<i32, Error> {
        let metadata = |source| Error::Metadata {
            topic: topic.clone(),
            source: Arc::new(source),
        };
        let client = self.client().await;
        let topics = client.list_topics().await.map_err(metadata)?;
        if let Some(found) = topics.iter().find(|t| *t.name == **topic) {
            return Ok(found.partitions.len().max(1) as i32);
        }
        if !self.config.create_topics {
            return Err(Error::NoTopic {
                topic: topic.clone(),
            });
        }
        let controller = client.controller_client().map_err(metadata)?;
        let timeout_ms = self
            .config
            .request_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32;
        controller
            .create_topic(
                &**topic,
                self.config.topic_partitions as i32,
                self.config.topic_replication_factor as i16,
                timeout_ms,
            )
            .await
            .map_err(|source| Error::CreateTopic {
                topic: topic.clone(),
                source: Arc::new(source),
            })?;
        tracing::info!(
            topic = %topic,
            partitions = self.config.topic_partitions,
            "created kafka topic"
        );
        Ok(self.config.topic_partitions as i32)
    }

    /// The queue of the partition's producer, started when there is none.
    fn producer(
        self: &Arc<Self>,
        topic: &Arc<str>,
        partition: i32,
        limit: &Arc<AtomicUsize>,
    ) -> ProducerQueue {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (topic.clone(), partition);
        match producers.live.get(&key) {
            Some(producer) if !producer.queue.is_closed() => return producer.queue.clone(),
            // A producer leaves `live` before it closes its queue when it goes idle
            // (`retire`): a closed one here died (a panic). It failed the batches it held
            // (their tailers send them again) and is replaced, so that its partition
            // ships again.
            Some(_) => {
                producers.live.remove(&key);
                tracing::error!(topic = %topic, partition, "the kafka producer of the partition stopped; starting a new one");
                self.events.task_restarted("kafka-producer");
            }
            None => {}
        }
        let after = producers.retiring.get(&key).map(|(_, ended)| ended.clone());
        let id = producers.next_id;
        producers.next_id += 1;
        let (queue, jobs) = mpsc::unbounded_channel();
        let (done, ended) = oneshot::channel();
        let task = producer::Task {
            shared: self.clone(),
            topic: topic.clone(),
            partition,
            limit: limit.clone(),
            id,
            after,
            done,
        };
        self.runtime.spawn(producer::run(task, jobs));
        let ended = ended.shared();
        producers.live.insert(
            key,
            Producer {
                queue: queue.clone(),
                id,
                ended,
            },
        );
        queue
    }

    /// Queues `job` to its partition's producer. A producer that went idle closes its
    /// queue: a job it refuses is handed back and goes to the producer after it.
    fn enqueue(
        self: &Arc<Self>,
        topic: &Arc<str>,
        partition: i32,
        limit: &Arc<AtomicUsize>,
        job: Job,
    ) -> Result<(), SinkError> {
        let mut job = job;
        // A new producer refuses a job only if it died at once.
        for _ in 0..3 {
            match self.producer(topic, partition, limit).send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        Err(SinkError::Closed { sink: "kafka" })
    }

    /// The producer `id` went idle: out of `live` (under the map's lock), so that the
    /// partition's next job starts a new producer, which waits for this one to end.
    fn retire(&self, topic: &Arc<str>, partition: i32, id: u64) {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (topic.clone(), partition);
        if producers.live.get(&key).is_some_and(|p| p.id == id) {
            let producer = producers.live.remove(&key).expect("found above");
            producers.retiring.insert(key, (id, producer.ended));
        }
    }

    /// The producer `id` ended: forgotten.
    fn ended(&self, topic: &Arc<str>, partition: i32, id: u64) {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (topic.clone(), partition);
        if producers
            .retiring
            .get(&key)
            .is_some_and(|(of, _)| *of == id)
        {
            producers.retiring.remove(&key);
        }
    }
}

/// Sets a topic's limit, logging a change: a warning when the broker gave none or refused
/// a request, else at info.
fn set_limit(topic: &str, limit: &AtomicUsize, learned: Limit) {
    let before = limit.swap(learned.bytes, Ordering::Relaxed);
    if before == learned.bytes {
        return;
    }
    let (bytes, source) = (learned.bytes, &learned.source);
    match source {
        Source::Fallback(_) | Source::Refused(_) => tracing::warn!(
            topic,
            "kafka: record batches to topic {topic} are kept within {bytes} bytes ({source})"
        ),
        _ => tracing::info!(
            topic,
            "kafka: record batches to topic {topic} are kept within {bytes} bytes ({source})"
        ),
    }
}

impl Sink for KafkaSink {
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>> {
        async move {
            let shared = &self.shared;
            let (partitions, limit) = shared.topic(&batch.topic).await?;
            let partition = shared.partitioner.choose(
                &shared.node,
                batch.path.as_os_str().as_bytes(),
                partitions,
            );
            let mut acks = Vec::new();
            // Parts of at most a quarter request each, so that a request fills to at
            // least three quarters of `max_batch_bytes` or the topic's limit.
            let request = Limit::records_bytes(limit.load(Ordering::Relaxed), &shared.config);
            let part_bytes = (request / 4).max(1);
            let per_line = encode::record_overhead(&shared.config, &shared.node, &batch);
            let topic = batch.topic.clone();
            // With `encoding: json`, `per_line` counts a value's members: the producer
            // writes the values into its request (`encode`), not the tailer.
            for part in batch.split(part_bytes, per_line) {
                // Record overhead (headers, framing) counts against the budget too.
                let cost = (part.bytes() + per_line * part.len())
                    .clamp(1, shared.config.max_in_flight_bytes as usize);
                let permit = shared
                    .budget
                    .clone()
                    .acquire_many_owned(cost as u32)
                    .await
                    .map_err(|_| SinkError::Closed { sink: "kafka" })?;
                let (ack, done) = oneshot::channel();
                let job = Job {
                    batch: part,
                    ack,
                    _permit: Some(permit),
                };
                // Looked up for each part: a producer may go idle while this one waits
                // for the budget.
                shared.enqueue(&topic, partition, &limit, job)?;
                acks.push(done);
            }
            let closed = || Err(SinkError::Closed { sink: "kafka" });
            // Nearly always one part: its answer alone, without the list (the tailer
            // holds each acknowledgement until its next wake-up, every file one).
            if acks.len() == 1 {
                let done = acks.pop().expect("one part");
                return Ok(done
                    .map(move |answer| answer.unwrap_or_else(|_| closed()))
                    .boxed());
            }
            let ack: Ack = async move {
                for done in acks {
                    done.await.unwrap_or_else(|_| closed())?;
                }
                Ok(())
            }
            .boxed();
            Ok(ack)
        }
        .boxed()
    }

    fn prepare(&self, topic: &Arc<str>) -> Option<BoxFuture<'_, ()>> {
        if self.shared.known(topic).is_some() {
            return None;
        }
        let topic = topic.clone();
        Some(async move { drop(self.shared.topic(&topic).await) }.boxed())
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        async move {
            // Every queued batch holds part of the budget until acknowledged.
            let all = self.shared.config.max_in_flight_bytes as u32;
            let _all = self
                .shared
                .budget
                .acquire_many(all)
                .await
                .map_err(|_| SinkError::Closed { sink: "kafka" })?;
            Ok(())
        }
        .boxed()
    }

    /// The batch encoded as the producers encode it, and read back.
    fn shipped(&self, batch: &Batch) -> Result<Vec<Shipped>, SinkError> {
        let shared = &self.shared;
        let mut records = rskafka::record::EncodedRecords::default();
        encode::encode(&shared.config, &shared.node, batch, &mut records)
            .map_err(SinkError::Rejected)?;
        let decoded = records.decode().map_err(|source| {
            SinkError::Rejected(Error::Encode {
                path: batch.path.clone(),
                offset: batch.lines().next().map_or(0, |(offset, _)| offset),
                source: Arc::new(source),
            })
        })?;
        let shipped = decoded.into_iter().zip(batch.lines());
        Ok(shipped
            .map(|(record, (offset, _))| Shipped {
                topic: batch.topic.clone(),
                key: record.key,
                headers: record.headers.into_iter().collect(),
                value: record.value.unwrap_or_default(),
                path: batch.path.clone(),
                offset,
            })
            .collect())
    }

    fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    fn connect_error(&self) -> Option<String> {
        let error = self.shared.connect_error.lock();
        let error = error.unwrap_or_else(|e| e.into_inner());
        error.as_ref().map(ConnectError::to_string)
    }

    fn in_flight_bytes(&self) -> u64 {
        let shared = &self.shared;
        shared.config.max_in_flight_bytes - shared.budget.available_permits() as u64
    }

    fn buffer_bytes(&self) -> u64 {
        let shared = &self.shared;
        (shared.buffer_bytes.load(Ordering::Relaxed) + shared.buffers.kept()) as u64
    }

    fn producers(&self) -> u64 {
        self.shared.running.load(Ordering::Relaxed) as u64
    }
}
