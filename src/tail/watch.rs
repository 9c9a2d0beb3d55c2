//! Notices new files at a tailer's path while the tailer is busy (reading a backlog or
//! waiting for the sink): each one is opened at once and queued, so that several
//! rotations in a row are all read, in order, however long the tailer is busy. When the
//! queue is full a file is only noted (`Busy::take_missed`): the tailer finds it again by
//! name beside the path (`tail/missed.rs`), or counts it skipped when it is gone by then.
//! An idle tailer checks its path itself; then this task sleeps without a timer.

use super::deleted::{DeletedFiles, Handle};
use super::fingerprint::FileIdentity;
use crate::spec::TailerId;
use std::fs::Metadata;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Whether the tailer is busy; shared between the tailer and its watch task.
#[derive(Debug, Default)]
pub struct Busy {
    flag: AtomicBool,
    woken: Notify,
    /// The newest file the tailer holds: not opened again (one fd less).
    newest: Mutex<Option<FileIdentity>>,
    /// Files seen at the path while the queue was full, oldest first.
    missed: Mutex<Vec<Seen>>,
}

/// A file seen at the path and not queued: what tells whether it was read later (an
/// inode number alone does not: a deleted file's is soon another file's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub identity: FileIdentity,
    pub born: Option<SystemTime>,
    /// Its size when seen: what was lost if it is gone before it is read.
    pub size: u64,
}

/// Files noted while the queue is full, at most: beyond, the oldest note is dropped (its
/// file is still found by name if it exists).
const MISSED_NOTES: usize = 256;

impl Busy {
    pub fn set(&self, busy: bool) {
        if !self.flag.swap(busy, Ordering::AcqRel) && busy {
            self.woken.notify_one();
        }
    }

    pub fn set_newest(&self, file: Option<FileIdentity>) {
        *self.newest.lock().unwrap_or_else(|e| e.into_inner()) = file;
    }

    /// Whether `meta` is the newest file the tailer holds.
    fn holds_newest(&self, meta: &Metadata) -> bool {
        let newest = *self.newest.lock().unwrap_or_else(|e| e.into_inner());
        newest.is_some_and(|file| file.same_file(meta))
    }

    /// The files seen at the path while the queue was full, oldest first.
    pub fn take_missed(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.missed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Notes again files taken but not settled yet (before newer notes).
    pub fn keep_missed(&self, kept: Vec<Seen>) {
        let mut missed = self.missed.lock().unwrap_or_else(|e| e.into_inner());
        let newer = std::mem::replace(&mut *missed, kept);
        missed.extend(newer);
    }

    /// Forgets the note of a file the tailer holds now.
    pub fn forget_missed(&self, file: &FileIdentity) {
        let mut missed = self.missed.lock().unwrap_or_else(|e| e.into_inner());
        missed.retain(|seen| !seen.identity.same_file_as(file));
    }

    fn note_missed(&self, seen: Seen) {
        let mut missed = self.missed.lock().unwrap_or_else(|e| e.into_inner());
        if !missed.contains(&seen) {
            if missed.len() >= MISSED_NOTES {
                missed.remove(0);
            }
            missed.push(seen);
        }
    }

    fn get(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// The tailer's end: files found at the path, oldest first. Stops the task when dropped.
pub struct PathWatch {
    pub found: mpsc::Receiver<Handle>,
    _stop: DropGuard,
}

/// Starts watching `tailer`'s path every `interval` while `busy`; at most `capacity`
/// files wait, each held where the deleted-file bounds see it (`held`).
pub fn spawn(
    tailer: TailerId,
    interval: Duration,
    busy: Arc<Busy>,
    capacity: usize,
    held: Arc<DeletedFiles>,
) -> PathWatch {
    let (tx, found) = mpsc::channel(capacity);
    let stop = CancellationToken::new();
    let path = tailer.path.clone();
    tokio::spawn(watch(path, interval, tx, held, tailer, busy, stop.clone()));
    PathWatch {
        found,
        _stop: stop.drop_guard(),
    }
}

async fn watch(
    path: Arc<Path>,
    interval: Duration,
    tx: mpsc::Sender<Handle>,
    held: Arc<DeletedFiles>,
    tailer: TailerId,
    busy: Arc<Busy>,
    stop: CancellationToken,
) {
    crate::fault::panic_once("path-watch");
    let mut last = None;
    loop {
        let wait = async {
            if busy.get() {
                tokio::time::sleep(interval).await;
            } else {
                busy.woken.notified().await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wait => {}
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let opened_last = last.is_some_and(|file: FileIdentity| file.same_file(&meta));
        if opened_last || busy.holds_newest(&meta) || !meta.is_file() {
            continue;
        }
        let Ok(file) = crate::open::open_for_reading(&path) else {
            continue;
        };
        // Identify what was opened, not what was stat'ed: a rename may fall in between.
        let Ok(opened) = file.metadata() else {
            continue;
        };
        last = FileIdentity::of(&file, &opened).ok();
        // The tailer holds at most `capacity` unread files here (bounded fds).
        match (tx.try_send(held.hold(file, &tailer)), last) {
            (Ok(()), _) => {}
            (Err(mpsc::error::TrySendError::Full(_)), Some(identity)) => busy.note_missed(Seen {
                identity,
                born: opened.created().ok(),
                size: opened.len(),
            }),
            (Err(mpsc::error::TrySendError::Full(_)), None) => {}
            (Err(mpsc::error::TrySendError::Closed(_)), _) => return,
        }
    }
}
