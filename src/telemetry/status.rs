//! The status model: what every tailer is doing, shared between the tailer tasks (live
//! progress, lock-free), the reconcile loop (phase, owners, restarts) and HTTP `/status`.

use crate::record::{Fields, Labels};
use crate::spec::{LogSpec, SourceId, TailerId};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TailerState {
    Starting,
    /// The file does not exist (yet); the tailer polls for it.
    Waiting,
    Running,
    /// Failed; restarts when its backoff expires (every failure does: a cause that an
    /// operator fixes, such as a missing topic or permission, needs no restart of the
    /// agent, as with a Kubernetes controller's backoff).
    Backoff,
    Stopping,
    /// Paused over its declaration's `throttle` (`on_limit: pause`) since it last caught
    /// up with its file: shipping, slower than the file grows.
    Throttled,
}

impl TailerState {
    /// In the order of the variants: a state is stored as its index.
    pub const ALL: [TailerState; 6] = [
        TailerState::Starting,
        TailerState::Waiting,
        TailerState::Running,
        TailerState::Backoff,
        TailerState::Stopping,
        TailerState::Throttled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TailerState::Starting => "starting",
            TailerState::Waiting => "waiting",
            TailerState::Running => "running",
            TailerState::Backoff => "backoff",
            TailerState::Stopping => "stopping",
            TailerState::Throttled => "throttled",
        }
    }
}

/// Live progress of one tailer task, written by the task without locks.
#[derive(Debug, Default)]
pub struct TailerProgress {
    state: AtomicU8,
    /// Every line before this offset of the current file is acknowledged.
    acked_offset: AtomicU64,
    file_size: AtomicU64,
    last_line_unix_ms: AtomicU64,
    reason: Mutex<Option<String>>,
}

impl TailerProgress {
    pub fn set_state(&self, state: TailerState, reason: Option<String>) {
        self.state.store(state as u8, Ordering::Relaxed);
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    pub fn state(&self) -> TailerState {
        TailerState::ALL[self.state.load(Ordering::Relaxed) as usize]
    }

    pub fn set_acked(&self, offset: u64) {
        self.acked_offset.store(offset, Ordering::Relaxed);
    }

    pub fn set_file_size(&self, size: u64) {
        self.file_size.store(size, Ordering::Relaxed);
    }

    pub fn line_seen(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_line_unix_ms.store(ms, Ordering::Relaxed);
    }

    pub fn acked(&self) -> u64 {
        self.acked_offset.load(Ordering::Relaxed)
    }

    pub fn file_size(&self) -> u64 {
        self.file_size.load(Ordering::Relaxed)
    }

    fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One row of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TailerStatus {
    pub topic: String,
    pub path: String,
    pub owners: Vec<String>,
    /// The declaration's labels.
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The static fields sent with every record.
    #[serde(skip_serializing_if = "Fields::is_empty")]
    pub fields: Fields,
    /// Why the records go to the declaration's `fallback_topic` (its topic template
    /// rendered no legal name for this file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub state: TailerState,
    pub reason: Option<String>,
    pub restarts: u32,
    pub offset: u64,
    pub file_size: u64,
    pub lag_bytes: u64,
    /// Milliseconds since the epoch of the last line read.
    pub last_line_at_ms: Option<u64>,
}

/// What the reconcile loop knows of a tailer beyond its live progress.
#[derive(Debug, Clone)]
pub struct TailerEntry {
    pub owners: Vec<SourceId>,
    pub labels: Arc<Labels>,
    pub fields: Arc<Fields>,
    pub fallback: Option<Arc<str>>,
    /// `Some` overrides the task's own state (backoff, stopping).
    pub phase: Option<(TailerState, Option<String>)>,
    pub restarts: u32,
    pub progress: Arc<TailerProgress>,
}

/// The table behind `/status`, kept by the reconcile loop.
#[derive(Debug, Default)]
pub struct StatusBoard {
    tailers: Mutex<BTreeMap<TailerId, TailerEntry>>,
    last_update: Mutex<Option<Instant>>,
    /// The sources' snapshots the last pass applied: a declaration's status reports the
    /// revision the loop acted on, not one it has not seen yet.
    applied: Mutex<Arc<Snapshots>>,
}

/// Source id → snapshot, as `Sources::snapshot` gives them.
pub type Snapshots = BTreeMap<SourceId, Arc<[LogSpec]>>;

impl StatusBoard {
    /// Replaces the table; called by the reconcile loop on every pass.
    pub fn replace(&self, tailers: BTreeMap<TailerId, TailerEntry>) {
        *self.tailers.lock().unwrap_or_else(|e| e.into_inner()) = tailers;
        *self.last_update.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Records the snapshots a pass applied (after [`StatusBoard::replace`]).
    pub fn set_applied(&self, snapshots: Snapshots) {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshots);
    }

    pub fn applied(&self) -> Arc<Snapshots> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When the reconcile loop last published (for liveness).
    pub fn last_update(&self) -> Option<Instant> {
        *self.last_update.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn tailers(&self) -> Vec<TailerStatus> {
        // Copy the table out first: the stats below must not hold the lock the reconcile
        // loop needs (a scrape may stat thousands of files).
        let tailers: Vec<(TailerId, TailerEntry)> = {
            let table = self.tailers.lock().unwrap_or_else(|e| e.into_inner());
            table
                .iter()
                .map(|(id, e)| (id.clone(), e.clone()))
                .collect()
        };
        tailers
            .into_iter()
            .map(|(id, entry)| {
                let progress = &entry.progress;
                let (state, reason) = entry
                    .phase
                    .clone()
                    .unwrap_or_else(|| (progress.state(), progress.reason()));
                let last = progress.last_line_unix_ms.load(Ordering::Relaxed);
                // Stat the path now: a tailer held back by the sink does not look at its file.
                let file_size =
                    std::fs::metadata(&*id.path).map_or(progress.file_size(), |m| m.len());
                // One read, so that offset and lag agree.
                let offset = progress.acked();
                TailerStatus {
                    topic: id.topic.to_string(),
                    path: id.path.display().to_string(),
                    owners: entry.owners.iter().map(|o| o.to_string()).collect(),
                    labels: (*entry.labels).clone(),
                    fields: (*entry.fields).clone(),
                    fallback: entry.fallback.as_deref().map(str::to_string),
                    state,
                    reason,
                    restarts: entry.restarts,
                    offset,
                    file_size,
                    lag_bytes: file_size.saturating_sub(offset),
                    last_line_at_ms: (last > 0).then_some(last),
                }
            })
            .collect()
    }
}
