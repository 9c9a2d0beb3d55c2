//! The config file as a source: watched with notify on its parent directory (which also
//! sees Kubernetes' ConfigMap `..data` symlink swap) plus polling as a fallback. A valid
//! new config is applied live for `logs`, `fields`, `tail` and `reconcile`; other changes
//! wait for a restart. An invalid one is refused and the running config stays in force.

use super::{Sources, CONFIG_SOURCE};
use crate::config::{Config, LogEntry};
use crate::ports::health::Change;
use crate::ports::{Events, Health};
use crate::spec::LogSpec;
use notify::{RecursiveMode, Watcher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How often the file is re-read when no notification came.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

pub fn specs(logs: &[LogEntry]) -> Vec<LogSpec> {
    logs.iter()
        .map(|log| LogSpec {
            path: log.path.clone(),
            topic: log.topic.clone(),
            exclude: log.exclude.clone(),
            parsing: log.parsing(),
            labels: log.labels.clone(),
            filters: log.filters(),
            fields: log.fields.clone(),
            throttle: log.throttle.clone(),
            key: log.key.clone(),
            fallback_topic: log.fallback_topic.clone(),
            encoding: log.encoding,
            merge_json: log.merge_json.clone(),
        })
        .collect()
}

pub struct ConfigWatcher {
    path: PathBuf,
    last_text: Option<Vec<u8>>,
    config: watch::Sender<Arc<Config>>,
    sources: Arc<Sources>,
    events: Arc<dyn Events>,
    health: Arc<Health>,
}

impl ConfigWatcher {
    /// `text` is what the running config was loaded from (`None`: read and apply the
    /// file at the first look).
    pub fn new(
        path: PathBuf,
        text: Option<Vec<u8>>,
        config: watch::Sender<Arc<Config>>,
        sources: Arc<Sources>,
        events: Arc<dyn Events>,
        health: Arc<Health>,
    ) -> Self {
        ConfigWatcher {
            path,
            last_text: text,
            config,
            sources,
            events,
            health,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let _watcher = self.watch_parent(tx);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = rx.recv() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            self.check();
        }
    }

    /// Watches the directory holding the config; `None` (polling only) when that fails.
    fn watch_parent(&self, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())?
            .to_path_buf();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading a file (ours included: the check reads the config) is an access
                // event; reacting to those would loop. Only changes matter.
                if event.is_ok_and(|e| matches!(e.kind, notify::EventKind::Access(_))) {
                    return;
                }
                // Full channel = a check is already pending: requests merge.
                let _ = tx.try_send(());
            })
            .ok()?;
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(watcher),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; polling only");
                None
            }
        }
    }

    fn check(&mut self) {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) => {
                // Forget the text: the same config coming back is read and applied again
                // (which changes nothing running, and clears the error).
                self.last_text = None;
                self.refuse(format!(
                    "config {}: cannot read: {e}; keeping the running config",
                    self.path.display()
                ));
                return;
            }
        };
        if self.last_text.as_ref() == Some(&text) {
            return;
        }
        self.last_text = Some(text.clone());
        let parsed = String::from_utf8(text)
            .map_err(|_| format!("config {}: not UTF-8 text", self.path.display()))
            .and_then(|text| {
                Config::parse(&text, &self.path.display().to_string(), &|name| {
                    std::env::var(name).ok()
                })
                .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    tracing::warn!(config = %self.path.display(), "{warning}");
                }
                self.apply(loaded.config);
            }
            Err(e) => self.refuse(format!("{e}; keeping the running config")),
        }
    }

    /// Logs and counts a refusal (once, until the error changes) before `/status` shows it.
    fn refuse(&mut self, message: String) {
        let events = &self.events;
        self.health
            .config_reloaded(Some(message.clone()), |change| {
                if change == Change::Failing {
                    tracing::error!("{message}");
                    events.config_reloaded(false);
                }
            });
    }

    fn apply(&mut self, new: Config) {
        let old = self.config.borrow().clone();
        let mut effective = new.clone();
        // These are wired at start; keep them until a restart.
        effective.node = old.node.clone();
        effective.state_dir = old.state_dir.clone();
        effective.sink = old.sink.clone();
        effective.http = old.http.clone();
        effective.shutdown_timeout = old.shutdown_timeout;
        if effective != new {
            tracing::warn!(
                config = %self.path.display(),
                "changes to node, state_dir, sink, http or shutdown_timeout take effect after a restart"
            );
        }
        tracing::info!(config = %self.path.display(), logs = new.logs.len(), "config reloaded");
        self.sources.publish(CONFIG_SOURCE, specs(&effective.logs));
        self.config.send_replace(Arc::new(effective));
        self.sources.trigger().request();
        let events = &self.events;
        self.health
            .config_reloaded(None, |_| events.config_reloaded(true));
    }
}
