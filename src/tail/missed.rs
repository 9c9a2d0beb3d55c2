//! Files rotated away before the tailer took them: several rotations within one poll
//! interval (the path named a file nobody looked at), or while the tailer already held
//! as many newer files as it may (`files::MAX_FILES`). Each was at the path between two
//! files the tailer did see, so it is found by name beside the path — `app.log.3`,
//! `0.log.20261203-221500` — among the files born (inode birth time) between them: by
//! the watch task between two of its looks (`tail/watch.rs`), and by the tailer between
//! the newest file it holds and the next one it takes.

use super::fingerprint::FileIdentity;
use super::siblings::directories;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A file seen at the path and not queued: what tells whether it was read later (an
/// inode number alone does not: a deleted file's is soon another file's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub identity: FileIdentity,
    pub born: Option<SystemTime>,
    /// Its size when seen: what was lost if it is gone before it is read.
    pub size: u64,
}

/// One end of a window of births: a file by device, inode and birth time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Born {
    pub dev: u64,
    pub ino: u64,
    pub at: SystemTime,
}

impl Born {
    /// `None` when the filesystem keeps no birth times.
    pub fn of(meta: &Metadata) -> Option<Born> {
        use std::os::unix::fs::MetadataExt;
        Some(Born {
            dev: meta.dev(),
            ino: meta.ino(),
            at: meta.created().ok()?,
        })
    }

    /// Whether `meta` is this very file: the same device and inode, born at the same
    /// time (a deleted file's inode number is soon another file's: while a tailer
    /// catches up, it closes a deleted file every few milliseconds).
    pub fn is(&self, meta: &Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino()) == (self.dev, self.ino) && meta.created().ok() == Some(self.at)
    }
}

/// The kubelet gzips a rotated `0.log.<time>` into `0.log.<time>.tmp` and renames it to
/// `.gz` when done: never at the path, and no magic number to tell it by until its first
/// bytes are written.
const COMPRESSING: &[u8] = b".tmp";

/// A regular file that was at the path between two the tailer saw, opened.
pub struct Missed {
    pub path: PathBuf,
    pub file: File,
    pub meta: Metadata,
    /// Birth, then last write: the order files were at the path.
    born: (SystemTime, SystemTime),
}

/// The files beside `path` (or beside its symlinks' targets) whose name is the followed
/// file's name with something appended, born from `after` to `before`, oldest first
/// (then by last write), skipping `after` and `before` themselves, those `held` says the
/// tailer holds, and compressed ones (or being compressed: `COMPRESSING`). Birth times
/// come from the kernel's coarse clock (a few milliseconds): files created within one
/// tick tie, so both ends are included (a file read before resumes at its checkpoint)
/// and tied files may be read in either order.
pub fn between(
    path: &Path,
    after: Born,
    before: Born,
    held: impl Fn(&Metadata) -> bool,
) -> Vec<Missed> {
    let mut found: Vec<Missed> = Vec::new();
    for (dir, name) in directories(path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let entry_name = entry.file_name();
            let (entry_name, name) = (entry_name.as_bytes(), name.as_bytes());
            if entry_name.len() <= name.len()
                || !entry_name.starts_with(name)
                || entry_name.ends_with(COMPRESSING)
            {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let Ok(born) = meta.created() else { continue };
            if !meta.is_file()
                || born < after.at
                || born > before.at
                || after.is(&meta)
                || before.is(&meta)
                || held(&meta)
                || crate::compressed::is_compressed(&path, &meta)
            {
                continue;
            }
            let Ok(file) = crate::open::open_for_reading(&path) else {
                continue;
            };
            // What was opened, not what was looked at: a rename may fall in between.
            let Ok(meta) = file.metadata() else { continue };
            if !found.iter().any(|m| same(&m.meta, &meta)) {
                let written = meta.modified().unwrap_or(born);
                found.push(Missed {
                    path,
                    file,
                    meta,
                    born: (born, written),
                });
            }
        }
    }
    found.sort_by_key(|m| m.born);
    found
}

impl Seen {
    /// Whether `file` (born `born`) is the file seen: the same inode, born at the same
    /// time — a deleted file's inode number is soon another file's (without birth times,
    /// the same device and inode).
    pub fn is(&self, file: &FileIdentity, born: Option<Born>) -> bool {
        self.identity.same_file_as(file)
            && match (self.born, born) {
                (Some(seen), Some(born)) => seen == born.at,
                _ => true,
            }
    }
}

/// For each file `seen` at `path`: its size if it is still on disk beside it (the same
/// inode, born at the same time), else `None`. One pass over the directories.
pub fn on_disk(path: &Path, seen: &[Seen]) -> Vec<Option<u64>> {
    use std::os::unix::fs::DirEntryExt;
    let mut sizes = vec![None; seen.len()];
    for (dir, _) in directories(path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !seen.iter().any(|s| s.identity.ino == entry.ino()) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            for (size, s) in sizes.iter_mut().zip(seen) {
                if s.identity.same_file(&meta) && meta.created().ok() == s.born {
                    *size = Some(meta.len());
                }
            }
        }
    }
    sizes
}

pub(super) fn same(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn born_now(path: &Path) -> Metadata {
        // Birth times come from a clock that ticks every few milliseconds.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(path, b"a line\n").unwrap();
        std::fs::metadata(path).unwrap()
    }

    /// While a tailer catches up it closes a deleted file every few milliseconds, and
    /// the kubelet's next `0.log` may get the freed inode number: a watch task that took
    /// it for the file it had looked at never opened it (12 files lost in the soak).
    #[test]
    fn a_file_that_took_a_deleted_files_inode_number_should_not_be_taken_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let meta = born_now(&dir.path().join("0.log"));
        let mut deleted = Born::of(&meta).expect("birth times");
        assert!(deleted.is(&meta));
        deleted.at -= std::time::Duration::from_millis(300);
        assert!(
            !deleted.is(&meta),
            "same inode number, born at another time"
        );
    }

    #[test]
    fn between_should_find_the_rotations_born_between_two_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let old = born_now(&dir.path().join("app.log.1"));
        let first = born_now(&dir.path().join("app.log.3"));
        born_now(&dir.path().join("other.log.1"));
        born_now(&dir.path().join("app.log.2.gz"));
        let second = born_now(&dir.path().join("app.log.2"));
        let held = born_now(&dir.path().join("app.log-held"));
        let new = born_now(&log);
        born_now(&dir.path().join("app.log.4"));
        let (old, new) = (Born::of(&old).unwrap(), Born::of(&new).unwrap());
        let missed = between(&log, old, new, |m| same(m, &held));
        let names: Vec<_> = missed
            .iter()
            .map(|m| m.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["app.log.3", "app.log.2"], "by birth, not by name");
        assert!(same(&missed[0].meta, &first) && same(&missed[1].meta, &second));
    }

    /// The kubelet gzips a rotated `0.log.<time>` into `0.log.<time>.tmp`, renamed to
    /// `.gz` once written. Found before its first bytes (no magic number yet), it was
    /// taken for a rotated file: the gzip stream was shipped as lines, and the file was
    /// counted among those seen at the path, so that one gone unseen was not counted
    /// (the faults suite, with the CPU busy).
    #[test]
    fn between_should_not_take_a_compressors_temporary_file_for_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let old = born_now(&dir.path().join("0.log.20261206-050000"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("0.log.20261206-050000.tmp"), b"").unwrap();
        let rotated = born_now(&dir.path().join("0.log.20261206-050001"));
        let new = born_now(&log);
        let (old, new) = (Born::of(&old).unwrap(), Born::of(&new).unwrap());
        let missed = between(&log, old, new, |_| false);
        assert_eq!(missed.len(), 1, "the rotated file only");
        assert!(same(&missed[0].meta, &rotated));
    }
}
