//! What the path names: opening it, adopting a file (identify, claim, position at its
//! checkpoint or by `start_at`), finding files rotated away while nobody followed the
//! path, and telling whether the open file is still the one at the path.

use super::copies::{self, Verdict};
use super::fingerprint::FileIdentity;
use super::missed::Born;
use super::reader::{OpenFile, Reader};
use super::rotated;
use super::TailError;
use crate::config::StartAt;
use crate::format::framer::Framer;
use crate::format::Decoder;
use crate::spec::TailerId;
use crate::telemetry::TailerState;
use std::collections::VecDeque;
use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

/// The outcome of opening the path.
pub enum Opened {
    File(OpenFile),
    Missing,
    /// Another tailer on the topic reads this file under another name.
    Claimed(TailerId),
    /// A new file that may be a copy still being written (why): looked at again later,
    /// held open meanwhile (it may be renamed away and deleted before it is decided).
    Undecided(&'static str, File),
}

/// What the path names now compared with the open file.
pub enum Change {
    None,
    Truncated,
    /// Renamed away or deleted: finish the open file, then move on.
    Gone,
}

/// Opens the regular file at `path`; `None` when there is none.
pub fn open_path(path: &Path) -> Result<Option<(File, Metadata)>, TailError> {
    let open_err = |source| TailError::Open {
        path: path.to_path_buf(),
        source,
    };
    let not_regular = || TailError::NotRegular {
        path: path.to_path_buf(),
    };
    // Look before opening: opening a FIFO for reading blocks until it has a writer.
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_regular()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let file = match crate::open::open_for_reading(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_err(e)),
    };
    let meta = file.metadata().map_err(open_err)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(Some((file, meta)))
}

impl Reader {
    /// Files renamed away from the path while nobody followed it, with lines left after
    /// their checkpoint, oldest first.
    pub fn rotated_while_away(&mut self) -> VecDeque<OpenFile> {
        let checkpoints = self
            .ctx
            .checkpoints
            .last_read_at(&self.id.topic, &self.id.path);
        let mut files = VecDeque::new();
        // Deleted files this tailer held when it failed: the oldest content.
        for file in self.ctx.deleted.take_kept(&self.id) {
            let Ok(meta) = file.metadata() else { continue };
            // Seen: not counted among the files that arrived at the path unseen.
            self.busy.saw(&meta);
            if let Ok(Opened::File(file)) = self.adopt(file, &meta, false) {
                tracing::info!(tailer = %self.id, "reading on a deleted file held when the tailer failed");
                files.push_back(file);
            }
        }
        for found in rotated::find(&self.id.path, &checkpoints) {
            self.busy.saw(&found.meta);
            if let Ok(Opened::File(file)) = self.adopt(found.file, &found.meta, false) {
                tracing::info!(tailer = %self.id, rotated_to = %found.path.display(),
                    offset = found.checkpoint.offset, "finishing a file rotated while the agent was down");
                files.push_back(file);
            }
        }
        files
    }

    /// Whether `file` was read before to its very end: its checkpoint names this content
    /// and stands at its size. Taking it again would read nothing.
    pub fn read_to_its_end(&self, file: &File, meta: &Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        let checkpoints = &self.ctx.checkpoints;
        checkpoints
            .get(&self.id.topic, meta.dev(), meta.ino())
            .is_some_and(|c| c.offset == meta.len() && c.file.matches(file, meta).unwrap_or(false))
    }

    /// Identifies and claims an open file and positions it at its checkpoint (or by
    /// `start_at` for a file never seen on the first open).
    pub fn adopt(
        &mut self,
        file: File,
        meta: &Metadata,
        first_open: bool,
    ) -> Result<Opened, TailError> {
        let path = &self.id.path;
        let open_err = |source| TailError::Open {
            path: path.to_path_buf(),
            source,
        };
        let identity = FileIdentity::of(&file, meta).map_err(open_err)?;
        let claim = match self.ctx.claims.claim(&self.id, identity.dev, identity.ino) {
            Ok(claim) => claim,
            Err(owner) => return Ok(Opened::Claimed(owner)),
        };
        let checkpoint = self
            .ctx
            .checkpoints
            .get(&self.id.topic, identity.dev, identity.ino);
        let resumed = match checkpoint {
            Some(cp) if cp.file.matches(&file, meta).map_err(open_err)? => Some(cp.offset),
            _ => None,
        };
        // A new file holding content already shipped (a copytruncate copy) resumes where
        // the original was acknowledged.
        let copy_of = match resumed {
            Some(_) => None,
            None => match copies::judge(&self.ctx.checkpoints, &self.id.topic, path, &file, meta)
                .map_err(open_err)?
            {
                Verdict::CopyOf(original) => Some(original),
                Verdict::New => None,
                Verdict::Undecided(why) if !self.undecided.settled(meta) => {
                    return Ok(Opened::Undecided(why, file))
                }
                Verdict::Undecided(_) => None,
            },
        };
        let offset = match (resumed, &copy_of) {
            (Some(offset), _) if offset <= meta.len() => offset,
            (Some(_), _) => {
                self.ctx.events.file_truncated(&self.id.topic);
                0
            }
            (None, Some(original)) => {
                tracing::info!(tailer = %self.id, copy_of = %original.path.display(),
                    offset = original.offset, "a copy of a file already shipped up to offset");
                original.offset
            }
            (None, None) if first_open && self.settings.start_at == StartAt::End => meta.len(),
            (None, None) => 0,
        };
        tracing::info!(tailer = %self.id, offset, resumed = resumed.is_some(), "following file");
        // Record the start so that a restart resumes here rather than re-applying start_at.
        self.inflight.start(identity, offset);
        self.progress.set_acked(offset);
        self.progress.set_file_size(meta.len());
        self.progress.set_state(TailerState::Running, None);
        let decoder = (!self.settings.parsing.is_passthrough()).then(|| {
            Box::new(Decoder::new(
                &self.settings.parsing,
                self.start_pattern.clone(),
                self.settings.max_line_bytes as usize,
            ))
        });
        let file = self.ctx.deleted.hold_claimed(file, Some(claim), &self.id);
        file.set_submitted(offset);
        Ok(Opened::File(OpenFile {
            file,
            identity,
            born: Born::of(meta),
            framer: Framer::new(offset, self.settings.max_line_bytes as usize),
            decoder,
        }))
    }

    /// Whether the open file was truncated, or the path names another file (or none).
    /// `look_at_path`: false when nothing arrived at the path or left it since it was last
    /// looked at (`Registration::names_seen`): it still names the open file.
    pub fn check(&mut self, open: &mut OpenFile, look_at_path: bool) -> Result<Change, TailError> {
        let position = open.framer.position();
        let len = match self.size_seen.take() {
            // Read to its end just now, at least as long as its identity's bytes.
            Some(len) if len == position && len >= open.identity.fp_len => len,
            _ => match open.file.metadata() {
                Ok(meta) => meta.len(),
                // Deleted and closed at the bounds: move on.
                Err(_) if open.file.is_released() => return Ok(Change::Gone),
                Err(source) => return Err(self.read_error(source)),
            },
        };
        self.progress.set_file_size(len);
        // Shorter than the bytes it is known by: truncated too, even before anything was
        // read (a file queued behind a backlog, truncated before its turn). Its identity
        // must follow, or a restart would take it for another file that reused the inode.
        if len < position || len < open.identity.fp_len {
            return Ok(Change::Truncated);
        }
        if open.identity.can_grow(len) {
            if let Ok(grown) = open.identify() {
                open.identity = grown;
            }
        }
        if !look_at_path {
            return Ok(Change::None);
        }
        match std::fs::metadata(&self.id.path) {
            Ok(now) if open.identity.same_file(&now) => Ok(Change::None),
            Ok(_) => Ok(Change::Gone),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Change::Gone),
            // e.g. a directory permission change: keep reading what we have open.
            Err(_) => Ok(Change::None),
        }
    }
}
