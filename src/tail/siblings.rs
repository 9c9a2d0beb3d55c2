//! Where a file renamed away from a path can be: beside it, or beside what its symlinks
//! point to (the kubelet rotates `/var/log/pods/.../0.log` behind the
//! `/var/log/containers` link). A restart looks there for files rotated while the agent
//! was down (`rotated.rs`); the checkpoint store for whether a file is gone.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The inodes each directory holds, listed once per sweep; `None`: it could not be read.
pub type Listings = HashMap<PathBuf, Option<(u64, HashSet<u64>)>>;

/// Whether the file (dev, ino) last read under `path` is still on disk: at `path`, or
/// renamed beside it or beside what its symlinks point to (where `rotated::find` looks).
/// When that cannot be told (a directory or the path unreadable) it counts as there: a
/// checkpoint is dropped only for a file known to be gone. `listings` caches each directory's inode
/// numbers (from the directory entries, no `stat` per file).
pub fn on_disk(path: &Path, dev: u64, ino: u64, listings: &mut Listings) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) if (meta.dev(), meta.ino()) == (dev, ino) => return true,
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(_) => return true,
    }
    directories(path).into_iter().any(|(dir, _)| {
        let listing = listings.entry(dir).or_insert_with_key(|dir| list(dir));
        match listing {
            Some((dir_dev, inodes)) => *dir_dev == dev && inodes.contains(&ino),
            None => true,
        }
    })
}

/// The errors that say a path names nothing (rather than that it could not be looked at).
fn gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    matches!(e.kind(), NotFound | NotADirectory)
}

/// The device and the inode numbers of a directory's entries; an empty set for a
/// directory that is gone, `None` for one that cannot be read.
fn list(dir: &Path) -> Option<(u64, HashSet<u64>)> {
    use std::os::unix::fs::DirEntryExt;
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if gone(&e) => return Some((0, HashSet::new())),
        Err(_) => return None,
    };
    let entries = std::fs::read_dir(dir).ok()?;
    let mut inodes = HashSet::new();
    for entry in entries {
        inodes.insert(entry.ok()?.ino());
    }
    Some((meta.dev(), inodes))
}

/// The directory and file name of `path` and of the files its symlinks point to (a few
/// hops).
pub fn directories(path: &Path) -> Vec<(PathBuf, OsString)> {
    let mut dirs: Vec<(PathBuf, OsString)> = Vec::new();
    let mut at = path.to_path_buf();
    for _ in 0..8 {
        if let (Some(dir), Some(name)) = (at.parent(), at.file_name()) {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            if !dirs.iter().any(|(d, n)| *d == dir && n == name) {
                dirs.push((dir, name.to_os_string()));
            }
        }
        let Ok(target) = crate::open::link_target(&at) else {
            break;
        };
        at = target;
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_should_follow_symlinks_to_their_targets_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let pods = root.join("pods/ns_pod_uid/c");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::create_dir_all(root.join("containers")).unwrap();
        let link = root.join("containers/pod_ns_c-1.log");
        std::os::unix::fs::symlink("../pods/ns_pod_uid/c/0.log", &link).unwrap();
        // Dangling (0.log not created yet) still names the target's directory.
        assert_eq!(
            directories(&link),
            vec![
                (root.join("containers"), "pod_ns_c-1.log".into()),
                (pods.clone(), "0.log".into())
            ]
        );
        assert_eq!(
            directories(&pods.join("0.log")),
            vec![(pods, "0.log".into())]
        );
    }
}
