//! Event-driven wake-ups for idle tailers: one shared inotify (via `notify`) watching the
//! directories of followed paths, so an idle tailer sleeps until its path changes instead
//! of polling. One watcher for all tailers, because inotify instances are scarce (128 per
//! user by default) while watches are not. Without it, tailers fall back to adaptive
//! polling alone.

use super::mounts::Mounts;
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

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
    notify: Weak<Notify>,
    /// Woken only when a file arrives at the path or leaves it (not by writes).
    names_only: bool,
}

#[derive(Default)]
struct Table {
    /// Followed path → the wake-ups of its tailers (one per topic) and of their watch
    /// tasks (names only).
    by_path: HashMap<PathBuf, Vec<Waiter>>,
    /// Watched directory → how many registrations use it.
    dirs: HashMap<PathBuf, usize>,
}

pub struct Wakeups {
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// Where notifications do not come from (network filesystems, FUSE).
    mounts: Mounts,
    table: Arc<Mutex<Table>>,
    appeared: Arc<Appeared>,
}

/// A tailer's wake-up; unregistered on drop.
pub struct Registration {
    wakeups: Arc<Wakeups>,
    /// The followed path and, when it is a symlink, its target; each with whether its
    /// directory is watched.
    paths: Vec<(PathBuf, bool)>,
    pub notify: Arc<Notify>,
    /// A symlink whose target could not be resolved: its writes are not seen.
    unresolved: bool,
}

impl Registration {
    /// Whether notifications arrive for this path (else the tailer must poll).
    pub fn is_watched(&self) -> bool {
        !self.unresolved && self.paths.iter().all(|(_, watched)| *watched)
    }
}

impl Wakeups {
    /// Starts the shared watcher; when the platform has none, registrations still work
    /// (and never fire).
    pub fn new() -> Arc<Self> {
        let table = Arc::new(Mutex::new(Table::default()));
        let events = table.clone();
        let appeared = Arc::new(Appeared::default());
        let on_appear = appeared.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let table = events.lock().unwrap_or_else(|e| e.into_inner());
            if event.need_rescan() {
                // The kernel queue overflowed: events were lost, so everyone looks.
                let all = table.by_path.values().flatten();
                all.filter_map(|w| w.notify.upgrade())
                    .for_each(|n| n.notify_one());
                return;
            }
            let arrival = matches!(
                event.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
            );
            let renamed = arrival || matches!(event.kind, notify::EventKind::Remove(_));
            for path in &event.paths {
                match table.by_path.get(path) {
                    Some(waiters) => waiters
                        .iter()
                        .filter(|w| renamed || !w.names_only)
                        .filter_map(|w| w.notify.upgrade())
                        .for_each(|n| n.notify_one()),
                    None if arrival => on_appear.set(),
                    None => {}
                }
            }
        });
        if let Err(e) = &watcher {
            tracing::warn!("no file notifications ({e}); idle files are polled");
        }
        Arc::new(Wakeups {
            watcher: Mutex::new(watcher.ok()),
            mounts: Mounts::default(),
            table,
            appeared,
        })
    }

    /// A watcher that never fires: tailers poll (the model test's paused clock would
    /// otherwise race with notifications arriving in real time).
    #[cfg(test)]
    pub fn without_notifications() -> Arc<Self> {
        Arc::new(Wakeups {
            watcher: Mutex::new(None),
            mounts: Mounts::default(),
            table: Arc::default(),
            appeared: Arc::default(),
        })
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
        let notify = Arc::new(Notify::new());
        let mut paths = vec![(path.to_path_buf(), self.add(path, &notify, names_only))];
        let mut unresolved = false;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            match std::fs::canonicalize(path) {
                Ok(target) if target != path => {
                    let watched = self.add(&target, &notify, names_only);
                    paths.push((target, watched));
                }
                Ok(_) => {}
                Err(_) => unresolved = true,
            }
        }
        Registration {
            wakeups: self.clone(),
            paths,
            notify,
            unresolved,
        }
    }

    /// Adds `notify` as a waiter for `path`; true when its directory is watched.
    fn add(&self, path: &Path, notify: &Arc<Notify>, names_only: bool) -> bool {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let remote = self.mounts.is_remote(path);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .by_path
            .entry(path.to_path_buf())
            .or_default()
            .push(Waiter {
                notify: Arc::downgrade(notify),
                names_only,
            });
        if remote {
            // Writes made on other hosts raise no local notification: the tailer polls.
            return false;
        }
        let users = table.dirs.entry(dir.clone()).or_insert(0);
        *users += 1;
        let first = *users == 1;
        // Never call the watcher with the table locked: its event thread may be waiting
        // for the table in the callback while `watch` waits for that thread.
        drop(table);
        let mut dir_watched = true;
        if first {
            let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
            // A missing directory is polled (the next registration tries again).
            dir_watched = watcher
                .as_mut()
                .is_some_and(|w| w.watch(&dir, RecursiveMode::NonRecursive).is_ok());
        }
        if !dir_watched {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(users) = table.dirs.get_mut(&dir) {
                *users = users.saturating_sub(1);
            }
        }
        dir_watched
    }

    /// Undoes one `add`.
    fn remove(&self, path: &Path, notify: &Arc<Notify>, dir_watched: bool) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiters) = table.by_path.get_mut(path) {
            let gone = Arc::downgrade(notify);
            waiters.retain(|w| w.notify.strong_count() > 0 && !Weak::ptr_eq(&w.notify, &gone));
            if waiters.is_empty() {
                table.by_path.remove(path);
            }
        }
        if !dir_watched {
            return;
        }
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let last = match table.dirs.get_mut(&dir) {
            Some(users) => {
                *users = users.saturating_sub(1);
                *users == 0
            }
            None => false,
        };
        if last {
            table.dirs.remove(&dir);
        }
        drop(table);
        if last {
            let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = watcher.as_mut() {
                let _ = w.unwatch(&dir);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for (path, watched) in &self.paths {
            self.wakeups.remove(path, &self.notify, *watched);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_to_the_path_should_wake_its_registration_only() {
        let dir = tempfile::tempdir().unwrap();
        let wakeups = Wakeups::new();
        let followed = wakeups.register(&dir.path().join("a.log"));
        let other = wakeups.register(&dir.path().join("b.log"));
        std::fs::write(dir.path().join("a.log"), "x\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), followed.notify.notified())
            .await
            .expect("woken by the write");
        let quiet = tokio::time::timeout(Duration::from_millis(200), other.notify.notified());
        assert!(quiet.await.is_err(), "another path is not woken");
        drop((followed, other));
        assert!(wakeups.table.lock().unwrap().dirs.is_empty(), "unwatched");
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
        tokio::time::timeout(Duration::from_secs(5), writes.notify.notified())
            .await
            .expect("the write wakes the tailer's registration");
        let quiet = tokio::time::timeout(Duration::from_millis(200), names.notify.notified());
        assert!(quiet.await.is_err(), "a write does not wake the watch task");
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), names.notify.notified())
            .await
            .expect("woken by the rename away");
        std::fs::write(&path, "").unwrap();
        tokio::time::timeout(Duration::from_secs(5), names.notify.notified())
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
        tokio::time::timeout(Duration::from_secs(5), followed.notify.notified())
            .await
            .expect("woken by the write to the target");
        drop(followed);
        assert!(
            wakeups.table.lock().unwrap().dirs.is_empty(),
            "both unwatched"
        );
        assert!(wakeups.table.lock().unwrap().by_path.is_empty());

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
        followed.notify.notified().await;
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
}
