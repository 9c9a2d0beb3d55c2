//! Deleted files the tailers still hold. A file deleted while it has lines left (the
//! kubelet removes rotated logs beyond `containerLogMaxFiles`) stays open until they are
//! read and acknowledged — but while the sink is down that pins the node's disk, and the
//! node goes into DiskPressure. Every file a tailer holds is opened through a [`Handle`]
//! registered here; the warden (`run`) looks at them every second, shows what deleted
//! ones hold (`/status` `deleted_files`, `logcatch_deleted_file_*`), and closes the
//! oldest beyond `tail.deleted_files_max_bytes` or older than `tail.deleted_files_max_age`
//! since their deletion. What a closed file had not handed to the sink is the one
//! deliberate loss: counted in `logcatch_deleted_bytes_released_total` and logged with
//! its path and size. A file's claim (`tail/claims.rs`) is held with its descriptor and
//! goes with it: once closed, its inode number is free for the next new file, which
//! another tailer must be able to take while the first still waits for the sink.

use super::claims::Claim;
use super::fingerprint::FileIdentity;
use crate::ports::health::DeletedView;
use crate::ports::Events;
use crate::spec::TailerId;
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often held files are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Every held file is looked at (an `fstat` each) at least once in this many looks; in
/// between only those already found deleted, unless a name may have left a watched
/// directory since the last look ([`super::Wakeups::names_left`]). A file can lose its
/// last name unseen only outside watched directories (a network filesystem, a file
/// renamed away into another directory): found within this many seconds.
const LOOK_ALL_EVERY: u32 = 10;

/// A file a tailer holds; the warden may close it under the tailer once it is deleted.
#[derive(Debug)]
pub struct Handle(Arc<Slot>);

#[derive(Debug)]
struct Slot {
    /// `None` once released: reads see its end, `metadata` fails.
    file: Mutex<Option<File>>,
    /// The tailer's claim on the file (by device and inode number), dropped with the
    /// descriptor: a released file's number may be a new file's at once.
    claim: Mutex<Option<Claim>>,
    tailer: TailerId,
    /// Where everything before was handed to the sink (what a release does not lose);
    /// stored with `file` locked.
    submitted: AtomicU64,
    /// When it was first seen deleted.
    deleted_since: Mutex<Option<Instant>>,
}

/// Every file held, and what the last look found.
#[derive(Debug, Default)]
pub struct DeletedFiles {
    held: Mutex<Vec<Weak<Slot>>>,
    view: Mutex<DeletedView>,
    /// Deleted files of failed tailers, until they start again (oldest first).
    kept: Mutex<HashMap<TailerId, Vec<Handle>>>,
    looks: Mutex<Looks>,
    /// Files looked at (`fstat`), for the tests.
    #[cfg(test)]
    looked_at: AtomicU64,
}

/// What decides whether a look looks at every held file (`DeletedFiles::look_due`).
#[derive(Debug, Default)]
struct Looks {
    names_left: Option<u64>,
    since_all: u32,
}

/// The bounds on deleted files held, node-wide.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl Handle {
    pub fn file(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.0.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads at `offset`; a released file is at its end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self.file().as_ref() {
            Some(file) => file.read_at(buf, offset),
            None => Ok(0),
        }
    }

    pub fn metadata(&self) -> io::Result<Metadata> {
        match self.file().as_ref() {
            Some(file) => file.metadata(),
            None => Err(released()),
        }
    }

    /// The file, to be held under another handle (and claimed again); `None` if the
    /// warden closed it.
    pub fn take(self) -> Option<File> {
        let file = self.file().take();
        self.release_claim();
        file
    }

    fn release_claim(&self) {
        drop(
            self.0
                .claim
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    /// Whether the file has no name left on disk (and is still open).
    pub fn is_deleted(&self) -> bool {
        self.metadata().is_ok_and(|meta| meta.nlink() == 0)
    }

    /// Whether the warden closed it (deleted, beyond the bounds).
    pub fn is_released(&self) -> bool {
        self.file().is_none()
    }

    /// Marks everything before `offset` handed to the sink, unless the warden closed
    /// the file: then false, and the caller must not ship what it read beyond the last
    /// mark (the warden counted it lost). Atomic with a release: a batch is either
    /// shipped and not counted, or counted and not shipped.
    pub fn submit(&self, offset: u64) -> bool {
        let file = self.file();
        if file.is_none() {
            return false;
        }
        self.0.submitted.store(offset, Ordering::Relaxed);
        true
    }

    /// Sets where the file is handed to the sink up to (opened, or restarted at 0).
    pub fn set_submitted(&self, offset: u64) {
        self.0.submitted.store(offset, Ordering::Relaxed);
    }

    /// The offset covered by the last submitted batch (or checkpoint-only entry).
    pub fn submitted(&self) -> u64 {
        self.0.submitted.load(Ordering::Relaxed)
    }

    /// Identifies the file from what it holds now.
    pub fn identify(&self) -> io::Result<FileIdentity> {
        let file = self.file();
        let file = file.as_ref().ok_or_else(released)?;
        FileIdentity::of(file, &file.metadata()?)
    }
}

impl Slot {
    /// Whether a look found it deleted.
    fn was_deleted(&self) -> bool {
        self.deleted_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

fn released() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        "deleted and closed at tail.deleted_files_max_bytes / max_age",
    )
}

impl DeletedFiles {
    /// Holds `file` for `tailer`, where the warden sees it.
    pub fn hold(&self, file: File, tailer: &TailerId) -> Handle {
        self.hold_claimed(file, None, tailer)
    }

    /// Holds `file` with the tailer's claim on it, released with the descriptor.
    pub fn hold_claimed(&self, file: File, claim: Option<Claim>, tailer: &TailerId) -> Handle {
        let slot = Arc::new(Slot {
            file: Mutex::new(Some(file)),
            claim: Mutex::new(claim),
            tailer: tailer.clone(),
            submitted: AtomicU64::new(0),
            deleted_since: Mutex::new(None),
        });
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.push(Arc::downgrade(&slot));
        Handle(slot)
    }

    /// Keeps a deleted file a failed tailer held, for its next start (which claims it
    /// again).
    pub fn keep_for(&self, tailer: &TailerId, handle: Handle) {
        handle.release_claim();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.entry(tailer.clone()).or_default().push(handle);
    }

    /// The deleted files kept for `tailer`, oldest first (those closed at the bounds
    /// meanwhile are gone, counted).
    pub fn take_kept(&self, tailer: &TailerId) -> Vec<File> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let handles = kept.remove(tailer).unwrap_or_default();
        handles.into_iter().filter_map(Handle::take).collect()
    }

    /// Forgets what was kept for a tailer that will not start again.
    pub fn forget(&self, tailer: &TailerId) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.remove(tailer);
    }

    /// Looks at every held file once: notes the deleted ones and closes the oldest beyond
    /// `bounds`. Blocking (an `fstat` per held file). The warden looks with
    /// [`look_due`](Self::look_due); the tests, whole.
    #[cfg(test)]
    pub fn look(&self, bounds: Bounds, events: &dyn Events) -> DeletedView {
        self.look_at(bounds, events, true)
    }

    /// The warden's look: at every held file when a name may have left a watched
    /// directory since the last look (`names_left`, from `Wakeups::names_left`; `None`:
    /// not known, always) and every [`LOOK_ALL_EVERY`] looks; else only at the files
    /// found deleted before (their sizes and ages). At 10,000 files that is 10,000 `fstat`s
    /// a second fewer while no file is deleted (BENCHMARKS.md).
    pub fn look_due(
        &self,
        bounds: Bounds,
        events: &dyn Events,
        names_left: Option<u64>,
    ) -> DeletedView {
        let all = {
            let mut looks = self.looks.lock().unwrap_or_else(|e| e.into_inner());
            looks.since_all += 1;
            let all = names_left.is_none()
                || names_left != looks.names_left
                || looks.since_all >= LOOK_ALL_EVERY;
            looks.names_left = names_left;
            if all {
                looks.since_all = 0;
            }
            all
        };
        self.look_at(bounds, events, all)
    }

    /// A look at every held file (`all`) or at the deleted ones only.
    fn look_at(&self, bounds: Bounds, events: &dyn Events, all: bool) -> DeletedView {
        let now = Instant::now();
        let slots: Vec<Arc<Slot>> = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.retain(|slot| slot.strong_count() > 0);
            let slots = held.iter().filter_map(Weak::upgrade);
            slots.filter(|slot| all || slot.was_deleted()).collect()
        };
        // (since, size, slot) of each deleted file still open, oldest first.
        let mut deleted: Vec<(Instant, u64, Arc<Slot>)> = slots
            .into_iter()
            .filter_map(|slot| {
                #[cfg(test)]
                self.looked_at.fetch_add(1, Ordering::Relaxed);
                let meta = slot.file.lock().ok()?.as_ref()?.metadata().ok()?;
                if meta.nlink() > 0 {
                    return None;
                }
                let since = *slot
                    .deleted_since
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(now);
                Some((since, meta.len(), slot))
            })
            .collect();
        deleted.sort_by_key(|(since, _, _)| *since);
        let mut bytes: u64 = deleted.iter().map(|(_, size, _)| size).sum();
        let mut kept = Vec::new();
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        for (since, size, slot) in deleted {
            let age = now.duration_since(since);
            let reason = if age > bounds.max_age {
                "max_age"
            } else if bytes > bounds.max_bytes {
                "max_bytes"
            } else {
                kept.push((since, size));
                continue;
            };
            let (file, submitted) = {
                let mut file = slot.file.lock().unwrap_or_else(|e| e.into_inner());
                // Read with the file locked: a batch is handed to the sink before
                // (`Handle::submit`, counted shipped) or not at all (counted lost here).
                (file.take(), slot.submitted.load(Ordering::Relaxed))
            };
            let Some(file) = file else {
                continue;
            };
            drop(file);
            drop(slot.claim.lock().unwrap_or_else(|e| e.into_inner()).take());
            bytes -= size;
            let lost = size.saturating_sub(submitted);
            view.released_bytes += lost;
            view.released_files += 1;
            events.deleted_file_released(&slot.tailer.topic, reason, lost);
            tracing::warn!(tailer = %slot.tailer, size, lost_bytes = lost, age_seconds = age.as_secs(),
                "closed a deleted file the sink has not taken yet (tail.deleted_files_{reason}): its unshipped lines are lost");
        }
        view.files = kept.len() as u64;
        view.bytes = kept.iter().map(|(_, size)| size).sum();
        view.oldest_seconds = kept
            .first()
            .map_or(0, |(since, _)| now.duration_since(*since).as_secs());
        view.clone()
    }

    /// Looks every second until `stop` (`look_due`, with `names_left`), on the blocking
    /// pool, and hands each look's result to `publish` (`/status`).
    pub async fn run(
        self: Arc<Self>,
        bounds: Bounds,
        events: Arc<dyn Events>,
        names_left: Arc<dyn Fn() -> Option<u64> + Send + Sync>,
        publish: Arc<dyn Fn(DeletedView) + Send + Sync>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (files, events, publish) = (self.clone(), events.clone(), publish.clone());
            // Read before the look: a name that leaves during it changes the next one.
            let names_left = names_left();
            let _ = tokio::task::spawn_blocking(move || {
                let view = files.look_due(bounds, &*events, names_left);
                events.deleted_files(view.files, view.bytes, view.oldest_seconds);
                publish(view);
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::NoEvents;

    fn held(dir: &std::path::Path, files: &DeletedFiles, name: &str, size: usize) -> Handle {
        let path = dir.join(name);
        std::fs::write(&path, vec![b'x'; size]).unwrap();
        let handle = files.hold(File::open(&path).unwrap(), &TailerId::new("t", &path));
        std::fs::remove_file(&path).unwrap();
        handle
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_deleted_files_beyond_the_bounds_should_be_closed_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let files = DeletedFiles::default();
        let bounds = Bounds {
            max_bytes: 250,
            max_age: Duration::from_secs(60),
        };
        let old = held(dir.path(), &files, "old", 100);
        tokio::time::advance(Duration::from_secs(1)).await;
        files.look(bounds, &NoEvents);
        let linked = dir.path().join("linked");
        std::fs::write(&linked, b"kept").unwrap();
        let _linked = files.hold(File::open(&linked).unwrap(), &TailerId::new("t", &linked));
        let mid = held(dir.path(), &files, "mid", 100);
        mid.set_submitted(40);
        let view = files.look(bounds, &NoEvents);
        assert_eq!((view.files, view.bytes, view.released_files), (2, 200, 0));
        assert_eq!(view.oldest_seconds, 0);

        tokio::time::advance(Duration::from_secs(1)).await;
        let new = held(dir.path(), &files, "new", 100);
        let view = files.look(bounds, &NoEvents);
        assert!(old.is_released(), "the oldest goes first");
        assert!(!mid.is_released() && !new.is_released());
        assert_eq!((view.files, view.bytes), (2, 200));
        assert_eq!((view.released_files, view.released_bytes), (1, 100));
        let mut buf = [0u8; 8];
        assert_eq!(old.read_at(&mut buf, 0).unwrap(), 0, "at its end");
        assert!(old.metadata().is_err());

        tokio::time::advance(Duration::from_secs(60)).await;
        let view = files.look(bounds, &NoEvents);
        assert!(mid.is_released(), "older than max_age");
        assert_eq!(view.released_bytes, 100 + 60, "what was not submitted");
        drop(new);
        assert_eq!(
            files.look(bounds, &NoEvents).files,
            0,
            "closed by its tailer"
        );
    }

    /// The warden's looks at 10,000 files were 10,000 `fstat`s a second with nothing
    /// deleted. Now: every file when a name left a watched directory (a real inotify),
    /// the deleted ones in between, and every file every `LOOK_ALL_EVERY` looks for those
    /// that lose their name unseen.
    #[tokio::test]
    async fn a_look_should_look_at_every_file_only_after_a_name_left_or_now_and_then() {
        let dir = tempfile::tempdir().unwrap();
        let (watched, unwatched) = (dir.path().join("watched"), dir.path().join("elsewhere"));
        std::fs::create_dir(&watched).unwrap();
        std::fs::create_dir(&unwatched).unwrap();
        let wakeups = crate::tail::Wakeups::new();
        let files = DeletedFiles::default();
        let bounds = Bounds {
            max_bytes: u64::MAX,
            max_age: Duration::from_secs(3600),
        };
        let hold = |dir: &std::path::Path, name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, b"0123456789").unwrap();
            files.hold(File::open(&path).unwrap(), &TailerId::new("t", &path))
        };
        let _registrations: Vec<_> = ["a.log", "b.log"]
            .iter()
            .map(|name| wakeups.register(&watched.join(name)))
            .collect();
        let _held = [
            hold(&watched, "a.log"),
            hold(&watched, "b.log"),
            hold(&unwatched, "c.log"),
        ];
        let looked_at = || files.looked_at.swap(0, Ordering::Relaxed);
        let look = || files.look_due(bounds, &NoEvents, wakeups.names_left());
        assert_eq!((look().files, looked_at()), (0, 3), "the first look: all");
        assert_eq!((look().files, looked_at()), (0, 0), "nothing left a name");

        let before = wakeups.names_left();
        std::fs::remove_file(watched.join("b.log")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while wakeups.names_left() == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((look().files, looked_at()), (1, 3), "a name left: all");
        assert_eq!(
            (look().files, looked_at()),
            (1, 1),
            "the deleted one's size"
        );

        // Deleted where no notification tells: found at the next look at all.
        std::fs::remove_file(unwatched.join("c.log")).unwrap();
        let mut looks = 0;
        while look().files < 2 {
            looks += 1;
            assert!(looks < LOOK_ALL_EVERY, "found within LOOK_ALL_EVERY looks");
        }
        assert_eq!(
            looked_at(),
            (looks as u64) + 3,
            "the deleted one each, then all"
        );
        assert_eq!(
            files.look_due(bounds, &NoEvents, None).files,
            2,
            "without notifications"
        );
        assert_eq!(looked_at(), 3, "without notifications: all");
    }

    #[test]
    fn a_released_file_should_let_its_claim_go_and_refuse_later_batches() {
        use crate::tail::claims::Claims;
        let dir = tempfile::tempdir().unwrap();
        let files = DeletedFiles::default();
        let claims = Arc::new(Claims::default());
        let path = dir.path().join("app.log");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        let (owner, other) = (
            TailerId::new("t", &path),
            TailerId::new("t", std::path::Path::new("/other.log")),
        );
        let claim = claims.claim(&owner, 1, 7).unwrap();
        let handle = files.hold_claimed(File::open(&path).unwrap(), Some(claim), &owner);
        assert!(handle.submit(30), "handed over while open");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(claims.claim(&other, 1, 7).unwrap_err(), owner);
        let bounds = Bounds {
            max_bytes: 10,
            max_age: Duration::from_secs(60),
        };
        let view = files.look(bounds, &NoEvents);
        assert_eq!((view.released_files, view.released_bytes), (1, 70));
        assert!(
            claims.claim(&other, 1, 7).is_ok(),
            "the inode number is free for a new file: so is its claim"
        );
        assert!(
            !handle.submit(60),
            "a batch read before the release is counted lost, not shipped"
        );
        assert_eq!(handle.submitted(), 30);
    }
}
