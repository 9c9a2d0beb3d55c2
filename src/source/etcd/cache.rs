//! The last valid snapshot of every etcd key, kept in `state_dir` so that an agent
//! starting while etcd is down tails what was declared before. Written temp → fsync →
//! rename whenever a key's valid snapshot changes, and on the next change or repeat after
//! a failed write (a full state dir), so the file catches up once space returns.

use super::value::Entry;
use crate::spec::LogSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const FILE_NAME: &str = "etcd-snapshots.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[error("etcd snapshot cache {path}: {message}")]
pub struct CacheError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedKey {
    revision: i64,
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    keys: BTreeMap<String, CachedKey>,
}

#[derive(Debug)]
pub struct SnapshotCache {
    path: PathBuf,
    keys: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    keys: BTreeMap<String, CachedKey>,
    /// The file lags `keys`: its last write failed.
    stale: bool,
}

impl SnapshotCache {
    /// Loads the cache in `state_dir`; a missing file is an empty cache, an unreadable
    /// one is an empty cache plus the error (the agent still starts).
    pub fn open(state_dir: &Path) -> (SnapshotCache, Option<CacheError>) {
        let path = state_dir.join(FILE_NAME);
        let error = |message: String| CacheError {
            path: path.display().to_string(),
            message,
        };
        let loaded = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(file) if file.version == VERSION => Ok(file.keys),
                Ok(file) => Err(error(format!("unknown version {}; ignored", file.version))),
                Err(e) => Err(error(format!("cannot parse ({e}); ignored"))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(error(format!("cannot read ({e}); ignored"))),
        };
        let (keys, error) = match loaded {
            Ok(keys) => (keys, None),
            Err(e) => (BTreeMap::new(), Some(e)),
        };
        let cache = SnapshotCache {
            path,
            keys: Mutex::new(Cached { keys, stale: false }),
        };
        (cache, error)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cached snapshots of `key` (exact) or of every key under it (`prefix`).
    pub fn snapshots(&self, key: &str, prefix: bool) -> Vec<(String, i64, Vec<LogSpec>)> {
        self.lock()
            .keys
            .iter()
            .filter(|(k, _)| {
                if prefix {
                    k.starts_with(key)
                } else {
                    *k == key
                }
            })
            .map(|(k, cached)| {
                let specs = cached.entries.iter().map(Entry::spec).collect();
                (k.clone(), cached.revision, specs)
            })
            .collect()
    }

    /// Records `key`'s valid snapshot; writes the file when the specs changed.
    pub fn set(&self, key: &str, revision: i64, specs: &[LogSpec]) -> Result<(), CacheError> {
        let entries: Vec<Entry> = specs.iter().map(Entry::of).collect();
        let mut cached = self.lock();
        if cached.keys.get(key).is_some_and(|c| c.entries == entries) && !cached.stale {
            return Ok(());
        }
        cached
            .keys
            .insert(key.to_string(), CachedKey { revision, entries });
        self.write(&mut cached)
    }

    /// Forgets a deleted key.
    pub fn remove(&self, key: &str) -> Result<(), CacheError> {
        let mut cached = self.lock();
        if cached.keys.remove(key).is_none() && !cached.stale {
            return Ok(());
        }
        self.write(&mut cached)
    }

    fn write(&self, cached: &mut Cached) -> Result<(), CacheError> {
        let written = self.write_file(&cached.keys);
        cached.stale = written.is_err();
        written
    }

    fn write_file(&self, keys: &BTreeMap<String, CachedKey>) -> Result<(), CacheError> {
        let error = |message: String| CacheError {
            path: self.path.display().to_string(),
            message,
        };
        let file = CacheFile {
            version: VERSION,
            keys: keys.clone(),
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| error(format!("cannot encode: {e}")))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| error(format!("cannot create: {e}")))?;
        }
        crate::atomic_file::write(&self.path, &bytes)
            .map_err(|e| error(format!("cannot write: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> LogSpec {
        LogSpec {
            path: path.into(),
            topic: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_written_snapshot_should_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, error) = SnapshotCache::open(dir.path());
        assert!(error.is_none());
        cache.set("/k/a", 7, &[spec("/var/log/a.log")]).unwrap();
        cache.set("/k/b", 8, &[spec("/var/log/b.log")]).unwrap();
        cache.set("/other", 9, &[]).unwrap();
        cache.remove("/k/b").unwrap();
        let (cache, error) = SnapshotCache::open(dir.path());
        assert!(error.is_none());
        assert_eq!(
            cache.snapshots("/k/", true),
            [("/k/a".to_string(), 7, vec![spec("/var/log/a.log")])]
        );
        assert_eq!(cache.snapshots("/other", false).len(), 1);
        assert!(cache.snapshots("/k", false).is_empty(), "exact key only");
    }

    #[test]
    fn a_failed_write_should_be_repeated_by_the_next_unchanged_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = SnapshotCache::open(dir.path());
        let file = dir.path().join(FILE_NAME);
        // A directory where the file goes makes the write fail, like a full disk.
        std::fs::create_dir(&file).unwrap();
        assert!(cache.set("/k", 5, &[spec("/var/log/a.log")]).is_err());
        std::fs::remove_dir(&file).unwrap();
        cache.set("/k", 6, &[spec("/var/log/a.log")]).unwrap();
        let (reopened, error) = SnapshotCache::open(dir.path());
        assert!(error.is_none());
        assert_eq!(
            reopened.snapshots("/k", false).len(),
            1,
            "written on the repeat"
        );
    }

    #[test]
    fn a_corrupt_cache_should_be_ignored_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{torn").unwrap();
        let (cache, error) = SnapshotCache::open(dir.path());
        assert!(error.unwrap().to_string().contains("cannot parse"));
        assert!(cache.snapshots("/", true).is_empty());
    }
}
