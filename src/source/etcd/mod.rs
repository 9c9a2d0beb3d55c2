//! The etcd source: per configured key or prefix, list (Get) then watch from the list's
//! revision + 1; each etcd key is one source `etcd:<key>` publishing its full snapshot.
//! All of them share one client ([`shared::SharedClient`]: one connection, one login).
//! Follows config reloads: keys and prefixes are added and removed live; changed
//! connection settings reconnect every watcher (their snapshots stay in force).

pub mod admin;
pub mod cache;
pub mod cert;
pub mod client;
pub mod gather;
pub mod publish;
pub mod shared;
pub mod tracker;
pub mod value;
pub mod watcher;

use crate::config::{Config, EtcdConfig};
use crate::source::status::WatchKind;
use crate::source::Sources;
use cache::SnapshotCache;
use shared::{ClientSlot, SharedClient};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracker::{source_id, Target, Tracker};
use watcher::Watcher;

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub struct EtcdSource {
    config: watch::Receiver<Arc<Config>>,
    sources: Arc<Sources>,
    cache: Arc<SnapshotCache>,
    /// The client the running watchers share, built from the connection settings.
    client: Option<Arc<SharedClient>>,
    /// Where the client is shared with the status writer.
    slot: Arc<ClientSlot>,
    running: BTreeMap<Target, Running>,
}

/// The keys and prefixes `config` asks to watch.
pub fn targets(config: &EtcdConfig) -> Vec<Target> {
    if !config.is_enabled() {
        return Vec::new();
    }
    let keys = config.keys.iter().map(|k| (WatchKind::Key, k));
    let prefixes = config.prefixes.iter().map(|k| (WatchKind::Prefix, k));
    keys.chain(prefixes)
        .map(|(kind, key)| Target {
            kind,
            key: key.clone(),
        })
        .collect()
}

impl EtcdSource {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        sources: Arc<Sources>,
        state_dir: &Path,
        slot: Arc<ClientSlot>,
    ) -> Self {
        let (cache, error) = SnapshotCache::open(state_dir);
        if let Some(e) = error {
            tracing::error!("{e}");
        }
        // Known before the task first runs, so /readyz never reports ready too early.
        for target in targets(&config.borrow().etcd) {
            sources
                .status()
                .update_watch(target.kind, &target.key, |_| {});
        }
        EtcdSource {
            config,
            sources,
            cache: Arc::new(cache),
            client: None,
            slot,
            running: BTreeMap::new(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let etcd = self.config.borrow_and_update().etcd.clone();
            self.apply(etcd).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = self.config.changed() => if changed.is_err() { break },
            }
        }
        for (_, running) in std::mem::take(&mut self.running) {
            running.stop.cancel();
            let _ = running.task.await;
        }
    }

    /// Brings the running watchers in line with `etcd`.
    async fn apply(&mut self, etcd: EtcdConfig) {
        let desired = targets(&etcd);
        let reconnect = self
            .client
            .as_ref()
            .is_some_and(|c| !c.config().same_connection(&etcd));
        if reconnect {
            tracing::info!("etcd connection settings changed; reconnecting");
            for (_, running) in std::mem::take(&mut self.running) {
                running.stop.cancel();
                let _ = running.task.await;
            }
            self.client = None;
        }
        let removed: Vec<Target> = self
            .running
            .keys()
            .filter(|t| !desired.contains(t))
            .cloned()
            .collect();
        for target in removed {
            if let Some(running) = self.running.remove(&target) {
                running.stop.cancel();
                let _ = running.task.await;
            }
            self.forget(&target, &desired);
        }
        let client = self
            .client
            .get_or_insert_with(|| self.slot.for_config(&etcd))
            .clone();
        for target in desired {
            if self.running.contains_key(&target) {
                continue;
            }
            tracing::info!(kind = ?target.kind, key = %target.key, "watching etcd");
            let tracker = Tracker::new(target.clone(), self.sources.clone(), self.cache.clone());
            let watcher = Watcher::new(
                target.clone(),
                client.clone(),
                self.sources.clone(),
                tracker,
            );
            let stop = CancellationToken::new();
            let task = tokio::spawn(watcher.run(stop.clone()));
            self.running.insert(target, Running { stop, task });
        }
    }

    /// `target` left the config: its keys stop being sources (unless another target
    /// still covers them).
    fn forget(&self, target: &Target, remaining: &[Target]) {
        tracing::info!(kind = ?target.kind, key = %target.key, "no longer watching etcd");
        let status = self.sources.status();
        status.remove_watch(target.kind, &target.key);
        let ids: Vec<String> = self
            .sources
            .snapshot()
            .keys()
            .map(|k| k.to_string())
            .collect();
        let prefix = target.kind == WatchKind::Prefix;
        let cached = self.cache.snapshots(&target.key, prefix);
        let keys = ids
            .iter()
            .filter_map(|id| id.strip_prefix("etcd:").map(str::to_string))
            .chain(cached.into_iter().map(|(k, _, _)| k))
            .filter(|k| target.covers(k) && !remaining.iter().any(|t| t.covers(k)));
        for key in keys {
            self.sources.remove(&source_id(&key));
            status.remove_key(&key);
            if let Err(e) = self.cache.remove(&key) {
                tracing::warn!("{e}");
            }
        }
    }
}
