//! Event-driven wake-ups for idle tailers: one shared inotify watching the directories of
//! followed paths, so an idle tailer sleeps until its path changes instead of polling. One
//! inotify for all tailers, because inotify instances are scarce (128 per user by default)
//! while watches are not. Without it, tailers fall back to adaptive polling alone.
//!
//! Its events are read by a thread of its own in rounds: a round reads every queued event,
//! raising the signal of each tailer they concern as it reads them (a signal already
//! raised and not yet taken is only read: its tailer is woken once for them all), and the
//! thread then sleeps for [`ROUND`] while the kernel queues (and merges) the next ones. A
//! node with a thousand files each written ten times a second so costs a hundred
//! wake-ups of that thread a second, not ten thousand, and the tailers woken together run
//! one after the other on the runtime's workers; a write is seen at most `ROUND` later. A
//! kernel queue that overflows wakes every tailer.

use super::mounts::Mounts;
use super::signal::Signal;
use crate::ports::Events;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How long the event thread sleeps after each round of wake-ups: how much later than the
/// write a tailer may be woken, for far fewer wake-ups on a busy node (BENCHMARKS.md).
pub const ROUND: Duration = Duration::from_millis(10);

/// What a watched directory reports: writes (and attribute changes, which a truncation
/// may bring) of its files, names arriving and leaving, and the directory itself moved
/// (deleted: `IN_IGNORED`, always reported).
const MASK: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// Set in a registration's `renames` once its directory's watch is gone or moved: names
/// at the path are no longer seen, so its tailer looks at the path every time.
const BLIND: u64 = 1 << 63;

/// The bytes one read of the event thread takes: about 1,500 events of 40-byte names.
const EVENT_BUFFER: usize = 64 * 1024;

/// The event thread's tables are looked up at every event (ten thousand a second on a busy
/// node): a fast hash rather than SipHash, whose resistance to chosen keys buys nothing
/// for paths this process registered itself.
type Fast = foldhash::fast::RandomState;

/// "A file nobody follows appeared in a watched directory": a level, set by the watcher
/// and taken by the reconcile loop, which rate-limits the passes it causes.
#[derive(Default)]
pub struct Appeared {
    pending: AtomicBool,
    notify: Notify,
}

impl Appeared {
    fn set(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Whether a file appeared since the last [`take`](Self::take).
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Clears the level; called before a pass looks at the directories.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Resolves when a file appears (or appeared since the last `take`).
    pub async fn wait(&self) {
        if !self.is_pending() {
            self.notify.notified().await;
        }
    }
}

/// Who waits for a path's changes.
struct Waiter {
    /// Held, not weakly: the event thread raises it without a write to its count (the
    /// tailer's worker reads the same line); the registration removes it when dropped.
    signal: Arc<Signal>,
    /// Woken only when a file arrives at the path or leaves it (not by writes).
    names_only: bool,
    /// Its tailer reads on a timer for now ([`Registration::poll_writes`]): it wants no
    /// wake-up per write.
    polled: bool,
    /// Counts the files arriving at the path (created at it or renamed to it).
    arrivals: Option<Weak<AtomicU64>>,
    /// Counts the names arriving at or leaving the path, and every event lost; [`BLIND`]
    /// once they can no longer be seen ([`Registration::names_seen`]).
    renames: Weak<AtomicU64>,
}

impl Waiter {
    /// Wants a wake-up per write: counted in [`Table::wanting`].
    fn wants_writes(&self) -> bool {
        !self.names_only && !self.polled
    }
}

/// The waiters of a directory's followed names.
type Names = HashMap<OsString, Vec<Waiter>, Fast>;

#[derive(Default)]
struct Table {
    /// Followed path's directory → the path's name in it → the wake-ups of its tailers
    /// (one per topic) and of their watch tasks (names only). By directory, then name: an
    /// event names both apart, so that looking it up joins no path. Directories are held
    /// as the bytes of their paths, here, in `dirs` and in `watches`: a `Path` hashes
    /// and compares by components, which cost more than the rest of an event's lookup.
    /// One directory spelled two ways (`p/./d`, `p/d`) is two directories sharing a
    /// watch, as one reached through a symlink is.
    by_dir: HashMap<OsString, Names, Fast>,
    /// Watched directory → its watch and how many registrations use it.
    dirs: HashMap<OsString, (WatchDescriptor, usize)>,
    /// Watch (its number) → the directories it reports for (one directory reached by
    /// several paths has one watch).
    watches: HashMap<i32, Vec<OsString>, Fast>,
    /// Watches whose mask leaves writes out: every tailer of their directories reads on
    /// a timer ([`Registration::poll_writes`]).
    writes_off: std::collections::HashSet<i32, Fast>,
    /// Directory → how many of its waiters want a wake-up per write (neither names only
    /// nor polled): kept as waiters come, go and change, so that a tailer's change does
    /// not look at every other path of a directory of thousands.
    wanting: HashMap<OsString, usize, Fast>,
    /// See [`Wakeups::names_left`].
    names_left: Arc<AtomicU64>,
    /// Told of each overflow of the kernel's queue ([`Wakeups::report_to`]).
    events: Option<Arc<dyn Events>>,
}

/// Events after which a file that had a name in a watched directory may have none: a
/// name deleted, renamed away or renamed over, the directory moved or gone, events lost.
const NAME_LEFT: EventMask = EventMask::DELETE
    .union(EventMask::MOVED_FROM)
    .union(EventMask::MOVED_TO)
    .union(EventMask::MOVE_SELF)
    .union(EventMask::IGNORED)
    .union(EventMask::Q_OVERFLOW);

/// The directory and the name a followed path is registered under.
fn dir_and_name(path: &Path) -> (&Path, &OsStr) {
    let dir = path.parent().unwrap_or(Path::new("/"));
    (dir, path.file_name().unwrap_or(path.as_os_str()))
}

impl Table {
    /// Raises the wake-ups of an event of watch `wd` with `mask` (about `name` in its
    /// directory); a file arriving that nobody follows sets `appeared`.
    fn dispatch(&mut self, wd: i32, mask: EventMask, name: Option<&OsStr>, appeared: &Appeared) {
        if mask.intersects(NAME_LEFT) {
            // Names nobody follows too: a rotated file deleted beside its path.
            self.names_left.fetch_add(1, Ordering::AcqRel);
        }
        if mask.contains(EventMask::Q_OVERFLOW) {
            // The kernel queue overflowed: events were lost, so everyone looks. The files
            // that arrived at a path meanwhile were not counted (`Registration::arrivals`):
            // one rotated away and deleted unseen meanwhile is lost uncounted. Said, so
            // that it is not silent.
            tracing::warn!(
                "file notifications overflowed the kernel's queue (fs.inotify.max_queued_events): \
                 events were lost; every followed file is looked at, and a file that arrived at a \
                 followed path and was deleted meanwhile may be lost uncounted"
            );
            if let Some(events) = &self.events {
                events.notifications_overflowed();
            }
            let every = self.by_dir.values().flat_map(|names| names.values());
            names_changed(every.flatten(), false);
            return;
        }
        if mask.intersects(EventMask::IGNORED | EventMask::MOVE_SELF) {
            // The directory is gone (or unmounted): so is its watch. Moved, its watch
            // follows it, no longer the paths under its old name (the event thread
            // removes it): a directory made again there gets a watch of its own.
            self.writes_off.remove(&wd);
            let dirs = self.watches.remove(&wd).unwrap_or_default();
            for dir in &dirs {
                self.dirs.remove(dir);
            }
            self.blind(&dirs);
            if !dirs.is_empty() {
                // Gone from under its registrations (a watch removed because none is left
                // has left `watches` already): a reconcile pass watches a glob's directory
                // made again, or its parent meanwhile.
                appeared.set();
            }
            return;
        }
        let Some(name) = name else {
            return;
        };
        let arrival = mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
        let renamed = arrival || mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM);
        let Some(dirs) = self.watches.get(&wd) else {
            return;
        };
        for dir in dirs {
            match self.by_dir.get(dir).and_then(|names| names.get(name)) {
                Some(waiters) => {
                    if renamed {
                        for renames in waiters.iter().filter_map(|w| w.renames.upgrade()) {
                            renames.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    if arrival {
                        let counters = waiters.iter().filter_map(|w| w.arrivals.as_ref());
                        for counter in counters.filter_map(Weak::upgrade) {
                            counter.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    let woken = waiters.iter().filter(|w| renamed || !w.names_only);
                    woken.for_each(|w| w.signal.raise());
                }
                None if arrival => appeared.set(),
                None => {}
            }
        }
    }

    /// Whether a waiter of watch `id`'s directories wants a wake-up per write.
    fn writes_wanted(&self, id: i32) -> bool {
        let mut dirs = self.watches.get(&id).into_iter().flatten();
        dirs.any(|dir| self.wanting.get(dir).is_some_and(|n| *n > 0))
    }

    /// `dir` has `more` more waiters that want writes (fewer when negative).
    fn count_wanting(&mut self, dir: &OsStr, more: isize) {
        if more > 0 {
            *self.wanting.entry(dir.to_owned()).or_default() += more.unsigned_abs();
        } else if more < 0 {
            if let Some(n) = self.wanting.get_mut(dir) {
                *n = n.saturating_sub(more.unsigned_abs());
                if *n == 0 {
                    self.wanting.remove(dir);
                }
            }
        }
    }

    /// Names under `dirs` can no longer be seen: their tailers look at their paths every
    /// time from now on, the first time now.
    fn blind(&self, dirs: &[OsString]) {
        let names = dirs.iter().filter_map(|dir| self.by_dir.get(dir));
        names_changed(names.flat_map(|names| names.values()).flatten(), true);
    }
}

/// Wakes `waiters` and changes what their registrations' `names_seen` says: a name may
/// have changed (`blind`: they can no longer be seen).
fn names_changed<'a>(waiters: impl Iterator<Item = &'a Waiter>, blind: bool) {
    for waiter in waiters {
        if let Some(renames) = waiter.renames.upgrade() {
            match blind {
                true => renames.fetch_or(BLIND, Ordering::AcqRel),
                false => renames.fetch_add(1, Ordering::AcqRel),
            };
        }
        waiter.signal.raise();
    }
}

/// The event thread: rounds of reading every queued event and waking whom they concern,
/// [`ROUND`] apart, until the [`Wakeups`] is dropped (looked at once a second).
fn read_events(mut inotify: Inotify, table: Weak<Mutex<Table>>, appeared: Arc<Appeared>) {
    let mut buffer = vec![0; EVENT_BUFFER];
    loop {
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("file notifications stopped ({e}); idle files are polled");
                return;
            }
        }
        let Some(table) = table.upgrade() else {
            return;
        };
        let mut read_any = false;
        // At most this many reads a round: a stream of events as fast as they are read
        // (writes to /dev/null, say) must not keep the round from ending.
        for _ in 0..64 {
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    read_any = true;
                    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
                    for event in events {
                        let wd = event.wd.get_watch_descriptor_id();
                        table.dispatch(wd, event.mask, event.name, &appeared);
                        if event.mask.contains(EventMask::MOVE_SELF) {
                            // Forgotten by the table: the moved directory's events stop.
                            let _ = inotify.watches().remove(event.wd.clone());
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::error!("file notifications stopped ({e}); idle files are polled");
                    return;
                }
            }
        }
        drop(table);
        // A round that read events (those of files nobody follows too: writes to a
        // device beside a followed path, say) is followed by the pause, so that a stream
        // of them costs a wake-up a round, not one each.
        if read_any {
            std::thread::sleep(ROUND);
        }
    }
}

pub struct Wakeups {
    /// Adds and removes the shared inotify's watches (its events are the thread's).
    inotify: Option<Watches>,
    /// Where notifications do not come from (network filesystems, FUSE).
    mounts: Mounts,
    table: Arc<Mutex<Table>>,
    appeared: Arc<Appeared>,
    names_left: Arc<AtomicU64>,
}

/// A tailer's wake-up; unregistered on drop.
pub struct Registration {
    wakeups: Arc<Wakeups>,
    /// The followed path and, when it is a symlink, its target; each with the watch of
    /// its directory it counts as a user of (none: not watched).
    paths: Vec<(PathBuf, Option<i32>)>,
    pub signal: Arc<Signal>,
    /// Files that arrived at the path (at a symlink's target) since the registration,
    /// as the event thread read them (a round later); a names registration's only. Events
    /// lost to a queue overflow are not counted.
    pub arrivals: Arc<AtomicU64>,
    /// See [`Registration::names_seen`].
    renames: Arc<AtomicU64>,
    /// A symlink whose target could not be resolved: its writes are not seen.
    unresolved: bool,
    /// A directory's mask could not take writes back ([`Registration::poll_writes`]).
    writes_unseen: bool,
}

impl Registration {
    /// Whether notifications arrive for this path (else the tailer must poll): not once
    /// its directory's watch is gone or moved ([`BLIND`]; the directory made again is not
    /// watched by it).
    pub fn is_watched(&self) -> bool {
        !self.unresolved
            && !self.writes_unseen
            && self.renames.load(Ordering::Acquire) & BLIND == 0
            && self.paths.iter().all(|(_, watch)| watch.is_some())
    }

    /// A number that changes whenever a file may have arrived at the path or left it (at
    /// a symlink's target too) as the event thread read it, or events were lost; `None`
    /// when that cannot be known (no notifications, a directory's watch gone or moved):
    /// while it stays the same, the path names the file it named when it was read.
    pub fn names_seen(&self) -> Option<u64> {
        let renames = self.renames.load(Ordering::Acquire);
        (self.is_watched() && renames & BLIND == 0).then_some(renames)
    }
}

impl Wakeups {
    /// Starts the shared inotify and its event thread; when there is none (no inotify
    /// left for the user), registrations still work (and never fire).
    pub fn new() -> Arc<Self> {
        let names_left = Arc::new(AtomicU64::new(0));
        let table = Arc::new(Mutex::new(Table {
            names_left: names_left.clone(),
            ..Table::default()
        }));
        let appeared = Arc::new(Appeared::default());
        // Non-blocking and close-on-exec.
        let inotify = Inotify::init().and_then(|inotify| {
            let watches = inotify.watches();
            let (weak, on_appear) = (Arc::downgrade(&table), appeared.clone());
            std::thread::Builder::new()
                .name("logcatch-inotify".into())
                .spawn(move || read_events(inotify, weak, on_appear))?;
            Ok(watches)
        });
        if let Err(e) = &inotify {
            tracing::warn!("no file notifications ({e}); idle files are polled");
        }
        Arc::new(Wakeups {
            inotify: inotify.ok(),
            mounts: Mounts::default(),
            table,
            appeared,
            names_left,
        })
    }

    /// A watcher that never fires: tailers poll (the model test's paused clock would
    /// otherwise race with notifications arriving in real time).
    #[cfg(test)]
    pub fn without_notifications() -> Arc<Self> {
        Arc::new(Wakeups {
            inotify: None,
            mounts: Mounts::default(),
            table: Arc::default(),
            appeared: Arc::default(),
            names_left: Arc::default(),
        })
    }

    /// Tells `events` of each overflow of the kernel's queue of notifications.
    pub fn report_to(&self, events: Arc<dyn Events>) {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).events = Some(events);
    }

    /// A number that changes whenever a name may have left a watched directory (deleted,
    /// renamed away or over, the directory moved or gone) or events were lost, as the
    /// event thread read it; `None` without notifications. While it stays the same, every
    /// file that had a name in a watched directory still has one: the deleted-file
    /// warden need not look at them (`tail/deleted.rs`).
    pub fn names_left(&self) -> Option<u64> {
        self.inotify
            .as_ref()
            .map(|_| self.names_left.load(Ordering::Acquire))
    }

    /// The watches whose mask leaves writes out ([`Registration::poll_writes`]); checks
    /// the counts of waiters wanting writes against the waiters themselves.
    #[cfg(test)]
    pub fn writes_off(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for (dir, names) in &table.by_dir {
            let waiters = names.values().flatten();
            let wanting = waiters.filter(|w| w.wants_writes()).count();
            assert_eq!(
                table.wanting.get(dir).copied().unwrap_or(0),
                wanting,
                "{dir:?}"
            );
        }
        assert!(table
            .wanting
            .keys()
            .all(|dir| table.by_dir.contains_key(dir)));
        table.writes_off.len()
    }

    /// Whether `path` is on a network or FUSE filesystem (`tail/mounts.rs`).
    pub fn is_remote(&self, path: &Path) -> bool {
        self.mounts.is_remote(path)
    }

    /// Files appearing in watched directories that no tailer follows.
    pub fn appeared(&self) -> &Appeared {
        &self.appeared
    }

    /// Wakes the returned registration whenever `path` (or its directory entry) changes.
    /// A symlink (e.g. `/var/log/containers/*.log` into `/var/log/pods/`) is watched at
    /// its target too: appends change the target, not the link.
    pub fn register(self: &Arc<Self>, path: &Path) -> Registration {
        self.register_as(path, false)
    }

    /// Like [`register`](Self::register), but woken only when a file is created at, renamed
    /// to or from, or deleted at the path: what a busy tailer's watch task waits for
    /// (`tail/watch.rs`), without a wake-up per write.
    pub fn register_names(self: &Arc<Self>, path: &Path) -> Registration {
        self.register_as(path, true)
    }

    fn register_as(self: &Arc<Self>, path: &Path, names_only: bool) -> Registration {
        let signal = Arc::new(Signal::default());
        let arrivals = Arc::new(AtomicU64::new(0));
        let renames = Arc::new(AtomicU64::new(0));
        // Arrivals are counted where files arrive: at a symlink's target, not the link.
        let counted = names_only.then(|| Arc::downgrade(&arrivals));
        let symlink = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let target = symlink.then(|| std::fs::canonicalize(path));
        let resolved = match &target {
            Some(Ok(target)) if target != path => Some(target.clone()),
            _ => None,
        };
        let at_path = if resolved.is_some() {
            None
        } else {
            counted.clone()
        };
        let waiter = |arrivals| Waiter {
            signal: signal.clone(),
            names_only,
            polled: false,
            arrivals,
            renames: Arc::downgrade(&renames),
        };
        let mut paths = vec![(path.to_path_buf(), self.add(path, waiter(at_path)))];
        if let Some(target) = resolved {
            let watch = self.add(&target, waiter(counted));
            paths.push((target, watch));
        }
        Registration {
            wakeups: self.clone(),
            paths,
            signal,
            arrivals,
            renames,
            unresolved: matches!(target, Some(Err(_))),
            writes_unseen: false,
        }
    }

    /// Adds `waiter` for `path`; the watch of its directory when it is watched.
    fn add(&self, path: &Path, waiter: Waiter) -> Option<i32> {
        let (dir, name) = dir_and_name(path);
        let remote = self.mounts.is_remote(path);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let dir = dir.as_os_str().to_owned();
        let wants_writes = waiter.wants_writes();
        let names = table.by_dir.entry(dir.clone()).or_default();
        names.entry(name.to_owned()).or_default().push(waiter);
        table.count_wanting(&dir, isize::from(wants_writes));
        if remote {
            // Writes made on other hosts raise no local notification: the tailer polls.
            return None;
        }
        if let Some((wd, users)) = table.dirs.get_mut(&dir) {
            *users += 1;
            let id = wd.get_watch_descriptor_id();
            if wants_writes && table.writes_off.contains(&id) {
                // Its writes are wanted again: the mask takes them back.
                self.set_mask(&mut table, &dir, id, true);
            }
            return Some(id);
        }
        // A missing directory is polled (the next registration tries again).
        let wd = self
            .inotify
            .as_ref()
            .and_then(|watches| watches.clone().add(&dir, MASK).ok())?;
        let id = wd.get_watch_descriptor_id();
        // Added with every event: a watch of this directory under another name that
        // left writes out takes them again.
        table.writes_off.remove(&id);
        table.dirs.insert(dir.clone(), (wd, 1));
        let dirs = table.watches.entry(id).or_default();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        Some(id)
    }

    /// Undoes one `add` (that counted as a user of `watch`).
    fn remove(&self, path: &Path, signal: &Arc<Signal>, watch: Option<i32>) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let (dir, name) = dir_and_name(path);
        let dir = dir.as_os_str();
        let mut wanting = 0;
        if let Some(names) = table.by_dir.get_mut(dir) {
            if let Some(waiters) = names.get_mut(name) {
                waiters.retain(|w| {
                    let gone = Arc::ptr_eq(&w.signal, signal);
                    wanting -= isize::from(gone && w.wants_writes());
                    !gone
                });
                if waiters.is_empty() {
                    names.remove(name);
                }
            }
            if names.is_empty() {
                table.by_dir.remove(dir);
            }
        }
        table.count_wanting(dir, wanting);
        let Some(watch) = watch else {
            return;
        };
        let Some((wd, users)) = table.dirs.get_mut(dir) else {
            return;
        };
        if wd.get_watch_descriptor_id() != watch {
            // Its watch ended (the directory removed); this one is of the directory made
            // again, whose users do not count this registration.
            return;
        }
        *users = users.saturating_sub(1);
        if *users > 0 {
            return;
        }
        let wd = wd.clone();
        let id = wd.get_watch_descriptor_id();
        table.dirs.remove(dir);
        let Some(dirs) = table.watches.get_mut(&id) else {
            return;
        };
        dirs.retain(|d| d != dir);
        if dirs.is_empty() {
            table.watches.remove(&id);
            table.writes_off.remove(&id);
            if let Some(watches) = &self.inotify {
                let _ = watches.clone().remove(wd);
            }
        }
    }
}

impl Wakeups {
    /// Marks the waiter of `signal` at `path` polled or not, and sets the mask of the
    /// path's directory to what its waiters want; false when that mask could not be set.
    fn set_polled(&self, path: &Path, signal: &Arc<Signal>, polled: bool) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let (dir, name) = dir_and_name(path);
        let dir = dir.as_os_str().to_owned();
        // Marked (and counted) whether or not the directory is still watched: a watch
        // made for it again counts what its waiters want.
        let waiters = table.by_dir.get_mut(&dir).and_then(|n| n.get_mut(name));
        let mut wanting = 0;
        for waiter in waiters.into_iter().flatten() {
            if Arc::ptr_eq(&waiter.signal, signal) && waiter.polled != polled {
                wanting -= isize::from(waiter.wants_writes());
                waiter.polled = polled;
                wanting += isize::from(waiter.wants_writes());
            }
        }
        table.count_wanting(&dir, wanting);
        let Some(id) = table
            .dirs
            .get(&dir)
            .map(|(wd, _)| wd.get_watch_descriptor_id())
        else {
            return !polled;
        };
        let wanted = table.writes_wanted(id);
        if wanted != table.writes_off.contains(&id) {
            return true;
        }
        self.set_mask(&mut table, &dir, id, wanted)
    }

    /// Sets the mask of watch `id` (of `dir`) with or without writes; false when that
    /// failed or the path names another directory now (whose watch then reports writes
    /// again, and is removed unless it is one of ours).
    fn set_mask(&self, table: &mut Table, dir: &OsStr, id: i32, writes: bool) -> bool {
        let Some(watches) = &self.inotify else {
            return false;
        };
        let mask = match writes {
            true => MASK,
            false => MASK.difference(WatchMask::MODIFY),
        };
        // `inotify_add_watch` on a watched directory replaces its mask.
        match watches.clone().add(dir, mask) {
            Ok(wd) if wd.get_watch_descriptor_id() == id => {
                match writes {
                    true => table.writes_off.remove(&id),
                    false => table.writes_off.insert(id),
                };
                true
            }
            Ok(other) => {
                let theirs = other.get_watch_descriptor_id();
                if table.watches.contains_key(&theirs) {
                    let _ = watches.clone().add(dir, MASK);
                    table.writes_off.remove(&theirs);
                } else {
                    let _ = watches.clone().remove(other);
                }
                false
            }
            Err(_) => false,
        }
    }
}

impl Registration {
    /// `polled`: the tailer reads on a timer for now, whatever is written (a file
    /// written more often than `tail.min_read_interval`): its directory's watch leaves
    /// writes out while every tailer there does so, and the event thread reads no event
    /// a write (BENCHMARKS.md "Busy files read on a timer"). Names arriving and leaving
    /// still raise the signal. Back to wake-ups (`false`), the signal is raised: a write
    /// between the tailer's last read and the mask taking writes back is read then; a
    /// mask that cannot take them back leaves the path unwatched ([`is_watched`]: the
    /// tailer polls). Returns whether writes are now left to the timer (false when the
    /// path is not watched or a mask could not be set).
    ///
    /// [`is_watched`]: Self::is_watched
    pub fn poll_writes(&mut self, polled: bool) -> bool {
        if polled && !self.is_watched() {
            return false;
        }
        let watched = self.paths.iter().filter(|(_, watch)| watch.is_some());
        let mut set = true;
        for (path, _) in watched.clone() {
            set &= self.wakeups.set_polled(path, &self.signal, polled);
        }
        if polled && set {
            return true;
        }
        if polled {
            // A directory still reports writes: none is left to the timer.
            for (path, _) in watched {
                set &= self.wakeups.set_polled(path, &self.signal, false);
            }
        }
        if !set {
            self.writes_unseen = true;
        }
        self.signal.raise();
        false
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for (path, watch) in &self.paths {
            self.wakeups.remove(path, &self.signal, *watch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits out the events of what was done so far (read a round later), taking them.
    async fn settled(registration: &Registration) {
        tokio::time::sleep(ROUND * 5).await;
        let _ = tokio::time::timeout(Duration::from_millis(1), registration.signal.taken()).await;
    }

    fn append(path: &Path) {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        file.unwrap().write_all(b"x\n").unwrap();
    }

    /// Appends to `path` once what was done before is read, and waits for `registration`
    /// to be woken by it.
    async fn woken_by_a_write(registration: &Registration, path: &Path, what: &str) {
        settled(registration).await;
        append(path);
        tokio::time::timeout(Duration::from_secs(5), registration.signal.taken())
            .await
            .unwrap_or_else(|_| panic!("{what}"));
    }

    /// Waits (5 s at most) until `done`.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(ROUND).await;
        }
    }

    /// Removes the only watched directory `dir` and waits until its watch's end is read.
    async fn removed(wakeups: &Wakeups, dir: &Path) {
        std::fs::remove_dir_all(dir).unwrap();
        until("the watch's end not seen", || {
            wakeups.table.lock().unwrap().dirs.is_empty()
        })
        .await;
    }

    /// `root/pod` with `a.log` in it: the directory and the paths `a.log`, `b.log`.
    fn pod(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let dir = root.join("pod");
        std::fs::create_dir(&dir).unwrap();
        let (a, b) = (dir.join("a.log"), dir.join("b.log"));
        append(&a);
        (dir, a, b)
    }

    /// Counts the overflows reported.
    #[derive(Default)]
    struct Overflows(AtomicU64);

    impl Events for Overflows {
        fn notifications_overflowed(&self) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    #[tokio::test]
    async fn an_overflow_of_the_kernels_queue_should_wake_every_path_and_be_reported() {
        let limit: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .expect("/proc/sys/fs/inotify/max_queued_events: this test needs inotify")
            .trim()
            .parse()
            .expect("a number");
        let root = tempfile::tempdir().unwrap();
        let (dir, a, b) = pod(root.path());
        let wakeups = Wakeups::new();
        let overflows = Arc::new(Overflows::default());
        wakeups.report_to(overflows.clone());
        let written = wakeups.register(&a);
        // A path nothing happens to: only an overflow wakes it.
        let quiet = wakeups.register(&dir.join("quiet.log"));
        settled(&written).await;
        settled(&quiet).await;
        {
            // The event thread takes the table for each read of events: held, it stops
            // after one read while the kernel queues the rest, more than it keeps.
            let _held = wakeups.table.lock().unwrap();
            use std::io::Write;
            let open = |path: &Path| {
                let file = std::fs::OpenOptions::new().append(true).open(path);
                file.unwrap()
            };
            append(&b);
            let (mut a, mut b) = (open(&a), open(&b));
            // Two files in turn: no event merges with the one before it.
            for _ in 0..limit + 10_000 {
                a.write_all(b"x\n").unwrap();
                b.write_all(b"y\n").unwrap();
            }
        }
        until("the overflow was not reported", || {
            overflows.0.load(Ordering::Acquire) > 0
        })
        .await;
        assert!(
            quiet.signal.is_raised(),
            "a path was not woken by the overflow"
        );
    }

    #[tokio::test]
    async fn a_polled_path_should_be_told_of_names_but_not_writes_until_it_takes_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let (path, other) = (dir.path().join("a.log"), dir.path().join("b.log"));
        append(&path);
        let wakeups = Wakeups::new();
        let mut followed = wakeups.register(&path);
        assert!(followed.poll_writes(true), "a watched path is polled");
        assert_eq!(
            wakeups.writes_off(),
            1,
            "its directory's watch leaves writes out"
        );
        settled(&followed).await;
        append(&path);
        tokio::time::sleep(ROUND * 10).await;
        assert!(!followed.signal.is_raised(), "a write woke a polled path");
        // Names still come: a file renamed to the path.
        append(&other);
        std::fs::rename(&other, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), followed.signal.taken())
            .await
            .expect("woken by the rename");
        // Back to wake-ups: raised at once (a write before the watch took writes back
        // is read then), then by each write again.
        assert!(!followed.poll_writes(false));
        assert_eq!(wakeups.writes_off(), 0);
        assert!(
            followed.signal.is_raised(),
            "raised when writes are taken back"
        );
        woken_by_a_write(&followed, &path, "woken by a write again").await;
        drop(followed);
    }

    /// The directory of a polled path removed (its watch gone) and made again: the path,
    /// back to wake-ups, still counts as wanting writes, so another path polled there
    /// leaves them in the new watch.
    #[tokio::test]
    async fn a_polled_path_whose_directory_was_made_again_should_still_want_writes_after() {
        let root = tempfile::tempdir().unwrap();
        let (dir, a, b) = pod(root.path());
        let wakeups = Wakeups::new();
        let mut followed = wakeups.register(&a);
        assert!(followed.poll_writes(true));
        assert_eq!(wakeups.writes_off(), 1);
        removed(&wakeups, &dir).await;
        assert_eq!(wakeups.writes_off(), 0, "gone with its watch");
        assert!(!followed.poll_writes(false));
        assert_eq!(wakeups.writes_off(), 0, "counts checked");
        std::fs::create_dir(&dir).unwrap();
        append(&b);
        let mut other = wakeups.register(&b);
        assert!(other.poll_writes(true));
        assert_eq!(wakeups.writes_off(), 0, "a.log still wants writes");
        drop((followed, other));
    }

    /// A registration whose directory was removed (its watch ended) dropped after the
    /// directory was made again and watched for another path: the new watch stays.
    #[tokio::test]
    async fn a_registration_of_a_removed_directory_should_leave_the_watch_made_again_alone() {
        let root = tempfile::tempdir().unwrap();
        let (dir, a, b) = pod(root.path());
        let wakeups = Wakeups::new();
        let old = wakeups.register(&a);
        removed(&wakeups, &dir).await;
        std::fs::create_dir(&dir).unwrap();
        let new = wakeups.register(&b);
        assert!(new.is_watched());
        drop(old);
        woken_by_a_write(&new, &b, "the new watch reports b.log's write").await;
    }

    /// A watched directory renamed away (`mv logs logs.1; mkdir logs`): its watch
    /// follows it, so a path in the directory made at the old name gets a watch of its
    /// own, and the paths registered before poll.
    #[tokio::test]
    async fn a_path_in_a_directory_made_where_one_was_renamed_away_should_be_watched() {
        let root = tempfile::tempdir().unwrap();
        let (dir, a, b) = pod(root.path());
        let wakeups = Wakeups::new();
        let old = wakeups.register(&a);
        std::fs::rename(&dir, root.path().join("pod.1")).unwrap();
        until("the move not seen", || !old.is_watched()).await;
        std::fs::create_dir(&dir).unwrap();
        let new = wakeups.register(&b);
        assert!(new.is_watched());
        woken_by_a_write(&new, &b, "b.log's write reported").await;
        drop(old);
        assert!(new.is_watched());
        woken_by_a_write(
            &new,
            &b,
            "b.log's write reported after the old registration went",
        )
        .await;
    }

    #[tokio::test]
    async fn a_directory_should_report_writes_while_any_of_its_paths_wants_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        for name in ["a.log", "b.log", "c.log"] {
            append(&path(name));
        }
        let wakeups = Wakeups::new();
        let mut a = wakeups.register(&path("a.log"));
        let mut b = wakeups.register(&path("b.log"));
        // Its watch task's registration wants names only: it does not keep writes in.
        let _names = wakeups.register_names(&path("b.log"));
        assert!(a.poll_writes(true));
        assert_eq!(wakeups.writes_off(), 0, "b.log's writes are still wanted");
        settled(&b).await;
        append(&path("b.log"));
        tokio::time::timeout(Duration::from_secs(5), b.signal.taken())
            .await
            .expect("b woken by its write");
        assert!(b.poll_writes(true));
        assert_eq!(
            wakeups.writes_off(),
            1,
            "no path of the directory wants writes"
        );
        // A new path in the directory wants them: the watch takes them back.
        let c = wakeups.register(&path("c.log"));
        assert_eq!(wakeups.writes_off(), 0);
        settled(&c).await;
        append(&path("c.log"));
        tokio::time::timeout(Duration::from_secs(5), c.signal.taken())
            .await
            .expect("c woken by its write");
        drop(c);
        // a back to wake-ups, b still polled: writes reported for a.
        assert!(!a.poll_writes(false));
        settled(&a).await;
        append(&path("a.log"));
        tokio::time::timeout(Duration::from_secs(5), a.signal.taken())
            .await
            .expect("a woken by its write");
        // A path that is not watched (its directory missing) is never polled.
        let mut missing = wakeups.register(&dir.path().join("none/d.log"));
        assert!(!missing.poll_writes(true));
        drop((a, b, missing, _names));
        assert_eq!(wakeups.writes_off(), 0, "counts checked as they go");
        let table = wakeups.table.lock().unwrap();
        assert!(table.wanting.is_empty() && table.by_dir.is_empty());
    }

    #[tokio::test]
    async fn a_write_to_the_path_should_wake_its_registration_only() {
        let dir = tempfile::tempdir().unwrap();
        let wakeups = Wakeups::new();
        let followed = wakeups.register(&dir.path().join("a.log"));
        let other = wakeups.register(&dir.path().join("b.log"));
        std::fs::write(dir.path().join("a.log"), "x\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), followed.signal.taken())
            .await
            .expect("woken by the write");
        let quiet = tokio::time::timeout(Duration::from_millis(200), other.signal.taken());
        assert!(quiet.await.is_err(), "another path is not woken");
        drop((followed, other));
        assert!(wakeups.table.lock().unwrap().dirs.is_empty(), "unwatched");
    }

    /// The tables hold directories by the bytes of their paths: one directory spelled
    /// two ways (`p/d` and `p/./d`, equal as `Path`s) is two entries sharing one watch,
    /// and each is woken.
    #[tokio::test]
    async fn a_directory_spelled_two_ways_should_wake_the_paths_under_each() {
        let dir = tempfile::tempdir().unwrap();
        let wakeups = Wakeups::new();
        let plain = wakeups.register(&dir.path().join("a.log"));
        let (parent, name) = (
            dir.path().parent().unwrap(),
            dir.path().file_name().unwrap(),
        );
        let dotted_dir = parent.join(".").join(name);
        assert_eq!(dotted_dir, dir.path(), "equal as paths");
        assert_ne!(
            dotted_dir.as_os_str(),
            dir.path().as_os_str(),
            "not as bytes"
        );
        let dotted = wakeups.register(&dotted_dir.join("b.log"));
        assert!(plain.is_watched() && dotted.is_watched());
        for (registration, name) in [(&dotted, "b.log"), (&plain, "a.log")] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
            tokio::time::timeout(Duration::from_secs(5), registration.signal.taken())
                .await
                .unwrap_or_else(|_| panic!("{name}: not woken by its write"));
        }
        assert_eq!(wakeups.table.lock().unwrap().watches.len(), 1, "one watch");
        drop(dotted);
        std::fs::write(dir.path().join("a.log"), "y\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), plain.signal.taken())
            .await
            .expect("still woken with the other spelling gone");
        drop(plain);
        let table = wakeups.table.lock().unwrap();
        assert!(table.dirs.is_empty() && table.watches.is_empty() && table.by_dir.is_empty());
        assert!(table.wanting.is_empty() && table.writes_off.is_empty());
    }

    /// A busy tailer's watch task weighs the files it saw against those that arrived
    /// (`tail/watch.rs`): arrivals at a symlink's target count, the link and writes not.
    #[tokio::test]
    async fn a_names_registration_should_count_the_files_arriving_at_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("0.log");
        std::fs::write(&target, "x\n").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let wakeups = Wakeups::new();
        let names = wakeups.register_names(&link);
        for n in 1..=3 {
            std::fs::rename(&target, dir.path().join(format!("0.log.{n}"))).unwrap();
            std::fs::write(&target, "y\n").unwrap();
        }
        std::fs::write(&target, "z\n").unwrap();
        let counted = || names.arrivals.load(Ordering::Acquire);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counted() < 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counted(), 3, "three files arrived at the target");
    }

    /// A tailer skips the `statx` of its path while `names_seen` stays the same
    /// (`Tailer::look_at_path`): writes leave it alone; a file renamed away from the path,
    /// one created at it and one deleted change it; once the directory is moved or deleted
    /// it is unknown for good.
    #[tokio::test]
    async fn names_seen_should_change_with_the_names_at_the_path_but_not_with_writes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod");
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("0.log");
        std::fs::write(&path, "x\n").unwrap();
        let wakeups = Wakeups::new();
        let registration = wakeups.register(&path);
        let other = wakeups.register(&root.path().join("elsewhere.log"));
        let first = registration
            .names_seen()
            .expect("a local directory is watched");
        // Waits until `names_seen` is not `before` (or 5 s), then a round more.
        let changed = |before: Option<u64>| {
            let registration = &registration;
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while registration.names_seen() == before && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(ROUND * 5).await;
                registration.names_seen()
            }
        };
        for _ in 0..3 {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"more\n"))
                .unwrap();
        }
        std::fs::write(dir.join("1.log"), "a neighbour\n").unwrap();
        let after_writes = changed(Some(first)).await;
        assert_eq!(
            after_writes,
            Some(first),
            "writes and neighbours change nothing"
        );
        let mut seen = first;
        for step in ["renamed away", "created", "deleted"] {
            match step {
                "renamed away" => std::fs::rename(&path, dir.join("0.log.1")).unwrap(),
                "created" => std::fs::write(&path, "y\n").unwrap(),
                _ => std::fs::remove_file(&path).unwrap(),
            }
            let now = changed(Some(seen)).await.expect("still watched");
            assert_ne!(now, seen, "{step}");
            seen = now;
        }
        std::fs::rename(&dir, root.path().join("pod-moved")).unwrap();
        assert_eq!(changed(Some(seen)).await, None, "the directory moved");
        // Deleted: its watch goes (IN_IGNORED).
        let gone = root.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let in_gone = wakeups.register(&gone.join("0.log"));
        assert!(in_gone.names_seen().is_some());
        std::fs::remove_dir(&gone).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while in_gone.names_seen().is_some() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(in_gone.names_seen(), None, "the directory deleted");
        assert!(
            other.names_seen().is_some(),
            "other directories are still seen"
        );
    }

    #[tokio::test]
    async fn a_names_registration_should_wake_on_rotation_but_not_on_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "x\n").unwrap();
        let wakeups = Wakeups::new();
        let names = wakeups.register_names(&path);
        let writes = wakeups.register(&path);
        std::fs::write(&path, "y\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), writes.signal.taken())
            .await
            .expect("the write wakes the tailer's registration");
        let quiet = tokio::time::timeout(Duration::from_millis(200), names.signal.taken());
        assert!(quiet.await.is_err(), "a write does not wake the watch task");
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), names.signal.taken())
            .await
            .expect("woken by the rename away");
        std::fs::write(&path, "").unwrap();
        tokio::time::timeout(Duration::from_secs(5), names.signal.taken())
            .await
            .expect("woken by the new file");
    }

    #[tokio::test]
    async fn a_write_to_a_symlinks_target_should_wake_the_symlinks_registration() {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("pods/ns_pod_uid/c");
        let containers = dir.path().join("containers");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::create_dir_all(&containers).unwrap();
        std::fs::write(pods.join("0.log"), "").unwrap();
        let link = containers.join("pod_ns_c-abc.log");
        std::os::unix::fs::symlink(pods.join("0.log"), &link).unwrap();
        let wakeups = Wakeups::new();
        let followed = wakeups.register(&link);
        assert!(followed.is_watched());
        std::fs::write(pods.join("0.log"), "x\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), followed.signal.taken())
            .await
            .expect("woken by the write to the target");
        drop(followed);
        assert!(
            wakeups.table.lock().unwrap().dirs.is_empty(),
            "both unwatched"
        );
        assert!(wakeups.table.lock().unwrap().by_dir.is_empty());

        let dangling = containers.join("gone.log");
        std::os::unix::fs::symlink(pods.join("missing.log"), &dangling).unwrap();
        assert!(!wakeups.register(&dangling).is_watched(), "polled instead");
    }

    #[tokio::test]
    async fn a_new_file_in_a_watched_directory_should_be_reported_once_taken() {
        let dir = tempfile::tempdir().unwrap();
        let wakeups = Wakeups::new();
        let followed = wakeups.register(&dir.path().join("a.log"));
        std::fs::write(dir.path().join("a.log"), "x\n").unwrap();
        followed.signal.taken().await;
        assert!(
            !wakeups.appeared().is_pending(),
            "a followed file is no news"
        );
        std::fs::write(dir.path().join("b.log"), "y\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), wakeups.appeared().wait())
            .await
            .expect("told that b.log appeared");
        assert!(wakeups.appeared().take());
        assert!(!wakeups.appeared().is_pending());
        std::fs::rename(dir.path().join("b.log"), dir.path().join("c.log")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), wakeups.appeared().wait())
            .await
            .expect("told that c.log was renamed into the directory");
    }

    #[tokio::test]
    async fn a_directory_deleted_and_made_again_should_be_watched_again() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let wakeups = Wakeups::new();
        let first = wakeups.register(&logs.join("a.log"));
        assert!(first.is_watched());
        // The kernel drops the watch of a deleted directory (IN_IGNORED): so does the table.
        removed(&wakeups, &logs).await;
        std::fs::create_dir(&logs).unwrap();
        let second = wakeups.register(&logs.join("a.log"));
        assert!(second.is_watched());
        std::fs::write(logs.join("a.log"), "x\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), second.signal.taken())
            .await
            .expect("woken by a write in the new directory");
        drop((first, second));
        assert!(wakeups.table.lock().unwrap().watches.is_empty());
    }

    #[tokio::test]
    async fn one_directory_reached_by_two_paths_should_wake_both() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        let wakeups = Wakeups::new();
        let by_real = wakeups.register(&real.join("a.log"));
        let by_alias = wakeups.register(&alias.join("a.log"));
        assert_eq!(wakeups.table.lock().unwrap().watches.len(), 1, "one watch");
        std::fs::write(real.join("a.log"), "x\n").unwrap();
        for registration in [&by_real, &by_alias] {
            tokio::time::timeout(Duration::from_secs(5), registration.signal.taken())
                .await
                .expect("woken by the write");
        }
        drop(by_real);
        std::fs::write(real.join("a.log"), "y\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), by_alias.signal.taken())
            .await
            .expect("the watch stays for the other path");
        drop(by_alias);
        assert!(wakeups.table.lock().unwrap().watches.is_empty());
    }

    #[tokio::test]
    async fn the_event_thread_should_end_with_its_wakeups() {
        let wakeups = Wakeups::new();
        assert!(wakeups.inotify.is_some());
        // The thread holds the `Appeared` it sets until it returns.
        let thread = Arc::downgrade(&wakeups.appeared);
        drop(wakeups);
        // The thread looks once a second whether the table is gone, then drops its inotify.
        until("the event thread ended", || thread.strong_count() == 0).await;
    }
}
