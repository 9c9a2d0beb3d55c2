//! File identity: device + inode + a checksum of the first bytes, so that a new file that
//! reuses an old inode is not mistaken for it.

use serde::{Deserialize, Serialize};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// A file by device, inode and birth time: an inode number is soon another file's, the
/// birth time tells them apart (where the filesystem keeps it).
pub type FileKey = (u64, u64, Option<std::time::SystemTime>);

/// The [`FileKey`] of the file `meta` describes.
pub fn file_key(meta: &Metadata) -> FileKey {
    (meta.dev(), meta.ino(), meta.created().ok())
}

/// How many leading bytes the fingerprint covers once the file is that long.
pub const FINGERPRINT_BYTES: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    /// How many leading bytes `hash` covers: `min(size, FINGERPRINT_BYTES)` when taken.
    pub fp_len: u64,
    pub hash: u64,
}

impl FileIdentity {
    /// Identifies an open file from its first bytes.
    pub fn of(file: &File, meta: &Metadata) -> io::Result<Self> {
        let fp_len = meta.len().min(FINGERPRINT_BYTES);
        Ok(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            fp_len,
            hash: hash_prefix(file, fp_len)?,
        })
    }

    /// Whether `file` is the file this identity was taken of: same device and inode and
    /// the same first `fp_len` bytes (a short file that grew still matches).
    pub fn matches(&self, file: &File, meta: &Metadata) -> io::Result<bool> {
        if meta.dev() != self.dev || meta.ino() != self.ino || meta.len() < self.fp_len {
            return Ok(false);
        }
        Ok(hash_prefix(file, self.fp_len)? == self.hash)
    }

    /// Whether the fingerprint covers fewer bytes than it could now.
    pub fn can_grow(&self, size: u64) -> bool {
        self.fp_len < FINGERPRINT_BYTES && size > self.fp_len
    }

    /// Whether the fingerprint covers the full `FINGERPRINT_BYTES`: only such a fingerprint
    /// is taken to name content, whatever inode holds it (`tail/copies.rs`).
    pub fn is_full(&self) -> bool {
        self.fp_len == FINGERPRINT_BYTES
    }

    pub fn same_file_as(&self, other: &FileIdentity) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }

    pub fn same_file(&self, meta: &Metadata) -> bool {
        meta.dev() == self.dev && meta.ino() == self.ino
    }

    /// An identity of no real file, for tests of what keeps identities: device 1, inode
    /// `ino`, a 3-byte fingerprint.
    #[cfg(test)]
    pub fn fake(ino: u64) -> Self {
        FileIdentity {
            dev: 1,
            ino,
            fp_len: 3,
            hash: 42,
        }
    }
}

/// The checksum of the first `len` bytes of `file` (at most `FINGERPRINT_BYTES`).
pub fn hash_prefix(file: &File, len: u64) -> io::Result<u64> {
    let mut buf = [0u8; FINGERPRINT_BYTES as usize];
    let buf = &mut buf[..len as usize];
    file.read_exact_at(buf, 0)?;
    Ok(xxhash_rust::xxh3::xxh3_64(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn identity_should_match_a_short_file_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"short\n").unwrap();
        let reader = File::open(&path).unwrap();
        let id = FileIdentity::of(&reader, &reader.metadata().unwrap()).unwrap();
        assert_eq!(id.fp_len, 6);
        file.write_all(&[b'x'; 4096]).unwrap();
        assert!(id.matches(&reader, &reader.metadata().unwrap()).unwrap());
        assert!(id.can_grow(4102));
    }

    #[test]
    fn identity_should_not_match_other_content_at_the_same_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"first content\n").unwrap();
        let reader = File::open(&path).unwrap();
        let id = FileIdentity::of(&reader, &reader.metadata().unwrap()).unwrap();
        // Rewrite in place: same inode, other bytes (what inode reuse looks like).
        std::fs::write(&path, b"other content\n").unwrap();
        assert!(!id.matches(&reader, &reader.metadata().unwrap()).unwrap());
    }
}
