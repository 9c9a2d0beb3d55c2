//! Recognises compressed files (rotated `app.log.1.gz` and friends) by extension or magic
//! bytes, so that a glob such as `app.log*` does not ship them as binary garbage.

use std::io::Read;
use std::path::Path;

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

/// Whether `path` looks compressed. An unreadable file is not (its tailer reports why).
pub fn is_compressed(path: &Path) -> bool {
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    by_name || has_magic(path)
}

fn has_magic(path: &Path) -> bool {
    let mut head = [0u8; 6];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    MAGICS.iter().any(|magic| head[..len].starts_with(magic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_files_should_be_recognised_by_extension_or_magic() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert!(is_compressed(&write("app.log.2.gz", b"")));
        assert!(is_compressed(&write("app.log.3.ZST", b"")));
        assert!(is_compressed(&write("app.log.4", &[0x1f, 0x8b, 8, 0])));
        assert!(is_compressed(&write("app.log.5", b"BZh91AY")));
        assert!(is_compressed(&write(
            "app.log.6",
            &[0xfd, b'7', b'z', b'X', b'Z', 0]
        )));
        assert!(!is_compressed(&write("app.log.1", b"plain text\n")));
        assert!(!is_compressed(&write("empty.log", b"")));
    }
}
