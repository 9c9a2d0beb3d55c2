//! What one watched key or prefix has in force: per etcd key the last valid snapshot,
//! applied from list results and watch events. No I/O except publishing to `Sources` and
//! the snapshot cache, so the rules (last known good, delete stops, re-list swaps) are
//! unit-tested without a server.

use super::cache::SnapshotCache;
use super::value;
use crate::source::status::{now_unix_ms, WatchKind};
use crate::source::Sources;
use crate::spec::LogSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A configured key or prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub kind: WatchKind,
    pub key: String,
}

impl Target {
    pub fn covers(&self, key: &str) -> bool {
        match self.kind {
            WatchKind::Key => self.key == key,
            WatchKind::Prefix => key.starts_with(&self.key),
        }
    }
}

/// The source id of an etcd key.
pub fn source_id(key: &str) -> String {
    format!("etcd:{key}")
}

#[derive(Debug, Default)]
struct Known {
    /// Mod revision of the last value seen (valid or not).
    revision: i64,
    /// The revision whose invalid value was logged, so each is logged once.
    logged_error: Option<i64>,
}

pub struct Tracker {
    target: Target,
    sources: Arc<Sources>,
    cache: Arc<SnapshotCache>,
    known: BTreeMap<String, Known>,
}

impl Tracker {
    /// Starts from what is published already (e.g. by a previous connection or the
    /// cache), so a re-list after a restart of the watcher still sees deletions.
    pub fn new(target: Target, sources: Arc<Sources>, cache: Arc<SnapshotCache>) -> Self {
        let known = sources
            .snapshot()
            .keys()
            .filter_map(|id| id.strip_prefix("etcd:"))
            .filter(|key| target.covers(key))
            .map(|key| (key.to_string(), Known::default()))
            .collect();
        Tracker {
            target,
            sources,
            cache,
            known,
        }
    }

    /// A new value of `key` (list result or put event).
    pub fn put(&mut self, key: &str, revision: i64, value: &[u8]) {
        let known = self.known.entry(key.to_string()).or_default();
        known.revision = revision;
        let status = self.sources.status();
        let parsed = value::parse(key, value);
        let invalid = parsed.is_err();
        status.update_watch(self.target.kind, &self.target.key, |w| {
            w.events += 1;
            w.invalid_values += u64::from(invalid);
        });
        match parsed {
            Ok(specs) => {
                known.logged_error = None;
                self.publish(key, revision, specs);
            }
            Err(e) => {
                if known.logged_error != Some(revision) {
                    tracing::error!(revision, "{e}; keeping the last valid snapshot");
                    known.logged_error = Some(revision);
                }
                status.update_key(key, |s| {
                    s.revision = revision;
                    s.error = Some(e.to_string());
                });
            }
        }
    }

    fn publish(&self, key: &str, revision: i64, specs: Vec<LogSpec>) {
        if let Err(e) = self.cache.set(key, revision, &specs) {
            tracing::warn!("{e}");
        }
        self.sources.status().update_key(key, |s| {
            s.revision = revision;
            s.error = None;
            s.from_cache = false;
        });
        self.sources.publish(&source_id(key), specs);
    }

    /// `key` was deleted: an explicit declaration, its tailers stop.
    pub fn delete(&mut self, key: &str) {
        let target = &self.target;
        self.sources
            .status()
            .update_watch(target.kind, &target.key, |w| w.events += 1);
        if self.known.remove(key).is_some() {
            tracing::info!(key, "etcd key deleted; its logs are no longer declared");
        }
        self.sources.remove(&source_id(key));
        self.sources.status().remove_key(key);
        if let Err(e) = self.cache.remove(key) {
            tracing::warn!("{e}");
        }
    }

    /// A full list: every listed key is applied, every other key this target knew of
    /// (or had cached) is deleted. Each key's snapshot is swapped in one step, so a
    /// re-list never looks like "delete everything".
    pub fn relist(&mut self, listed: Vec<(String, i64, Vec<u8>)>) {
        let present: BTreeSet<String> = listed.iter().map(|(k, _, _)| k.clone()).collect();
        for (key, revision, value) in listed {
            let unchanged = self
                .known
                .get(&key)
                .is_some_and(|k| k.revision == revision && revision != 0);
            if !unchanged {
                self.put(&key, revision, &value);
            }
        }
        let prefix = self.target.kind == WatchKind::Prefix;
        let cached = self.cache.snapshots(&self.target.key, prefix);
        let gone: Vec<String> = self
            .known
            .keys()
            .cloned()
            .chain(cached.into_iter().map(|(k, _, _)| k))
            .filter(|k| !present.contains(k))
            .collect();
        for key in gone {
            self.delete(&key);
        }
    }

    /// etcd is unreachable before the first list: publish the cached snapshots.
    /// Returns how many keys were served.
    pub fn serve_cache(&mut self) -> usize {
        let prefix = self.target.kind == WatchKind::Prefix;
        let cached = self.cache.snapshots(&self.target.key, prefix);
        let served = cached.len();
        for (key, revision, specs) in cached {
            self.known.entry(key.clone()).or_default();
            self.sources.status().update_key(&key, |s| {
                s.revision = revision;
                s.from_cache = true;
            });
            self.sources.publish(&source_id(&key), specs);
        }
        // Nothing cached is not "served from cache": readiness waits for a real sync.
        if served > 0 {
            let target = &self.target;
            self.sources
                .status()
                .update_watch(target.kind, &target.key, |w| {
                    w.from_cache = true;
                    w.last_sync_unix_ms.get_or_insert_with(now_unix_ms);
                });
        }
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        sources: Arc<Sources>,
        cache: Arc<SnapshotCache>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = SnapshotCache::open(dir.path());
        Fixture {
            _dir: dir,
            sources: Arc::default(),
            cache: Arc::new(cache),
        }
    }

    fn tracker(f: &Fixture, kind: WatchKind, key: &str) -> Tracker {
        let target = Target {
            kind,
            key: key.into(),
        };
        Tracker::new(target, f.sources.clone(), f.cache.clone())
    }

    fn value(path: &str) -> Vec<u8> {
        format!(r#"[{{"path": "{path}", "topic": "t"}}]"#).into_bytes()
    }

    fn published(f: &Fixture) -> Vec<(String, Vec<String>)> {
        f.sources
            .snapshot()
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.path.clone()).collect()))
            .collect()
    }

    #[test]
    fn an_invalid_value_should_keep_the_last_valid_snapshot_and_show_the_error() {
        let f = fixture();
        let mut t = tracker(&f, WatchKind::Key, "/k");
        t.put("/k", 2, &value("/var/log/a.log"));
        t.put("/k", 3, b"[{broken");
        assert_eq!(
            published(&f),
            [("etcd:/k".into(), vec!["/var/log/a.log".into()])]
        );
        let view = f.sources.status().view();
        assert_eq!(view.keys[0].revision, 3);
        assert!(view.keys[0]
            .error
            .as_ref()
            .unwrap()
            .contains("invalid JSON"));
        t.put("/k", 4, &value("/var/log/b.log"));
        assert_eq!(f.sources.status().view().keys[0].error, None);
    }

    #[test]
    fn a_relist_should_swap_snapshots_and_delete_only_missing_keys() {
        let f = fixture();
        let mut t = tracker(&f, WatchKind::Prefix, "/p/");
        t.put("/p/a", 2, &value("/var/log/a.log"));
        t.put("/p/b", 3, &value("/var/log/b.log"));
        t.relist(vec![
            ("/p/a".into(), 5, value("/var/log/a2.log")),
            ("/p/c".into(), 6, value("/var/log/c.log")),
        ]);
        assert_eq!(
            published(&f),
            [
                ("etcd:/p/a".into(), vec!["/var/log/a2.log".into()]),
                ("etcd:/p/c".into(), vec!["/var/log/c.log".into()]),
            ]
        );
        assert!(
            f.cache.snapshots("/p/b", false).is_empty(),
            "cache forgets deleted keys"
        );
    }

    #[test]
    fn the_cache_should_serve_a_key_until_a_list_replaces_or_deletes_it() {
        let f = fixture();
        f.cache
            .set(
                "/k",
                2,
                &[LogSpec {
                    path: "/var/log/a.log".into(),
                    topic: "t".into(),
                    ..Default::default()
                }],
            )
            .unwrap();
        let mut t = tracker(&f, WatchKind::Key, "/k");
        assert_eq!(t.serve_cache(), 1);
        assert_eq!(
            published(&f),
            [("etcd:/k".into(), vec!["/var/log/a.log".into()])]
        );
        assert!(
            f.sources.status().ready(),
            "served from cache counts as ready"
        );
        // A new tracker (after a reconnect) still knows the key and sees it deleted.
        let mut t = tracker(&f, WatchKind::Key, "/k");
        t.relist(Vec::new());
        assert!(published(&f).is_empty());
    }

    #[test]
    fn a_key_tracker_should_ignore_keys_it_does_not_cover() {
        let f = fixture();
        f.sources.publish("etcd:/other", Vec::new());
        let mut t = tracker(&f, WatchKind::Key, "/k");
        t.relist(Vec::new());
        assert_eq!(published(&f), [("etcd:/other".into(), vec![])]);
    }
}
