//! Finding a file that was renamed away while nobody followed it: after a restart, the
//! checkpoint of `app.log` may belong to what is now `app.log.1`. Its rest is shipped
//! before the new `app.log`, even when only `app.log` is declared.

use super::checkpoint::Checkpoint;
use super::siblings::directories;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A sibling of the declared path holding a checkpointed file with lines left to read.
pub struct Rotated {
    pub path: PathBuf,
    pub file: File,
    pub meta: Metadata,
    pub checkpoint: Checkpoint,
}

/// Looks in the directory of `path` — and, when `path` is a symlink, in its target's
/// (the kubelet rotates `/var/log/pods/.../0.log` behind the `/var/log/containers` link)
/// — for the files of `checkpoints` (last read under `path`) by device, inode and
/// fingerprint, oldest checkpoint first. Only names that start like the followed file
/// (its name up to the last dot: `app.log.1`, `app-2026-12-03.log`, `app.1.log` for
/// `app.log`; `0.log.<time>` for the kubelet's `0.log`) are looked at, so a new file that
/// took a deleted file's inode under another name is not taken for it (an empty file's
/// fingerprint matches anything). Skips the file `path` names now and files already read
/// to their end. Unreadable entries are skipped: this is a best effort on top of the
/// normal following of `path`.
pub fn find(path: &Path, checkpoints: &[Checkpoint]) -> Vec<Rotated> {
    let current = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let wanted: Vec<&Checkpoint> = checkpoints
        .iter()
        .filter(|c| Some((c.file.dev, c.file.ino)) != current)
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<Rotated> = Vec::new();
    let chain = directories(path);
    let stems: Vec<Vec<u8>> = chain
        .iter()
        .filter_map(|(_, name)| Path::new(name).file_stem())
        .map(|stem| stem.as_bytes().to_vec())
        .collect();
    let entries = chain
        .into_iter()
        .filter_map(|(dir, _)| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|entry| {
            let name = entry.file_name();
            stems.iter().any(|stem| name.as_bytes().starts_with(stem))
        });
    for entry in entries {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let Some(checkpoint) = wanted
            .iter()
            .find(|c| c.file.dev == meta.dev() && c.file.ino == meta.ino())
        else {
            continue;
        };
        if checkpoint.offset >= meta.len()
            || found
                .iter()
                .any(|f| (f.meta.dev(), f.meta.ino()) == (meta.dev(), meta.ino()))
        {
            continue;
        }
        let Ok(file) = crate::open::open_for_reading(&entry.path()) else {
            continue;
        };
        if !checkpoint.file.matches(&file, &meta).unwrap_or(false) {
            continue; // the inode was reused by another file
        }
        found.push(Rotated {
            path: entry.path(),
            file,
            meta,
            checkpoint: (*checkpoint).clone(),
        });
    }
    found.sort_by_key(|r| r.checkpoint.updated);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_should_look_only_at_names_that_start_like_the_followed_file() {
        use crate::tail::fingerprint::FileIdentity;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "").unwrap();
        let empty = std::fs::File::open(&log).unwrap();
        let meta = empty.metadata().unwrap();
        let checkpoint = Checkpoint {
            topic: "t".into(),
            file: FileIdentity::of(&empty, &meta).unwrap(),
            offset: 0,
            path: log.as_path().into(),
            updated: 1,
        };
        // The checkpointed (empty) file under another name, with lines: the same inode.
        std::fs::rename(&log, dir.path().join("other.txt")).unwrap();
        std::fs::write(dir.path().join("other.txt"), "a line\n").unwrap();
        assert!(find(&log, std::slice::from_ref(&checkpoint)).is_empty());
        std::fs::rename(dir.path().join("other.txt"), dir.path().join("app.1.log")).unwrap();
        let found = find(&log, &[checkpoint]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, dir.path().join("app.1.log"));
    }
}
