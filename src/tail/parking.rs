//! Bounded open files: a tailer needs a permit from a shared semaphore
//! (`tail.max_open_files`) to hold its file open. An idle tailer whose file has no
//! unacknowledged data gives its file and permit back when others wait, and remembers
//! what it had; it takes a permit again only once a cheap `stat` shows the path changed.
//! On reopening, the file is found again by identity (its checkpoint), also when it was
//! renamed meanwhile.

use super::fingerprint::FileIdentity;
use std::path::Path;

/// What a tailer remembers of the file it closed.
#[derive(Debug, Clone, Copy)]
pub struct Parked {
    pub identity: FileIdentity,
    /// The size when closed (a held partial line is read again from the checkpoint).
    pub size: u64,
}

impl Parked {
    /// Whether `path` may hold something new: another file, another size, or nothing.
    pub fn changed(&self, path: &Path) -> bool {
        match std::fs::metadata(path) {
            Ok(meta) => !self.identity.same_file(&meta) || meta.len() != self.size,
            Err(_) => true,
        }
    }
}
