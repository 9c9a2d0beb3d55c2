//! Recognises compressed files (rotated `app.log.1.gz` and friends) by extension or magic
//! bytes, so that a glob such as `app.log*` does not ship them as binary garbage.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

const EXTENSIONS: &[&str] = &["gz", "zst", "bz2", "xz", "lz4", "zip"];

/// Magic numbers of gzip, zstd, bzip2, xz, lz4 frames and zip.
const MAGICS: &[&[u8]] = &[
    &[0x1f, 0x8b],
    &[0x28, 0xb5, 0x2f, 0xfd],
    b"BZh",
    &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
    &[0x04, 0x22, 0x4d, 0x18],
    b"PK\x03\x04",
];

/// Whether `path`, a file with metadata `meta` (symlinks followed), looks compressed. An
/// unreadable file is not (its tailer reports why).
pub fn is_compressed(path: &Path, meta: &std::fs::Metadata) -> bool {
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    by_name || has_magic(path, meta)
}

/// A file's verdict, kept by device and inode: one per file, however often it is written
/// (a reconcile pass asks about every file its globs match, one pass a second while pods
/// come and go).
#[derive(Clone, Copy)]
struct Verdict {
    /// Birth time: a reused inode number is another file.
    born: Option<SystemTime>,
    /// Change time (coarse: a few ms) and size when the head was read: without birth
    /// times, the verdict holds while they are unchanged.
    changed: (i64, i64),
    size: u64,
    compressed: bool,
}

impl Verdict {
    fn of(meta: &std::fs::Metadata, compressed: bool) -> Self {
        Verdict {
            born: meta.created().ok(),
            changed: (meta.ctime(), meta.ctime_nsec()),
            size: meta.len(),
            compressed,
        }
    }

    /// Whether the verdict still holds for the file `meta` describes: the same file (born
    /// at the same time), no shorter than when its head was read (appended to since; one
    /// rewritten shorter is read again). Without birth times, while its change time and
    /// size are unchanged: an idle file keeps its verdict, and a periodic resync of 10,000
    /// idle files only stats them.
    fn holds_for(&self, meta: &std::fs::Metadata) -> bool {
        match (self.born, meta.created().ok()) {
            (Some(born), Some(now)) => born == now && meta.len() >= self.size,
            _ => self.changed == (meta.ctime(), meta.ctime_nsec()) && self.size == meta.len(),
        }
    }
}

/// Files whose head was read in full, at most (twice the 10,000 files a node's agent is
/// measured following; ≈ 1.3 MB): past this, every verdict is forgotten.
const MAX_VERDICTS: usize = 20_000;
static VERDICTS: LazyLock<Mutex<HashMap<(u64, u64), Verdict>>> = LazyLock::new(Mutex::default);

fn has_magic(path: &Path, meta: &std::fs::Metadata) -> bool {
    let key = (meta.dev(), meta.ino());
    if let Some(verdict) = verdicts().get(&key).filter(|v| v.holds_for(meta)) {
        return verdict.compressed;
    }
    let Ok(mut file) = crate::open::open_for_reading(path) else {
        return false;
    };
    let (compressed, complete) = read_magic(&mut file);
    // Kept for what was read, in case the path was replaced after `meta` was taken.
    if let (true, Ok(meta)) = (complete, file.metadata()) {
        let mut verdicts = verdicts();
        if verdicts.len() >= MAX_VERDICTS {
            // Its memory too.
            *verdicts = HashMap::new();
        }
        verdicts.insert((meta.dev(), meta.ino()), Verdict::of(&meta, compressed));
    }
    compressed
}

fn verdicts() -> MutexGuard<'static, HashMap<(u64, u64), Verdict>> {
    VERDICTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the head of `file` is a known magic number, and whether enough of it was there
/// to make that final (a file shorter than the longest magic may still become one).
fn read_magic(file: &mut std::fs::File) -> (bool, bool) {
    let mut head = [0u8; 6];
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let verdict = MAGICS.iter().any(|magic| head[..len].starts_with(magic));
    (verdict, len == head.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verdicts cached for the file `meta` describes (by device and inode).
    fn cached_for(meta: &std::fs::Metadata) -> usize {
        let file = (meta.dev(), meta.ino());
        verdicts().keys().filter(|k| **k == file).count()
    }

    fn compressed(path: &Path) -> bool {
        is_compressed(path, &std::fs::metadata(path).unwrap())
    }

    #[test]
    fn compressed_files_should_be_recognised_by_extension_or_magic() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert!(compressed(&write("app.log.2.gz", b"")));
        assert!(compressed(&write("app.log.3.ZST", b"")));
        assert!(compressed(&write("app.log.4", &[0x1f, 0x8b, 8, 0])));
        assert!(compressed(&write("app.log.5", b"BZh91AY")));
        assert!(compressed(&write(
            "app.log.6",
            &[0xfd, b'7', b'z', b'X', b'Z', 0]
        )));
        assert!(!compressed(&write("app.log.1", b"plain text\n")));
        assert!(!compressed(&write("empty.log", b"")));
    }

    #[test]
    fn a_cached_verdict_should_not_outlive_a_rewrite_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log.1");
        std::fs::write(&path, b"plain text\n").unwrap();
        assert!(!compressed(&path));
        assert!(!compressed(&path), "same answer from the cache");
        // Same inode, new content: change time and size move, so the verdict is read again.
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0, 0, 0]).unwrap();
        assert!(compressed(&path));
    }

    /// Every reconcile pass (one a second while pods come and go) asks about every
    /// file its globs match, and a log file has been written since the last pass: keyed
    /// by change time and size, each pass added a verdict per file, up to 100,000 of
    /// them (6.4 MB in the soak's steady state, read again from each file's head).
    #[test]
    fn a_file_written_between_looks_should_keep_one_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut file = std::fs::File::create(&path).unwrap();
        for n in 0..20 {
            std::io::Write::write_all(&mut file, format!("line {n}\n").as_bytes()).unwrap();
            // Change times tick every few milliseconds.
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert!(!compressed(&path));
        }
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(cached_for(&meta), 1, "one verdict for one file");
    }

    #[test]
    fn a_file_shorter_than_a_magic_number_should_be_read_again_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log.2");
        std::fs::write(&path, [0x28, 0xb5]).unwrap();
        assert!(!compressed(&path));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, &[0x2f, 0xfd, 0, 0]).unwrap();
        assert!(compressed(&path));
    }
}
