//! Checkpoints: per (topic, file identity), the offset up to which the sink acknowledged
//! every line. Kept in memory, written to `state_dir/checkpoints.json` soon after the
//! first change, then at most once a second, and at shutdown, atomically (temp file,
//! fsync, rename, fsync dir).

use super::fingerprint::FileIdentity;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const FILE_NAME: &str = "checkpoints.json";
const VERSION: u32 = 1;
/// How often dirty checkpoints are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub topic: String,
    pub file: FileIdentity,
    /// Every line before this byte offset was acknowledged by the sink.
    pub offset: u64,
    /// The path the file had when last read (informational).
    pub path: PathBuf,
    /// Seconds since the epoch of the last update.
    pub updated: u64,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    checkpoints: Vec<Checkpoint>,
}

type Key = (String, u64, u64);

#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    entries: Mutex<HashMap<Key, Checkpoint>>,
    /// Bumped on every change; compared with `written` to know whether to flush.
    generation: AtomicU64,
    written: AtomicU64,
}

/// What loading found besides the checkpoints: a corrupt file moved aside.
#[derive(Debug)]
pub struct Recovered {
    pub moved_aside: Option<(PathBuf, String)>,
}

impl Checkpoints {
    /// Opens (creating) the state directory and loads its checkpoints. A corrupt file is
    /// moved aside (reported in `Recovered`) and the agent starts without checkpoints.
    pub fn open(state_dir: &Path) -> Result<(Arc<Self>, Recovered), CheckpointError> {
        std::fs::create_dir_all(state_dir).map_err(|source| CheckpointError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(FILE_NAME);
        // A temp file left by a write interrupted before its rename is never the truth.
        let _ = std::fs::remove_file(crate::atomic_file::tmp_path(&path));
        let mut recovered = Recovered { moved_aside: None };
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match parse(&bytes) {
                Ok(list) => list,
                Err(reason) => {
                    let aside = path.with_extension(format!("json.corrupt-{}", unix_now()));
                    std::fs::rename(&path, &aside).map_err(|source| CheckpointError::Write {
                        path: path.clone(),
                        source,
                    })?;
                    recovered.moved_aside = Some((aside, reason));
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        let entries = entries
            .into_iter()
            .map(|c| ((c.topic.clone(), c.file.dev, c.file.ino), c))
            .collect();
        let store = Checkpoints {
            path,
            entries: Mutex::new(entries),
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
        entries.get(&(topic.to_string(), dev, ino)).cloned()
    }

    /// The checkpoints on `topic` last read under `path`: after a restart, the files that
    /// were renamed away from `path` while the agent was down.
    pub fn last_read_at(&self, topic: &str, path: &Path) -> Vec<Checkpoint> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<Checkpoint> = entries
            .values()
            .filter(|c| c.topic == topic && c.path == path)
            .cloned()
            .collect();
        found.sort_by_key(|c| c.updated);
        found
    }

    /// Records that every line of `file` on `topic` before `offset` is acknowledged.
    pub fn set(&self, topic: &str, file: FileIdentity, offset: u64, path: &Path) {
        let key = (topic.to_string(), file.dev, file.ino);
        let checkpoint = Checkpoint {
            topic: topic.to_string(),
            file,
            offset,
            path: path.to_path_buf(),
            updated: unix_now(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.get(&key).map(|c| (c.offset, c.file)) != Some((offset, file)) {
            entries.insert(key, checkpoint);
            self.generation.fetch_add(1, Ordering::Release);
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
        list.sort_by(|a, b| (&a.topic, &a.path).cmp(&(&b.topic, &b.path)));
        let document = OnDisk {
            version: VERSION,
            checkpoints: list,
        };
        let mut bytes = serde_json::to_vec(&document).map_err(|e| CheckpointError::Write {
            path: self.path.clone(),
            source: e.into(),
        })?;
        bytes.push(b'\n');
        crate::atomic_file::write(&self.path, &bytes).map_err(|source| CheckpointError::Write {
            path: self.path.clone(),
            source,
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
    /// caller's, after the tailers have stopped.
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        on_write: impl Fn(Result<bool, CheckpointError>),
    ) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_attempt: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
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

fn parse(bytes: &[u8]) -> Result<Vec<Checkpoint>, String> {
    let document: OnDisk =
        serde_json::from_slice(bytes).map_err(|e| format!("not a checkpoint file: {e}"))?;
    if document.version != VERSION {
        return Err(format!(
            "unsupported checkpoint version {}",
            document.version
        ));
    }
    Ok(document.checkpoints)
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
        FileIdentity {
            dev: 1,
            ino,
            fp_len: 3,
            hash: 42,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_should_write_the_first_change_soon_then_at_most_once_a_second() {
        use std::sync::Mutex;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        let start = tokio::time::Instant::now();
        let writes = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(store.clone().run(shutdown.clone(), {
            let writes = writes.clone();
            move |result| {
                if result.unwrap() {
                    writes.lock().unwrap().push(start.elapsed());
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..30u64 {
            store.set("app", identity(7), i, Path::new("/var/log/a.log"));
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

    #[test]
    fn checkpoints_should_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        store.set("app", identity(7), 120, Path::new("/var/log/a.log"));
        store.set("other", identity(7), 5, Path::new("/var/log/a.log"));
        assert!(store.flush().unwrap());
        assert!(!store.flush().unwrap(), "nothing changed, nothing written");
        let (again, recovered) = Checkpoints::open(dir.path()).unwrap();
        assert!(recovered.moved_aside.is_none());
        assert_eq!(again.get("app", 1, 7).unwrap().offset, 120);
        assert_eq!(
            again.get("other", 1, 7).unwrap().offset,
            5,
            "keyed by topic too"
        );
        assert!(again.get("app", 1, 8).is_none());
    }

    #[test]
    fn a_corrupt_checkpoint_file_should_be_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\": 1, \"checkp").unwrap();
        let (store, recovered) = Checkpoints::open(dir.path()).unwrap();
        let (aside, reason) = recovered.moved_aside.unwrap();
        assert!(aside.exists());
        assert!(reason.contains("not a checkpoint file"), "{reason}");
        assert!(store.get("app", 1, 7).is_none());
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn an_interrupted_write_should_leave_the_previous_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Checkpoints::open(dir.path()).unwrap();
        store.set("app", identity(7), 10, Path::new("/a"));
        store.flush().unwrap();
        std::fs::write(dir.path().join("checkpoints.json.tmp"), b"{half").unwrap();
        let (again, recovered) = Checkpoints::open(dir.path()).unwrap();
        assert!(recovered.moved_aside.is_none());
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
            let entry = Checkpoint { topic: "app".into(), file: identity(7), offset: 5, path: "/a".into(), updated: 1 };
            let full = serde_json::to_vec(&OnDisk { version: VERSION, checkpoints: vec![entry] }).unwrap();
            let cut = cut.min(full.len() - 1);
            proptest::prop_assert!(parse(&full[..cut]).is_err());
        }
    }
}
