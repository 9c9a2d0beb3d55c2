//! Opening a log file to read it, and where a symlinked one points.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens `path` for reading without blocking: a FIFO swapped in after its type was
/// checked would otherwise block the opening thread until a writer comes. Reads of a
/// regular file are unaffected by `O_NONBLOCK`.
pub fn open_for_reading(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
}

/// Where the symlink `path` points, one step: a relative target is taken from the
/// link's directory.
pub fn link_target(path: &Path) -> std::io::Result<PathBuf> {
    let target = std::fs::read_link(path)?;
    Ok(match path.parent() {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_fifo_without_a_writer_should_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("swapped.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(open_for_reading(&fifo).map(|_| ())));
        let opened = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert!(matches!(opened, Ok(Ok(()))), "{opened:?}");
    }
}
