//! Checkpoints: per (topic, file identity), the offset up to which the sink acknowledged
//! every line; and for a while after a file was truncated in place, what its content was
//! and how far it had been acknowledged (a copy of it resumes there: `tail/copies.rs`).
//! Kept in memory, written to `state_dir/checkpoints.json` soon after the first change,
//! then at most once a second, and at shutdown, atomically (temp file, fsync, rename,
//! fsync dir). The checkpoint of a file that is gone — held by no tailer and on disk
//! neither at its path nor renamed beside it — expires `tail.checkpoint_expiry` after it
//! was first found gone, so the store holds what exists, not the node's history.

use super::claims::Claims;
use super::fingerprint::FileIdentity;
use super::siblings;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const FILE_NAME: &str = "checkpoints.json";
const VERSION: u32 = 1;
/// How often dirty checkpoints are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How long the content of a truncated file is remembered: logrotate's `copytruncate`
/// makes its copy just before truncating, so a glob finds the copy within a resync.
const TRUNCATED_KEPT_FOR: Duration = Duration::from_secs(3600);
/// Truncated contents remembered per (topic, path), newest kept.
const TRUNCATED_KEPT_PER_PATH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoints {path}: cannot create the state directory: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoints {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoints {path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state_dir {path} is in use by another logcatch ({holder}): two agents must not share checkpoints; give each its own state_dir")]
    Locked { path: PathBuf, holder: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Shared with the tailer's and with every index of the store (eight copies of a
    /// `String` a file, before: BENCHMARKS.md).
    pub topic: Arc<str>,
    pub file: FileIdentity,
    /// Every line before this byte offset was acknowledged by the sink.
    pub offset: u64,
    /// The path the file had when last read (informational).
    pub path: Arc<Path>,
    /// Seconds since the epoch of the last update.
    pub updated: u64,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    checkpoints: Vec<Checkpoint>,
    /// Contents truncated away (`file` is the identity before the truncation); absent in
    /// files written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    truncated: Vec<Checkpoint>,
}

type Key = (Arc<str>, u64, u64);

/// The checkpoints by file, indexed by what a tailer starting looks them up by: the
/// (topic, path) they were last read under (`last_read_at`), and for a new file that may
/// be a copy, the (topic, directory) and (topic, fingerprint) (`originals`) — those two
/// only for checkpoints with a full fingerprint, the only ones `originals` takes (10,000
/// new files in one directory each went through every other one's checkpoint). Without
/// the indexes, 10,000 files started at once scanned 10,000 checkpoints each, twice.
#[derive(Debug, Default)]
struct Entries {
    by_file: HashMap<Key, Checkpoint>,
    by_path: HashMap<(Arc<str>, Arc<Path>), Keys>,
    by_dir: HashMap<(Arc<str>, PathBuf), Keys>,
    by_hash: HashMap<(Arc<str>, u64), Keys>,
}

/// The keys an index holds at one place: nearly always one (a path, a fingerprint), held
/// without a set of its own (a set allocated ≈ 160 bytes, two per file).
#[derive(Debug)]
enum Keys {
    One(Key),
    Many(HashSet<Key>),
}

impl Keys {
    fn insert(&mut self, key: &Key) {
        match self {
            Keys::One(one) if one == key => {}
            Keys::One(one) => {
                let one = one.clone();
                *self = Keys::Many(HashSet::from([one, key.clone()]));
            }
            Keys::Many(keys) => {
                keys.insert(key.clone());
            }
        }
    }

    /// Takes `key` out; true when none is left.
    fn remove(&mut self, key: &Key) -> bool {
        match self {
            Keys::One(one) => one == key,
            Keys::Many(keys) => {
                keys.remove(key);
                keys.is_empty()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Key> + '_ {
        let (one, many) = match self {
            Keys::One(one) => (Some(one), None),
            Keys::Many(keys) => (None, Some(keys)),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// Where `originals` looks for what a new file may be a copy of.
pub enum Near<'a> {
    /// Checkpoints of files last read in this directory.
    Dir(&'a Path),
    /// Checkpoints of files with this fingerprint hash.
    Hash(u64),
}

impl Near<'_> {
    /// Whether `originals` takes `c`: on `topic`, with a full fingerprint, and near.
    fn takes(&self, c: &Checkpoint, topic: &str) -> bool {
        let near = match *self {
            Near::Dir(dir) => dir_of(&c.path) == dir,
            Near::Hash(hash) => c.file.hash == hash,
        };
        *c.topic == *topic && c.file.is_full() && near
    }
}

/// The directory `path` is in, as `originals` compares them (`""` for a bare name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Adds `key` to the set of `at`.
fn put<K: std::hash::Hash + Eq>(index: &mut HashMap<K, Keys>, at: K, key: &Key) {
    match index.entry(at) {
        std::collections::hash_map::Entry::Occupied(mut keys) => keys.get_mut().insert(key),
        std::collections::hash_map::Entry::Vacant(place) => {
            place.insert(Keys::One(key.clone()));
        }
    }
}

/// Takes `key` out of the set of `at`, and the set when it is empty.
fn take<K: std::hash::Hash + Eq>(index: &mut HashMap<K, Keys>, at: K, key: &Key) {
    if let Some(keys) = index.get_mut(&at) {
        if keys.remove(key) {
            index.remove(&at);
        }
    }
}

impl Entries {
    fn get(&self, key: &Key) -> Option<&Checkpoint> {
        self.by_file.get(key)
    }

    fn insert(&mut self, key: Key, checkpoint: Checkpoint) {
        if let Some(old) = self.by_file.remove(&key) {
            self.unindex(&key, &old);
        }
        let topic = &checkpoint.topic;
        put(
            &mut self.by_path,
            (topic.clone(), checkpoint.path.clone()),
            &key,
        );
        if checkpoint.file.is_full() {
            put(
                &mut self.by_dir,
                (topic.clone(), dir_of(&checkpoint.path).to_path_buf()),
                &key,
            );
            put(
                &mut self.by_hash,
                (topic.clone(), checkpoint.file.hash),
                &key,
            );
        }
        self.by_file.insert(key, checkpoint);
    }

    /// Moves the checkpoint of `key` to `offset` under `file` in place when nothing it
    /// is indexed by changes (the path, the fingerprint): what every acknowledgement
    /// does. False when there is none, or it must be inserted again.
    fn update(&mut self, key: &Key, file: FileIdentity, offset: u64, path: &Path) -> bool {
        let Some(c) = self.by_file.get_mut(key) else {
            return false;
        };
        let same_index = c.file.hash == file.hash && c.file.is_full() == file.is_full();
        // By bytes: the tailer names its path as it did when it set the checkpoint (a
        // `Path` compares component by component, once per acknowledged batch).
        if !same_index || c.path.as_os_str() != path.as_os_str() {
            return false;
        }
        c.file = file;
        c.offset = offset;
        c.updated = unix_now();
        true
    }

    fn remove(&mut self, key: &Key) -> Option<Checkpoint> {
        let old = self.by_file.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    fn unindex(&mut self, key: &Key, old: &Checkpoint) {
        let topic = &old.topic;
        take(&mut self.by_path, (topic.clone(), old.path.clone()), key);
        if old.file.is_full() {
            take(
                &mut self.by_dir,
                (topic.clone(), dir_of(&old.path).to_path_buf()),
                key,
            );
            take(&mut self.by_hash, (topic.clone(), old.file.hash), key);
        }
    }

    /// The checkpoints whose keys `index` holds at `at`.
    fn in_index<'a, K: std::hash::Hash + Eq>(
        &'a self,
        index: &'a HashMap<K, Keys>,
        at: &K,
    ) -> impl Iterator<Item = &'a Checkpoint> + 'a {
        let keys = index.get(at);
        keys.into_iter()
            .flat_map(Keys::iter)
            .filter_map(|key| self.by_file.get(key))
    }

    fn at(&self, topic: &str, path: &Path) -> impl Iterator<Item = &Checkpoint> + '_ {
        self.in_index(&self.by_path, &(Arc::from(topic), Arc::from(path)))
    }

    fn near(&self, topic: &str, near: &Near) -> Box<dyn Iterator<Item = &Checkpoint> + '_> {
        match near {
            Near::Dir(dir) => {
                Box::new(self.in_index(&self.by_dir, &(Arc::from(topic), dir.to_path_buf())))
            }
            Near::Hash(hash) => Box::new(self.in_index(&self.by_hash, &(Arc::from(topic), *hash))),
        }
    }

    fn values(&self) -> impl Iterator<Item = &Checkpoint> + '_ {
        self.by_file.values()
    }

    fn iter(&self) -> impl Iterator<Item = (&Key, &Checkpoint)> + '_ {
        self.by_file.iter()
    }

    fn len(&self) -> usize {
        self.by_file.len()
    }
}

impl FromIterator<Checkpoint> for Entries {
    fn from_iter<I: IntoIterator<Item = Checkpoint>>(checkpoints: I) -> Self {
        let mut entries = Entries::default();
        for c in checkpoints {
            entries.insert((c.topic.clone(), c.file.dev, c.file.ino), c);
        }
        entries
    }
}

#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    /// `checkpoints.prev.json`: what `path` held before the last write.
    previous: PathBuf,
    /// The state directory's lock, held while the store lives.
    _lock: File,
    entries: Mutex<Entries>,
    /// What truncated files held, oldest first, at most `TRUNCATED_KEPT_PER_PATH` per
    /// (topic, path) and for `TRUNCATED_KEPT_FOR`.
    truncated: Mutex<Vec<Checkpoint>>,
    /// In memory only: when the file of each checkpoint was first found gone.
    gone: Mutex<HashMap<Key, Instant>>,
    /// Bumped on every change; compared with `written` to know whether to flush.
    generation: AtomicU64,
    written: AtomicU64,
}

/// The checkpoints written before the last write: loaded when the last one is damaged
/// (or missing after a crash between the write's two renames).
const PREVIOUS_NAME: &str = "checkpoints.prev.json";
/// Held locked (`flock`) by the agent that uses the state directory; holds its pid.
const LOCK_NAME: &str = "lock";

/// What loading found besides the checkpoints, when the file was not usable.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Damaged files moved aside, with why.
    pub moved_aside: Vec<(PathBuf, String)>,
    /// The previous generation was loaded instead: lines acknowledged after it was written
    /// are shipped again. `None` with `moved_aside` empty: the file was fine (or new).
    pub previous: Option<PathBuf>,
}

impl Recovered {
    /// One sentence for the log and `/status` when something was recovered.
    pub fn describe(&self) -> Option<String> {
        let aside = self
            .moved_aside
            .iter()
            .map(|(path, reason)| format!("{reason}; moved aside to {}", path.display()))
            .collect::<Vec<_>>()
            .join("; ");
        match &self.previous {
            Some(previous) if aside.is_empty() => Some(format!(
                "the last checkpoint write did not finish; loaded the previous generation {}",
                previous.display()
            )),
            Some(previous) => Some(format!(
                "{aside}; loaded the previous generation {} (lines acknowledged since it was written are shipped again)",
                previous.display()
            )),
            None if aside.is_empty() => None,
            None => Some(format!("{aside}; started without checkpoints (files are read again by start_at)")),
        }
    }
}

/// What one `Checkpoints::expire` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Checkpoints in the store after it.
    pub kept: usize,
    /// Checkpoints dropped because their file was gone for `tail.checkpoint_expiry`.
    pub expired: usize,
}

/// What one state file held.
enum Loaded {
    Document(OnDisk),
    Missing,
    Damaged(String),
}

fn load(path: &Path) -> Result<Loaded, CheckpointError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(match parse(&bytes) {
            Ok(document) => Loaded::Document(document),
            Err(reason) => Loaded::Damaged(reason),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded::Missing),
        Err(source) => Err(CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Moves a damaged state file aside (kept for inspection) and notes why.
fn move_aside(
    path: &Path,
    reason: String,
    recovered: &mut Recovered,
) -> Result<(), CheckpointError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{}", unix_now()));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(|source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    recovered
        .moved_aside
        .push((aside, format!("{}: {reason}", path.display())));
    Ok(())
}

/// Locks `state_dir` for this process (released when the file closes, at exit).
fn lock(state_dir: &Path) -> Result<File, CheckpointError> {
    let path = state_dir.join(LOCK_NAME);
    let io = |source| CheckpointError::Write {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    if let Err(e) = file.try_lock() {
        let holder = match e {
            std::fs::TryLockError::WouldBlock => std::fs::read_to_string(&path)
                .ok()
                .filter(|pid| !pid.trim().is_empty())
                .map_or("its lock is held".to_string(), |pid| {
                    format!("pid {}", pid.trim())
                }),
            std::fs::TryLockError::Error(e) => return Err(io(e)),
        };
        return Err(CheckpointError::Locked {
            path: state_dir.to_path_buf(),
            holder,
        });
    }
    file.set_len(0).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

impl Checkpoints {
    /// Opens (creating) the state directory, locks it against a second agent, and loads
    /// its checkpoints. A damaged file is moved aside and the previous generation loaded
    /// instead (both reported in `Recovered`); with neither usable the agent starts
    /// without checkpoints.
    pub fn open(state_dir: &Path) -> Result<(Arc<Self>, Recovered), CheckpointError> {
        std::fs::create_dir_all(state_dir).map_err(|source| CheckpointError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let lock = lock(state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let previous = state_dir.join(PREVIOUS_NAME);
        // A temp file left by a write interrupted before its rename is never the truth.
        let _ = std::fs::remove_file(crate::atomic_file::tmp_path(&path));
        let mut recovered = Recovered::default();
        let document = match load(&path)? {
            Loaded::Document(document) => Some(document),
            current => {
                if let Loaded::Damaged(reason) = current {
                    move_aside(&path, reason, &mut recovered)?;
                }
                match load(&previous)? {
                    Loaded::Document(document) => {
                        recovered.previous = Some(previous.clone());
                        Some(document)
                    }
                    Loaded::Missing => None,
                    Loaded::Damaged(reason) => {
                        move_aside(&previous, reason, &mut recovered)?;
                        None
                    }
                }
            }
        };
        let (entries, truncated) =
            document.map_or_else(Default::default, |d| (d.checkpoints, d.truncated));
        let entries: Entries = entries.into_iter().collect();
        let store = Checkpoints {
            _lock: lock,
            previous,
            path,
            entries: Mutex::new(entries),
            truncated: Mutex::new(truncated),
            gone: Mutex::default(),
            generation: AtomicU64::new(0),
            written: AtomicU64::new(0),
        };
        Ok((Arc::new(store), recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint of the file at (dev, ino) on `topic`, if any.
    pub fn get(&self, topic: &str, dev: u64, ino: u64) -> Option<Checkpoint> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&(Arc::from(topic), dev, ino)).cloned()
    }

    /// The checkpoints on `topic` last read under `path`: after a restart, the files that
    /// were renamed away from `path` while the agent was down.
    pub fn last_read_at(&self, topic: &str, path: &Path) -> Vec<Checkpoint> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<Checkpoint> = entries.at(topic, path).cloned().collect();
        found.sort_by_key(|c| c.updated);
        found
    }

    /// Records that every line of `file` on `topic` before `offset` is acknowledged.
    pub fn set(&self, topic: &Arc<str>, file: FileIdentity, offset: u64, path: &Arc<Path>) {
        let key = (topic.clone(), file.dev, file.ino);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.get(&key).map(|c| (c.offset, c.file)) == Some((offset, file)) {
            return;
        }
        if !entries.update(&key, file, offset, path) {
            let checkpoint = Checkpoint {
                topic: topic.clone(),
                file,
                offset,
                path: path.clone(),
                updated: unix_now(),
            };
            entries.insert(key, checkpoint);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// [`set`](Self::set) with the topic and path named in place (tests).
    #[cfg(test)]
    pub fn set_named(&self, topic: &str, file: FileIdentity, offset: u64, path: &Path) {
        self.set(&Arc::from(topic), file, offset, &Arc::from(path));
    }

    /// [`truncated`](Self::truncated) with the topic and path named in place (tests).
    #[cfg(test)]
    pub fn truncated_named(
        &self,
        topic: &str,
        file: FileIdentity,
        offset: u64,
        now_file: FileIdentity,
        path: &Path,
    ) {
        self.truncated(&Arc::from(topic), file, offset, now_file, &Arc::from(path));
    }

    /// Records that `file` on `topic` was truncated in place after every line before
    /// `offset` was acknowledged, and starts its checkpoint again at 0 under `now_file`,
    /// the identity of what it holds now. The old content and offset are kept for
    /// `TRUNCATED_KEPT_FOR`: a copy of it (`copytruncate`) resumes there.
    pub fn truncated(
        &self,
        topic: &Arc<str>,
        file: FileIdentity,
        offset: u64,
        now_file: FileIdentity,
        path: &Arc<Path>,
    ) {
        {
            let mut truncated = self.truncated.lock().unwrap_or_else(|e| e.into_inner());
            truncated.push(Checkpoint {
                topic: topic.clone(),
                file,
                offset,
                path: path.clone(),
                updated: unix_now(),
            });
            // One is added at a time, oldest first: at most the oldest of the path goes.
            let same_path = |c: &&Checkpoint| c.topic == *topic && c.path == *path;
            if truncated.iter().filter(same_path).count() > TRUNCATED_KEPT_PER_PATH {
                let oldest = truncated.iter().position(|c| same_path(&c));
                truncated.remove(oldest.expect("counted above"));
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
        self.set(topic, now_file, 0, path);
    }

    /// The checkpoints on `topic` with a full fingerprint that `wanted` accepts, each
    /// with whether it is the content of a truncated file (else a live checkpoint),
    /// newest first: what a new file may be a copy of.
    pub fn originals(
        &self,
        topic: &str,
        near: Near,
        wanted: impl Fn(&Checkpoint) -> bool,
    ) -> Vec<(Checkpoint, bool)> {
        let same = |c: &Checkpoint| near.takes(c, topic) && wanted(c);
        let oldest = oldest_truncated_kept();
        let mut found: Vec<(Checkpoint, bool)> = {
            let truncated = self.truncated.lock().unwrap_or_else(|e| e.into_inner());
            truncated
                .iter()
                .filter(|c| same(c) && c.updated >= oldest)
                .map(|c| (c.clone(), true))
                .collect()
        };
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        found.extend(
            entries
                .near(topic, &near)
                .filter(|c| same(c))
                .map(|c| (c.clone(), false)),
        );
        found.sort_by_key(|(c, _)| std::cmp::Reverse(c.updated));
        found
    }

    /// Whether `originals` would find any: stops at the first, copies nothing.
    pub fn has_original(
        &self,
        topic: &str,
        near: Near,
        wanted: impl Fn(&Checkpoint) -> bool,
    ) -> bool {
        let same = |c: &Checkpoint| near.takes(c, topic) && wanted(c);
        let oldest = oldest_truncated_kept();
        {
            let truncated = self.truncated.lock().unwrap_or_else(|e| e.into_inner());
            if truncated.iter().any(|c| same(c) && c.updated >= oldest) {
                return true;
            }
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let found = entries.near(topic, &near).any(same);
        found
    }

    /// Expires the checkpoints of files gone for `expiry`: held by no tailer (`claims`)
    /// and on disk neither at their path nor renamed beside it (`siblings::on_disk`, where
    /// a restart looks for a file rotated while the agent was down). A file found again
    /// (or claimed) is no longer gone. Blocking: it lists directories.
    pub fn expire(&self, expiry: Duration, claims: &Claims) -> Swept {
        let unheld: Vec<(Key, Arc<Path>)> = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .iter()
                .filter(|((topic, dev, ino), _)| !claims.holds(topic, *dev, *ino))
                .map(|(key, c)| (key.clone(), c.path.clone()))
                .collect()
        };
        let mut listings = siblings::Listings::new();
        let absent: HashSet<Key> = unheld
            .into_iter()
            .filter(|((_, dev, ino), path)| !siblings::on_disk(path, *dev, *ino, &mut listings))
            .map(|(key, _)| key)
            .collect();
        let now = Instant::now();
        let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        gone.retain(|key, _| absent.contains(key));
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut expired = 0;
        for key in absent {
            let since = *gone.entry(key.clone()).or_insert(now);
            let (topic, dev, ino) = &key;
            if now.duration_since(since) >= expiry && !claims.holds(topic, *dev, *ino) {
                if let Some(checkpoint) = entries.remove(&key) {
                    tracing::debug!(topic = &**topic, path = %checkpoint.path.display(), dev, ino,
                        "checkpoint expired: the file is gone");
                    expired += 1;
                }
                gone.remove(&key);
            }
        }
        if expired > 0 {
            self.generation.fetch_add(1, Ordering::Release);
        }
        Swept {
            kept: entries.len(),
            expired,
        }
    }

    /// Writes the checkpoints if they changed since the last write. Returns whether it wrote.
    pub fn flush(&self) -> Result<bool, CheckpointError> {
        let generation = self.generation.load(Ordering::Acquire);
        if generation == self.written.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut list: Vec<Checkpoint> = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.values().cloned().collect()
        };
        // By bytes: a `Path`'s order walks its components, and this sort runs every
        // second over every checkpoint (2.5 % of the agent's CPU at 10,000 files).
        fn key(c: &Checkpoint) -> (&[u8], &[u8]) {
            use std::os::unix::ffi::OsStrExt;
            (c.topic.as_bytes(), c.path.as_os_str().as_bytes())
        }
        list.sort_by(|a, b| key(a).cmp(&key(b)));
        let oldest = oldest_truncated_kept();
        let truncated = {
            let mut truncated = self.truncated.lock().unwrap_or_else(|e| e.into_inner());
            truncated.retain(|c| c.updated >= oldest);
            truncated.clone()
        };
        let document = OnDisk {
            version: VERSION,
            checkpoints: list,
            truncated,
        };
        let mut bytes = serde_json::to_vec(&document).map_err(|e| CheckpointError::Write {
            path: self.path.clone(),
            source: e.into(),
        })?;
        bytes.push(b'\n');
        let keep = Some(self.previous.as_path());
        crate::atomic_file::write_keeping(&self.path, &bytes, keep).map_err(|source| {
            CheckpointError::Write {
                path: self.path.clone(),
                source,
            }
        })?;
        self.written.store(generation, Ordering::Release);
        Ok(true)
    }

    /// Whether something changed since the last successful write.
    fn dirty(&self) -> bool {
        self.generation.load(Ordering::Acquire) != self.written.load(Ordering::Acquire)
    }

    /// Writes changes until `shutdown`: the first within a quarter of `FLUSH_INTERVAL` of
    /// the first change, then at most once per `FLUSH_INTERVAL` (failures included). A
    /// fixed one-second tick would let an agent that crashes every second never record
    /// progress, and each life would repeat a growing backlog. The final flush is the
    /// caller's, after the tailers have stopped. Meanwhile expires the checkpoints of
    /// files gone for `expiry`, looking every `sweep_interval(expiry)` on a thread of its
    /// own (a hung network filesystem holds the sweep, never the writes).
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        expiry: Duration,
        claims: Arc<Claims>,
        on_write: impl Fn(Result<bool, CheckpointError>),
        on_sweep: impl Fn(Swept),
    ) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(sweep_interval(expiry));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweeping: Option<tokio::task::JoinHandle<Swept>> = None;
        let mut last_attempt: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                swept = async { sweeping.as_mut().expect("guarded").await }, if sweeping.is_some() => {
                    sweeping = None;
                    match swept {
                        Ok(swept) => on_sweep(swept),
                        Err(e) => tracing::error!("checkpoint expiry failed: {e}"),
                    }
                    continue;
                }
                _ = sweep.tick(), if sweeping.is_none() => {
                    let (store, claims) = (self.clone(), claims.clone());
                    sweeping = Some(tokio::task::spawn_blocking(move || store.expire(expiry, &claims)));
                    continue;
                }
                _ = tick.tick() => {}
            }
            if !self.dirty() || last_attempt.is_some_and(|at| at.elapsed() < FLUSH_INTERVAL) {
                continue;
            }
            last_attempt = Some(tokio::time::Instant::now());
            let store = self.clone();
            let result = tokio::task::spawn_blocking(move || store.flush())
                .await
                .unwrap_or(Ok(false));
            on_write(result);
        }
    }
}

/// How often gone files are looked for: often enough that a checkpoint outlives its
/// expiry by little, rarely enough that a node's thousands of checkpoints cost nothing.
fn sweep_interval(expiry: Duration) -> Duration {
    (expiry / 2).clamp(Duration::from_millis(500), Duration::from_secs(60))
}

fn parse(bytes: &[u8]) -> Result<OnDisk, String> {
    let document: OnDisk =
        serde_json::from_slice(bytes).map_err(|e| format!("not a checkpoint file: {e}"))?;
    if document.version != VERSION {
        return Err(format!(
            "unsupported checkpoint version {}",
            document.version
        ));
    }
    Ok(document)
}

/// The oldest `updated` of a truncated content still kept.
fn oldest_truncated_kept() -> u64 {
    unix_now().saturating_sub(TRUNCATED_KEPT_FOR.as_secs())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(ino: u64) -> FileIdentity {
        FileIdentity::fake(ino)
    }

    #[tokio::test(start_paused = true)]
    async fn run_should_write_the_first_change_soon_then_at_most_once_a_second() {
        use std::sync::Mutex;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        let start = tokio::time::Instant::now();
        let writes = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let expiry = Duration::from_secs(3600);
        let task = tokio::spawn(store.clone().run(
            shutdown.clone(),
            expiry,
            Arc::default(),
            {
                let writes = writes.clone();
                move |result| {
                    if result.unwrap() {
                        writes.lock().unwrap().push(start.elapsed());
                    }
                }
            },
            |_| {},
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..30u64 {
            store.set_named("app", identity(7), i, Path::new("/var/log/a.log"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        task.await.unwrap();
        let writes = writes.lock().unwrap().clone();
        assert!(
            writes[0] < Duration::from_millis(600),
            "the first change is written soon: {writes:?}"
        );
        assert!(
            writes.windows(2).all(|w| w[1] - w[0] >= FLUSH_INTERVAL),
            "then at most once per interval: {writes:?}"
        );
        assert!(writes.len() >= 2, "{writes:?}");
    }

    /// A checkpoint of the real file at `path`.
    fn set_real(store: &Checkpoints, topic: &str, path: &Path) -> (u64, u64) {
        let file = File::open(path).unwrap();
        let meta = file.metadata().unwrap();
        let identity = FileIdentity::of(&file, &meta).unwrap();
        store.set_named(topic, identity, 3, path);
        (identity.dev, identity.ino)
    }

    #[test]
    fn expire_should_drop_only_checkpoints_of_files_gone_for_the_expiry_and_not_held() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(&dir.path().join("state")).unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(logs.join("pod")).unwrap();
        let path = |name: &str| logs.join(name);
        for name in [
            "live.log",
            "deleted.log",
            "rotated.log",
            "held.log",
            "pod/0.log",
        ] {
            std::fs::write(path(name), b"a line\n").unwrap();
            set_real(&store, "app", &path(name));
        }
        // The same file on another topic is its own checkpoint.
        let (dev, ino) = set_real(&store, "other", &path("deleted.log"));
        std::fs::remove_file(path("deleted.log")).unwrap();
        std::fs::rename(path("rotated.log"), path("rotated.log.1")).unwrap();
        let claims = Arc::new(Claims::default());
        let held = std::fs::metadata(path("held.log")).unwrap();
        let tailer = crate::spec::TailerId::new("app", &path("held.log"));
        let claim = claims.claim(&tailer, held.dev(), held.ino()).unwrap();
        std::fs::remove_file(path("held.log")).unwrap();
        std::fs::remove_dir_all(logs.join("pod")).unwrap();
        let hour = Duration::from_secs(3600);

        let swept = store.expire(hour, &claims);
        assert_eq!(
            (swept.kept, swept.expired),
            (6, 0),
            "gone for less than the expiry"
        );
        let swept = store.expire(Duration::ZERO, &claims);
        assert_eq!(
            (swept.kept, swept.expired),
            (3, 3),
            "deleted twice and the pod's"
        );
        assert!(store.get("other", dev, ino).is_none());
        let kept = |name: &str| {
            let meta = std::fs::metadata(path(name)).unwrap();
            store.get("app", meta.dev(), meta.ino()).is_some()
        };
        assert!(kept("live.log"));
        assert!(
            kept("rotated.log.1"),
            "renamed beside its path: a restart finds it"
        );
        assert!(
            store.get("app", held.dev(), held.ino()).is_some(),
            "held open"
        );

        drop(claim);
        assert_eq!(store.expire(hour, &claims).expired, 0, "gone from now on");
        assert_eq!(store.expire(Duration::ZERO, &claims).expired, 1);
        assert!(store.flush().unwrap(), "expiring is a change to write");
    }

    #[test]
    fn a_file_found_again_should_start_its_gone_time_over() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(&dir.path().join("state")).unwrap();
        let log = dir.path().join("a.log");
        std::fs::write(&log, b"a line\n").unwrap();
        set_real(&store, "app", &log);
        let aside = dir.path().join("elsewhere");
        std::fs::create_dir(&aside).unwrap();
        std::fs::rename(&log, aside.join("a.log")).unwrap();
        let claims = Claims::default();
        assert_eq!(store.expire(Duration::from_secs(3600), &claims).expired, 0);
        std::fs::rename(aside.join("a.log"), &log).unwrap();
        assert_eq!(store.expire(Duration::from_secs(3600), &claims).kept, 1);
        assert!(store.gone.lock().unwrap().is_empty(), "found again");
    }

    #[test]
    fn last_read_at_should_name_the_checkpoints_last_read_under_the_path_after_moves_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        let (a, b) = (Path::new("/var/log/a.log"), Path::new("/var/log/b.log"));
        // Full fingerprints, each its own hash (`originals` wants full ones).
        let identity = |ino: u64| FileIdentity {
            dev: 1,
            ino,
            fp_len: crate::tail::fingerprint::FINGERPRINT_BYTES,
            hash: ino * 10,
        };
        let inos = |found: Vec<Checkpoint>| -> Vec<u64> {
            let mut inos: Vec<u64> = found.iter().map(|c| c.file.ino).collect();
            inos.sort();
            inos
        };
        store.set_named("app", identity(1), 10, a);
        store.set_named("app", identity(2), 10, a);
        store.set_named("other", identity(3), 10, a);
        store.set_named("app", identity(4), 10, b);
        assert_eq!(inos(store.last_read_at("app", a)), vec![1, 2]);
        // Read on under another path (renamed): it is last read there now.
        store.set_named("app", identity(2), 20, b);
        assert_eq!(inos(store.last_read_at("app", a)), vec![1]);
        assert_eq!(inos(store.last_read_at("app", b)), vec![2, 4]);
        assert_eq!(inos(store.last_read_at("other", a)), vec![3]);
        // The same by directory and by fingerprint, for what a new file may be a copy of.
        let near = |topic: &str, near: Near| -> Vec<u64> {
            inos(
                store
                    .originals(topic, near, |_| true)
                    .into_iter()
                    .map(|(c, _)| c)
                    .collect(),
            )
        };
        store.set_named("app", identity(5), 10, Path::new("/var/log/pods/x.log"));
        assert_eq!(near("app", Near::Dir(Path::new("/var/log"))), vec![1, 2, 4]);
        assert_eq!(near("app", Near::Dir(Path::new("/var/log/pods"))), vec![5]);
        store.set_named("app", identity(5), 20, b);
        assert_eq!(
            near("app", Near::Dir(Path::new("/var/log"))),
            vec![1, 2, 4, 5]
        );
        assert!(near("app", Near::Dir(Path::new("/var/log/pods"))).is_empty());
        assert_eq!(near("other", Near::Dir(Path::new("/var/log"))), vec![3]);
        let hash = identity(2).hash;
        assert_eq!(near("app", Near::Hash(hash)), vec![2]);
        // A fingerprint that fills up as the file grows past a KiB, under the same path:
        // indexed for `originals` only from then on.
        let new_dir = Path::new("/var/log/new");
        let (x, partial) = (
            new_dir.join("x.log"),
            FileIdentity {
                fp_len: 100,
                hash: 7,
                ..identity(6)
            },
        );
        store.set_named("app", partial, 100, &x);
        assert!(near("app", Near::Dir(new_dir)).is_empty());
        assert!(near("app", Near::Hash(7)).is_empty());
        assert!(!store.has_original("app", Near::Dir(new_dir), |_| true));
        store.set_named("app", identity(6), 2000, &x);
        assert_eq!(near("app", Near::Dir(new_dir)), vec![6]);
        assert_eq!(near("app", Near::Hash(60)), vec![6]);
        assert!(store.has_original("app", Near::Dir(new_dir), |_| true));
        assert!(!store.has_original("app", Near::Dir(new_dir), |c| c.file.ino != 6));
        assert!(!store.has_original("other", Near::Dir(new_dir), |_| true));
        // Acknowledged further in place: found where it was, at its new offset.
        store.set_named("app", identity(6), 3000, &x);
        let found = store.originals("app", Near::Hash(60), |_| true);
        assert_eq!(
            found.iter().map(|(c, _)| c.offset).collect::<Vec<_>>(),
            vec![3000]
        );
        assert_eq!(inos(store.last_read_at("app", &x)), vec![6]);
        // Read on under the same path: still there, once.
        store.set_named("app", identity(1), 30, a);
        assert_eq!(inos(store.last_read_at("app", a)), vec![1]);
        assert!(store.flush().unwrap());
        drop(store);
        let (again, _) = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(inos(again.last_read_at("app", a)), vec![1]);
        assert_eq!(inos(again.last_read_at("app", b)), vec![2, 4, 5]);
        assert_eq!(
            inos(
                again
                    .originals("app", Near::Dir(new_dir), |_| true)
                    .into_iter()
                    .map(|(c, _)| c)
                    .collect()
            ),
            vec![6]
        );
        assert!(again
            .last_read_at("app", Path::new("/var/log/c.log"))
            .is_empty());
    }

    #[test]
    fn checkpoints_should_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        store.set_named("app", identity(7), 120, Path::new("/var/log/a.log"));
        store.set_named("other", identity(7), 5, Path::new("/var/log/a.log"));
        assert!(store.flush().unwrap());
        assert!(!store.flush().unwrap(), "nothing changed, nothing written");
        drop(store);
        let (again, recovered) = Checkpoints::open(dir.path()).unwrap();
        assert!(recovered.describe().is_none());
        assert_eq!(again.get("app", 1, 7).unwrap().offset, 120);
        assert_eq!(
            again.get("other", 1, 7).unwrap().offset,
            5,
            "keyed by topic too"
        );
        assert!(again.get("app", 1, 8).is_none());
    }

    #[test]
    fn truncated_contents_should_survive_a_reopen_a_few_per_path() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        let full = |hash| FileIdentity {
            dev: 1,
            ino: 7,
            fp_len: crate::tail::fingerprint::FINGERPRINT_BYTES,
            hash,
        };
        for hash in 0..6u64 {
            store.truncated_named("app", full(hash), 100 + hash, identity(7), Path::new("/a"));
        }
        store.truncated_named("app", full(9), 9, identity(8), Path::new("/b"));
        assert!(store.flush().unwrap());
        drop(store);
        let (again, _) = Checkpoints::open(dir.path()).unwrap();
        let kept: Vec<u64> = (0..6)
            .filter(|&h| !again.originals("app", Near::Hash(h), |_| true).is_empty())
            .collect();
        assert_eq!(kept, vec![2, 3, 4, 5], "the newest four of /a");
        let found = again.originals("app", Near::Hash(5), |_| true);
        assert_eq!((found[0].0.offset, found[0].1), (105, true));
        assert_eq!(
            again.originals("app", Near::Hash(9), |_| true).len(),
            1,
            "/b keeps its own"
        );
        assert!(
            again.originals("other", Near::Hash(5), |_| true).is_empty(),
            "per topic"
        );
        assert_eq!(
            again.get("app", 1, 7).unwrap().offset,
            0,
            "the file starts over at 0"
        );
    }

    #[test]
    fn a_checkpoint_file_without_truncated_contents_should_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            br#"{"version":1,"checkpoints":[{"topic":"app","file":{"dev":1,"ino":7,"fp_len":3,"hash":42},"offset":5,"path":"/a","updated":1}]}"#,
        )
        .unwrap();
        let (store, recovered) = Checkpoints::open(dir.path()).unwrap();
        assert!(recovered.describe().is_none());
        assert_eq!(store.get("app", 1, 7).unwrap().offset, 5);
    }

    #[test]
    fn a_corrupt_checkpoint_file_should_be_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\": 1, \"checkp").unwrap();
        let (store, recovered) = Checkpoints::open(dir.path()).unwrap();
        let (aside, reason) = &recovered.moved_aside[0];
        assert!(aside.exists());
        assert!(reason.contains("not a checkpoint file"), "{reason}");
        assert!(recovered.previous.is_none(), "no earlier generation");
        assert!(recovered
            .describe()
            .unwrap()
            .contains("started without checkpoints"));
        assert!(store.get("app", 1, 7).is_none());
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn a_damaged_file_should_fall_back_to_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        store.set_named("app", identity(7), 10, Path::new("/a"));
        store.flush().unwrap();
        store.set_named("app", identity(7), 20, Path::new("/a"));
        store.flush().unwrap();
        drop(store);
        std::fs::write(dir.path().join(FILE_NAME), b"\0\0\0garbage").unwrap();
        let (again, recovered) = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(
            again.get("app", 1, 7).unwrap().offset,
            10,
            "the generation before"
        );
        assert_eq!(
            recovered.previous.as_deref(),
            Some(dir.path().join(PREVIOUS_NAME).as_path())
        );
        assert_eq!(recovered.moved_aside.len(), 1);
        let said = recovered.describe().unwrap();
        assert!(said.contains("loaded the previous generation"), "{said}");

        // A crash between the write's two renames: no current file, the previous one.
        again.set_named("app", identity(7), 30, Path::new("/a"));
        again.flush().unwrap();
        drop(again);
        std::fs::rename(dir.path().join(FILE_NAME), dir.path().join("moved")).unwrap();
        let (third, recovered) = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(third.get("app", 1, 7).unwrap().offset, 10);
        assert!(recovered.moved_aside.is_empty());
        assert!(recovered.describe().unwrap().contains("did not finish"));

        // Both damaged: both moved aside, nothing loaded.
        drop(third);
        std::fs::write(dir.path().join(FILE_NAME), b"{").unwrap();
        std::fs::write(dir.path().join(PREVIOUS_NAME), b"[").unwrap();
        let (fourth, recovered) = Checkpoints::open(dir.path()).unwrap();
        assert!(fourth.get("app", 1, 7).is_none());
        assert_eq!(recovered.moved_aside.len(), 2);
        assert!(recovered.previous.is_none());
    }

    #[test]
    fn a_second_store_on_the_same_directory_should_be_refused_while_the_first_lives() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Checkpoints::open(dir.path()).unwrap();
        let refused = Checkpoints::open(dir.path()).map(|_| ()).unwrap_err();
        let said = refused.to_string();
        assert!(said.contains("in use by another logcatch"), "{said}");
        assert!(
            said.contains(&format!("pid {}", std::process::id())),
            "{said}"
        );
        drop(first);
        Checkpoints::open(dir.path()).expect("free again");
    }

    #[test]
    fn an_interrupted_write_should_leave_the_previous_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        store.set_named("app", identity(7), 10, Path::new("/a"));
        store.flush().unwrap();
        std::fs::write(dir.path().join("checkpoints.json.tmp"), b"{half").unwrap();
        drop(store);
        let (again, recovered) = Checkpoints::open(dir.path()).unwrap();
        assert!(recovered.describe().is_none());
        assert_eq!(again.get("app", 1, 7).unwrap().offset, 10);
        assert!(!dir.path().join("checkpoints.json.tmp").exists());
    }

    proptest::proptest! {
        /// A damaged checkpoint file is refused with a reason, never a panic.
        #[test]
        fn any_bytes_load_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn a_truncated_checkpoint_file_is_refused(cut in 0usize..200) {
            let entry = Checkpoint { topic: "app".into(), file: identity(7), offset: 5, path: Path::new("/a").into(), updated: 1 };
            let full = serde_json::to_vec(&OnDisk { version: VERSION, checkpoints: vec![entry], truncated: vec![] }).unwrap();
            let cut = cut.min(full.len() - 1);
            proptest::prop_assert!(parse(&full[..cut]).is_err());
        }
    }
}
