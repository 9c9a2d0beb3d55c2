//! The tailer task. Reads with positional reads into one reusable buffer, frames lines,
//! submits batches, and advances the checkpoint only to the end of the last line whose
//! batch — and every batch before it — the sink acknowledged.

use super::checkpoint::Checkpoints;
use super::claims::{Claim, Claims};
use super::copies::{self, Undecided, Verdict};
use super::fingerprint::FileIdentity;
use super::inflight::{InFlight, Settled};
use super::parking::Parked;
use super::rotated;
use super::wakeup::{Registration, Wakeups};
use super::watch::{self, Busy, PathWatch};
use crate::config::StartAt;
use crate::format::framer::Framer;
use crate::format::Decoder;
use crate::ports::Events;
use crate::record::{Batch, PodMeta};
use crate::sink::{Sink, SinkError};
use crate::spec::{TailerId, TailerSettings};
use crate::telemetry::{TailerProgress, TailerState};
use std::collections::VecDeque;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Bytes read per `read` call, at most; a tailer's buffer starts at `FIRST_READ_CHUNK`
/// and doubles each time a read fills it, so that thousands of quiet files do not each
/// hold (and touch, zeroing it) the full size.
const READ_CHUNK: usize = 128 * 1024;
const FIRST_READ_CHUNK: usize = 8 * 1024;
/// A batch is submitted once it holds this much (or at EOF).
const BATCH_BYTES: usize = 512 * 1024;
const BATCH_LINES: usize = 16 * 1024;
/// Bytes read per turn before yielding, so that one busy file does not starve others.
const TURN_BYTES: u64 = 4 * 1024 * 1024;
/// The longest an idle tailer waits between looks at its file without notifications.
const MAX_IDLE_POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// The same with notifications (local filesystems): the look is only a safety net then,
/// and each one costs every idle file a wake-up and two stats (idle CPU at 10,000 files:
/// BENCHMARKS.md).
const MAX_IDLE_POLL_NOTIFIED: std::time::Duration = std::time::Duration::from_secs(300);
/// Idle waits before an idle file may be closed for others (`tail.max_open_files`).
const IDLE_TURNS_BEFORE_CLOSING: u32 = 2;
/// Files held at once: the one being read plus newer ones found at the path while busy.
const MAX_QUEUED_FILES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Sink {
        path: PathBuf,
        #[source]
        source: SinkError,
    },
}

/// What all tailers share.
pub struct TailerContext {
    pub sink: Arc<dyn Sink>,
    pub checkpoints: Arc<Checkpoints>,
    pub events: Arc<dyn Events>,
    pub claims: Arc<Claims>,
    pub wakeups: Arc<Wakeups>,
    /// `tail.max_open_files` permits.
    pub open_files: Arc<Semaphore>,
}

/// The file a tailer currently reads.
struct OpenFile {
    file: File,
    identity: FileIdentity,
    framer: Framer,
    /// Parses, joins and aggregates lines; `None` for raw lines (the fast path).
    decoder: Option<Box<Decoder>>,
    /// The offset covered by the last submitted batch (or checkpoint-only entry).
    submitted: u64,
    /// No other tailer on this topic reads this file while we hold it.
    _claim: Claim,
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
    fn identify(&self) -> io::Result<FileIdentity> {
        FileIdentity::of(&self.file, &self.file.metadata()?)
    }

    fn has_pending_record(&mut self) -> bool {
        self.decoder
            .as_mut()
            .is_some_and(|d| d.pending_start().is_some())
    }
}

/// A file renamed away, read to its end: the writer may not have reopened its log yet
/// (logrotate renames and creates the new file before the application is told), so the
/// old file is looked at every poll interval until it has been quiet for
/// `tail.rotate_wait`, and only then finished (its partial last line shipped) and closed.
struct Lingering {
    open: OpenFile,
    /// The last time it grew (or was finished reading).
    quiet_since: tokio::time::Instant,
    next_look: tokio::time::Instant,
}

/// The outcome of opening the path.
enum Opened {
    File(OpenFile),
    Missing,
    /// Another tailer on the topic reads this file under another name.
    Claimed(TailerId),
    /// A new file that may be a copy still being written (why): looked at again later.
    Undecided(&'static str),
}

/// What the path names now compared with the open file.
enum Change {
    None,
    Truncated,
    /// Renamed away or deleted: finish the open file, then move on.
    Gone,
}

pub struct Tailer {
    id: TailerId,
    settings: TailerSettings,
    ctx: Arc<TailerContext>,
    progress: Arc<TailerProgress>,
    buf: Vec<u8>,
    busy: Arc<Busy>,
    /// Set while running: notifications for the path.
    wakeup: Option<Registration>,
    /// Idle waits in a row without data; sets the polling backoff.
    idle_streak: u32,
    /// This tailer's share of `tail.max_open_files` while it holds a file open.
    permit: Option<OwnedSemaphorePermit>,
    /// The file closed while idle, to be reopened by identity when the path changes.
    parked: Option<Parked>,
    /// The compiled `multiline.start_pattern`, cloned into each file's decoder.
    start_pattern: Option<regex::bytes::Regex>,
    /// The pod of a container log file (from its name), on every batch.
    pod: Option<Arc<PodMeta>>,
    /// When a pending multiline record times out: an idle wait ends by then.
    deadline: Option<tokio::time::Instant>,
    /// Files renamed away that a writer may still append to, oldest first.
    lingering: VecDeque<Lingering>,
    /// The file being followed: `/status` shows its offset, not a lingering file's.
    current: Option<FileIdentity>,
    /// The new file at the path that may be a copy still being written.
    undecided: Undecided,
    /// Batches in flight and every move of the checkpoints.
    inflight: InFlight,
}

impl Tailer {
    pub fn new(
        id: TailerId,
        settings: TailerSettings,
        ctx: Arc<TailerContext>,
        progress: Arc<TailerProgress>,
    ) -> Self {
        let inflight = InFlight::new(id.topic.clone(), id.path.clone(), ctx.checkpoints.clone());
        let parsing = &settings.parsing;
        // Validated by the config and etcd parsers; a pattern that fails here anyway
        // turns multiline off rather than the tailer.
        let start_pattern = parsing.multiline.as_ref().and_then(|m| m.regex().ok());
        let pod = (!parsing.format.is_raw())
            .then(|| PodMeta::from_path(&id.path))
            .flatten()
            .map(Arc::new);
        Tailer {
            id,
            settings,
            ctx,
            progress,
            buf: vec![0; FIRST_READ_CHUNK],
            busy: Arc::default(),
            wakeup: None,
            idle_streak: 0,
            permit: None,
            parked: None,
            start_pattern,
            pod,
            deadline: None,
            lingering: VecDeque::new(),
            current: None,
            undecided: Undecided::default(),
            inflight,
        }
    }

    /// Follows the file until `stop`, then lets in-flight batches be acknowledged and
    /// checkpointed before returning.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), TailError> {
        self.wakeup = Some(self.ctx.wakeups.register(&self.id.path));
        let mut files = self.rotated_while_away();
        let mut watch = watch::spawn(
            self.id.path.clone(),
            self.settings.poll_interval,
            self.busy.clone(),
            MAX_QUEUED_FILES,
        );
        let mut followed = self.follow(&stop, &mut files, &mut watch).await;
        if followed.is_ok() {
            followed = self.flush_at_shutdown(&mut files).await;
        }
        // A stopped tailer may not be started again (its declaration removed): ship what
        // renamed files hold (a partial last line, a pending record) rather than leave it.
        while let Some(mut file) = self.lingering.pop_front() {
            if followed.is_err() {
                break;
            }
            followed = self.finish(&mut file.open).await;
        }
        let drained = self.drain().await;
        // Claims are released only now, once the acknowledged offsets are checkpointed.
        drop(files);
        followed.and(drained)
    }

    /// Reads the front of `files` (the oldest); the back is what the path names now.
    async fn follow(
        &mut self,
        stop: &CancellationToken,
        files: &mut VecDeque<OpenFile>,
        watch: &mut PathWatch,
    ) -> Result<(), TailError> {
        // A file found rotated away means the one at the path is new since: read it all.
        let mut first_open = files.is_empty();
        while !stop.is_cancelled() {
            self.current = files.front().map(|f| f.identity);
            self.collect_acks()?;
            self.look_at_lingering().await?;
            while let Ok(file) = watch.found.try_recv() {
                self.enqueue(files, file);
            }
            self.busy.set_newest(files.back().map(|f| f.identity));
            let Some(open) = files.front_mut() else {
                if let Some(parked) = self.parked {
                    if !parked.changed(&self.id.path) {
                        self.idle(stop).await?;
                        continue;
                    }
                }
                let missing = std::fs::metadata(&self.id.path)
                    .is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
                if missing && self.parked.is_none() {
                    // No slot needed to wait for a file to appear.
                    self.progress
                        .set_state(TailerState::Waiting, Some("file does not exist".into()));
                    self.idle(stop).await?;
                    continue;
                }
                if !self.take_permit(stop).await {
                    continue;
                }
                if self.parked.take().is_some() {
                    // Reopen by identity: the file may have been renamed while closed.
                    files.extend(self.rotated_while_away());
                    if !files.is_empty() {
                        continue;
                    }
                }
                match self.open_path(first_open)? {
                    Opened::File(file) => {
                        first_open = false;
                        files.push_back(file);
                    }
                    Opened::Missing => {
                        self.permit = None;
                        self.progress
                            .set_state(TailerState::Waiting, Some("file does not exist".into()));
                        self.idle(stop).await?;
                    }
                    Opened::Undecided(why) => {
                        self.permit = None;
                        self.progress
                            .set_state(TailerState::Waiting, Some(why.to_string()));
                        // Look again each poll: the copy grows while logrotate writes it.
                        self.idle_streak = 0;
                        self.idle(stop).await?;
                    }
                    Opened::Claimed(owner) => {
                        self.permit = None;
                        let reason = format!("the file is being finished by tailer {owner}");
                        self.progress.set_state(TailerState::Waiting, Some(reason));
                        // Nothing tells us when the claim is released (a rotated file
                        // lingers for `rotate_wait`): keep looking every few intervals.
                        self.idle_streak = self.idle_streak.min(2);
                        self.idle(stop).await?;
                    }
                }
                continue;
            };
            if self.read_turn(open).await? > 0 {
                self.idle_streak = 0;
                tokio::task::yield_now().await;
                continue;
            }
            if files.len() > 1 {
                self.finish_front(files).await?;
                continue;
            }
            let open = files.front_mut().expect("checked above");
            match self.check(open)? {
                Change::None => {
                    if self.should_park(files) {
                        let open = files.pop_front().expect("checked above");
                        self.parked = Some(Parked {
                            identity: open.identity,
                            size: open.framer.position(),
                        });
                        self.permit = None;
                        tracing::debug!(tailer = %self.id, "closed while idle (tail.max_open_files)");
                    }
                    self.idle(stop).await?;
                }
                Change::Truncated => {
                    // Settle what was sent before the truncation, then start over at 0
                    // under the identity of what the file holds now: a restart must
                    // recognise it, and a copy of the old content resume where it ended.
                    self.drain().await?;
                    let before = open.identity;
                    open.identity = open.identify().map_err(|source| TailError::Read {
                        path: self.id.path.to_path_buf(),
                        source,
                    })?;
                    self.inflight
                        .truncated(before, open.submitted, open.identity);
                    open.framer.reset(0);
                    if let Some(decoder) = open.decoder.as_mut() {
                        decoder.reset();
                    }
                    open.submitted = 0;
                    self.progress.set_acked(0);
                    self.ctx.events.file_truncated(&self.id.topic);
                    tracing::info!(tailer = %self.id, "file truncated; reading again from offset 0");
                }
                Change::Gone => {
                    while let Ok(file) = watch.found.try_recv() {
                        self.enqueue(files, file);
                    }
                    self.watch_path(files);
                    self.finish_front(files).await?;
                }
            }
        }
        Ok(())
    }

    /// Ships the records the front file's decoder holds for multiline joining (fragments
    /// of an unfinished line stay: the checkpoint before them joins them after restart).
    async fn flush_at_shutdown(&mut self, files: &mut VecDeque<OpenFile>) -> Result<(), TailError> {
        let Some(open) = files.front_mut() else {
            return Ok(());
        };
        let Some(decoder) = open.decoder.as_mut() else {
            return Ok(());
        };
        let mut batch = self.new_batch();
        decoder.flush_multiline(&mut batch);
        self.submit(batch, open).await
    }

    /// Waits for an open-file permit unless we hold one. False when stopped meanwhile.
    async fn take_permit(&mut self, stop: &CancellationToken) -> bool {
        if self.permit.is_some() {
            return true;
        }
        let permits = self.ctx.open_files.clone();
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            self.permit = Some(permit);
            return true;
        }
        self.progress.set_state(
            TailerState::Waiting,
            Some("waiting for an open-file slot (tail.max_open_files)".into()),
        );
        tokio::select! {
            _ = stop.cancelled() => false,
            permit = permits.acquire_owned() => {
                self.permit = permit.ok();
                self.permit.is_some()
            }
        }
    }

    /// Close an idle file when others wait for a slot and nothing of it is in flight
    /// (so its checkpoint is where reading resumes).
    fn should_park(&self, files: &mut VecDeque<OpenFile>) -> bool {
        files.len() == 1
            && self.lingering.is_empty()
            && !files[0].has_pending_record()
            && self.inflight.is_empty()
            && self.idle_streak >= IDLE_TURNS_BEFORE_CLOSING
            && self.ctx.open_files.available_permits() == 0
    }

    /// Reads the oldest file to its end and moves on to the next. A file renamed away
    /// (still linked) lingers for `tail.rotate_wait` after its last write; a deleted one,
    /// or any with `rotate_wait: 0`, is finished at once.
    async fn finish_front(&mut self, files: &mut VecDeque<OpenFile>) -> Result<(), TailError> {
        let Some(open) = files.front_mut() else {
            return Ok(());
        };
        // Lines may have been appended between our last read and the rename.
        while self.read_turn(open).await? > 0 {}
        let mut open = files.pop_front().expect("checked above");
        // Its late acknowledgements no longer move `/status`.
        self.current = files.front().map(|f| f.identity);
        self.deadline = None;
        self.ctx.events.file_rotated(&self.id.topic);
        let linked = open.file.metadata().is_ok_and(|meta| meta.nlink() > 0);
        if !linked || self.settings.rotate_wait.is_zero() {
            tracing::info!(tailer = %self.id, "file rotated or deleted; finished the old file");
            return self.finish(&mut open).await;
        }
        if self.lingering.len() >= MAX_QUEUED_FILES {
            let mut oldest = self.lingering.pop_front().expect("full");
            self.finish(&mut oldest.open).await?;
        }
        tracing::info!(tailer = %self.id, rotate_wait = ?self.settings.rotate_wait,
            "file rotated; read to its end, looking at it until it is quiet for rotate_wait");
        let now = tokio::time::Instant::now();
        self.lingering.push_back(Lingering {
            open,
            quiet_since: now,
            next_look: now + self.settings.poll_interval,
        });
        Ok(())
    }

    /// Reads what was appended to lingering files since the last look, and finishes the
    /// ones quiet for `tail.rotate_wait` or deleted meanwhile.
    async fn look_at_lingering(&mut self) -> Result<(), TailError> {
        let now = tokio::time::Instant::now();
        if !self.lingering.iter().any(|l| l.next_look <= now) {
            return Ok(());
        }
        // The followed file's multiline deadline stays the one the idle wait keeps.
        let deadline = self.deadline;
        let mut lingering = std::mem::take(&mut self.lingering);
        let mut kept = VecDeque::with_capacity(lingering.len());
        let mut outcome = Ok(());
        while let Some(mut file) = lingering.pop_front() {
            if outcome.is_err() || file.next_look > now {
                kept.push_back(file);
                continue;
            }
            let (grew, linked) = match file.open.file.metadata() {
                Ok(meta) => (meta.len() > file.open.framer.position(), meta.nlink() > 0),
                Err(_) => (false, false),
            };
            let mut next_look = self.settings.poll_interval;
            if grew {
                match self.read_turn(&mut file.open).await {
                    Ok(read) => {
                        file.quiet_since = tokio::time::Instant::now();
                        if read >= TURN_BYTES {
                            // More to read: come back after the next turn, not a poll.
                            next_look = std::time::Duration::ZERO;
                        }
                    }
                    Err(e) => outcome = Err(e),
                }
            }
            let quiet = file.quiet_since.elapsed() >= self.settings.rotate_wait;
            if outcome.is_ok() && !grew && (quiet || !linked) {
                outcome = self.finish(&mut file.open).await;
                tracing::info!(tailer = %self.id, "finished the rotated file");
            } else {
                file.next_look = tokio::time::Instant::now() + next_look;
                kept.push_back(file);
            }
        }
        self.lingering = kept;
        self.deadline = deadline;
        outcome
    }

    /// Ships a file's held partial line and pending record, waits for every
    /// acknowledgement, and only then lets the caller close it and release its claim: a
    /// tailer that reaches the file under its new name resumes after the last line
    /// shipped here.
    async fn finish(&mut self, open: &mut OpenFile) -> Result<(), TailError> {
        let mut batch = self.new_batch();
        let now = tokio::time::Instant::now();
        match open.decoder.as_mut() {
            None => open
                .framer
                .finish(&mut |line| batch.push(line.offset, line.bytes)),
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

    /// Queues the file the path names now when it is not the newest one we hold.
    fn watch_path(&mut self, files: &mut VecDeque<OpenFile>) {
        if files.len() >= MAX_QUEUED_FILES {
            return;
        }
        let Ok(meta) = std::fs::metadata(&self.id.path) else {
            return;
        };
        if files.iter().any(|f| f.identity.same_file(&meta)) {
            return;
        }
        // A path we cannot open now is the next check's business, not a failure.
        if let Ok(Opened::File(file)) = self.open_path(false) {
            if !files
                .iter()
                .any(|f| f.identity.same_file_as(&file.identity))
            {
                files.push_back(file);
            }
        }
    }

    /// Queues a file the watch task opened at the path, unless we hold it already.
    fn enqueue(&mut self, files: &mut VecDeque<OpenFile>, file: File) {
        let Ok(meta) = file.metadata() else { return };
        if files.len() >= MAX_QUEUED_FILES || files.iter().any(|f| f.identity.same_file(&meta)) {
            return;
        }
        if let Ok(Opened::File(open)) = self.adopt(file, &meta, false) {
            files.push_back(open);
        }
    }

    /// Files renamed away from the path while nobody followed it, with lines left after
    /// their checkpoint, oldest first.
    fn rotated_while_away(&mut self) -> VecDeque<OpenFile> {
        let checkpoints = self
            .ctx
            .checkpoints
            .last_read_at(&self.id.topic, &self.id.path);
        let mut files = VecDeque::new();
        for found in rotated::find(&self.id.path, &checkpoints) {
            let Ok(file) = self.adopt(found.file, &found.meta, false) else {
                continue;
            };
            if let Opened::File(file) = file {
                tracing::info!(tailer = %self.id, rotated_to = %found.path.display(),
                    offset = found.checkpoint.offset, "finishing a file rotated while the agent was down");
                files.push_back(file);
            }
        }
        files
    }

    /// Opens the path and positions at its checkpoint.
    fn open_path(&mut self, first_open: bool) -> Result<Opened, TailError> {
        let path = &self.id.path;
        let open_err = |source| TailError::Open {
            path: path.to_path_buf(),
            source,
        };
        // Look before opening: opening a FIFO for reading blocks until it has a writer.
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                return Err(TailError::NotRegular {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
            _ => {}
        }
        let file = match crate::open::open_for_reading(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
            Err(e) => return Err(open_err(e)),
        };
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(TailError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        self.adopt(file, &meta, first_open)
    }

    /// Identifies and claims an open file and positions it at its checkpoint (or by
    /// `start_at` for a file never seen on the first open).
    fn adopt(
        &mut self,
        file: File,
        meta: &Metadata,
        first_open: bool,
    ) -> Result<Opened, TailError> {
        let path = &self.id.path;
        let open_err = |source| TailError::Open {
            path: path.to_path_buf(),
            source,
        };
        // The path names a renamed file again (moved back, a symlink recreated): follow
        // the lingering reader on, not a second one from the checkpoint.
        if let Some(i) = self
            .lingering
            .iter()
            .position(|l| l.open.identity.same_file(meta))
        {
            let lingering = self.lingering.remove(i).expect("found");
            tracing::info!(tailer = %self.id, "the renamed file is back at the path; following it on");
            self.progress.set_state(TailerState::Running, None);
            return Ok(Opened::File(lingering.open));
        }
        let identity = FileIdentity::of(&file, meta).map_err(open_err)?;
        let claim = match self.ctx.claims.claim(&self.id, identity.dev, identity.ino) {
            Ok(claim) => claim,
            Err(owner) => return Ok(Opened::Claimed(owner)),
        };
        let checkpoint = self
            .ctx
            .checkpoints
            .get(&self.id.topic, identity.dev, identity.ino);
        let resumed = match checkpoint {
            Some(cp) if cp.file.matches(&file, meta).map_err(open_err)? => Some(cp.offset),
            _ => None,
        };
        // A new file holding content already shipped (a copytruncate copy) resumes where
        // the original was acknowledged.
        let copy_of = match resumed {
            Some(_) => None,
            None => match copies::judge(&self.ctx.checkpoints, &self.id.topic, path, &file, meta)
                .map_err(open_err)?
            {
                Verdict::CopyOf(original) => Some(original),
                Verdict::New => None,
                Verdict::Undecided(why) if !self.undecided.settled(meta) => {
                    return Ok(Opened::Undecided(why))
                }
                Verdict::Undecided(_) => None,
            },
        };
        let offset = match (resumed, &copy_of) {
            (Some(offset), _) if offset <= meta.len() => offset,
            (Some(_), _) => {
                self.ctx.events.file_truncated(&self.id.topic);
                0
            }
            (None, Some(original)) => {
                tracing::info!(tailer = %self.id, copy_of = %original.path.display(),
                    offset = original.offset, "a copy of a file already shipped up to offset");
                original.offset
            }
            (None, None) if first_open && self.settings.start_at == StartAt::End => meta.len(),
            (None, None) => 0,
        };
        tracing::info!(tailer = %self.id, offset, resumed = resumed.is_some(), "following file");
        // Record the start so that a restart resumes here rather than re-applying start_at.
        self.inflight.start(identity, offset);
        self.progress.set_acked(offset);
        self.progress.set_file_size(meta.len());
        self.progress.set_state(TailerState::Running, None);
        let decoder = (!self.settings.parsing.is_passthrough()).then(|| {
            Box::new(Decoder::new(
                &self.settings.parsing,
                self.start_pattern.clone(),
                self.settings.max_line_bytes as usize,
            ))
        });
        Ok(Opened::File(OpenFile {
            file,
            identity,
            framer: Framer::new(offset, self.settings.max_line_bytes as usize),
            decoder,
            submitted: offset,
            _claim: claim,
        }))
    }

    /// Reads up to `TURN_BYTES`, submitting batches as they fill. Returns bytes read.
    async fn read_turn(&mut self, open: &mut OpenFile) -> Result<u64, TailError> {
        self.busy.set(true);
        let mut batch = self.new_batch();
        let mut read = 0u64;
        while read < TURN_BYTES {
            // Blocking positional read: regular files answer from the page cache in
            // microseconds, which costs less than a thread hop per chunk.
            let n = open
                .file
                .read_at(&mut self.buf, open.framer.position())
                .map_err(|source| TailError::Read {
                    path: self.id.path.to_path_buf(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            if n == self.buf.len() && n < READ_CHUNK {
                // A busy file: read bigger chunks from now on.
                self.buf.resize(n * 2, 0);
            }
            read += n as u64;
            if n == READ_CHUNK && batch.is_empty() {
                // A busy file fills this batch: size it once, with one chunk of slack
                // (the batch is submitted after the chunk that crosses BATCH_BYTES).
                batch.reserve(BATCH_BYTES + READ_CHUNK, 64);
            }
            let mut truncated = 0u64;
            match open.decoder.as_mut() {
                None => open.framer.push(&self.buf[..n], &mut |line| {
                    truncated += line.truncated as u64;
                    batch.push(line.offset, line.bytes);
                }),
                Some(decoder) => {
                    let now = tokio::time::Instant::now();
                    open.framer.push(&self.buf[..n], &mut |line| {
                        truncated += line.truncated as u64;
                        decoder.line(line, now, &mut batch);
                    });
                }
            }
            for _ in 0..truncated {
                self.ctx.events.line_truncated(&self.id.topic);
            }
            if batch.bytes() >= BATCH_BYTES || batch.len() >= BATCH_LINES {
                let full = std::mem::replace(&mut batch, self.new_batch());
                self.submit(full, open).await?;
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
    }

    /// Hands a batch to the sink (waiting while too much is in flight) and queues its ack.
    /// An empty batch still queues a checkpoint advance when the framer moved on.
    async fn submit(&mut self, batch: Batch, open: &mut OpenFile) -> Result<(), TailError> {
        let end = open.committed();
        if batch.is_empty() && end == open.submitted {
            return Ok(());
        }
        while self.inflight.is_full() {
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
        open.submitted = end;
        if batch.is_empty() {
            self.inflight.advance(identity, end);
            return Ok(());
        }
        self.ctx
            .events
            .lines_read(&self.id.topic, batch.len() as u64, batch.bytes() as u64);
        self.progress.line_seen();
        let records = batch.len() as u64;
        let ack = self
            .ctx
            .sink
            .submit(batch)
            .await
            .map_err(|source| self.sink_error(source))?;
        let events = self.ctx.events.clone();
        let topic = self.id.topic.clone();
        let counted = async move {
            let result = ack.await;
            if result.is_ok() {
                events.records_sent(&topic, records);
            }
            result
        };
        self.inflight.push(identity, end, counted);
        Ok(())
    }

    /// A settled batch: `/status` shows its offset when it is of the followed file.
    fn on_ack(&self, done: Result<Settled, SinkError>) -> Result<(), TailError> {
        let settled = done.map_err(|source| self.sink_error(source))?;
        if self
            .current
            .is_none_or(|file| file.same_file_as(&settled.file))
        {
            self.progress.set_acked(settled.end);
        }
        Ok(())
    }

    fn collect_acks(&mut self) -> Result<(), TailError> {
        while let Some(done) = self.inflight.try_next() {
            self.on_ack(done)?;
        }
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), TailError> {
        while let Some(done) = self.inflight.next().await {
            self.on_ack(done)?;
        }
        Ok(())
    }

    /// Waits until the path changes (a notification) or the poll interval passes,
    /// handling acknowledgements as they come. The interval doubles while nothing
    /// happens, up to `MAX_IDLE_POLL_NOTIFIED` where notifications arrive and
    /// `MAX_IDLE_POLL` where they do not (e.g. NFS), so an idle file stays cheap.
    async fn idle(&mut self, stop: &CancellationToken) -> Result<(), TailError> {
        self.busy.set(false);
        let base = self.settings.poll_interval;
        let watched = self.wakeup.as_ref().is_some_and(|r| r.is_watched());
        let cap = if watched {
            MAX_IDLE_POLL_NOTIFIED
        } else {
            MAX_IDLE_POLL
        };
        let delay = base
            .saturating_mul(1 << self.idle_streak.min(16))
            .min(cap.max(base));
        self.idle_streak += 1;
        // A pending multiline record is shipped when its timeout passes.
        let mut until = tokio::time::Instant::now() + delay;
        if let Some(deadline) = self.deadline.filter(|d| *d > tokio::time::Instant::now()) {
            until = until.min(deadline);
        }
        // A renamed file raises no notification for our path: look at it on time.
        if let Some(look) = self.lingering.iter().map(|l| l.next_look).min() {
            until = until.min(look);
        }
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        let wakeup = self.wakeup.as_ref().map(|r| r.notify.clone());
        let notified = async {
            match wakeup {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(notified);
        loop {
            let done = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = &mut sleep => return Ok(()),
                _ = &mut notified => {
                    self.idle_streak = 0;
                    return Ok(());
                }
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => done,
            };
            self.on_ack(done)?;
        }
    }

    fn check(&self, open: &mut OpenFile) -> Result<Change, TailError> {
        let meta = open.file.metadata().map_err(|source| TailError::Read {
            path: self.id.path.to_path_buf(),
            source,
        })?;
        self.progress.set_file_size(meta.len());
        if meta.len() < open.framer.position() {
            return Ok(Change::Truncated);
        }
        if open.identity.can_grow(meta.len()) {
            if let Ok(grown) = FileIdentity::of(&open.file, &meta) {
                open.identity = grown;
            }
        }
        match std::fs::metadata(&self.id.path) {
            Ok(now) if open.identity.same_file(&now) => Ok(Change::None),
            Ok(_) => Ok(Change::Gone),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Change::Gone),
            // e.g. a directory permission change: keep reading what we have open.
            Err(_) => Ok(Change::None),
        }
    }

    fn new_batch(&self) -> Batch {
        let mut batch = Batch::new(self.id.topic.clone(), self.id.path.clone());
        batch.pod = self.pod.clone();
        batch
    }

    fn sink_error(&self, source: SinkError) -> TailError {
        self.ctx.events.send_error(&self.id.topic, "sink");
        TailError::Sink {
            path: self.id.path.to_path_buf(),
            source,
        }
    }
}
