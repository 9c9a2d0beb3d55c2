//! The tailer task: follows one path for one topic. Each step of its loop looks at the
//! state (the files it holds, `tail/files.rs`) and does one thing: look at renamed files,
//! read the oldest file held, finish it once newer ones wait, or open the path; the step
//! says what comes next (another step, a yield, or an idle wait). Reading, batching and
//! acknowledgements are `tail/reader.rs`; opening and adopting files `tail/adopt.rs`; every
//! checkpoint move `tail/inflight.rs`.

use super::adopt::{self, Change, Opened};
use super::checkpoint::Checkpoints;
use super::claims::Claims;
use super::deleted::{DeletedFiles, Handle};
use super::files::Files;
use super::idle::{Idle, Pace, Wait};
use super::missed::{self, Born};
use super::reader::{OpenFile, Reader, TURN_BYTES};
use super::remote;
use super::signal::Stop;
use super::throttle::Throttles;
use super::wakeup::Wakeups;
use super::watch::{self, PathWatch};
use crate::ports::Events;
use crate::sink::{Sink, SinkError};
use crate::spec::{TailerId, TailerSettings};
use crate::telemetry::{TailerProgress, TailerState};
use futures::future::{BoxFuture, FutureExt};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Idle waits before an idle file may be closed for others (`tail.max_open_files`).
const IDLE_TURNS_BEFORE_CLOSING: u32 = 2;

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
    #[error("{path}: the task watching the path for new files stopped")]
    WatchStopped { path: PathBuf },
    #[error("{path}: cannot start the tailer's own thread: {source}")]
    Thread {
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
    /// Batches being filled or waiting for the sink to take them: a tailer takes a permit
    /// before a read turn (`reader::filling_permits`).
    pub filling: Arc<Semaphore>,
    /// Every file the tailers hold, for the deleted-file bounds.
    pub deleted: Arc<DeletedFiles>,
    /// The buckets of the declarations' `throttle`s.
    pub throttles: Arc<Throttles>,
}

/// What a step of the loop leaves to do.
enum Next {
    /// Step again at once.
    Step,
    /// Bytes were read: let other tasks run, then step again.
    Yield,
    /// Nothing to do until the path changes, an acknowledgement comes or time passes.
    Wait(Pace),
    /// Over the throttle: no reading until then (acknowledgements and renamed files are
    /// still handled, the watch task follows the path).
    Pause(Instant),
}

pub struct Tailer {
    reader: Reader,
    files: Files<OpenFile>,
    /// Set while running: how idle waits end.
    idle: Option<Idle>,
    /// This tailer's share of `tail.max_open_files` while it holds a file open.
    permit: Option<OwnedSemaphorePermit>,
    /// No file has been opened at the path yet: `start_at` applies to a new one.
    first_open: bool,
    /// A newer file found at the path, waiting for room behind the files missed before it.
    deferred: Option<Handle>,
    /// Files whose finishing failed: kept for `keep_deleted`.
    failed: Vec<OpenFile>,
    /// When the path was last looked at, and the names seen then
    /// (`Registration::names_seen`).
    path_looked: Option<(u64, Instant)>,
}

/// The path is looked at (a `statx`) at least this often while the file is read, even
/// when no name arrived at it or left it: a safety net for what a directory's watch does
/// not see (a parent directory renamed, a symlink pointed elsewhere).
const LOOK_AT_PATH_EVERY: Duration = Duration::from_secs(5);

impl Tailer {
    pub fn new(
        id: TailerId,
        settings: impl Into<Arc<TailerSettings>>,
        ctx: Arc<TailerContext>,
        progress: Arc<TailerProgress>,
    ) -> Self {
        Tailer {
            reader: Reader::new(id, settings.into(), ctx, progress),
            files: Files::new(),
            idle: None,
            permit: None,
            first_open: true,
            deferred: None,
            failed: Vec::new(),
            path_looked: None,
        }
    }

    /// The task that follows the file until `stop`: on a thread of its own for a file on
    /// a network or FUSE filesystem, where a call may block indefinitely (`tail/remote.rs`).
    /// Its log lines carry `span` (which declarations started it).
    pub fn into_task(
        self,
        stop: Stop,
        span: tracing::Span,
    ) -> BoxFuture<'static, Result<(), TailError>> {
        use tracing::Instrument;
        let path = self.reader.id.path.clone();
        let remote = self.reader.ctx.wakeups.is_remote(&path);
        let mut tailer = self;
        tailer.reader.own_thread = remote;
        let run = tailer.run(stop).instrument(span);
        if remote {
            return remote::on_own_thread(path.to_path_buf(), run);
        }
        run.boxed()
    }

    /// Follows the file until `stop`, then lets in-flight batches be acknowledged and
    /// checkpointed before returning.
    pub fn run(
        self,
        stop: Stop,
    ) -> impl std::future::Future<Output = Result<(), TailError>> + Send + 'static {
        // The task's future holds the tailer by pointer, and the steps taken only at a
        // rotation or at the stop are boxed when taken: the future of every idle tailer
        // is only as big as its read and idle-wait path (it was 4.3 KB, the tailer
        // itself stored twice among them; 43 MB at 10,000 files).
        Box::new(self).run_boxed(stop)
    }

    async fn run_boxed(mut self: Box<Self>, stop: Stop) -> Result<(), TailError> {
        let reader = &mut self.reader;
        self.idle = Some(Idle::new(reader.ctx.wakeups.register(&reader.id.path)));
        let rotated = reader.rotated_while_away();
        // A file found rotated away means the one at the path is new since: read it all.
        self.first_open = rotated.is_empty();
        self.files.extend(rotated);
        let mut watch = watch::spawn(
            reader.id.clone(),
            reader.settings.poll_interval,
            reader.busy.clone(),
            &reader.ctx.wakeups,
            reader.ctx.deleted.clone(),
            watch::MAX_QUEUED,
            reader.ctx.events.clone(),
        );
        let followed = self.follow(&stop, &mut watch).await;
        // Boxed: what the stop holds (a renamed file being finished) is no part of the
        // future every idle tailer waits in (300 B of it; BENCHMARKS.md).
        Box::pin(self.stopped(followed, watch)).await
    }

    /// The tailer's end, after `follow` (`followed`): files deleted and renamed away are
    /// read to their end and every batch in flight settled.
    async fn stopped(
        mut self: Box<Self>,
        mut followed: Result<(), TailError>,
        mut watch: PathWatch,
    ) -> Result<(), TailError> {
        if followed.is_ok() {
            followed = Box::pin(self.read_deleted_to_end(&mut watch)).await;
        }
        if let (Ok(()), Some(open)) = (&followed, self.files.front_mut()) {
            followed = Box::pin(self.reader.flush_at_shutdown(open)).await;
        }
        // A stopped tailer may not be started again (its declaration removed): ship what
        // renamed files hold (a partial last line, a pending record) rather than leave it.
        while followed.is_ok() {
            let Some(mut open) = self.files.pop_lingering() else {
                break;
            };
            if open.file.is_deleted() {
                followed = Box::pin(self.reader.read_all(&mut open)).await;
            }
            if followed.is_ok() {
                followed = Box::pin(self.finish(open)).await;
            }
        }
        let drained = self.reader.drain().await;
        let result = followed.and(drained);
        if result.is_ok() {
            self.name_truncated_in_queue();
        }
        if result.is_err() {
            self.keep_deleted(&mut watch);
        }
        // Claims are released only now, once the acknowledged offsets are checkpointed.
        drop(self.files);
        result
    }

    /// Stopped with every batch settled: a file held for reading that was truncated and
    /// written again since it was last checked (queued behind a backlog, before its turn)
    /// is checkpointed at 0 under what it holds now. Its checkpoint named the content it
    /// held before, so a restart that looked for it renamed away took it for another file
    /// that reused the inode, and its lines were lost.
    fn name_truncated_in_queue(&mut self) {
        let reader = &mut self.reader;
        for open in self.files.reading_mut() {
            let Ok(meta) = open.file.metadata() else {
                continue;
            };
            let same = {
                let file = open.file.file();
                let Some(file) = file.as_ref() else { continue };
                open.identity.matches(file, &meta)
            };
            let truncated = meta.len() < open.framer.position() || matches!(same, Ok(false));
            if !truncated {
                continue;
            }
            if reader.start_over(open).is_ok() {
                tracing::info!(tailer = %reader.id,
                    "a file queued for reading was truncated before its turn; checkpointed at 0");
            }
        }
    }

    /// Stopped: a deleted file is never found again (its glob no longer matching it is
    /// what usually stops the tailer), so the files held for reading that are deleted are
    /// read to their end now, then the newer ones the watch task opened and the tailer
    /// had not taken yet; files still on disk are left where the checkpoint says.
    async fn read_deleted_to_end(&mut self, watch: &mut PathWatch) -> Result<(), TailError> {
        for open in self.files.reading_mut() {
            if open.file.is_deleted() {
                self.reader.read_all(open).await?;
                // Never found again: its partial last line and pending record go too (a
                // tailer behind its file, throttled or held back by the sink, gets here
                // before it saw the file deleted).
                self.reader.finish(open).await?;
            }
        }
        let waiting = self.deferred.take().into_iter();
        let waiting: Vec<Handle> = waiting
            .chain(std::iter::from_fn(|| watch.try_recv().ok().flatten()))
            .collect();
        for held in waiting {
            // A file closed at the deleted-file bounds while it waited was counted there.
            let Ok(meta) = held.metadata() else { continue };
            if !held.is_deleted() || self.files.holds(&meta) {
                continue;
            }
            let Some(file) = held.take() else { continue };
            if let Opened::File(mut open) = self.adopt(file, &meta, false)? {
                self.reader.read_all(&mut open).await?;
                self.finish(open).await?;
            }
        }
        Ok(())
    }

    /// Ships what `open` holds, waits for its acknowledgements and closes it; kept open
    /// for `keep_deleted` when that fails.
    async fn finish(&mut self, mut open: OpenFile) -> Result<(), TailError> {
        let finished = self.reader.finish(&mut open).await;
        if finished.is_err() {
            self.failed.push(open);
        }
        finished
    }

    /// A failed tailer (a sink error) leaves the deleted files it holds to the deleted-file
    /// registry rather than closing them: its next start reads them on from their
    /// checkpoints (`Reader::rotated_while_away`), within the deleted-file bounds. Files
    /// still linked are found again by name.
    fn keep_deleted(&mut self, watch: &mut PathWatch) {
        let mut held: Vec<Handle> = std::mem::take(&mut self.failed)
            .into_iter()
            .chain(self.files.take_all())
            .map(|open| open.file)
            .collect();
        held.extend(self.deferred.take());
        while let Ok(Some(found)) = watch.try_recv() {
            held.push(found);
        }
        let deleted = &self.reader.ctx.deleted;
        for handle in held {
            if handle.is_deleted() {
                deleted.keep_for(&self.reader.id, handle);
            }
        }
    }

    async fn follow(&mut self, stop: &Stop, watch: &mut PathWatch) -> Result<(), TailError> {
        while !stop.is_cancelled() {
            match self.step(stop, watch).await? {
                Next::Step => {}
                Next::Yield => tokio::task::yield_now().await,
                Next::Wait(pace) => {
                    let idle = self.idle.as_mut().expect("set by run");
                    let next_look = self.files.next_look();
                    let holding = self.deferred.is_some();
                    let slot_wanted = self.permit.is_some()
                        && self.reader.ctx.open_files.available_permits() == 0;
                    let wait = Wait {
                        next_look,
                        holding,
                        slot_wanted,
                    };
                    idle.wait(pace, stop, &mut self.reader, wait).await?;
                }
                Next::Pause(until) => {
                    let idle = self.idle.as_mut().expect("set by run");
                    let next_look = self.files.next_look();
                    let paused = Instant::now();
                    idle.pause(until, stop, &mut self.reader, next_look).await?;
                    let reader = &self.reader;
                    let seconds = paused.elapsed().as_secs_f64();
                    reader.ctx.events.throttled(&reader.id.topic, seconds);
                }
            }
        }
        Ok(())
    }

    async fn step(&mut self, stop: &Stop, watch: &mut PathWatch) -> Result<Next, TailError> {
        self.reader.current = self.files.current();
        self.reader.collect_acks()?;
        self.look_at_lingering().await?;
        self.take_found(watch)?;
        self.note_newest();
        // An undecided file waits its turn: nothing newer at the path comes before it.
        let pace = match self.deferred {
            Some(_) => Pace::Poll,
            None => Pace::Slower,
        };
        let Some(open) = self.files.front_mut() else {
            if self.deferred.is_some() {
                return Ok(Next::Wait(pace));
            }
            return self.open_step(stop).await;
        };
        // Boxed, as the steps taken only at a rotation or at the stop: the read's future
        // (its batch, the sink's) is 600 B, and every idle tailer's future had room for
        // it while it waited (BENCHMARKS.md); one allocation a read costs far less.
        let read = Box::pin(self.reader.read_turn(open)).await?;
        if read > 0 {
            if let Some(idle) = self.idle.as_mut() {
                idle.busy(read);
            }
            // Read to the end: look at the path now rather than read once more for
            // nothing (a file written a line at a time would cost a read a line).
            if !self.reader.at_end {
                // Reading on, it looks at the path only at the end: its watch task
                // looks meanwhile.
                self.reader.busy.set(true);
                return Ok(Next::Yield);
            }
        }
        // Paused before the end of the file: rotation and truncation are looked at once
        // it is read to its end, as without a throttle.
        if let Some(until) = self.reader.paused_until {
            self.show_throttled(true);
            return Ok(Next::Pause(until));
        }
        self.show_throttled(false);
        if self.files.has_newer() {
            Box::pin(self.finish_front()).await?;
            return Ok(Next::Step);
        }
        let look_at_path = self.look_at_path();
        let open = self.files.front_mut().expect("checked above");
        match self.reader.check(open, look_at_path)? {
            Change::None => {
                let size = open.framer.position();
                if self.should_park() {
                    drop(self.files.park(size));
                    self.permit = None;
                    tracing::debug!(tailer = %self.reader.id, "closed while idle (tail.max_open_files)");
                }
                Ok(Next::Wait(pace))
            }
            Change::Truncated => {
                // Settle what was sent before the truncation, then start over at 0.
                self.reader.drain().await?;
                let open = self.files.front_mut().expect("checked above");
                let reader = &mut self.reader;
                reader.start_over(open).map_err(|e| reader.read_error(e))?;
                reader.progress.set_acked(0);
                tracing::info!(tailer = %reader.id, "file truncated; reading again from offset 0");
                Ok(Next::Step)
            }
            Change::Gone => {
                self.take_found(watch)?;
                self.watch_path();
                Box::pin(self.finish_front()).await?;
                Ok(Next::Step)
            }
        }
    }

    /// Whether the path must be looked at: a name may have arrived at it or left it since
    /// the last look, that is not known, or the last look is `LOOK_AT_PATH_EVERY` old.
    fn look_at_path(&mut self) -> bool {
        let seen = self.idle.as_ref().and_then(Idle::names_seen);
        let now = Instant::now();
        let look = match (seen, self.path_looked) {
            (Some(seen), Some((then, at))) => seen != then || now >= at + LOOK_AT_PATH_EVERY,
            _ => true,
        };
        if look {
            // Read before the look: a name that arrives after it changes it again.
            self.path_looked = seen.map(|seen| (seen, now));
        }
        look
    }

    /// Nothing is read: open the path, or the parked file again once the path changed.
    async fn open_step(&mut self, stop: &Stop) -> Result<Next, TailError> {
        let path = &self.reader.id.path;
        if self
            .files
            .parked()
            .is_some_and(|parked| !parked.changed(path))
        {
            return Ok(Next::Wait(Pace::Slower));
        }
        let missing = std::fs::metadata(path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
        if missing && self.files.parked().is_none() {
            // A file that appears later is new: it is read from its beginning whatever
            // `start_at` says, as a rotated one is.
            self.first_open = false;
            // No slot needed to wait for a file to appear.
            self.waiting("file does not exist".into());
            return Ok(Next::Wait(Pace::Slower));
        }
        if !self.take_permit(stop).await {
            return Ok(Next::Step);
        }
        if self.files.unpark().is_some() {
            // Reopen by identity: the file may have been renamed while closed.
            self.files.extend(self.reader.rotated_while_away());
            if self.files.current().is_some() {
                return Ok(Next::Step);
            }
        }
        let (pace, why) = match self.open_at_path(self.first_open)? {
            Opened::File(file) => {
                self.first_open = false;
                let id = file.identity;
                let born = file.born.map(|born| born.at);
                self.reader.busy.saw_key((id.dev, id.ino, born));
                self.reader.busy.forget_missed(&file.identity, file.born);
                // After the files rotated away since the one we hold still (renamed
                // away, lingering), as for a file the watch task or a look found. Those
                // that fill the queue come first: this one is opened again after them
                // (its claim let go meanwhile), when the last of them is found renamed.
                let caught_up = file.file.metadata().is_ok_and(|meta| self.catch_up(&meta));
                if !caught_up && self.files.current().is_some() {
                    return Ok(Next::Step);
                }
                self.files.extend([file].into());
                return Ok(Next::Step);
            }
            Opened::Missing => {
                self.first_open = false;
                (Pace::Slower, "file does not exist".into())
            }
            // Look again each poll: the copy grows while logrotate writes it.
            Opened::Undecided(why, file) => {
                // Held, and taken in its turn once decided (`take_found`); a first open
                // (where `start_at` applies) looks at the path again instead.
                if !self.first_open {
                    self.deferred = Some(self.reader.ctx.deleted.hold(file, &self.reader.id));
                }
                (Pace::Poll, why.to_string())
            }
            // Nothing tells us when the claim is released (a rotated file lingers for
            // `rotate_wait`): keep looking every few intervals.
            Opened::Claimed(owner) => (
                Pace::Soon,
                format!("the file is being finished by tailer {owner}"),
            ),
        };
        self.permit = None;
        self.waiting(why);
        Ok(Next::Wait(pace))
    }

    /// `/status` says `throttled` from the first pause until the file is read to its end.
    fn show_throttled(&self, paused: bool) {
        let progress = &self.reader.progress;
        let shown = progress.state() == TailerState::Throttled;
        if paused && !shown {
            let limit = self.reader.throttle.as_ref().map(|l| l.describe.as_str());
            let why = format!(
                "reading paused at the throttle ({}); the file holds the rest",
                limit.unwrap_or_default()
            );
            progress.set_state(TailerState::Throttled, Some(why));
        } else if !paused && shown {
            progress.set_state(TailerState::Running, None);
        }
    }

    fn waiting(&self, why: String) {
        self.reader
            .progress
            .set_state(TailerState::Waiting, Some(why));
    }

    /// Waits for an open-file permit unless we hold one. False when stopped meanwhile.
    async fn take_permit(&mut self, stop: &Stop) -> bool {
        if self.permit.is_some() {
            return true;
        }
        let permits = self.reader.ctx.open_files.clone();
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            self.permit = Some(permit);
            return true;
        }
        self.waiting("waiting for an open-file slot (tail.max_open_files)".into());
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
    fn should_park(&mut self) -> bool {
        self.files.may_park()
            && self
                .idle
                .as_ref()
                .is_some_and(|i| i.quiet() >= IDLE_TURNS_BEFORE_CLOSING)
            && self.reader.inflight.is_empty()
            && self.reader.ctx.open_files.available_permits() == 0
            && self
                .files
                .front_mut()
                .is_some_and(|open| !open.has_pending_record())
    }

    /// Reads the oldest file to its end and moves on to the next. A file renamed away
    /// (still linked) lingers for `tail.rotate_wait` after its last write; a deleted one,
    /// or any with `rotate_wait: 0`, is finished at once.
    async fn finish_front(&mut self) -> Result<(), TailError> {
        let Some(open) = self.files.front_mut() else {
            return Ok(());
        };
        // Lines may have been appended between our last read and the rename.
        self.reader.read_all(open).await?;
        let open = self.files.pop_front().expect("checked above");
        let reader = &mut self.reader;
        // Its late acknowledgements no longer move `/status`.
        reader.current = self.files.current();
        reader.deadline = None;
        reader.ctx.events.file_rotated(&reader.id.topic);
        let linked = open.file.metadata().is_ok_and(|meta| meta.nlink() > 0);
        let rotate_wait = reader.settings.rotate_wait;
        if !linked || rotate_wait.is_zero() {
            tracing::info!(tailer = %reader.id, "file rotated or deleted; finished the old file");
            return self.finish(open).await;
        }
        tracing::info!(tailer = %reader.id, ?rotate_wait,
            "file rotated; read to its end, looking at it until it is quiet for rotate_wait");
        let poll = reader.settings.poll_interval;
        match self.files.linger(open, Instant::now(), poll) {
            Some(oldest) => self.finish(oldest).await,
            None => Ok(()),
        }
    }

    /// Reads what was appended to lingering files since the last look, and finishes the
    /// ones quiet for `tail.rotate_wait` or deleted meanwhile.
    async fn look_at_lingering(&mut self) -> Result<(), TailError> {
        let now = Instant::now();
        if !self.files.lingering_due(now) {
            return Ok(());
        }
        // The followed file's multiline deadline stays the one the idle wait keeps.
        let deadline = self.reader.deadline;
        // Boxed: only a file renamed away needs it, and it is bigger than the rest of a
        // step.
        let looked = Box::pin(self.look_at_due(now)).await;
        self.reader.deadline = deadline;
        looked
    }

    async fn look_at_due(&mut self, now: Instant) -> Result<(), TailError> {
        let (poll, rotate_wait) = (
            self.reader.settings.poll_interval,
            self.reader.settings.rotate_wait,
        );
        let mut i = 0;
        while i < self.files.lingering_len() {
            let file = self.files.lingering_mut(i);
            if file.next_look > now {
                i += 1;
                continue;
            }
            let (grew, linked) = match file.open.file.metadata() {
                Ok(meta) => (meta.len() > file.open.framer.position(), meta.nlink() > 0),
                Err(_) => (false, false),
            };
            let mut next_look = poll;
            if grew {
                // Past the throttle (charged to it): a renamed file is kept read to its
                // end, so that finishing it (when quiet, at the bound on lingering files,
                // at stop) never cuts a line.
                let read = self.reader.read_unthrottled(&mut file.open).await?;
                file.quiet_since = Instant::now();
                if read >= TURN_BYTES {
                    // More to read: come back after the next turn, not a poll.
                    next_look = Duration::ZERO;
                }
            }
            if !grew && (file.quiet_since.elapsed() >= rotate_wait || !linked) {
                let open = self.files.remove_lingering(i).expect("looked at");
                self.finish(open).await?;
                tracing::info!(tailer = %self.reader.id, "finished the rotated file");
            } else {
                file.next_look = Instant::now() + next_look;
                i += 1;
            }
        }
        Ok(())
    }

    /// Queues the files the watch task opened at the path, as long as there is room.
    /// Fails when the watch task died (a panic): the reconcile loop starts the tailer
    /// again, with a watch task of its own.
    fn take_found(&mut self, watch: &mut PathWatch) -> Result<(), TailError> {
        if let Some(file) = self.deferred.take() {
            self.enqueue(file);
        }
        while self.deferred.is_none() && self.files.has_room() {
            match watch.try_recv() {
                Ok(Some(file)) => self.enqueue(file),
                Ok(None) => break,
                Err(watch::WatchStopped) => {
                    return Err(TailError::WatchStopped {
                        path: self.reader.id.path.to_path_buf(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Queues the file the path names now when it is not the newest one we hold.
    fn watch_path(&mut self) {
        if self.deferred.is_some() || !self.files.has_room() {
            return;
        }
        // A path we cannot open now is the next check's business, not a failure.
        if let Ok(Some((file, meta))) = adopt::open_path(&self.reader.id.path) {
            self.reader.busy.saw(&meta);
            if !self.files.reads(&meta) {
                let held = self.reader.ctx.deleted.hold(file, &self.reader.id);
                self.enqueue(held);
            }
        }
    }

    /// Queues a file opened at the path, unless we hold it already, after the files that
    /// were at the path since the newest one we hold; waits in `deferred` for room.
    fn enqueue(&mut self, held: Handle) {
        // A file closed at the deleted-file bounds while it waited was counted there.
        let Ok(meta) = held.metadata() else { return };
        // A file renamed back to the path is reclaimed (`adopt`); one we hold that was
        // found by name beside it is ours already.
        let at_path =
            || std::fs::metadata(&self.reader.id.path).is_ok_and(|path| missed::same(&path, &meta));
        if self.files.reads(&meta) || (self.files.holds(&meta) && !at_path()) {
            return;
        }
        if !self.catch_up(&meta) || !self.files.has_room() {
            self.deferred = Some(held);
            return;
        }
        // Adopt a second descriptor: the handle stays ours while the file is undecided.
        let Some(Ok(file)) = held.file().as_ref().map(File::try_clone) else {
            return;
        };
        match self.adopt(file, &meta, false) {
            Ok(Opened::File(open)) => self.queue(open),
            // A new file shorter than a KiB (the kubelet's next 0.log, just created) may
            // be a copy being written: looked at again each poll, in its turn, while held
            // (it may be rotated away and deleted meanwhile).
            Ok(Opened::Undecided(..)) => self.deferred = Some(held),
            // Finished by the tailer that claims it, or unreadable: not ours to ship.
            _ => {}
        }
    }

    /// Queues, oldest first, the files that were at the path between the newest file we
    /// hold and `next` but were renamed away before anyone looked (`tail/missed.rs`), and
    /// counts those seen at the path and deleted before they were read. False while some
    /// wait for room.
    fn catch_up(&mut self, next: &Metadata) -> bool {
        let newest = self.files.newest_held().and_then(|f| f.born);
        // Without birth times, only the files seen at the path are read.
        let (Some(newest), Some(next)) = (newest, Born::of(next)) else {
            return true;
        };
        let missed = missed::between(&self.reader.id.path, newest, next, |meta| {
            self.files.holds(meta)
        });
        let mut all_queued = true;
        for found in missed {
            // Birth times tie within a tick of the kernel's clock, so the window holds
            // files read and finished before: taken again at each look, more of them than
            // lingering places went round those places for ever (a model case hung).
            if self.reader.read_to_its_end(&found.file, &found.meta) {
                continue;
            }
            if !self.files.has_room() {
                all_queued = false;
                break;
            }
            self.reader.busy.saw(&found.meta);
            tracing::warn!(tailer = %self.reader.id, rotated_to = %found.path.display(),
                "a file was renamed away from the path before the tailer looked; reading it");
            if let Ok(Opened::File(open)) = self.adopt(found.file, &found.meta, false) {
                self.queue(open);
            }
        }
        self.settle_missed();
        all_queued
    }

    /// Settles the files the watch task saw at the path but could not queue (files
    /// queued since are forgotten as they are queued, by inode and birth time): still on
    /// disk (found by name later), read (checkpointed to their size: without birth times,
    /// a note may outlive its file's queueing), or deleted before anyone read them —
    /// counted and logged as skipped.
    fn settle_missed(&mut self) {
        let reader = &self.reader;
        let (topic, path) = (&reader.id.topic, &reader.id.path);
        let mut kept = Vec::new();
        let notes = reader.busy.take_missed();
        let on_disk = missed::on_disk(path, &notes);
        for (mut seen, size) in notes.into_iter().zip(on_disk) {
            let id = seen.identity;
            // The same content, by the same first bytes: a checkpoint of a reused inode
            // is another file's, and one by more (or no) first bytes than the note cannot
            // be told from it (counted skipped rather than lost uncounted).
            let read = reader
                .ctx
                .checkpoints
                .get(topic, id.dev, id.ino)
                .is_some_and(|c| {
                    c.offset >= seen.size
                        && id.fp_len > 0
                        && c.file.fp_len == id.fp_len
                        && c.file.hash == id.hash
                });
            if read {
                continue;
            }
            if let Some(size) = size {
                seen.size = seen.size.max(size);
                kept.push(seen);
                continue;
            }
            reader.ctx.events.file_skipped(topic, "deleted");
            tracing::warn!(tailer = %reader.id, lost_bytes = seen.size, inode = id.ino,
                "a file rotated away from the path was deleted before it was read (rotation faster than reading); its lines are lost");
        }
        reader.busy.keep_missed(kept);
    }

    /// Queues a file for reading behind the others.
    fn queue(&mut self, open: OpenFile) {
        self.reader.busy.forget_missed(&open.identity, open.born);
        drop(self.files.queue(open));
        self.note_newest();
    }

    /// Tells the watch task the newest file we read: where its look starts.
    fn note_newest(&self) {
        let newest = self.files.newest_reading();
        let newest = newest.map(|open| (open.identity, open.born));
        self.reader.busy.set_newest(newest);
    }

    /// Opens the path and positions at its checkpoint.
    fn open_at_path(&mut self, first_open: bool) -> Result<Opened, TailError> {
        match adopt::open_path(&self.reader.id.path)? {
            Some((file, meta)) => self.adopt(file, &meta, first_open),
            None => Ok(Opened::Missing),
        }
    }

    /// Adopts a file the path names. A renamed file the path names again (moved back, a
    /// symlink recreated) is read on from where the lingering reader is, not a second
    /// time from the checkpoint.
    fn adopt(
        &mut self,
        file: File,
        meta: &Metadata,
        first_open: bool,
    ) -> Result<Opened, TailError> {
        if let Some(open) = self.files.reclaim(meta) {
            tracing::info!(tailer = %self.reader.id, "the renamed file is back at the path; following it on");
            self.reader.progress.set_state(TailerState::Running, None);
            return Ok(Opened::File(open));
        }
        self.reader.adopt(file, meta, first_open)
    }
}
