//! Reading an open file into batches: positional reads into the thread's read buffer, the
//! framer and decoder, submission to the sink, and the acknowledgements that move the
//! checkpoint (through `InFlight`, which owns every checkpoint move).

use super::copies::Undecided;
use super::deleted::Handle;
use super::files::Held;
use super::fingerprint::FileIdentity;
use super::inflight::{InFlight, Settled};
use super::missed::Born;
use super::throttle::{Allowance, Limiter};
use super::watch::Busy;
use super::TailError;
use crate::format::filter::{Filter, Filtered};
use crate::format::framer::Framer;
use crate::format::Decoder;
use crate::record::{Batch, PodMeta};
use crate::sink::SinkError;
use crate::spec::{TailerId, TailerSettings};
use crate::telemetry::TailerProgress;
use crate::throttle::OnLimit;
use std::fs::Metadata;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::Poll;

/// Bytes read per `read` call, at most: the size of the read buffer.
const READ_CHUNK: usize = 128 * 1024;

thread_local! {
    /// The read buffer of every tailer running on this thread. A chunk is read and framed
    /// into its batch without an await in between, so one buffer per thread serves them
    /// all, and an idle file holds none. Each tailer had its own, 8 KiB and up: 80 MB of
    /// the agent's 230 MB at 10,000 files, and 128 KiB for good once a backlog had grown
    /// it (`catching_up_on_many_files_leaves_no_memory_behind`). Page-aligned by jemalloc
    /// (a large size class), as the kernel's copy from the page cache wants ("Aligning
    /// the read buffer", BENCHMARKS.md).
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// A batch is submitted once it holds this much (or at EOF).
const BATCH_BYTES: usize = 512 * 1024;
/// The most a batch being filled holds: it is submitted after the chunk that crosses
/// `BATCH_BYTES`.
const BATCH_HELD_BYTES: usize = BATCH_BYTES + READ_CHUNK;
const BATCH_LINES: usize = 16 * 1024;
/// Bytes read per turn before yielding, so that one busy file does not starve others.
pub const TURN_BYTES: u64 = 4 * 1024 * 1024;

/// How many tailers may fill a batch at once (`TailerContext::filling`): a sixteenth of
/// the sink's `max_in_flight_bytes` in batches, at least 2 and at most 16. A tailer holds
/// its batch until the sink took it, and the sink takes it only once there is room in
/// flight: without a bound, catching up after an outage, every tailer with a backlog held
/// a full batch beside the budget (410 tailers, 260 MB at the soak's resume; test
/// `catching_up_on_many_files_through_kafka_stays_within_the_in_flight_budget`). Reading
/// is not what limits throughput there, the sink is: a few batches ready are enough.
pub fn filling_permits(max_in_flight_bytes: u64) -> usize {
    let batches = max_in_flight_bytes / 16 / BATCH_HELD_BYTES as u64;
    batches.clamp(2, 16) as usize
}

/// A file a tailer holds open.
pub struct OpenFile {
    /// Closed under us once deleted beyond the bounds (`tail/deleted.rs`); holds the
    /// claim that no other tailer on this topic reads the file while we do (released
    /// with the descriptor).
    pub file: Handle,
    pub identity: FileIdentity,
    /// When the file was created (device, inode, birth time): files rotated away after
    /// it are those born since (`tail/missed.rs`). `None` without birth times.
    pub born: Option<Born>,
    pub framer: Framer,
    /// Parses, joins and aggregates lines; `None` for raw lines (the fast path).
    pub decoder: Option<Box<Decoder>>,
}

impl Held for OpenFile {
    fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// Never once closed at the deleted-file bounds (its inode number may be a new
    /// file's at once), nor a file born at another time.
    fn is(&self, meta: &Metadata) -> bool {
        !self.file.is_released()
            && self.identity.same_file(meta)
            && self.born.is_none_or(|born| born.is(meta))
    }

    fn same_as(&self, other: &Self) -> bool {
        !self.file.is_released()
            && !other.file.is_released()
            && self.identity.same_file_as(&other.identity)
            && self.born.map(|b| b.at) == other.born.map(|b| b.at)
    }
}

impl OpenFile {
    /// Where a restart must resume: after the last complete line, but before any record
    /// the decoder still holds.
    fn committed(&mut self) -> u64 {
        let framed = self.framer.committed();
        match self.decoder.as_mut().and_then(|d| d.pending_start()) {
            Some(pending) => pending.min(framed),
            None => framed,
        }
    }

    /// Identifies the file again from what it holds now.
    pub fn identify(&self) -> io::Result<FileIdentity> {
        self.file.identify()
    }

    pub fn has_pending_record(&mut self) -> bool {
        self.decoder
            .as_mut()
            .is_some_and(|d| d.pending_start().is_some())
    }

    /// Starts over at offset 0 after a truncation, under the identity of what the file
    /// holds now; returns the identity it had and the offset it was submitted up to.
    pub fn restart(&mut self) -> io::Result<(FileIdentity, u64)> {
        let before = (self.identity, self.file.submitted());
        self.identity = self.identify()?;
        self.framer.reset(0);
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.reset();
        }
        self.file.set_submitted(0);
        Ok(before)
    }
}

/// What reading needs besides the files: the tailer's identity and settings, the shared
/// context, and the batches in flight (the read buffer is the thread's, `READ_BUF`).
pub struct Reader {
    pub id: TailerId,
    /// Shared with the reconcile loop and the other files of the declaration.
    pub settings: Arc<TailerSettings>,
    pub ctx: Arc<super::TailerContext>,
    pub progress: Arc<TailerProgress>,
    pub busy: Arc<Busy>,
    /// The compiled `multiline.start_pattern`, cloned into each file's decoder.
    pub start_pattern: Option<regex::bytes::Regex>,
    /// The pod of a container log file (from its name), on every batch.
    pod: Option<Arc<PodMeta>>,
    /// The declaration's line filters, compiled; `None` without any.
    filter: Option<Box<Filter>>,
    /// Records the filters dropped since `submit` last reported them.
    filtered: Filtered,
    /// When a pending multiline record of the file read times out: an idle wait ends by
    /// then.
    pub deadline: Option<tokio::time::Instant>,
    /// The file being followed: `/status` shows its offset, not a lingering file's.
    pub current: Option<FileIdentity>,
    /// The new file at the path that may be a copy still being written.
    pub undecided: Undecided,
    /// Batches in flight and every move of the checkpoints.
    pub inflight: InFlight,
    /// The bucket of the declaration's `throttle`.
    pub throttle: Option<Box<Limiter>>,
    /// The last turn stopped at an empty bucket (`on_limit: pause`): when to read again.
    pub paused_until: Option<tokio::time::Instant>,
    /// The last turn read to the end of the file as it was then (a read came back short
    /// or empty): no need to read again before looking at the path.
    pub at_end: bool,
    /// The size of the file as the last turn's short read found it (at the framer's
    /// position then): not truncated at that moment, so [`check`](Self::check) needs no
    /// `fstat` (one a wake-up, BENCHMARKS.md). `None` after a turn that read nothing.
    pub size_seen: Option<u64>,
    /// The sink had what this tailer's topic needs (`Sink::prepare`) once: not asked
    /// again (a refresh later is the sink's own, within `submit`).
    prepared: bool,
    /// The file is read on a thread of its own (a network filesystem, `tail/remote.rs`),
    /// where a read may hang for good: it takes no permit to fill a batch, or a few hung
    /// files would hold every one (`tests/hung_filesystem.rs`).
    pub own_thread: bool,
    /// The mean record length of the last batch submitted: how many records a read of a
    /// few lines makes room for at once.
    record_bytes: u32,
}

impl Reader {
    pub fn new(
        id: TailerId,
        settings: Arc<TailerSettings>,
        ctx: Arc<super::TailerContext>,
        progress: Arc<TailerProgress>,
    ) -> Self {
        let inflight = InFlight::new(
            id.topic.clone(),
            id.path.clone(),
            ctx.checkpoints.clone(),
            ctx.events.clone(),
        );
        let parsing = &settings.parsing;
        // Validated by the config and etcd parsers; a pattern that fails here anyway
        // turns multiline off rather than the tailer.
        let start_pattern = parsing.multiline.as_ref().and_then(|m| m.regex().ok());
        let pod = (!parsing.format.is_raw())
            .then(|| PodMeta::from_file(&id.path))
            .flatten()
            .map(Arc::new);
        // Validated by the config and etcd parsers too; filters that fail here anyway
        // ship every record rather than drop what they were not meant to.
        let filter = settings.filters.compile().unwrap_or_else(|(field, message)| {
            tracing::error!(%field, %message, "line filters do not compile; shipping every record");
            None
        });
        // Both boxed: few files have them, and every tailer would hold their room (270 B
        // a file; BENCHMARKS.md).
        let filter = filter.map(Box::new);
        let throttle = settings
            .throttle
            .as_ref()
            .map(|t| Box::new(ctx.throttles.limiter(&id.topic, t, &id.path)));
        Reader {
            id,
            settings,
            ctx,
            progress,
            busy: Arc::default(),
            start_pattern,
            pod,
            filter,
            filtered: Filtered::default(),
            deadline: None,
            current: None,
            undecided: Undecided::default(),
            inflight,
            throttle,
            paused_until: None,
            at_end: false,
            size_seen: None,
            prepared: false,
            own_thread: false,
            record_bytes: 128,
        }
    }

    /// Reads up to `TURN_BYTES`, submitting batches as they fill, within the throttle:
    /// a turn stopped at its empty bucket sets `paused_until`. Returns bytes read.
    pub async fn read_turn(&mut self, open: &mut OpenFile) -> Result<u64, TailError> {
        self.read(open, true).await
    }

    /// [`read_turn`](Self::read_turn) past the throttle, charged to its bucket.
    pub async fn read_unthrottled(&mut self, open: &mut OpenFile) -> Result<u64, TailError> {
        self.read(open, false).await
    }

    /// What may be read now under a pausing throttle (`None`: no limit), or when to look
    /// again; `throttled` false reads on regardless, counting what it reads.
    fn allowance(&self, throttled: bool) -> Result<Option<Allowance>, tokio::time::Instant> {
        let Some(limiter) = self.throttle.as_deref() else {
            return Ok(None);
        };
        match (limiter.on_limit, throttled) {
            (OnLimit::Drop, _) => Ok(None),
            (OnLimit::Pause, true) => limiter.allowance(tokio::time::Instant::now()).map(Some),
            (OnLimit::Pause, false) => Ok(Some(limiter.unlimited())),
        }
    }

    async fn read(&mut self, open: &mut OpenFile, throttled: bool) -> Result<u64, TailError> {
        if !self.prepared {
            if let Some(prepared) = self.ctx.sink.prepare(&self.id.topic) {
                busy_unless_ready(&self.busy, prepared).await;
            }
            self.prepared = true;
        }
        // Held until the sink took the turn's last batch, its wait for room in flight
        // included (`filling_permits`). The semaphore is never closed.
        let _filling = match self.own_thread {
            true => None,
            false => {
                let filling = self.ctx.filling.clone();
                busy_unless_ready(&self.busy, filling.acquire_owned())
                    .await
                    .ok()
            }
        };
        self.paused_until = None;
        self.at_end = false;
        self.size_seen = None;
        let mut batch = self.new_batch();
        let mut read = 0u64;
        while read < TURN_BYTES {
            let allowance = match self.allowance(throttled) {
                Ok(allowance) => allowance,
                Err(until) => {
                    self.paused_until = Some(until);
                    break;
                }
            };
            // Read and framed without an await in between: the thread's buffer is free
            // again before anything else runs on this thread.
            let n = READ_BUF
                .with_borrow_mut(|buf| self.read_chunk(buf, open, &mut batch, allowance))?;
            let Some(n) = n else {
                self.at_end = true;
                break;
            };
            read += n as u64;
            if batch.bytes() >= BATCH_BYTES || batch.len() >= BATCH_LINES {
                let full = std::mem::replace(&mut batch, self.new_batch());
                self.submit(full, open).await?;
            }
            if self.at_end {
                break;
            }
        }
        if let Some(decoder) = open.decoder.as_mut() {
            decoder.flush_expired(tokio::time::Instant::now(), &mut batch);
            self.deadline = decoder.deadline();
            self.count_decoded(open);
        }
        self.submit(batch, open).await?;
        Ok(read)
    }

    /// One positional read into `buf` at the framer's position, up to what `allowance`
    /// lets through, framed into `batch`; `None` when the read found the end of the file.
    /// Sets `at_end` when the read came back short and every byte read was taken.
    fn read_chunk(
        &mut self,
        buf: &mut [u8],
        open: &mut OpenFile,
        batch: &mut Batch,
        allowance: Option<Allowance>,
    ) -> Result<Option<usize>, TailError> {
        let room = allowance
            .and_then(|a| a.bytes)
            .map_or(buf.len(), |bytes| buf.len().min(bytes as usize));
        // Blocking positional read: regular files answer from the page cache in
        // microseconds, which costs less than a thread hop per chunk.
        let n = open
            .file
            .read_at(&mut buf[..room], open.framer.position())
            .map_err(|source| self.read_error(source))?;
        if n == 0 {
            return Ok(None);
        }
        // Shorter than asked: the end of the file as it is now (what is written after
        // raises a notification, or the next poll finds it).
        let short = n < room;
        // Under a throttle, up to the last line the bucket allows (the rest is read
        // again next time: reads are positional).
        let whole = n;
        let n = match (allowance, self.throttle.as_deref()) {
            (Some(allowance), Some(limiter)) => {
                let (n, lines) = allowance.prefix(&buf[..n]);
                limiter.charge(lines, n as u64, tokio::time::Instant::now());
                n
            }
            _ => n,
        };
        // At the end only when the bucket took every byte read.
        self.at_end = short && n == whole;
        if batch.is_empty() {
            if n == READ_CHUNK {
                // A busy file fills this batch: size it once, with one chunk of slack (the
                // batch is submitted after the chunk that crosses BATCH_BYTES).
                batch.reserve(BATCH_HELD_BYTES, 64, false);
            } else {
                // A few lines: room for what was read at once, rather than doubling up
                // from nothing (six reallocations for a read of five lines).
                let decoded = open.decoder.is_some();
                batch.reserve(n, self.record_bytes as usize, decoded);
            }
        }
        let mut truncated = 0u64;
        match (open.decoder.as_mut(), &self.filter) {
            (None, None) => open.framer.push(&buf[..n], &mut |line| {
                truncated += line.truncated as u64;
                batch.push(line.offset, line.bytes);
            }),
            // Raw lines are whole records: filtered as they are framed.
            (None, Some(filter)) => open.framer.push(&buf[..n], &mut |line| {
                truncated += line.truncated as u64;
                if filter.keeps(line.bytes, &mut self.filtered) {
                    batch.push(line.offset, line.bytes);
                }
            }),
            (Some(decoder), _) => {
                let now = tokio::time::Instant::now();
                open.framer.push(&buf[..n], &mut |line| {
                    truncated += line.truncated as u64;
                    decoder.line(line, now, batch);
                });
            }
        }
        for _ in 0..truncated {
            self.ctx.events.line_truncated(&self.id.topic);
        }
        if self.at_end {
            self.size_seen = Some(open.framer.position());
        }
        Ok(Some(n))
    }

    /// Reads the file to its end, turn after turn, whatever the throttle says (a file
    /// finished at rotation or at stop is not left unread); its bucket is charged.
    pub async fn read_all(&mut self, open: &mut OpenFile) -> Result<(), TailError> {
        // Reading on to the end, the tailer does not look at its path meanwhile.
        self.busy.set(true);
        while self.read_unthrottled(open).await? > 0 {}
        Ok(())
    }

    /// Ships a file's held partial line and pending record, waits for every
    /// acknowledgement, and only then lets the caller close it and release its claim: a
    /// tailer that reaches the file under its new name resumes after the last line
    /// shipped here.
    pub async fn finish(&mut self, open: &mut OpenFile) -> Result<(), TailError> {
        let mut batch = self.new_batch();
        let now = tokio::time::Instant::now();
        if open.file.is_released() {
            // Closed at the deleted-file bounds: what was not submitted is counted lost,
            // a partial last line or pending record included.
            return self.drain().await;
        }
        match open.decoder.as_mut() {
            None => open.framer.finish(&mut |line| {
                let filter = self.filter.as_deref();
                if filter.is_none_or(|f| f.keeps(line.bytes, &mut self.filtered)) {
                    batch.push(line.offset, line.bytes);
                }
            }),
            Some(decoder) => {
                open.framer
                    .finish(&mut |line| decoder.line(line, now, &mut batch));
                decoder.finish(now, &mut batch);
            }
        }
        self.count_decoded(open);
        self.submit(batch, open).await?;
        self.drain().await
    }

    /// Ships the records the file's decoder holds for multiline joining (fragments of an
    /// unfinished line stay: the checkpoint before them joins them after restart).
    pub async fn flush_at_shutdown(&mut self, open: &mut OpenFile) -> Result<(), TailError> {
        let Some(decoder) = open.decoder.as_mut() else {
            return Ok(());
        };
        let mut batch = self.new_batch();
        decoder.flush_multiline(&mut batch);
        self.submit(batch, open).await
    }

    /// Reports what the decoder counted (parse errors, cuts) to the metrics.
    fn count_decoded(&self, open: &mut OpenFile) {
        let Some(decoder) = open.decoder.as_mut() else {
            return;
        };
        let counts = decoder.take_counts();
        let topic = &self.id.topic;
        let events = &self.ctx.events;
        for _ in 0..counts.cri_errors {
            events.parse_error(topic, "cri");
        }
        for _ in 0..counts.docker_errors {
            events.parse_error(topic, "docker");
        }
        for _ in 0..counts.truncated {
            events.line_truncated(topic);
        }
        for _ in 0..counts.multiline_cut {
            events.multiline_cut(topic);
        }
        for _ in 0..counts.unfinished {
            events.unfinished_record(topic);
        }
    }

    /// Hands a batch to the sink (waiting while too much is in flight) and queues its ack.
    /// An empty batch still queues a checkpoint advance when the framer moved on: the
    /// records filtered out are passed like those shipped.
    async fn submit(&mut self, mut batch: Batch, open: &mut OpenFile) -> Result<(), TailError> {
        if let (Some(filter), Some(_)) = (&self.filter, &open.decoder) {
            // Decoded records are whole only now (joined fragments and lines).
            filter.apply(&mut batch, &mut self.filtered);
        }
        self.count_read(&batch);
        if !batch.is_empty() {
            let mean = batch.bytes() / batch.len();
            self.record_bytes = mean.clamp(16, 64 * 1024) as u32;
        }
        let end = open.committed();
        if batch.is_empty() && end == open.file.submitted() {
            return Ok(());
        }
        self.drop_over_limit(&mut batch);
        while self.inflight.is_full() {
            self.busy.set(true);
            if let Some(done) = self.inflight.next().await {
                self.on_ack(done)?;
            }
        }
        if open.identity.can_grow(end) {
            // The checkpoint names the file by as many of its first bytes as it has:
            // fewer would let another file that starts alike take its place.
            if let Ok(grown) = open.identify() {
                open.identity = grown;
            }
        }
        let identity = open.identity;
        if !open.file.submit(end) {
            // Closed at the deleted-file bounds while the batch waited for room in
            // flight: the release counted it lost with the rest of the file, so it is
            // not shipped (never both).
            return Ok(());
        }
        if batch.is_empty() {
            self.inflight.advance(identity, end);
            return Ok(());
        }
        if self.settings.fallback.is_some() {
            self.ctx
                .events
                .topic_fallback(&self.id.topic, batch.len() as u64);
        }
        let records = batch.len() as u64;
        let ack = busy_unless_ready(&self.busy, self.ctx.sink.submit(batch))
            .await
            .map_err(|source| self.sink_error(source))?;
        self.inflight.push(identity, end, records, ack);
        Ok(())
    }

    /// Reports the records read into `batch` and those filtered out before it (all read).
    fn count_read(&mut self, batch: &Batch) {
        let filtered = std::mem::take(&mut self.filtered);
        let lines = batch.len() as u64 + filtered.records();
        if lines == 0 {
            return;
        }
        let bytes = batch.bytes() as u64 + filtered.bytes;
        let events = &self.ctx.events;
        events.lines_read(&self.id.topic, lines, bytes);
        for (reason, records) in filtered.by_reason() {
            events.records_filtered(&self.id.topic, reason.as_str(), records);
        }
        self.progress.line_seen();
    }

    /// `on_limit: drop`: removes the records over the throttle, counted; the checkpoint
    /// moves past them with the batch (or alone, when none is left).
    fn drop_over_limit(&self, batch: &mut Batch) {
        let Some(limiter) = self.throttle.as_deref() else {
            return;
        };
        if limiter.on_limit != OnLimit::Drop {
            return;
        }
        let dropped = limiter.retain(batch, tokio::time::Instant::now());
        if dropped > 0 {
            self.ctx
                .events
                .records_dropped(&self.id.topic, "throttled", dropped);
        }
    }

    /// A settled batch: `/status` shows its offset when it is of the followed file.
    pub fn on_ack(&self, done: Result<Settled, SinkError>) -> Result<(), TailError> {
        let settled = done.map_err(|source| self.sink_error(source))?;
        if self
            .current
            .is_none_or(|file| file.same_file_as(&settled.file))
        {
            self.progress.set_acked(settled.end);
        }
        Ok(())
    }

    pub fn collect_acks(&mut self) -> Result<(), TailError> {
        while let Some(done) = self.inflight.try_next() {
            self.on_ack(done)?;
        }
        Ok(())
    }

    /// Waits for every batch in flight to be settled.
    pub async fn drain(&mut self) -> Result<(), TailError> {
        if !self.inflight.is_empty() {
            // Waiting for the sink is not looking at the path: the watch task does.
            self.busy.set(true);
        }
        while let Some(done) = self.inflight.next().await {
            self.on_ack(done)?;
        }
        Ok(())
    }

    fn new_batch(&self) -> Batch {
        let mut batch = Batch::new(self.id.topic.clone(), self.id.path.clone());
        batch.pod = self.pod.clone();
        if !self.settings.labels.is_empty() {
            batch.labels = Some(self.settings.labels.clone());
        }
        if !self.settings.fields.is_empty() {
            batch.fields = Some(self.settings.fields.clone());
        }
        batch.key = self.settings.key.clone();
        batch.json = self.settings.json.clone();
        batch
    }

    /// Starts `open` over at 0 after a truncation (nothing of it in flight), under the
    /// identity of what it holds now: a restart must recognise it, and a copy of the old
    /// content resume where it ended. Counted as a truncation.
    pub fn start_over(&mut self, open: &mut OpenFile) -> io::Result<()> {
        let (before, submitted) = open.restart()?;
        self.inflight.truncated(before, submitted, open.identity);
        self.ctx.events.file_truncated(&self.id.topic);
        Ok(())
    }

    pub fn read_error(&self, source: io::Error) -> TailError {
        TailError::Read {
            path: self.id.path.to_path_buf(),
            source,
        }
    }

    fn sink_error(&self, source: SinkError) -> TailError {
        self.ctx.events.send_error(&self.id.topic, "sink");
        TailError::Sink {
            path: self.id.path.to_path_buf(),
            source,
        }
    }
}

/// Awaits `future`; if it has to wait (for the sink, for a permit), the tailer is busy
/// meanwhile: it looks at nothing, so its watch task looks at the path for it
/// (`tests/faults.rs` `a_container_rotated_while_other_files_hold_every_permit_to_fill_…`).
/// A read that does not wait is not: the tailer looks at the path itself at the end of
/// the file, and telling the watch task would cost it a wake-up and a timer a write.
async fn busy_unless_ready<F: Future>(busy: &Busy, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = futures::poll!(future.as_mut()) {
        return output;
    }
    busy.set(true);
    future.await
}
