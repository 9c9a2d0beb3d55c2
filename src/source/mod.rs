//! Sources of declarations publish full snapshots (source id → specs); the latest wins
//! and every change asks the reconciler for a pass.

pub mod config_file;
pub mod etcd;
pub mod status;

use crate::spec::{LogSpec, SourceId};
use status::SourceStatusTable;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The source id of the config file's `logs`.
pub const CONFIG_SOURCE: &str = "config";

/// "Please reconcile": requests made while none is awaited merge into one.
#[derive(Debug, Clone, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    pub fn request(&self) {
        self.0.notify_one();
    }

    pub async fn requested(&self) {
        self.0.notified().await;
    }
}

/// The latest snapshot of every source.
#[derive(Debug, Default)]
pub struct Sources {
    snapshots: Mutex<BTreeMap<SourceId, Arc<[LogSpec]>>>,
    trigger: Trigger,
    status: SourceStatusTable,
}

impl Sources {
    /// Replaces `source`'s snapshot; asks for a reconcile when it changed.
    pub fn publish(&self, source: &str, specs: Vec<LogSpec>) {
        let specs: Arc<[LogSpec]> = specs.into();
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if snapshots.get(source) != Some(&specs) {
            snapshots.insert(source.into(), specs);
            self.trigger.request();
        }
    }

    /// Forgets `source` (its declarations stop being desired).
    pub fn remove(&self, source: &str) {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if snapshots.remove(source).is_some() {
            self.trigger.request();
        }
    }

    pub fn snapshot(&self) -> BTreeMap<SourceId, Arc<[LogSpec]>> {
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// Per-source status (etcd watches, keys, allow-list refusals).
    pub fn status(&self) -> &SourceStatusTable {
        &self.status
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

    #[tokio::test(start_paused = true)]
    async fn publish_should_trigger_only_on_change_and_merge_requests() {
        let sources = Sources::default();
        sources.publish("config", vec![spec("/a")]);
        sources.publish("config", vec![spec("/b")]);
        // Two changes, one pending request.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            sources.trigger().requested(),
        )
        .await
        .unwrap();
        sources.publish("config", vec![spec("/b")]);
        let again = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            sources.trigger().requested(),
        )
        .await;
        assert!(again.is_err(), "an unchanged snapshot must not trigger");
        assert_eq!(&*sources.snapshot()["config"], &[spec("/b")]);
    }
}
