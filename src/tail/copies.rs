//! Recognising a copy of content already shipped. logrotate's `copytruncate` copies
//! `app.log` to `app.log.1` (a new inode) and truncates `app.log` in place; a glob that
//! matches both would ship the copy again from 0. A new file is taken for such a copy,
//! and resumes at the offset acknowledged in the original, when its first
//! `FINGERPRINT_BYTES` are those of a checkpoint on the same topic that acknowledged at
//! least as much, it is at least as long as that offset, and the original is known to
//! have been truncated (or still holds the same bytes before that offset). Never on the
//! first bytes alone: files that start with the same header (a banner, a CSV header) are
//! different files.

use super::checkpoint::{dir_of, Checkpoint, Checkpoints, Near};
use super::fingerprint::{file_key, hash_prefix, FileKey, FINGERPRINT_BYTES};
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

/// How long a new file that may be a copy still being written must keep its size before
/// it is read from 0 anyway: logrotate writes a copy's first KiB as soon as it creates
/// it, and the rest without pausing.
pub const COPY_SETTLE: Duration = Duration::from_secs(1);

/// What a new file (no checkpoint of its own) is.
#[derive(Debug)]
pub enum Verdict {
    /// Not a copy: read it by `start_at`.
    New,
    /// A copy of content acknowledged up to the checkpoint's offset.
    CopyOf(Checkpoint),
    /// Maybe a copy still being written (the reason): look again once its size has
    /// settled for `COPY_SETTLE`, then read it from 0 if it is still undecided.
    Undecided(&'static str),
}

/// How long an undecided file the tailer no longer looks at is remembered (it was decided,
/// read, or is gone); looked at again later, its wait starts over.
const FORGET_AFTER: Duration = Duration::from_secs(10);

/// A tailer's memory of the undecided files it looks at: for each, since when it has kept
/// its size. Several at once, each with its own clock: after rotations while the agent was
/// down, the short new files found beside the path and the one at it are looked at in
/// turn, every poll (with one clock, each look restarted the others' and none settled
/// while they alternated).
#[derive(Debug, Default)]
pub struct Undecided {
    seen: HashMap<FileKey, Look>,
}

#[derive(Debug, Clone, Copy)]
struct Look {
    size: u64,
    since: tokio::time::Instant,
    last: tokio::time::Instant,
}

impl Undecided {
    /// Whether the file has kept its size for `COPY_SETTLE` since it was first seen
    /// undecided at that size (then it is read as a new file).
    pub fn settled(&mut self, meta: &Metadata) -> bool {
        let now = tokio::time::Instant::now();
        self.seen
            .retain(|_, look| now.duration_since(look.last) < FORGET_AFTER);
        let key = file_key(meta);
        let size = meta.len();
        let look = self.seen.entry(key).or_insert(Look {
            size,
            since: now,
            last: now,
        });
        look.last = now;
        if look.size != size {
            look.size = size;
            look.since = now;
        }
        now.duration_since(look.since) >= COPY_SETTLE
    }
}

/// Whether `file`, found at `path` on `topic`, is a copy of content already shipped.
pub fn judge(
    checkpoints: &Checkpoints,
    topic: &str,
    path: &Path,
    file: &File,
    meta: &Metadata,
) -> io::Result<Verdict> {
    // Less than a KiB acknowledged is cheaper to ship again than to guess about.
    let other_file = |c: &Checkpoint| {
        (c.file.dev, c.file.ino) != (meta.dev(), meta.ino()) && c.offset >= FINGERPRINT_BYTES
    };
    if meta.len() < FINGERPRINT_BYTES {
        // Too short to tell: a copy beside its original has just been created.
        let beside = checkpoints.has_original(topic, Near::Dir(dir_of(path)), other_file);
        return Ok(if !beside {
            Verdict::New
        } else {
            Verdict::Undecided("a new file shorter than a KiB beside files of the topic (a copytruncate copy being written?)")
        });
    }
    let hash = hash_prefix(file, FINGERPRINT_BYTES)?;
    for (original, truncated) in checkpoints.originals(topic, Near::Hash(hash), other_file) {
        if original.offset > meta.len() {
            return Ok(Verdict::Undecided(
                "a copy of a shipped file still being written (copytruncate)",
            ));
        }
        if truncated || original_truncated_or_same(&original, file)? {
            return Ok(Verdict::CopyOf(original));
        }
    }
    Ok(Verdict::New)
}

/// Whether the live checkpoint's file, still at its path, was truncated below the
/// acknowledged offset (the agent has not seen it yet, or was down), or holds the same
/// bytes as `copy` before that offset (copied, not yet truncated). A file no longer at
/// its path was renamed or deleted: its own checkpoint follows it, nothing was copied.
fn original_truncated_or_same(original: &Checkpoint, copy: &File) -> io::Result<bool> {
    let Ok(file) = crate::open::open_for_reading(&original.path) else {
        return Ok(false);
    };
    let meta = file.metadata()?;
    if !original.file.same_file(&meta) {
        return Ok(false);
    }
    if meta.len() < original.offset {
        return Ok(true);
    }
    let len = original.offset.min(FINGERPRINT_BYTES);
    let start = original.offset - len;
    let (mut theirs, mut ours) = (vec![0; len as usize], vec![0; len as usize]);
    file.read_exact_at(&mut theirs, start)?;
    copy.read_exact_at(&mut ours, start)?;
    Ok(theirs == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::fingerprint::FileIdentity;
    use std::path::Path;

    fn content(prefix: &str, lines: usize) -> String {
        (0..lines)
            .map(|i| format!("{prefix} line {i:05}\n"))
            .collect()
    }

    fn identity(path: &Path) -> FileIdentity {
        let file = File::open(path).unwrap();
        FileIdentity::of(&file, &file.metadata().unwrap()).unwrap()
    }

    /// The offset a copy resumes at; `None` for a new file, panics when undecided.
    fn copy_of_path(store: &Checkpoints, topic: &str, path: &Path) -> Option<u64> {
        match judge_path(store, topic, path) {
            Verdict::New => None,
            Verdict::CopyOf(original) => Some(original.offset),
            Verdict::Undecided(why) => panic!("undecided: {why}"),
        }
    }

    fn judge_path(store: &Checkpoints, topic: &str, path: &Path) -> Verdict {
        let file = File::open(path).unwrap();
        let meta = file.metadata().unwrap();
        judge(store, topic, path, &file, &meta).unwrap()
    }

    /// A state dir and `ct.log` holding 500 lines, with its identity and length.
    struct Fixture {
        dir: tempfile::TempDir,
        store: std::sync::Arc<Checkpoints>,
        log: std::path::PathBuf,
        before: FileIdentity,
        len: u64,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(&dir.path().join("state")).unwrap();
        let log = dir.path().join("ct.log");
        std::fs::write(&log, content("a", 500)).unwrap();
        let (before, len) = (identity(&log), std::fs::metadata(&log).unwrap().len());
        Fixture {
            dir,
            store,
            log,
            before,
            len,
        }
    }

    #[test]
    fn a_copy_of_a_truncated_file_should_resume_at_its_acknowledged_offset() {
        let Fixture {
            dir,
            store,
            log,
            before,
            len: acked,
        } = fixture();
        std::fs::copy(&log, dir.path().join("ct.log.1")).unwrap();
        std::fs::write(&log, "").unwrap();
        store.truncated_named("app", before, acked, identity(&log), &log);
        assert_eq!(
            copy_of_path(&store, "app", &dir.path().join("ct.log.1")),
            Some(acked)
        );
        assert_eq!(
            copy_of_path(&store, "other", &dir.path().join("ct.log.1")),
            None
        );
    }

    #[test]
    fn a_copy_made_before_the_truncation_was_seen_should_resume_at_the_live_offset() {
        let Fixture {
            dir,
            store,
            log,
            before,
            ..
        } = fixture();
        let acked = 3_000;
        store.set_named("app", before, acked, &log);
        let copy = dir.path().join("ct.log.1");
        std::fs::copy(&log, &copy).unwrap();
        assert_eq!(
            copy_of_path(&store, "app", &copy),
            Some(acked),
            "not truncated yet"
        );
        std::fs::write(&log, "x\n").unwrap();
        assert_eq!(copy_of_path(&store, "app", &copy), Some(acked), "truncated");
        assert_eq!(
            copy_of_path(&store, "app", &log),
            None,
            "the original itself"
        );
    }

    #[test]
    fn a_file_that_only_starts_like_another_should_be_read_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(&dir.path().join("state")).unwrap();
        let header = content("banner", 100);
        let old = dir.path().join("app-1.log");
        std::fs::write(&old, header.clone() + &content("day one", 100)).unwrap();
        let acked = std::fs::metadata(&old).unwrap().len();
        store.set_named("app", identity(&old), acked, &old);
        let new = dir.path().join("app-2.log");
        std::fs::write(&new, header + &content("day two", 200)).unwrap();
        assert_eq!(
            copy_of_path(&store, "app", &new),
            None,
            "same first KiB, other file"
        );
        // Renamed away (rotation): its inode keeps its own checkpoint, nothing to resume.
        std::fs::rename(&old, dir.path().join("app-1.log.old")).unwrap();
        std::fs::copy(dir.path().join("app-1.log.old"), &old).unwrap();
        assert_eq!(copy_of_path(&store, "app", &old), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_undecided_file_should_settle_once_its_size_stays_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ct.log.1");
        std::fs::write(&path, "a").unwrap();
        let meta = || std::fs::metadata(&path).unwrap();
        let mut undecided = Undecided::default();
        assert!(!undecided.settled(&meta()), "first seen");
        tokio::time::advance(COPY_SETTLE / 2).await;
        std::fs::write(&path, "ab").unwrap();
        assert!(!undecided.settled(&meta()), "grew: seen again");
        tokio::time::advance(COPY_SETTLE / 2).await;
        assert!(
            !undecided.settled(&meta()),
            "not settled for long enough yet"
        );
        tokio::time::advance(COPY_SETTLE / 2).await;
        assert!(undecided.settled(&meta()), "the same size for COPY_SETTLE");
    }

    #[tokio::test(start_paused = true)]
    async fn undecided_files_looked_at_in_turn_should_each_settle() {
        // Several rotations while the agent was down leave several new short files beside
        // a shipped one: the tailer looks at each in turn, every poll. Each keeps its own
        // clock; before, each look restarted the others' and none settled while they
        // alternated.
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (1..=3)
            .map(|i| dir.path().join(format!("app.log.{i}")))
            .collect();
        for path in &paths {
            std::fs::File::create(path).unwrap();
        }
        let metas: Vec<_> = paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap())
            .collect();
        let mut undecided = Undecided::default();
        let poll = Duration::from_millis(20);
        let mut waited = Duration::ZERO;
        while waited < COPY_SETTLE {
            for meta in &metas {
                assert!(!undecided.settled(meta), "settled after {waited:?}");
            }
            tokio::time::advance(poll).await;
            waited += poll;
        }
        for meta in &metas {
            assert!(undecided.settled(meta), "unchanged for COPY_SETTLE");
        }
    }

    #[test]
    fn a_copy_still_being_written_should_be_undecided() {
        let Fixture {
            dir,
            store,
            log,
            before,
            len: acked,
        } = fixture();
        store.set_named("app", before, acked, &log);
        let copy = dir.path().join("ct.log.1");
        let bytes = std::fs::read(&log).unwrap();
        for part in [0, 100, 2_000] {
            std::fs::write(&copy, &bytes[..part]).unwrap();
            let verdict = judge_path(&store, "app", &copy);
            assert!(
                matches!(verdict, Verdict::Undecided(_)),
                "{part} bytes: {verdict:?}"
            );
        }
        std::fs::write(&copy, &bytes).unwrap();
        assert_eq!(copy_of_path(&store, "app", &copy), Some(acked), "complete");
        // A short new file elsewhere, or on another topic, is simply new.
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        let other = dir.path().join("elsewhere/b.log");
        std::fs::write(&other, "b\n").unwrap();
        assert_eq!(copy_of_path(&store, "app", &other), None);
        std::fs::write(&copy, &bytes[..100]).unwrap();
        assert_eq!(copy_of_path(&store, "other", &copy), None);
    }
}
