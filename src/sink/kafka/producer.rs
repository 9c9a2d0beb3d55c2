//! One producer task per (topic, partition), shared by every tailer writing there: it
//! aggregates queued batches for up to `linger` or `max_batch_bytes` (or the topic's
//! limit, `limit.rs`), produces them in one request, retries what `retry::classify` says
//! is retried with `retry::Backoff` (forever: the in-flight budget holds the data
//! meanwhile), and acknowledges each batch. A record that cannot fit a request is cut to
//! fit, or dropped when not even that fits (`prepare`); a request the broker refuses as
//! too large lowers the limit and goes again as smaller requests (`send`).
//!
//! One request is in flight per partition, which keeps each file's order: the next
//! request is sent only once the previous one is acknowledged. Meanwhile the batches of
//! the next request are encoded as they arrive and compressed when the group is sealed,
//! so that both overlap the wait for the broker (requests are sent by a task of their
//! own, which starts the next sealed group the moment the last one is answered, on a
//! runtime thread of its own).
//!
//! A producer with no batch for `producer_idle_timeout` ends (issue #23.10: a burst over
//! many partitions left a task each for good). It first leaves the sink's map, under its
//! lock, and closes its queue: a batch sent to it after that is handed back and goes to
//! a new producer, which starts once this one has answered everything it held.

use super::encode::{encode, marked_record_overhead, record_overhead};
use super::limit::Limit;
use super::retry::{Backoff, Class};
use super::{Ended, Error, Shared};
use crate::record::Batch;
use crate::sink::json_value;
use crate::sink::SinkError;
use rskafka::client::error::Error as ClientError;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::{EncodedBatch, EncodedRecords, RECORD_BATCH_OVERHEAD};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

/// A batch waiting to be produced; `_permit` returns its bytes to the in-flight budget
/// when the job is dropped after its acknowledgement (a job split in parts leaves it to
/// the task that answers for the parts).
pub struct Job {
    pub batch: Batch,
    pub ack: oneshot::Sender<Result<(), SinkError>>,
    pub _permit: Option<OwnedSemaphorePermit>,
}

/// Makes `job` fit requests of `request` bytes of records: records too long are cut and
/// marked, or dropped when not even a cut one fits (each counted and logged with its
/// path and offset); a job left too big for one request (the limit was lowered after it
/// was split) is split in parts, answered as one. An emptied job is answered at once.
///
/// A batch whose records are to be JSON values goes on as it is when its values, written
/// into the request by `encode`, fit one (nearly always: the sink splits batches into
/// quarter requests); else they are written here first, so that their sizes are exact for
/// the cut and split below.
fn prepare(shared: &Shared, job: Job, request: usize) -> Vec<Job> {
    let mut job = job;
    let (config, node) = (&shared.config, &*shared.node);
    if json_value::pending(&job.batch) {
        if json_value::fits(
            &job.batch,
            node,
            request,
            record_overhead(config, node, &job.batch),
        ) {
            return vec![job];
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        json_value::encode(&mut job.batch, node, now);
    }
    let per_line = record_overhead(config, node, &job.batch);
    let fits = request.saturating_sub(per_line);
    let cut_to = request.saturating_sub(marked_record_overhead(config, node, &job.batch));
    let fitted = if job.batch.json_values {
        // A JSON value is cut inside, to stay a JSON object.
        let json = job.batch.json.clone();
        let merge = json.as_ref().and_then(|j| j.merge_json.as_deref());
        job.batch.fit_with(fits, cut_to, |value, room| {
            json_value::cut(value, room, merge)
        })
    } else {
        job.batch.fit(fits, cut_to)
    };
    let (topic, path) = (&job.batch.topic, job.batch.path.display());
    for (offset, bytes) in fitted.cut {
        shared.events.record_cut(topic);
        tracing::warn!(
            topic = %topic,
            "kafka: cut the record at {path} offset {offset}: {bytes} bytes do not fit topic \
             {topic}'s {request} bytes a request; shipped cut to {cut_to} bytes, marked \
             logcatch.truncated"
        );
    }
    for (offset, bytes) in fitted.dropped {
        shared.events.records_dropped(topic, "too_large", 1);
        tracing::error!(
            topic = %topic,
            "kafka: dropped the record at {path} offset {offset}: {bytes} bytes, and its \
             headers alone do not fit topic {topic}'s {request} bytes a request"
        );
    }
    if job.batch.is_empty() {
        let _ = job.ack.send(Ok(()));
        return Vec::new();
    }
    let per_line = record_overhead(config, node, &job.batch);
    if job.batch.bytes() + job.batch.len() * per_line <= request || job.batch.len() == 1 {
        return vec![job];
    }
    let Job {
        batch,
        ack,
        _permit,
    } = job;
    let (mut parts, mut answers) = (Vec::new(), Vec::new());
    for batch in batch.split(request, per_line) {
        let (ack, answer) = oneshot::channel();
        parts.push(Job {
            batch,
            ack,
            _permit: None,
        });
        answers.push(answer);
    }
    // The parts' answers, in order, are the job's: the first failure, else success.
    shared.runtime.spawn(async move {
        let _permit = _permit;
        for answer in answers {
            let result = answer
                .await
                .unwrap_or(Err(SinkError::Closed { sink: "kafka" }));
            if result.is_err() {
                let _ = ack.send(result);
                return;
            }
        }
        let _ = ack.send(Ok(()));
    });
    parts
}

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
    /// Bytes of encoded records (before compression).
    bytes: usize,
    /// When the first batch joined plus `linger`.
    linger_until: Option<Instant>,
}

impl Group {
    /// Encodes `job` into the group. Hands it back, unencoded, when the group already
    /// holds records and this job could take it, or took it, over `request` bytes of
    /// records (the broker refuses record batches over the topic's `max.message.bytes`;
    /// the escapes of JSON values are known once written): it starts the next group.
    fn add(&mut self, shared: &Shared, request: usize, job: Job) -> Option<Job> {
        let batch = &job.batch;
        let max_bytes = group_bytes(shared, request);
        let bound =
            batch.bytes() + batch.len() * record_overhead(&shared.config, &shared.node, batch);
        if !self.jobs.is_empty() && self.bytes + bound > max_bytes {
            return Some(job);
        }
        // Room for the group this job starts (up to 4 jobs like it, within
        // `max_batch_bytes`), so that a busy file's request is not grown by copying.
        let scale = if self.jobs.is_empty() {
            // And room for the jobs of such a group (up to 64) to be answered for: one
            // allocation, not one per doubling, for a group of many files' few lines.
            let like = max_bytes / bound.max(1);
            self.jobs.reserve(like.clamp(1, 64));
            like.clamp(1, 4)
        } else {
            1
        };
        self.records.reserve(bound * scale);
        let mark = self.records.mark();
        if let Err(e) = encode(&shared.config, &shared.node, batch, &mut self.records) {
            self.records.truncate(mark);
            let _ = job.ack.send(Err(SinkError::Rejected(e)));
            return None;
        }
        if !self.jobs.is_empty() && self.records.encoded_len() > max_bytes {
            self.records.truncate(mark);
            return Some(job);
        }
        self.bytes = self.records.encoded_len();
        self.linger_until
            .get_or_insert_with(|| Instant::now() + shared.config.linger);
        self.jobs.push(job);
        None
    }

    /// [`add`](Self::add), encoding a group's first job into `spare` (an emptied buffer,
    /// `fill`).
    fn join(
        &mut self,
        shared: &Shared,
        request: usize,
        spare: &mut EncodedRecords,
        job: Job,
    ) -> Option<Job> {
        if self.jobs.is_empty() {
            std::mem::swap(&mut self.records, spare);
        }
        self.add(shared, request, job)
    }

    /// Joins the jobs of `held` in order until one is handed back (it stays first).
    fn join_held(
        &mut self,
        shared: &Shared,
        request: usize,
        spare: &mut EncodedRecords,
        held: &mut VecDeque<Job>,
    ) {
        while let Some(job) = held.pop_front() {
            if let Some(back) = self.join(shared, request, spare, job) {
                held.push_front(back);
                return;
            }
        }
    }

    /// Compresses the records (while the previous request may still be in flight). A
    /// group whose compressed records still exceed `request` bytes (data that does not
    /// compress) is halved and each half sealed again, so that one group may become
    /// several requests, in order; a single batch that compression makes too big goes
    /// uncompressed (`prepare` made it fit so). A failure is every batch's answer.
    /// Returns the emptied record buffer for reuse.
    fn seal(self, shared: &Shared, request: usize) -> (Vec<Sealed>, EncodedRecords) {
        self.seal_with(shared, request, compression(shared))
    }

    fn seal_with(
        mut self,
        shared: &Shared,
        request: usize,
        compression: Compression,
    ) -> (Vec<Sealed>, EncodedRecords) {
        let records = match self.records.freeze(compression) {
            Ok(records) => records,
            Err(source) => {
                let error = SinkError::Rejected(Error::Compress {
                    source: Arc::new(source),
                });
                for job in self.jobs {
                    let _ = job.ack.send(Err(error.clone()));
                }
                return (Vec::new(), self.records);
            }
        };
        let plain = matches!(compression, Compression::NoCompression);
        if records.encoded_len() > request && self.jobs.len() == 1 && !plain {
            let mut alone = Group {
                records: std::mem::take(&mut self.records),
                ..Group::default()
            };
            let _ = alone.add(shared, request, self.jobs.pop().expect("one job"));
            return alone.seal_with(shared, request, Compression::NoCompression);
        }
        if records.encoded_len() <= request || self.jobs.len() == 1 {
            let sealed = Sealed {
                records,
                jobs: self.jobs,
            };
            return (vec![sealed], self.records);
        }
        let second = self.jobs.split_off(self.jobs.len() / 2);
        let mut sealed = Vec::new();
        for jobs in [std::mem::take(&mut self.jobs), second] {
            let mut half = Group {
                records: std::mem::take(&mut self.records),
                ..Group::default()
            };
            for job in jobs {
                // Half of a group fits where the group did: nothing is handed back.
                let _ = half.add(shared, request, job);
            }
            let (parts, buffer) = half.seal_with(shared, request, compression);
            sealed.extend(parts);
            self.records = buffer;
        }
        (sealed, self.records)
    }
}

/// The most bytes of records one request to the topic may carry now: `max_batch_bytes`
/// or the topic's limit, less the record batch's header.
fn request_bytes(shared: &Shared, limit: &AtomicUsize) -> usize {
    Limit::records_bytes(limit.load(Ordering::Relaxed), &shared.config)
}

/// How far a group's records may grow before compression: compressed, they usually
/// shrink several times; a group that does not is split when sealed.
const COMPRESSED_GROUP_FACTOR: usize = 4;

/// The most bytes of encoded records a group takes before it is sealed.
fn group_bytes(shared: &Shared, request: usize) -> usize {
    match compression(shared) {
        Compression::NoCompression => request,
        _ => request * COMPRESSED_GROUP_FACTOR,
    }
}

/// The jobs of a request the broker refused as too large, as requests of at most
/// `request` bytes of records, in order.
fn regroup(shared: &Shared, jobs: Vec<Job>, request: usize) -> Vec<Sealed> {
    let mut held: VecDeque<Job> = jobs
        .into_iter()
        .flat_map(|job| prepare(shared, job, request))
        .collect();
    let (mut sealed, mut spare) = (Vec::new(), EncodedRecords::default());
    let mut group = Group::default();
    while !held.is_empty() {
        group.join_held(shared, request, &mut spare, &mut held);
        let parts;
        (parts, spare) = std::mem::take(&mut group).seal(shared, request);
        sealed.extend(parts);
    }
    sealed
}

/// The sender task of one partition: produces the sealed groups one after the other, in
/// order, and answers each group's batches. It runs apart from the encoding so that the
/// next request leaves as soon as the last one is answered, whatever the encoding is busy
/// with, instead of waiting for the encoding task to be scheduled to start it
/// (BENCHMARKS.md, "a sender task").
///
/// A request the broker refuses as too large (its limit lowered, or lower than it says)
/// is not sent again as it was: the limit is asked again and lowered (`Shared::refused`)
/// and its batches go as smaller requests, before any later group.
async fn send(
    shared: Arc<Shared>,
    topic: Arc<str>,
    partition: i32,
    limit: Arc<AtomicUsize>,
    mut groups: mpsc::Receiver<Sealed>,
) {
    let mut client: Option<PartitionClient> = None;
    let mut queue = VecDeque::new();
    while let Some(group) = groups.recv().await {
        queue.push_back(group);
        while let Some(group) = queue.pop_front() {
            let refused = group.records.encoded_len() + RECORD_BATCH_OVERHEAD;
            let result = produce(
                &shared,
                &topic,
                partition,
                &mut client,
                group.records.clone(),
            )
            .await;
            if let Err(SinkError::Rejected(error)) = &result {
                if error.is_too_large() {
                    if let Some(request) = shared.refused(&topic, &limit, refused).await {
                        let parts = regroup(&shared, group.jobs, request);
                        for part in parts.into_iter().rev() {
                            queue.push_front(part);
                        }
                        continue;
                    }
                }
            }
            for job in group.jobs {
                let _ = job.ack.send(result.clone());
            }
            // Uncompressed records were the group's encoding buffer: kept for the next
            // group (`buffers.rs`) rather than freed and a fresh one faulted in.
            if let Some(buffer) = group.records.into_records() {
                shared.buffers.give(buffer);
            }
        }
    }
}

/// A producer task: its partition, and its place among the partition's producers.
pub struct Task {
    pub shared: Arc<Shared>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub limit: Arc<AtomicUsize>,
    /// Tells its entry in the sink's map from its successor's.
    pub id: u64,
    /// The partition's producer before this one, still answering what it held: this one
    /// starts once it has ended.
    pub after: Option<Ended>,
    /// Dropped when the task ends, which resolves its `Ended`.
    pub done: oneshot::Sender<()>,
}

/// Forgets a producer in the sink's map when its task ends, however it ends, then lets
/// its successor start (`_done` is dropped after `drop`).
struct Ending {
    shared: Arc<Shared>,
    topic: Arc<str>,
    partition: i32,
    id: u64,
    _done: oneshot::Sender<()>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.shared.ended(&self.topic, self.partition, self.id);
    }
}

/// A producer task's share of `Shared::running` and of `Shared::buffer_bytes` (the
/// capacity of the encoding buffers it holds), given back when the task ends, however it
/// ends.
struct Accounted<'a> {
    shared: &'a Shared,
    bytes: usize,
}

impl<'a> Accounted<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.running.fetch_add(1, Ordering::Relaxed);
        Accounted { shared, bytes: 0 }
    }

    /// The producer holds `bytes` of buffers now.
    fn hold(&mut self, bytes: usize) {
        let total = &self.shared.buffer_bytes;
        if bytes > self.bytes {
            total.fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            total.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for Accounted<'_> {
    fn drop(&mut self) {
        self.hold(0);
        self.shared.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Joins the jobs of `held` to `next` ([`Group::join_held`]); a group they start encodes
/// into a buffer from the shared ones (the one emptied last: its pages are already
/// faulted in, where the kernel would zero fresh ones page by page).
fn fill(shared: &Shared, request: usize, next: &mut Group, held: &mut VecDeque<Job>) {
    let mut spare = if next.jobs.is_empty() && !held.is_empty() {
        shared.buffers.take()
    } else {
        EncodedRecords::default()
    };
    next.join_held(shared, request, &mut spare, held);
    // What the group had before it started (an emptied buffer, if any).
    shared.buffers.give(spare);
}

/// Groups smaller than this are compressed on the producer task itself; bigger ones on
/// the blocking pool, so that the next group's encoding goes on meanwhile.
const COMPRESS_INLINE_BYTES: usize = 64 * 1024;

/// The producer of one partition: gathers batches into groups (`next`), seals a group
/// (compresses it) when it is full, has lingered or the queue closed, and hands sealed
/// groups to its sender task, which holds one while its request is in flight. Encoding
/// the next group, compressing the one before it and the request in flight overlap.
pub async fn run(task: Task, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let Task {
        shared,
        topic,
        partition,
        limit,
        id,
        after,
        done,
    } = task;
    // Dropped last, however the task ends.
    let _ending = Ending {
        shared: shared.clone(),
        topic: topic.clone(),
        partition,
        id,
        _done: done,
    };
    let mut accounted = Accounted::new(&shared);
    crate::fault::panic_once("kafka-producer");
    if let Some(before) = after {
        // The partition's older jobs, held by the producer before this one, go first.
        let _ = before.await;
    }
    let idle_timeout = shared.config.producer_idle_timeout;
    let mut last_job = Instant::now();
    let compressing = !matches!(compression(&shared), Compression::NoCompression);
    let (to_sender, groups) = mpsc::channel::<Sealed>(1);
    // Ended with this task, should it be dropped (a runtime shutting down).
    let sender = AbortOnDropHandle::new(shared.network.spawn(send(
        shared.clone(),
        topic.clone(),
        partition,
        limit.clone(),
        groups,
    )));
    let mut sealing: Option<JoinHandle<(Vec<Sealed>, EncodedRecords)>> = None;
    // The capacity of the buffer being sealed on the blocking pool.
    let mut sealing_bytes = 0;
    // Sealed groups waiting for room at the sender, in order.
    let mut sealed: VecDeque<Sealed> = VecDeque::new();
    let mut next = Group::default();
    // Jobs that did not fit in `next` (or parts of a job split to fit a request): they
    // start the group after it.
    let mut held: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    // Out of the sink's map, its queue closed: it ends once it has answered what it holds.
    let mut retired = false;
    loop {
        // Between groups the producer holds no buffer (`buffers.rs`).
        accounted.hold(next.records.capacity() + sealing_bytes);
        let request = request_bytes(&shared, &limit);
        let full = !held.is_empty() || next.bytes >= group_bytes(&shared, request);
        let lingered = next.linger_until.is_some_and(|t| t <= Instant::now());
        let idle_sealer = sealing.is_none() && sealed.is_empty();
        if idle_sealer && !next.jobs.is_empty() && (full || lingered || !open) {
            let group = std::mem::take(&mut next);
            if compressing && group.bytes >= COMPRESS_INLINE_BYTES {
                let shared = shared.clone();
                sealing_bytes = group.records.capacity();
                sealing = Some(tokio::task::spawn_blocking(move || {
                    group.seal(&shared, request)
                }));
            } else {
                let (parts, buffer) = group.seal(&shared, request);
                sealed.extend(parts);
                shared.buffers.give(buffer);
            }
            fill(&shared, request, &mut next, &mut held);
            continue;
        }
        if !open && idle_sealer && next.jobs.is_empty() && held.is_empty() {
            break;
        }
        let linger_until = next.linger_until.unwrap_or_else(Instant::now);
        tokio::select! {
            // In this order: a sealed group goes to the sender before the encoding of a
            // queued batch.
            biased;
            room = to_sender.reserve(), if !sealed.is_empty() => {
                let group = sealed.pop_front().expect("guarded");
                match room {
                    Ok(room) => room.send(group),
                    // A panicked sender dropped its batches: their tailers see the sink
                    // closed, as do these.
                    Err(_) => drop(group),
                }
            }
            done = async { sealing.as_mut().expect("guarded").await }, if sealing.is_some() => {
                sealing = None;
                sealing_bytes = 0;
                // A panicked sealer dropped its batches: their tailers see the sink closed.
                if let Ok((parts, buffer)) = done {
                    sealed.extend(parts);
                    shared.buffers.give(buffer);
                }
            }
            job = jobs.recv(), if open && !full => match job {
                Some(job) => {
                    last_job = Instant::now();
                    held.extend(prepare(&shared, job, request));
                    fill(&shared, request, &mut next, &mut held);
                }
                None => open = false,
            },
            _ = tokio::time::sleep_until(linger_until),
                if idle_sealer && next.linger_until.is_some() => {}
            // Nothing held, and no batch for `producer_idle_timeout`: out of the map, so
            // that no new batch comes here; those already queued still come out of the
            // closed queue.
            _ = tokio::time::sleep_until(last_job + idle_timeout),
                if open && !retired && idle_sealer && next.jobs.is_empty() && held.is_empty() => {
                shared.retire(&topic, partition, id);
                jobs.close();
                retired = true;
            }
        }
    }
    // The sender ends once it has answered every group handed to it.
    drop(to_sender);
    let _ = sender.await;
}

async fn produce(
    shared: &Shared,
    topic: &Arc<str>,
    partition: i32,
    client: &mut Option<PartitionClient>,
    records: EncodedBatch,
) -> Result<(), SinkError> {
    let mut backoff = Backoff::default();
    loop {
        let kafka = shared.client().await;
        let attempt = async {
            if client.is_none() {
                *client = Some(
                    kafka
                        .partition_client(&**topic, partition, UnknownTopicHandling::Error)
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
            Ok::<(), ClientError>(())
        };
        // rskafka keeps reconnecting to a dead broker inside one request: bound it.
        let error = match tokio::time::timeout(shared.config.request_timeout, attempt).await {
            Ok(Ok(())) => {
                shared.connected.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Ok(Err(source)) => Error::Produce {
                topic: topic.clone(),
                partition,
                source: Arc::new(source),
            },
            Err(_) => Error::Timeout {
                topic: topic.clone(),
                partition,
                after: shared.config.request_timeout,
            },
        };
        let class = error.class();
        shared.events.send_error(topic, class.label());
        if class != Class::Retry {
            return Err(SinkError::Rejected(error));
        }
        // Start over with a fresh partition client: an interrupted request may leave the
        // old one's connection in an unknown state.
        *client = None;
        shared.reset_client(&kafka).await;
        shared.connected.store(false, Ordering::Relaxed);
        let delay = backoff.next_delay();
        tracing::warn!(topic = %topic, partition, retry_in = ?delay, "kafka produce failed, retrying: {error}");
        tokio::time::sleep(delay).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kafka::{Compression, KafkaConfig};
    use crate::ports::NoEvents;
    use crate::record::RecordMeta;
    use crate::sink::kafka::Network;
    use crate::sink::KafkaSink;
    use crate::sink::Sink;
    use std::path::Path;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// What a request to the 64 KiB sink carries at most.
    const REQUEST: usize = 64 * 1024 - RECORD_BATCH_OVERHEAD;

    /// A job of `lines` lines of 100 bytes, the first at file offset `offset`.
    fn job(offset: u64, lines: u64) -> Job {
        job_of(offset, (0..lines).map(|_| vec![b'x'; 100]))
    }

    /// A job of `lines`, one after the other from file offset `offset`.
    fn job_of(offset: u64, lines: impl Iterator<Item = Vec<u8>>) -> Job {
        let mut batch = Batch::new("t".into(), Path::new("/var/log/app/web.log").into());
        let mut at = offset;
        for line in lines {
            batch.push(at, &line);
            at += line.len() as u64 + 1;
        }
        let budget = Arc::new(Semaphore::new(1));
        Job {
            batch,
            ack: oneshot::channel().0,
            _permit: Some(budget.try_acquire_owned().expect("a permit")),
        }
    }

    /// A Kafka sink (never connected) with `max_batch_bytes: 64KiB` and the default headers.
    fn sink_of_64_kib_requests(compression: Compression) -> KafkaSink {
        let config = KafkaConfig {
            max_batch_bytes: 64 * 1024,
            compression,
            ..KafkaConfig::default()
        };
        KafkaSink::new(
            config,
            "node-1".into(),
            Arc::new(NoEvents),
            Network::current(),
        )
    }

    #[tokio::test]
    async fn a_group_should_hold_at_most_max_batch_bytes_of_encoded_records() {
        let sink = sink_of_64_kib_requests(Compression::None);
        let shared = &sink.shared;
        let (mut group, mut spare) = (Group::default(), EncodedRecords::default());
        // 100 lines of 100 B with the default headers encode to about 18 KB: three fit.
        let mut handed_back = None;
        for n in 0..4 {
            handed_back = group.join(shared, REQUEST, &mut spare, job(n * 10_100, 100));
        }
        let back = handed_back.expect("the fourth job does not fit");
        assert_eq!(
            back.batch.lines().next().map(|(offset, _)| offset),
            Some(30_300)
        );
        assert_eq!(group.jobs.len(), 3);
        assert_eq!(group.bytes, group.records.encoded_len());
        assert!(group.bytes <= 64 * 1024, "{} bytes", group.bytes);
        assert!(
            group.bytes > 3 * 100 * 100 * 3 / 2,
            "headers counted: {}",
            group.bytes
        );
        // What is sealed is exactly the three jobs' records.
        let (sealed, _) = group.seal(shared, REQUEST);
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].records.len(), 300);

        // A job bigger than the limit on its own still goes, alone in its group.
        let mut group = Group::default();
        assert!(group
            .join(shared, REQUEST, &mut spare, job(0, 1000))
            .is_none());
        assert!(group.bytes > 64 * 1024);
        assert!(group
            .join(shared, REQUEST, &mut spare, job(101_000, 1))
            .is_some());
    }

    /// Counts the tasks restarted.
    #[derive(Default)]
    struct Restarts(AtomicUsize);

    impl crate::ports::Events for Restarts {
        fn task_restarted(&self, _task: &str) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A Kafka sink whose producers go idle after 60 s and whose broker never answers
    /// (nothing listens on port 1).
    fn sink_without_broker(restarts: Arc<Restarts>) -> KafkaSink {
        let config = KafkaConfig {
            brokers: vec!["127.0.0.1:1".into()],
            max_batch_bytes: 64 * 1024,
            producer_idle_timeout: Duration::from_secs(60),
            ..KafkaConfig::default()
        };
        KafkaSink::new(config, "node-1".into(), restarts, Network::current())
    }

    /// A job of no line (answered at once by the producer), with its answer.
    fn empty_job() -> (Job, oneshot::Receiver<Result<(), SinkError>>) {
        answered_job(0, std::iter::empty())
    }

    /// Lets the producer tasks run until they wait (time is paused: no timer fires).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn producers_in_map(shared: &Shared) -> (usize, usize) {
        let producers = shared.producers.lock().expect("not poisoned");
        (producers.live.len(), producers.retiring.len())
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_producer_should_end_and_the_next_job_should_start_one_without_a_restart() {
        let restarts = Arc::new(Restarts::default());
        let sink = sink_without_broker(restarts.clone());
        let shared = &sink.shared;
        let (topic, limit) = (Arc::<str>::from("t"), Arc::new(AtomicUsize::new(64 * 1024)));
        let (job, answer) = empty_job();
        shared.enqueue(&topic, 0, &limit, job).expect("queued");
        assert!(matches!(answer.await, Ok(Ok(()))));
        tokio::time::sleep(Duration::from_secs(59)).await;
        settle().await;
        assert_eq!(sink.producers(), 1, "not idle for 60 s yet");
        let (job, answer) = empty_job();
        shared.enqueue(&topic, 0, &limit, job).expect("queued");
        assert!(matches!(answer.await, Ok(Ok(()))));
        tokio::time::sleep(Duration::from_secs(59)).await;
        settle().await;
        assert_eq!(sink.producers(), 1, "a job starts the 60 s again");
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(sink.producers(), 0, "ended");
        assert_eq!(producers_in_map(shared), (0, 0), "forgotten");
        assert_eq!(sink.buffer_bytes(), 0);

        let (job, answer) = empty_job();
        shared.enqueue(&topic, 0, &limit, job).expect("queued");
        assert!(matches!(answer.await, Ok(Ok(()))));
        assert_eq!(sink.producers(), 1, "a new one");
        assert_eq!(restarts.0.load(Ordering::Relaxed), 0, "no restart");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_racing_with_the_retirement_should_go_to_a_successor_that_waits_for_it() {
        let restarts = Arc::new(Restarts::default());
        let sink = sink_without_broker(restarts.clone());
        let shared = &sink.shared;
        let (topic, limit) = (Arc::<str>::from("t"), Arc::new(AtomicUsize::new(64 * 1024)));
        // A submit that looked the producer up, then waited for the budget.
        let stale = shared.producer(&topic, 0, &limit);
        // The producer's one job waits for a broker that never answers.
        let (held, mut held_answer) = answered_job(0, (0..10).map(|_| vec![b'x'; 100]));
        stale.send(held).map_err(|_| "open").expect("queued");
        tokio::time::sleep(Duration::from_secs(61)).await;
        settle().await;
        assert!(stale.is_closed(), "idle for 60 s: retired");
        assert_eq!(
            producers_in_map(shared),
            (0, 1),
            "retiring, still holding its job"
        );

        // The stale queue hands the job back; `enqueue` gives it to a new producer.
        let (job, mut answer) = empty_job();
        let Err(mpsc::error::SendError(job)) = stale.send(job) else {
            panic!("a retired producer refuses jobs");
        };
        shared.enqueue(&topic, 0, &limit, job).expect("queued");
        tokio::time::sleep(Duration::from_secs(600)).await;
        settle().await;
        assert!(
            held_answer.try_recv().is_err(),
            "the old job is not answered"
        );
        assert!(
            answer.try_recv().is_err(),
            "the new job waits for the producer before it to end"
        );
        assert_eq!(sink.producers(), 2);
        assert_eq!(producers_in_map(shared), (1, 1));
        assert_eq!(restarts.0.load(Ordering::Relaxed), 0, "no restart");
    }

    #[tokio::test]
    async fn a_group_should_encode_into_the_buffer_the_last_group_gave_back() {
        let sink = sink_of_64_kib_requests(Compression::Lz4);
        let shared = &sink.shared;
        let (mut next, mut held) = (Group::default(), VecDeque::from([job(0, 100)]));
        fill(shared, REQUEST, &mut next, &mut held);
        let capacity = next.records.capacity();
        assert!(capacity > 0);
        let (_, buffer) = std::mem::take(&mut next).seal(shared, REQUEST);
        shared.buffers.give(buffer);
        assert_eq!(shared.buffers.kept(), capacity, "kept for the next group");
        held.push_back(job(10_100, 100));
        fill(shared, REQUEST, &mut next, &mut held);
        assert_eq!(next.records.capacity(), capacity, "the same buffer");
        assert_eq!(shared.buffers.kept(), 0);
    }

    #[tokio::test]
    async fn a_group_that_does_not_compress_should_be_sealed_as_several_requests_in_order() {
        let sink = sink_of_64_kib_requests(Compression::Lz4);
        let shared = &sink.shared;
        // Lines of random bytes: lz4 cannot shrink them.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = || {
            (0..400)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect::<Vec<u8>>()
        };
        let (mut group, mut spare) = (Group::default(), EncodedRecords::default());
        let mut jobs = 0;
        while group
            .join(
                shared,
                REQUEST,
                &mut spare,
                job_of(jobs * 40_100, (0..100).map(|_| noise())),
            )
            .is_none()
        {
            jobs += 1;
        }
        assert!(
            jobs >= 4,
            "a compressed group takes more than max_batch_bytes: {jobs}"
        );
        let (sealed, _) = group.seal(shared, REQUEST);
        assert_eq!(sealed.len() as u64, jobs, "one request a job");
        for (i, part) in sealed.iter().enumerate() {
            assert!(part.records.encoded_len() <= 64 * 1024 - RECORD_BATCH_OVERHEAD);
            assert_eq!(part.records.len(), 100);
            let first = part.jobs[0].batch.lines().next().map(|(offset, _)| offset);
            assert_eq!(first, Some(i as u64 * 40_100), "in order");
        }

        // Lines that compress stay one request.
        let mut group = Group::default();
        for n in 0..jobs {
            assert!(group
                .join(shared, REQUEST, &mut spare, job(n * 10_100, 100))
                .is_none());
        }
        assert!(
            group.bytes > 64 * 1024,
            "more than a request before compression"
        );
        let (sealed, _) = group.seal(shared, REQUEST);
        assert_eq!(sealed.len(), 1);
        assert!(sealed[0].records.encoded_len() < 64 * 1024);
    }

    /// Printable bytes that lz4 cannot shrink.
    fn noise(n: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b'!' + (state % 94) as u8
            })
            .collect()
    }

    /// A job of `lines` from file offset `offset`, with the receiver of its answer.
    fn answered_job(
        offset: u64,
        lines: impl Iterator<Item = Vec<u8>>,
    ) -> (Job, oneshot::Receiver<Result<(), SinkError>>) {
        let mut job = job_of(offset, lines);
        let (ack, answer) = oneshot::channel();
        job.ack = ack;
        (job, answer)
    }

    fn offsets(batch: &Batch) -> Vec<u64> {
        batch.lines().map(|(offset, _)| offset).collect()
    }

    #[tokio::test]
    async fn prepare_should_cut_a_record_too_long_split_the_job_and_answer_for_the_parts() {
        let sink = sink_of_64_kib_requests(Compression::Lz4);
        let shared = &sink.shared;
        let long = noise(100_000);
        let lines = [vec![b'a'; 100], long.clone(), vec![b'b'; 100]];
        let (job, mut answer) = answered_job(0, lines.into_iter());
        let parts = prepare(shared, job, REQUEST);
        // The long record is cut to what a request takes with its headers and the mark.
        let all: Vec<(u64, Vec<u8>, RecordMeta)> = parts
            .iter()
            .flat_map(|p| p.batch.records().map(|(o, l, m)| (o, l.to_vec(), *m)))
            .collect();
        assert_eq!(
            all.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![0, 101, 100_102]
        );
        let (_, cut, meta) = &all[1];
        assert_eq!(meta.truncated_from, Some(100_000));
        assert!(
            long.starts_with(cut) && cut.len() > REQUEST - 400,
            "{}",
            cut.len()
        );
        // Each part fits one request, encoded.
        assert!(parts.len() > 1, "the job no longer fits one request");
        for part in &parts {
            let mut records = EncodedRecords::default();
            encode(&shared.config, &shared.node, &part.batch, &mut records).expect("encodes");
            assert!(
                records.encoded_len() <= REQUEST,
                "{}",
                records.encoded_len()
            );
        }
        // The job is answered once every part is, with the first failure if any.
        let mut acks: Vec<_> = parts.into_iter().map(|p| p.ack).collect();
        let last = acks.pop().expect("parts");
        for ack in acks {
            ack.send(Ok(())).expect("answered");
        }
        tokio::task::yield_now().await;
        assert!(answer.try_recv().is_err(), "not before the last part");
        last.send(Err(SinkError::Closed { sink: "kafka" }))
            .expect("answered");
        assert!(matches!(answer.await, Ok(Err(SinkError::Closed { .. }))));
    }

    /// A job of `lines` whose records are to be JSON values, not yet written.
    fn json_job(lines: impl Iterator<Item = Vec<u8>>) -> Job {
        let (mut job, _answer) = answered_job(0, lines);
        job.batch.json = Some(Arc::new(crate::encoding::JsonValue { merge_json: None }));
        job
    }

    #[tokio::test]
    async fn prepare_should_cut_a_json_value_inside_its_message_and_keep_it_json() {
        let sink = sink_of_64_kib_requests(Compression::Lz4);
        let shared = &sink.shared;
        // Quotes and newlines: the escaped message is far longer than the line.
        let long = "say \"hi\"\n".repeat(20_000);
        // The values written before (the old way; a value cut again) or by `prepare`.
        for written in [true, false] {
            let lines = [b"short".to_vec(), long.clone().into_bytes()];
            let mut job = json_job(lines.into_iter());
            if written {
                crate::sink::json_value::encode(&mut job.batch, &shared.node, 0);
            }
            a_json_value_cut(shared, job, &long);
        }
    }

    fn a_json_value_cut(shared: &Shared, job: Job, long: &str) {
        let parts = prepare(shared, job, REQUEST);
        let records: Vec<(Vec<u8>, RecordMeta)> = parts
            .iter()
            .flat_map(|p| p.batch.records().map(|(_, v, m)| (v.to_vec(), *m)))
            .collect();
        assert_eq!(records.len(), 2);
        let value: serde_json::Value = serde_json::from_slice(&records[1].0).expect("JSON");
        assert_eq!(value["truncated"], long.len());
        assert_eq!(value["offset"], 6);
        let message = value["message"].as_str().expect("a string");
        assert!(long.starts_with(message) && message.len() > REQUEST / 3);
        assert_eq!(records[1].1.truncated_from, Some(long.len() as u32));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&records[0].0).unwrap()["message"],
            "short"
        );
        for part in &parts {
            let mut encoded = EncodedRecords::default();
            encode(&shared.config, &shared.node, &part.batch, &mut encoded).expect("encodes");
            assert!(encoded.encoded_len() <= REQUEST);
        }
    }

    /// The JSON messages of `jobs`' records, encoded as a request carries them, and the
    /// bytes of each job's records.
    fn json_messages(shared: &Shared, jobs: &[Job]) -> (Vec<String>, Vec<usize>) {
        let (mut messages, mut sizes) = (Vec::new(), Vec::new());
        for job in jobs {
            let mut encoded = EncodedRecords::default();
            encode(&shared.config, &shared.node, &job.batch, &mut encoded).expect("encodes");
            sizes.push(encoded.encoded_len());
            for record in encoded.decode().expect("decodes") {
                let value: serde_json::Value =
                    serde_json::from_slice(&record.value.expect("a value")).expect("JSON");
                messages.push(value["message"].as_str().expect("a message").to_string());
            }
        }
        (messages, sizes)
    }

    #[tokio::test]
    async fn prepare_should_split_json_values_whose_escapes_take_them_over_a_request() {
        let sink = sink_of_64_kib_requests(Compression::Lz4);
        let shared = &sink.shared;
        // Control characters: 6 bytes each escaped (`\u0001`). Two such lines fit a
        // request by their bytes and the members, not once escaped.
        let line = vec![1u8; REQUEST / 8];
        let job = json_job([line.clone(), line.clone()].into_iter());
        let per_line = record_overhead(&shared.config, &shared.node, &job.batch);
        assert!(job.batch.bytes() + 2 * per_line < REQUEST / 2);
        let parts = prepare(shared, job, REQUEST);
        assert_eq!(parts.len(), 2, "one value a request");
        let (messages, sizes) = json_messages(shared, &parts);
        let text = String::from_utf8(line).unwrap();
        assert_eq!(messages, [text.clone(), text]);
        for size in sizes {
            assert!(size <= REQUEST && size > REQUEST / 2, "{size}");
        }
        // Lines of text go on as they are, their values written in the request.
        let job = json_job([b"GET /".to_vec(), b"\"POST\"".to_vec()].into_iter());
        let parts = prepare(shared, job, REQUEST);
        assert_eq!(parts.len(), 1);
        assert!(crate::sink::json_value::pending(&parts[0].batch));
        assert_eq!(json_messages(shared, &parts).0, ["GET /", "\"POST\""]);
    }

    #[tokio::test]
    async fn a_group_should_hand_back_a_json_job_whose_escapes_take_it_over_a_request() {
        let sink = sink_of_64_kib_requests(Compression::None);
        let shared = &sink.shared;
        let text = json_job([vec![b'a'; REQUEST / 2]].into_iter());
        // Fits beside the first by its bytes and members, not once escaped (6 × each).
        let controls = json_job([vec![2u8; REQUEST / 8]].into_iter());
        let mut group = Group::default();
        assert!(group.add(shared, REQUEST, text).is_none());
        let before = group.records.encoded_len();
        let back = group.add(shared, REQUEST, controls).expect("handed back");
        assert_eq!(group.jobs.len(), 1);
        assert_eq!(group.records.encoded_len(), before, "its records taken out");
        assert!(crate::sink::json_value::pending(&back.batch));
        let mut next = Group::default();
        assert!(next.add(shared, REQUEST, back).is_none());
        assert!(next.records.encoded_len() <= REQUEST);
    }

    #[tokio::test]
    async fn prepare_should_drop_records_whose_headers_alone_exceed_a_request() {
        let sink = sink_of_64_kib_requests(Compression::Lz4);
        let lines = [b"one".to_vec(), b"two".to_vec()];
        let (job, answer) = answered_job(40, lines.into_iter());
        // Room for less than a record's headers: nothing is left to ship.
        assert!(prepare(&sink.shared, job, 50).is_empty());
        assert!(matches!(answer.await, Ok(Ok(()))), "answered at once");
    }

    #[tokio::test]
    async fn a_max_line_of_noise_should_go_as_one_request_within_the_default_limit() {
        // The defaults of issue #23: max_line_bytes = max_batch_bytes = 1 MiB, lz4, and a
        // broker limit of 1 MiB (tansu's, or the fallback).
        let sink = KafkaSink::new(
            KafkaConfig::default(),
            "node-1".into(),
            Arc::new(NoEvents),
            Network::current(),
        );
        let shared = &sink.shared;
        let request =
            Limit::records_bytes(super::super::limit::FALLBACK_MESSAGE_BYTES, &shared.config);
        let (job, _answer) = answered_job(0, [noise(1 << 20)].into_iter());
        let mut held: VecDeque<Job> = prepare(shared, job, request).into();
        assert_eq!(held.len(), 1);
        let (mut group, mut spare) = (Group::default(), EncodedRecords::default());
        group.join_held(shared, request, &mut spare, &mut held);
        let (sealed, _) = group.seal(shared, request);
        assert_eq!(sealed.len(), 1);
        // lz4 grows noise: it goes uncompressed, within the limit.
        assert!(sealed[0].records.encoded_len() <= request);
        assert_eq!(sealed[0].records.len(), 1);
    }

    #[tokio::test]
    async fn a_refused_request_should_be_regrouped_within_the_lower_limit_in_order() {
        let sink = sink_of_64_kib_requests(Compression::None);
        let shared = &sink.shared;
        let (mut jobs, mut answers) = (Vec::new(), Vec::new());
        for n in 0..3 {
            let (job, answer) = answered_job(n * 10_100, (0..100).map(|_| vec![b'x'; 100]));
            jobs.push(job);
            answers.push(answer);
        }
        // The broker refused the three (about 54 KB) as one request: 8 KiB requests now.
        let request = 8 * 1024 - RECORD_BATCH_OVERHEAD;
        let sealed = regroup(shared, jobs, request);
        assert!(sealed.len() >= 6, "{} requests", sealed.len());
        let mut shipped = Vec::new();
        for group in &sealed {
            assert!(group.records.encoded_len() <= request);
            shipped.extend(group.jobs.iter().flat_map(|job| offsets(&job.batch)));
        }
        let want: Vec<u64> = (0..300).map(|i| i * 101).collect();
        assert_eq!(shipped, want, "every record once, in order");
        for group in sealed {
            for job in group.jobs {
                job.ack.send(Ok(())).expect("answered");
            }
        }
        for answer in answers {
            assert!(matches!(answer.await, Ok(Ok(()))));
        }
    }
}
