//! Replacing a state file so that a crash leaves either the old or the new content:
//! write a temp file beside it, fsync, rename over, fsync the directory.

use std::io::Write;
use std::path::Path;

/// Atomically replaces `path` with `bytes` (the temp file is `<path>.tmp`; a leftover
/// one is an interrupted write and never the truth).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_keeping(path, bytes, None)
}

/// The same, and the content replaced becomes `previous` (the last good generation, in
/// case the new one is damaged later). A crash between the two renames leaves `previous`
/// and no `path`.
pub fn write_keeping(path: &Path, bytes: &[u8], previous: Option<&Path>) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let kept = written.and_then(|()| match previous {
        Some(previous) => match std::fs::rename(path, previous) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        None => Ok(()),
    });
    if let Err(e) = kept.and_then(|()| std::fs::rename(&tmp, path)) {
        // A half-written temp file would hold on to space a full disk needs back.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Where `write` puts its temp file.
pub fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    name.into()
}
