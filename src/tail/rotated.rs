//! Finding a file that was renamed away while nobody followed it: after a restart, the
//! checkpoint of `app.log` may belong to what is now `app.log.1`. Its rest is shipped
//! before the new `app.log`, even when only `app.log` is declared.

use super::checkpoint::Checkpoint;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A sibling of the declared path holding a checkpointed file with lines left to read.
pub struct Rotated {
    pub path: PathBuf,
    pub file: File,
    pub meta: Metadata,
    pub checkpoint: Checkpoint,
}

/// Looks in the directory of `path` for the files of `checkpoints` (last read under
/// `path`) by device, inode and fingerprint, oldest checkpoint first. Skips the file
/// `path` names now and files already read to their end. Unreadable entries are skipped:
/// this is a best effort on top of the normal following of `path`.
pub fn find(path: &Path, checkpoints: &[Checkpoint]) -> Vec<Rotated> {
    let current = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let wanted: Vec<&Checkpoint> = checkpoints
        .iter()
        .filter(|c| Some((c.file.dev, c.file.ino)) != current)
        .collect();
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
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
        if checkpoint.offset >= meta.len() {
            continue;
        }
        let Ok(file) = File::open(entry.path()) else {
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
