//! The Kafka sink (rskafka): batches are split to `max_batch_bytes`, charged against the
//! `max_in_flight_bytes` budget (reading pauses when it is spent), routed to a partition
//! and queued to that partition's producer task; each batch is acknowledged when Kafka
//! acknowledged it. The client connects in the background and reconnects as needed.

mod connect;
mod encode;
mod error;
mod partitioner;
mod producer;
mod retry;

pub use connect::Network;
pub use error::Error;

use super::{Ack, Batch, Sink, SinkError};
use crate::config::kafka::KafkaConfig;
use crate::ports::Events;
use connect::ConnectError;
use futures::future::{BoxFuture, FutureExt};
use partitioner::Partitioner;
use producer::Job;
use retry::{Backoff, Class};
use rskafka::client::Client;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

/// How long a topic's partition count is trusted before metadata is asked again.
const METADATA_TTL: Duration = Duration::from_secs(60);

/// The queue of one (topic, partition) producer task.
type ProducerQueue = mpsc::UnboundedSender<Job>;

pub struct KafkaSink {
    shared: Arc<Shared>,
    /// Where connections and sender tasks run (`shared.network` is its handle); shut
    /// down when the sink is dropped. The sink holds it, not `Shared`: the sender tasks
    /// hold `Shared` and run on it, and a runtime is not to be dropped by its own task.
    _network: Network,
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
    partitions: Mutex<HashMap<Arc<str>, (i32, Instant)>>,
    producers: Mutex<HashMap<(Arc<str>, i32), ProducerQueue>>,
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
            config,
            node,
            client: tokio::sync::Mutex::new(None),
            connected: AtomicBool::new(false),
            connect_error: Mutex::new(None),
            partitions: Mutex::new(HashMap::new()),
            producers: Mutex::new(HashMap::new()),
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

    /// The partition count of `topic`, from cached metadata; creates the topic when
    /// allowed. Retries what `Error::class` says is retried; a missing topic is a
    /// permanent error.
    async fn partitions(&self, topic: &Arc<str>) -> Result<i32, SinkError> {
        if let Some((count, at)) = self
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            if at.elapsed() < METADATA_TTL {
                return Ok(*count);
            }
        }
        let mut backoff = Backoff::default();
        let count = loop {
            let error = match self.fetch_partitions(topic).await {
                Ok(count) => break count,
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
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.clone(), (count, Instant::now()));
        Ok(count)
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

    fn producer(self: &Arc<Self>, topic: &Arc<str>, partition: i32) -> ProducerQueue {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        producers
            .entry((topic.clone(), partition))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let run = producer::run(self.clone(), topic.clone(), partition, rx);
                self.runtime.spawn(run);
                tx
            })
            .clone()
    }
}

impl Sink for KafkaSink {
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>> {
        async move {
            let shared = &self.shared;
            let partitions = shared.partitions(&batch.topic).await?;
            let partition = shared.partitioner.choose(
                &shared.node,
                batch.path.as_os_str().as_bytes(),
                partitions,
            );
            let producer = shared.producer(&batch.topic, partition);
            let mut acks = Vec::new();
            // Parts of at most a quarter request each, so that a request fills to at
            // least three quarters of `max_batch_bytes`.
            let part_bytes = (shared.config.max_batch_bytes as usize / 4).max(1);
            let per_line = encode::record_overhead(&shared.config, &shared.node, &batch);
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
                producer
                    .send(Job {
                        batch: part,
                        ack,
                        _permit: permit,
                    })
                    .map_err(|_| SinkError::Closed { sink: "kafka" })?;
                acks.push(done);
            }
            let ack: Ack = async move {
                for done in acks {
                    done.await
                        .unwrap_or(Err(SinkError::Closed { sink: "kafka" }))?;
                }
                Ok(())
            }
            .boxed();
            Ok(ack)
        }
        .boxed()
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
}
