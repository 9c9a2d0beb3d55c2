//! The Kafka sink (rskafka): batches are split to `max_batch_bytes`, charged against the
//! `max_in_flight_bytes` budget (reading pauses when it is spent), routed to a partition
//! and queued to that partition's producer task; each batch is acknowledged when Kafka
//! acknowledged it. The client connects in the background and reconnects as needed.

mod connect;
mod partitioner;
mod producer;

use super::{Ack, Batch, Sink, SinkError};
use crate::config::kafka::{KafkaConfig, RecordKey};
use crate::format;
use crate::ports::Events;
use chrono::Utc;
use futures::future::{BoxFuture, FutureExt};
use partitioner::Partitioner;
use producer::Job;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::Client;
use rskafka::record::EncodedRecords;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

/// How long a topic's partition count is trusted before metadata is asked again.
const METADATA_TTL: Duration = Duration::from_secs(60);

/// The queue of one (topic, partition) producer task.
type ProducerQueue = mpsc::UnboundedSender<Job>;

pub struct KafkaSink {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    config: KafkaConfig,
    node: Arc<str>,
    /// The connected client; `None` until connected or after `reset_client`.
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    connected: AtomicBool,
    /// The last connection error, until a connection succeeds.
    connect_error: Mutex<Option<String>>,
    budget: Arc<Semaphore>,
    partitioner: Partitioner,
    partitions: Mutex<HashMap<Arc<str>, (i32, Instant)>>,
    producers: Mutex<HashMap<(Arc<str>, i32), ProducerQueue>>,
    events: Arc<dyn Events>,
    /// The agent's runtime, where producer tasks run: a batch may come from a tailer on a
    /// runtime of its own (a file on a network filesystem, `tail/remote.rs`), which ends
    /// with that tailer.
    runtime: tokio::runtime::Handle,
}

impl KafkaSink {
    /// Starts connecting in the background; `submit` waits for the connection.
    pub fn new(config: KafkaConfig, node: Arc<str>, events: Arc<dyn Events>) -> Self {
        let shared = Arc::new(Shared {
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
            runtime: tokio::runtime::Handle::current(),
        });
        let connecting = shared.clone();
        tokio::spawn(async move {
            connecting.client().await;
        });
        KafkaSink { shared }
    }
}

impl Shared {
    /// The client, connecting (with retries, forever) when there is none.
    async fn client(&self) -> Arc<Client> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return client.clone();
        }
        let mut delay = Duration::from_millis(200);
        let client = loop {
            match connect::connect(&self.config).await {
                Ok(client) => break Arc::new(client),
                Err(e) => {
                    tracing::warn!(retry_in = ?delay, "kafka: {e}");
                    *self.connect_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
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
    /// allowed. Retries connection trouble; a missing topic is a permanent error.
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
        let mut delay = Duration::from_millis(100);
        let count = loop {
            match self.fetch_partitions(topic).await {
                Ok(count) => break count,
                Err(Fetch::Permanent(message)) => {
                    return Err(SinkError::Rejected {
                        sink: "kafka",
                        message,
                    })
                }
                Err(Fetch::Retry(message)) => {
                    self.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(topic = %topic, retry_in = ?delay, "kafka metadata: {message}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.clone(), (count, Instant::now()));
        Ok(count)
    }

    async fn fetch_partitions(&self, topic: &str) -> Result<i32, Fetch> {
        let client = self.client().await;
        let topics = client
            .list_topics()
            .await
            .map_err(|e| Fetch::Retry(e.to_string()))?;
        if let Some(found) = topics.iter().find(|t| t.name == topic) {
            return Ok(found.partitions.len().max(1) as i32);
        }
        if !self.config.create_topics {
            return Err(Fetch::Permanent(format!(
                "topic {topic} does not exist (sink.kafka.create_topics is false)"
            )));
        }
        let controller = client
            .controller_client()
            .map_err(|e| Fetch::Retry(e.to_string()))?;
        let timeout_ms = self
            .config
            .request_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32;
        match controller
            .create_topic(
                topic,
                self.config.topic_partitions as i32,
                self.config.topic_replication_factor as i16,
                timeout_ms,
            )
            .await
        {
            Ok(()) => {
                tracing::info!(
                    topic,
                    partitions = self.config.topic_partitions,
                    "created kafka topic"
                );
                Ok(self.config.topic_partitions as i32)
            }
            // Created meanwhile (by another agent): its metadata is asked for again.
            Err(
                e @ KafkaError::ServerError {
                    protocol_error: ProtocolError::TopicAlreadyExists,
                    ..
                },
            ) => Err(Fetch::Retry(producer::describe(&e))),
            Err(e) if producer::is_permanent(&e) => Err(Fetch::Permanent(producer::describe(&e))),
            Err(e) => Err(Fetch::Retry(producer::describe(&e))),
        }
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

    /// The most bytes encoding adds to a line of `batch` (what `encode` writes besides
    /// the line): Kafka's record framing, the key and every header a record of the batch
    /// can carry. Splitting by it keeps a request's records within `max_batch_bytes`.
    fn record_overhead(&self, batch: &Batch) -> usize {
        // Length, value length, offset delta (5 bytes at most), timestamp delta (10),
        // attributes and header count (1).
        const FRAMING: usize = 5 + 5 + 5 + 10 + 1 + 1;
        // Kafka's lengths are zig-zag varints: 7 bits a byte.
        let varint = |n: usize| (usize::BITS - (2 * n).leading_zeros()).div_ceil(7).max(1) as usize;
        let path = batch.path.as_os_str().len();
        let node = self.node.len();
        let key = match self.config.key {
            RecordKey::None => 0,
            RecordKey::Path => path,
            RecordKey::Node => node,
        };
        let mut bytes = FRAMING + varint(key) + key;
        let mut header = |name: &str, value: usize| {
            bytes += varint(name.len()) + name.len() + varint(value) + value
        };
        if let Some(pod) = batch.pod.as_deref() {
            header("k8s.container", pod.container.len());
            header(
                "k8s.container_id",
                pod.container_id.as_ref().map_or(0, |id| id.len()),
            );
            header("k8s.namespace", pod.namespace.len());
            header("k8s.pod", pod.pod.len());
        }
        if self.config.headers {
            header("logcatch.node", node);
            header("logcatch.offset", u64::MAX.to_string().len());
            header("logcatch.path", path);
        }
        if batch.has_meta() {
            header(
                "logcatch.parse_error",
                crate::record::ParseError::MAX_REASON_LEN,
            );
            header("logcatch.stream", "stderr".len());
            header("logcatch.time", "1970-01-01T00:00:00.000000000Z".len());
        }
        bytes
    }
}

enum Fetch {
    Retry(String),
    Permanent(String),
}

/// Appends the Kafka records of a batch to `out`: value = the line (a container log's
/// message); key and headers as configured. Container logs add the stream, the runtime's
/// time (also the record timestamp) and the pod; a line that could not be parsed says
/// why. Records are encoded straight from the batch, headers in name order; the headers
/// every record of the batch shares (the pod's, the node, the path) are encoded once.
fn encode(shared: &Shared, batch: &Batch, out: &mut EncodedRecords) -> Result<(), SinkError> {
    let now = Utc::now();
    let path = batch.path.as_os_str().as_bytes();
    let node = shared.node.as_bytes();
    let key = match shared.config.key {
        RecordKey::None => None,
        RecordKey::Path => Some(path),
        RecordKey::Node => Some(node),
    };
    let with_headers = shared.config.headers;
    let rejected = |offset: u64, e: rskafka::client::error::Error| SinkError::Rejected {
        sink: "kafka",
        message: format!("{}: the line at offset {offset}: {e}", batch.path.display()),
    };
    let first_offset = batch.lines().next().map_or(0, |(offset, _)| offset);
    // The shared headers that sort before the offset, and the path (which sorts after
    // the parse error).
    let (mut before_offset, mut path_header) = (Headers::default(), Headers::default());
    let mut shared_headers = || {
        if let Some(pod) = batch.pod.as_deref() {
            before_offset.put("k8s.container", pod.container.as_bytes())?;
            if let Some(id) = &pod.container_id {
                before_offset.put("k8s.container_id", id.as_bytes())?;
            }
            before_offset.put("k8s.namespace", pod.namespace.as_bytes())?;
            before_offset.put("k8s.pod", pod.pod.as_bytes())?;
        }
        if with_headers {
            before_offset.put("logcatch.node", node)?;
            path_header.put("logcatch.path", path)?;
        }
        Ok(())
    };
    shared_headers().map_err(|e| rejected(first_offset, e))?;
    let (mut before_path, mut after_path) = (Headers::default(), Headers::default());
    let mut offset_text = itoa::Buffer::new();
    for (offset, line, meta) in batch.records() {
        before_path.clear();
        after_path.clear();
        let mut record_headers = || {
            if with_headers {
                before_path.put("logcatch.offset", offset_text.format(offset).as_bytes())?;
            }
            if let Some(error) = meta.error {
                before_path.put("logcatch.parse_error", error.reason().as_bytes())?;
            }
            if let Some(stream) = meta.stream.as_str() {
                after_path.put("logcatch.stream", stream.as_bytes())?;
            }
            if let Some(time) = meta.time {
                after_path.put("logcatch.time", format::format_time(time).as_bytes())?;
            }
            let parts = [&before_offset, &before_path, &path_header, &after_path];
            let count = parts.iter().map(|part| part.count).sum();
            let bytes = parts.map(|part| part.bytes.as_slice());
            let timestamp = meta
                .time
                .map_or(now, chrono::DateTime::from_timestamp_nanos);
            out.push_encoded_headers(timestamp, key, Some(line), count, &bytes)
        };
        record_headers().map_err(|e| rejected(offset, e))?;
    }
    Ok(())
}

/// Record headers encoded one after the other, and how many.
#[derive(Default)]
struct Headers {
    bytes: Vec<u8>,
    count: usize,
}

impl Headers {
    fn put(&mut self, name: &str, value: &[u8]) -> Result<(), rskafka::client::error::Error> {
        EncodedRecords::encode_header_bytes(&mut self.bytes, name.as_bytes())?;
        EncodedRecords::encode_header_bytes(&mut self.bytes, value)?;
        self.count += 1;
        Ok(())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
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
            let per_line = shared.record_overhead(&batch);
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
        error.unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn in_flight_bytes(&self) -> u64 {
        let shared = &self.shared;
        shared.config.max_in_flight_bytes - shared.budget.available_permits() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::NoEvents;
    use crate::record::{ParseError, PodMeta, RecordMeta, Stream};
    use std::path::Path;

    #[tokio::test]
    async fn record_overhead_should_bound_what_encoding_adds_to_every_line() {
        let config = KafkaConfig {
            key: RecordKey::Path,
            ..KafkaConfig::default()
        };
        let sink = KafkaSink::new(config, "node-with-a-long-name-1".into(), Arc::new(NoEvents));
        let shared = &sink.shared;
        let path = "/var/log/containers/web-7d9f_shop_nginx-0123456789abcdef.log";
        let mut batch = Batch::new("t".into(), Path::new(path).into());
        batch.pod = Some(Arc::new(PodMeta {
            namespace: "shop".into(),
            pod: "web-7d9f".into(),
            container: "nginx".into(),
            container_id: Some("0123456789abcdef".repeat(4)),
        }));
        // The most every part can take: the widest offset and time, the longest reason.
        for error in ParseError::ALL.into_iter().map(Some).chain([None]) {
            let meta = RecordMeta {
                stream: Stream::Stderr,
                time: Some(i64::MIN),
                error,
            };
            batch.push_with(u64::MAX, &[b'x'; 300], meta);
        }
        assert_bounded(shared, &batch, 128);
        // A raw file's lines: the bound is close (so requests stay near the limit).
        let mut raw = Batch::new("t".into(), Path::new(path).into());
        for offset in [0, 1 << 20, 1 << 40, u64::MAX] {
            raw.push(offset, &[b'x'; 100]);
        }
        assert_bounded(shared, &raw, 32);
    }

    #[tokio::test]
    async fn a_raw_files_records_should_encode_as_with_their_headers_one_by_one() {
        for key in [RecordKey::None, RecordKey::Path] {
            let config = KafkaConfig {
                key,
                ..KafkaConfig::default()
            };
            let sink = KafkaSink::new(config, "node-1".into(), Arc::new(NoEvents));
            let path = "/var/log/app/web.log";
            let mut batch = Batch::new("t".into(), Path::new(path).into());
            let lines: [(u64, &[u8]); 4] = [
                (0, b"first"),
                (6, b""),
                (7, &[0xff; 300]),
                (u64::MAX - 9, b"last"),
            ];
            for (offset, line) in lines {
                batch.push(offset, line);
            }
            let mut fast = EncodedRecords::default();
            encode(&sink.shared, &batch, &mut fast).expect("encodes");
            // The reference: each record with its three headers given as name and value.
            let mut want = EncodedRecords::default();
            let now = Utc::now();
            for (offset, line) in lines {
                let offset = offset.to_string();
                let headers = [
                    ("logcatch.node", &b"node-1"[..]),
                    ("logcatch.offset", offset.as_bytes()),
                    ("logcatch.path", path.as_bytes()),
                ];
                let key = matches!(key, RecordKey::Path).then_some(path.as_bytes());
                want.push(now, key, Some(line), headers.into_iter())
                    .expect("encodes");
            }
            assert_eq!(fast.len(), 4);
            // Equal sets: the same encoded bytes, count and timestamps.
            assert_eq!(fast, want, "key {key:?}");
        }
    }

    #[tokio::test]
    async fn a_container_logs_records_should_encode_as_with_their_headers_one_by_one() {
        let sink = KafkaSink::new(KafkaConfig::default(), "node-1".into(), Arc::new(NoEvents));
        let path = "/var/log/containers/web_shop_nginx-0123.log";
        let mut batch = Batch::new("t".into(), Path::new(path).into());
        let pod = PodMeta {
            namespace: "shop".into(),
            pod: "web".into(),
            container: "nginx".into(),
            container_id: Some("0123".into()),
        };
        batch.pod = Some(Arc::new(pod));
        // Every record with its own time: the record timestamps then do not depend on
        // when each side encoded (records without one are the raw test's).
        let time = Some(1_764_000_000_123_456_789);
        let metas = [
            RecordMeta {
                time,
                ..RecordMeta::default()
            },
            RecordMeta {
                stream: Stream::Stderr,
                time,
                error: None,
            },
            RecordMeta {
                stream: Stream::Unknown,
                time,
                error: Some(ParseError::CriTime),
            },
        ];
        for (i, meta) in metas.into_iter().enumerate() {
            batch.push_with(i as u64 * 10, b"message", meta);
        }
        let mut encoded = EncodedRecords::default();
        encode(&sink.shared, &batch, &mut encoded).expect("encodes");
        // The reference: each record's headers given as names and values, in name order.
        let mut want = EncodedRecords::default();
        for (offset, line, meta) in batch.records() {
            let (offset, time) = (offset.to_string(), meta.time.map(format::format_time));
            let mut headers = vec![
                ("k8s.container", &b"nginx"[..]),
                ("k8s.container_id", b"0123"),
                ("k8s.namespace", b"shop"),
                ("k8s.pod", b"web"),
                ("logcatch.node", b"node-1"),
                ("logcatch.offset", offset.as_bytes()),
            ];
            if let Some(error) = meta.error {
                headers.push(("logcatch.parse_error", error.reason().as_bytes()));
            }
            headers.push(("logcatch.path", path.as_bytes()));
            if let Some(stream) = meta.stream.as_str() {
                headers.push(("logcatch.stream", stream.as_bytes()));
            }
            if let Some(time) = &time {
                headers.push(("logcatch.time", time.as_bytes()));
            }
            let timestamp = chrono::DateTime::from_timestamp_nanos(meta.time.expect("a time"));
            want.push(timestamp, None, Some(line), headers.into_iter())
                .expect("encodes");
        }
        assert_eq!(encoded.len(), 3);
        assert_eq!(
            encoded, want,
            "the same encoded bytes, count and timestamps"
        );
    }

    /// Encoding `batch` takes at most `record_overhead` a line, and at most `slack` less.
    fn assert_bounded(shared: &Shared, batch: &Batch, slack: usize) {
        let overhead = shared.record_overhead(batch);
        let mut records = EncodedRecords::default();
        encode(shared, batch, &mut records).expect("encodes");
        let bound = batch.bytes() + batch.len() * overhead;
        assert!(
            records.encoded_len() <= bound,
            "{} > {bound}",
            records.encoded_len()
        );
        let unused = (bound - records.encoded_len()) / batch.len();
        assert!(unused <= slack, "{unused} bytes a record unused");
    }
}
