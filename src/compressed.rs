//! Recognises compressed files (rotated `app.log.1.gz` and friends) by extension or magic
//! bytes, so that a glob such as `app.log*` does not ship them as binary garbage.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

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

/// Which file a verdict belongs to. The change time (coarse: a few ms) and the size move
/// on every write, rename and re-creation, so a reused inode does not inherit another
/// file's verdict; an idle file keeps its key, and a periodic resync of 10,000 idle files
/// only stats them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
    size: u64,
}

impl FileKey {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            size: meta.len(),
        }
    }
}

/// Verdicts of files whose head was read in full; forgotten wholesale past this size.
const MAX_VERDICTS: usize = 100_000;
static VERDICTS: LazyLock<Mutex<HashMap<FileKey, bool>>> = LazyLock::new(Mutex::default);

fn has_magic(path: &Path, meta: &std::fs::Metadata) -> bool {
    if let Some(verdict) = verdicts().get(&FileKey::of(meta)) {
        return *verdict;
    }
    let Ok(mut file) = crate::open::open_for_reading(path) else {
        return false;
    };
    let (verdict, complete) = read_magic(&mut file);
    // Keyed by what was read, in case the path was replaced after `meta` was taken.
    if let (true, Ok(meta)) = (complete, file.metadata()) {
        let mut verdicts = verdicts();
        if verdicts.len() >= MAX_VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(FileKey::of(&meta), verdict);
    }
    verdict
}

fn verdicts() -> MutexGuard<'static, HashMap<FileKey, bool>> {
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
