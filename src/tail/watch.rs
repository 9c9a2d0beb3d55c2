//! Notices new files at a tailer's path while the tailer is busy (reading a backlog or
//! waiting for the sink): each one is opened at once and queued, so that several
//! rotations in a row are all read, in order, however long the tailer is busy. An idle
//! tailer checks its path itself; then this task sleeps without a timer.

use super::fingerprint::FileIdentity;
use std::fs::{File, Metadata};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Whether the tailer is busy; shared between the tailer and its watch task.
#[derive(Debug, Default)]
pub struct Busy {
    flag: AtomicBool,
    woken: Notify,
    /// The newest file the tailer holds: not opened again (one fd less).
    newest: Mutex<Option<FileIdentity>>,
}

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

    fn get(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// The tailer's end: files found at the path, oldest first. Stops the task when dropped.
pub struct PathWatch {
    pub found: mpsc::Receiver<File>,
    _stop: DropGuard,
}

/// Starts watching `path` every `interval` while `busy`; at most `capacity` files wait.
pub fn spawn(path: Arc<Path>, interval: Duration, busy: Arc<Busy>, capacity: usize) -> PathWatch {
    let (tx, found) = mpsc::channel(capacity);
    let stop = CancellationToken::new();
    tokio::spawn(watch(path, interval, tx, busy, stop.clone()));
    PathWatch {
        found,
        _stop: stop.drop_guard(),
    }
}

async fn watch(
    path: Arc<Path>,
    interval: Duration,
    tx: mpsc::Sender<File>,
    busy: Arc<Busy>,
    stop: CancellationToken,
) {
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
        // Waits when the tailer already holds `capacity` unread files (bounded fds).
        if tx.send(file).await.is_err() {
            return;
        }
    }
}
