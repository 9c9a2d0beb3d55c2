//! Opening a log file to read it, and where a symlinked one points.

use nix::fcntl::OFlag;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens `path` for reading without blocking: a FIFO swapped in after its type was
/// checked would otherwise block the opening thread until a writer comes. Reads of a
/// regular file are unaffected by `O_NONBLOCK`.
///
/// And without updating the file's access time where the kernel lets us (`O_NOATIME`:
/// the file's owner, or `CAP_FOWNER`, which a DaemonSet running as root has): under
/// `relatime` a read after a write updates it, so every read of a file written line by
/// line dirtied its inode (ext4 `touch_atime` and `mark_inode_dirty`, ≈ 4 % of the
/// agent's CPU at 1,000 files × 10 lines/s; BENCHMARKS.md).
pub fn open_for_reading(path: &Path) -> std::io::Result<File> {
    let open = |flags: OFlag| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits())
            .open(path)
    };
    match open(OFlag::O_NONBLOCK | OFlag::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => open(OFlag::O_NONBLOCK),
        opened => opened,
    }
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
    fn a_file_we_own_should_be_read_without_touching_its_access_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, "line\n").unwrap();
        let file = open_for_reading(&path).unwrap();
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert!(OFlag::from_bits_truncate(flags).contains(OFlag::O_NOATIME));
    }

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
