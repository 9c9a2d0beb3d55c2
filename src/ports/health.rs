//! Conditions of the agent that belong to no tailer: the config file (last reload refused?)
//! and the checkpoint store (last write failed?). Each is healthy or failing with its
//! error and since when; `/status` shows them and their owners log only the transitions,
//! so a failure repeated every second is one log line, and its end another.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// One condition as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub path: String,
    /// The current error; `None` while healthy.
    pub error: Option<String>,
    /// Milliseconds since the epoch when the current failure began.
    pub failing_since_ms: Option<u64>,
    /// Checkpoints only: what loading them at start recovered from (a damaged file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
}

/// What a report changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// It started failing, or fails with a different error now.
    Failing,
    /// It works again after failing for this many milliseconds.
    Recovered {
        after_ms: u64,
    },
}

impl Condition {
    fn report(&mut self, error: Option<String>) -> Change {
        let now = unix_ms();
        match (error, self.error.is_some()) {
            (None, false) => Change::Unchanged,
            (None, true) => {
                let since = self.failing_since_ms.take().unwrap_or(now);
                self.error = None;
                Change::Recovered {
                    after_ms: now.saturating_sub(since),
                }
            }
            (Some(error), _) if self.error.as_ref() == Some(&error) => Change::Unchanged,
            (Some(error), failing) => {
                if !failing {
                    self.failing_since_ms = Some(now);
                }
                self.error = Some(error);
                Change::Failing
            }
        }
    }
}

/// The agent-level conditions, shared by their owners and HTTP `/status`.
#[derive(Debug, Default)]
pub struct Health {
    config: Mutex<Condition>,
    checkpoints: Mutex<Condition>,
    tasks: Mutex<BTreeMap<String, TaskView>>,
    deleted_files: Mutex<DeletedView>,
}

/// `/status` `config`, `checkpoints` and `tasks`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    pub config: Condition,
    pub checkpoints: Condition,
    /// Background tasks restarted after a panic or an unexpected end, by name.
    pub tasks: BTreeMap<String, TaskView>,
    pub deleted_files: DeletedView,
}

/// `/status` `deleted_files`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeletedView {
    /// Deleted files still held open.
    pub files: u64,
    /// Their size: disk space the node gets back once they are closed.
    pub bytes: u64,
    /// Seconds since the oldest of them was found deleted.
    pub oldest_seconds: u64,
    /// Unshipped bytes of deleted files closed at the bounds, since start.
    pub released_bytes: u64,
    pub released_files: u64,
}

/// A supervised background task that was restarted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskView {
    pub restarts: u64,
    /// Why it ended the last time.
    pub last_error: String,
    pub last_restart_unix_ms: u64,
}

impl Health {
    pub fn new(config_path: &std::path::Path, checkpoints_path: &std::path::Path) -> Self {
        let condition = |path: &std::path::Path| {
            Mutex::new(Condition {
                path: path.display().to_string(),
                ..Condition::default()
            })
        };
        Health {
            config: condition(config_path),
            checkpoints: condition(checkpoints_path),
            tasks: Mutex::default(),
            deleted_files: Mutex::default(),
        }
    }

    /// The result of reading and validating the config file (`None` = applied). `first`
    /// gets what it changed before `/status` can show it (the condition stays locked), so
    /// that whoever sees the new status also finds its log line and metric.
    pub fn config_reloaded(&self, error: Option<String>, first: impl FnOnce(Change)) {
        let mut condition = lock(&self.config);
        first(condition.report(error));
    }

    /// Loading the checkpoints at start recovered from a damaged file (`what` says how).
    pub fn checkpoints_recovered(&self, what: String) {
        lock(&self.checkpoints).recovered = Some(what);
    }

    /// The result of a checkpoint write (`None` = written).
    pub fn checkpoint_written(&self, error: Option<String>) -> Change {
        lock(&self.checkpoints).report(error)
    }

    /// What the last look at the deleted files held found.
    pub fn deleted_files(&self, view: DeletedView) {
        *self.deleted_files.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// A background task ended (`why`) and is started again.
    pub fn task_restarted(&self, task: &str, why: String) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let view = tasks.entry(task.to_string()).or_default();
        view.restarts += 1;
        view.last_error = why;
        view.last_restart_unix_ms = unix_ms();
    }

    pub fn view(&self) -> HealthView {
        HealthView {
            config: lock(&self.config).clone(),
            checkpoints: lock(&self.checkpoints).clone(),
            tasks: self.tasks.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            deleted_files: self
                .deleted_files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

fn lock(condition: &Mutex<Condition>) -> std::sync::MutexGuard<'_, Condition> {
    condition.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_should_signal_only_transitions_and_changed_errors() {
        let health = Health::new("c.yaml".as_ref(), "state/checkpoints.json".as_ref());
        assert_eq!(health.checkpoint_written(None), Change::Unchanged);
        assert_eq!(
            health.checkpoint_written(Some("disk full".into())),
            Change::Failing
        );
        let since = health.view().checkpoints.failing_since_ms;
        assert!(since.is_some());
        assert_eq!(
            health.checkpoint_written(Some("disk full".into())),
            Change::Unchanged
        );
        assert_eq!(
            health.checkpoint_written(Some("read-only".into())),
            Change::Failing
        );
        assert_eq!(health.view().checkpoints.failing_since_ms, since);
        assert!(matches!(
            health.checkpoint_written(None),
            Change::Recovered { .. }
        ));
        let view = health.view();
        assert_eq!(view.checkpoints.error, None);
        assert_eq!(view.checkpoints.failing_since_ms, None);
        assert_eq!(view.config.error, None, "the conditions are independent");
    }
}
