//! What the sources report for `/status` and `/readyz`: one row per watched etcd key or
//! prefix (synced? from cache? last error) and one per etcd source key (revision in
//! effect, invalid value, paths refused by the allow-list).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    Key,
    Prefix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchState {
    /// Not listed yet.
    Connecting,
    /// Listed and watching.
    Synced,
    /// Lost the server (or a compaction): retrying; snapshots stay in force.
    Retrying,
    /// etcd refused the credentials (or they cannot be read): retrying with the files as
    /// they are at each attempt; snapshots stay in force, but the source is not ready,
    /// since only new credentials can heal it.
    Unauthorized,
}

/// One configured etcd key or prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchStatus {
    pub kind: WatchKind,
    pub key: String,
    pub state: WatchState,
    /// The etcd revision seen last.
    pub revision: i64,
    pub last_sync_unix_ms: Option<u64>,
    pub synced_once: bool,
    /// Snapshots were served from the `state_dir` cache because etcd was unreachable.
    pub from_cache: bool,
    pub error: Option<String>,
    /// Values seen (puts and deletes), for `logcatch_etcd_watch_events_total`.
    pub events: u64,
    /// Invalid values refused, for `logcatch_etcd_invalid_values_total`.
    pub invalid_values: u64,
}

impl WatchStatus {
    /// Synced once or served from cache (a lost server keeps the last good snapshots
    /// ready), and not refused by etcd: refused credentials do not heal by themselves.
    pub fn ready(&self) -> bool {
        (self.synced_once || self.from_cache) && self.state != WatchState::Unauthorized
    }

    pub fn new(kind: WatchKind, key: &str) -> Self {
        WatchStatus {
            kind,
            key: key.to_string(),
            state: WatchState::Connecting,
            revision: 0,
            last_sync_unix_ms: None,
            synced_once: false,
            from_cache: false,
            error: None,
            events: 0,
            invalid_values: 0,
        }
    }
}

/// A declaration that is not tailed: outside the allow-list, or beyond `max_tailers`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RefusedPath {
    pub topic: String,
    pub path: String,
    /// `allowed_paths` or `max_tailers`: the rule that refused it.
    pub kind: crate::spec::RefusalKind,
    pub reason: String,
}

/// One etcd key that is (or was) a source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    pub source: String,
    pub key: String,
    /// The mod revision of the value seen last.
    pub revision: i64,
    /// The snapshot in force came from the cache.
    pub from_cache: bool,
    /// Why the latest value was refused (the last valid snapshot stays in force).
    pub error: Option<String>,
    pub refused: Vec<RefusedPath>,
}

/// The `sources` part of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SourcesView {
    /// Every watched key and prefix synced once or was served from cache.
    pub ready: bool,
    pub watches: Vec<WatchStatus>,
    pub keys: Vec<KeyStatus>,
}

#[derive(Debug, Default)]
struct Inner {
    watches: BTreeMap<String, WatchStatus>,
    keys: BTreeMap<String, KeyStatus>,
    refused: BTreeMap<String, Vec<RefusedPath>>,
}

/// The state of the status written back to etcd (`etcd.status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishState {
    /// `etcd.status.enabled` is false, or the etcd source is off.
    #[default]
    Disabled,
    /// Not written yet.
    Starting,
    /// Held under a live lease, written on change.
    Publishing,
    /// The lease or a write failed (etcd down, no write permission): retried with
    /// backoff; shipping goes on.
    Failing,
}

/// `/status` `status_publish`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishView {
    pub state: PublishState,
    /// Where this node's status keys are: `<etcd.status.prefix>/<node>/`.
    pub prefix: String,
    /// The lease the status keys are held under.
    pub lease_id: Option<i64>,
    /// Status keys written and held now.
    pub keys: usize,
    /// Keys written (puts and deletes) since the start.
    pub writes: u64,
    /// Failed attempts since the start, for `logcatch_etcd_status_publish_errors_total`.
    pub errors: u64,
    pub error: Option<String>,
    pub failing_since_ms: Option<u64>,
}

/// The table, shared by the etcd source, the reconciler and HTTP.
#[derive(Debug, Default)]
pub struct SourceStatusTable {
    inner: Mutex<Inner>,
    publish: Mutex<PublishView>,
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SourceStatusTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates (creating when missing) the row of a watched key or prefix.
    pub fn update_watch(&self, kind: WatchKind, key: &str, f: impl FnOnce(&mut WatchStatus)) {
        let mut inner = self.lock();
        f(inner
            .watches
            .entry(format!("{kind:?}:{key}"))
            .or_insert_with(|| WatchStatus::new(kind, key)));
    }

    pub fn remove_watch(&self, kind: WatchKind, key: &str) {
        self.lock().watches.remove(&format!("{kind:?}:{key}"));
    }

    /// Updates (creating when missing) the row of the source `etcd:<key>`.
    pub fn update_key(&self, key: &str, f: impl FnOnce(&mut KeyStatus)) {
        let mut inner = self.lock();
        f(inner
            .keys
            .entry(key.to_string())
            .or_insert_with(|| KeyStatus {
                source: format!("etcd:{key}"),
                key: key.to_string(),
                ..KeyStatus::default()
            }));
    }

    /// The mod revision of the value in force of the source `etcd:<key>`.
    pub fn revision(&self, source: &str) -> Option<i64> {
        let key = source.strip_prefix("etcd:")?;
        self.lock().keys.get(key).map(|k| k.revision)
    }

    pub fn remove_key(&self, key: &str) {
        self.lock().keys.remove(key);
    }

    /// Replaces the allow-list refusals (source id → refused declarations); returns the
    /// refusals that are new since the previous call, for logging once.
    pub fn set_refused(
        &self,
        refused: BTreeMap<String, Vec<RefusedPath>>,
    ) -> Vec<(String, RefusedPath)> {
        let mut inner = self.lock();
        let mut new = Vec::new();
        for (source, paths) in &refused {
            let old = inner.refused.get(source);
            for path in paths {
                if !old.is_some_and(|old| old.contains(path)) {
                    new.push((source.clone(), path.clone()));
                }
            }
        }
        inner.refused = refused;
        new
    }

    /// Updates the state of the status written back to etcd.
    pub fn update_publish(&self, f: impl FnOnce(&mut PublishView)) {
        f(&mut self.publish.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn publish_view(&self) -> PublishView {
        self.publish
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True when every watched key and prefix synced once or was served from cache, and
    /// none is refused by etcd now.
    pub fn ready(&self) -> bool {
        self.lock().watches.values().all(WatchStatus::ready)
    }

    pub fn view(&self) -> SourcesView {
        let inner = self.lock();
        let ready = inner.watches.values().all(WatchStatus::ready);
        let mut keys: BTreeMap<String, KeyStatus> = inner
            .keys
            .values()
            .map(|k| (k.source.clone(), k.clone()))
            .collect();
        for (source, refused) in &inner.refused {
            let row = keys.entry(source.clone()).or_insert_with(|| KeyStatus {
                source: source.clone(),
                key: source.strip_prefix("etcd:").unwrap_or(source).to_string(),
                ..KeyStatus::default()
            });
            row.refused = refused.clone();
        }
        SourcesView {
            ready,
            watches: inner.watches.values().cloned().collect(),
            keys: keys.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &str) -> RefusedPath {
        RefusedPath {
            topic: "t".into(),
            path: path.into(),
            kind: crate::spec::RefusalKind::AllowedPaths,
            reason: "outside".into(),
        }
    }

    #[test]
    fn ready_should_wait_for_every_watch_to_sync_or_serve_from_cache() {
        let table = SourceStatusTable::default();
        assert!(table.ready(), "nothing to watch is ready");
        table.update_watch(WatchKind::Key, "/a", |_| {});
        table.update_watch(WatchKind::Prefix, "/p/", |_| {});
        assert!(!table.ready());
        table.update_watch(WatchKind::Key, "/a", |w| w.synced_once = true);
        assert!(!table.ready());
        table.update_watch(WatchKind::Prefix, "/p/", |w| w.from_cache = true);
        assert!(table.ready());
        // Lost the server: the last good snapshots keep it ready.
        table.update_watch(WatchKind::Key, "/a", |w| w.state = WatchState::Retrying);
        assert!(table.ready());
    }

    #[test]
    fn ready_should_drop_while_etcd_refuses_the_credentials() {
        let table = SourceStatusTable::default();
        table.update_watch(WatchKind::Key, "/a", |w| {
            w.synced_once = true;
            w.state = WatchState::Unauthorized;
        });
        assert!(!table.ready());
        assert!(!table.view().ready);
        table.update_watch(WatchKind::Key, "/a", |w| w.state = WatchState::Synced);
        assert!(table.ready());
    }

    #[test]
    fn set_refused_should_report_only_new_refusals() {
        let table = SourceStatusTable::default();
        let first = BTreeMap::from([("etcd:/a".to_string(), vec![refused("/etc/shadow")])]);
        assert_eq!(table.set_refused(first.clone()).len(), 1);
        assert!(table.set_refused(first).is_empty());
        let view = table.view();
        assert_eq!(view.keys[0].key, "/a");
        assert_eq!(view.keys[0].refused, [refused("/etc/shadow")]);
    }
}
