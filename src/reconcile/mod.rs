//! The reconcile loop: wakes on a source change, a config change, a tailer exit, an
//! expired backoff, a new file in a watched directory (at most once per
//! [`APPEARED_GAP`]) or the periodic resync (which re-expands globs in directories no
//! notification covers), computes `plan`, and applies it. One task per tailer, never two.

mod discovery;
pub mod plan;

use crate::config::{BackoffConfig, Config, StartAt};
use crate::ports::Events;
use crate::source::status::RefusedPath;
use crate::source::Sources;
use crate::spec::{self, ExpandError, Refusal, RefusalKind, SourceId, TailerId, TailerSettings};
use crate::tail::signal::Stop;
use crate::tail::{TailError, Tailer, TailerContext};
use crate::telemetry::status::TailerEntry;
use crate::telemetry::{StatusBoard, TailerProgress, TailerState};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use plan::{next_retry, plan, Action, Phase, RunningSet, RunningTailer};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Config-file declarations are trusted; etcd's are checked against `etcd.allowed_paths`.
fn trusted(source: &SourceId) -> bool {
    &**source == crate::source::CONFIG_SOURCE
}

/// Per tailer: how to stop its task, its backoff state and its restart count.
struct Control {
    stop: Option<Stop>,
    /// From the first failure on: most tailers never fail (120 bytes less in each entry).
    backoff: Option<Box<ExponentialBackoff>>,
    restarts: u32,
    progress: Arc<TailerProgress>,
}

fn new_backoff(config: &BackoffConfig) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(config.initial)
        .with_max_delay(config.max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The least time between two passes caused by files appearing, so that a directory
/// with files churning does not keep the loop expanding globs back to back.
pub const APPEARED_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// Tailer spans kept for sharing, at most: one per distinct set of declarations (an etcd
/// key's each revision is one), so a few in practice.
const MAX_SPANS: usize = 1024;

/// Why the loop woke up.
enum Wake {
    Shutdown,
    Requested,
    /// A file appeared in a watched directory.
    Appeared,
    Exited(Result<(tokio::task::Id, Result<(), TailError>), JoinError>),
}

pub struct Reconciler {
    sources: Arc<Sources>,
    config: watch::Receiver<Arc<Config>>,
    ctx: Arc<TailerContext>,
    board: Arc<StatusBoard>,
    events: Arc<dyn Events>,
    cwd: PathBuf,
    running: RunningSet,
    control: HashMap<TailerId, Control>,
    /// The sources declaring each desired tailer. The ids are the running set's where
    /// it has them, and files with the same owners share one set: not one more copy of
    /// each path and set per file at every pass.
    owners: BTreeMap<TailerId, Arc<BTreeSet<SourceId>>>,
    /// When the last pass started.
    last_pass: Instant,
    tasks: JoinSet<Result<(), TailError>>,
    task_ids: HashMap<tokio::task::Id, TailerId>,
    /// The tailers' spans by the declarations they name (`declared_by`), shared by every
    /// tailer naming the same: a span costs the log subscriber three allocations (3.6 MB
    /// at 10,000 files of one glob, for 10,000 copies of one span). Forgotten wholesale
    /// past `MAX_SPANS` (each tailer keeps its own handle).
    spans: HashMap<String, tracing::Span>,
    last_errors: Vec<ExpandError>,
    /// The `etcd:` section's rules, compiled: global and per key prefix.
    policies: (crate::config::EtcdConfig, spec::Policies),
    /// What is remembered of each desired file since it was first desired.
    discovery: discovery::Discovery,
    /// The directories globs look in, watched so that a file appearing there causes a
    /// pass (not only once a tailer follows a file in them); a missing one's parent
    /// instead, so that the directory appearing does.
    glob_dirs: HashMap<PathBuf, GlobWatch>,
}

/// What makes a glob's directory wake the loop: a name no tailer follows watched in the
/// directory (a file arriving there is one nobody follows: `Wakeups::appeared`), or in
/// its parent while the directory is missing (the directory arriving is).
struct GlobWatch {
    registration: crate::tail::wakeup::Registration,
    of_dir: bool,
}

impl GlobWatch {
    /// The name that stands for a watched directory.
    const STAND_IN: &'static str = ".logcatch-glob-directory";

    fn new(wakeups: &Arc<crate::tail::wakeup::Wakeups>, dir: &Path) -> Self {
        // Names only: it wants no write of the directory's files reported (their tailers
        // may read them on a timer, `Registration::poll_writes`).
        let registration = wakeups.register_names(&dir.join(Self::STAND_IN));
        if registration.is_watched() {
            return GlobWatch {
                registration,
                of_dir: true,
            };
        }
        let parent = dir.parent().unwrap_or(dir);
        GlobWatch {
            registration: wakeups.register_names(&parent.join(Self::STAND_IN)),
            of_dir: false,
        }
    }

    /// Whether it watches the directory itself, and still does.
    fn is_of_dir(&self) -> bool {
        self.of_dir && self.registration.is_watched()
    }
}

impl Reconciler {
    pub fn new(
        sources: Arc<Sources>,
        config: watch::Receiver<Arc<Config>>,
        ctx: Arc<TailerContext>,
        board: Arc<StatusBoard>,
        cwd: PathBuf,
    ) -> Self {
        let events = ctx.events.clone();
        Reconciler {
            sources,
            config,
            ctx,
            board,
            events,
            cwd,
            running: RunningSet::new(),
            control: HashMap::new(),
            owners: BTreeMap::new(),
            last_pass: Instant::now(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            spans: HashMap::new(),
            last_errors: Vec::new(),
            policies: {
                let etcd = crate::config::EtcdConfig::default();
                let policies = spec::Policies::new(&etcd);
                (etcd, policies)
            },
            discovery: discovery::Discovery::default(),
            glob_dirs: HashMap::new(),
        }
    }

    /// Reconciles until `shutdown`, then stops every tailer and waits for them (their
    /// in-flight data acknowledged and checkpointed).
    pub async fn run(mut self, shutdown: CancellationToken) {
        crate::fault::panic_once("reconcile");
        self.pass();
        loop {
            match self.wait(&shutdown).await {
                Wake::Shutdown => break,
                Wake::Requested => {}
                // The next wait sleeps until the gap since the last pass is over.
                Wake::Appeared => continue,
                Wake::Exited(done) => self.on_exit(done),
            }
            self.pass();
        }
        self.stop_all().await;
    }

    async fn wait(&mut self, shutdown: &CancellationToken) -> Wake {
        let resync = self.config.borrow().reconcile.resync_interval;
        let mut wake = Instant::now() + resync;
        if let Some(retry) = next_retry(&self.running) {
            wake = wake.min(retry);
        }
        let wakeups = self.ctx.wakeups.clone();
        let appeared = wakeups.appeared();
        let pending = appeared.is_pending();
        if pending {
            wake = wake.min(self.last_pass + APPEARED_GAP);
        }
        let trigger = self.sources.trigger().clone();
        tokio::select! {
            _ = shutdown.cancelled() => Wake::Shutdown,
            _ = trigger.requested() => Wake::Requested,
            _ = appeared.wait(), if !pending => Wake::Appeared,
            Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => Wake::Exited(done),
            _ = tokio::time::sleep_until(wake) => Wake::Requested,
        }
    }

    fn pass(&mut self) {
        let started = std::time::Instant::now();
        self.last_pass = Instant::now();
        // Taken before the directories are walked: a file appearing during the walk
        // causes another pass.
        self.ctx.wakeups.appeared().take();
        let config = self.config.borrow().clone();
        let settings = TailerSettings::of(&config);
        let snapshots = self.sources.snapshot();
        self.watch_glob_dirs(snapshots.values());
        self.update_policies(&config);
        let guard = spec::Guard {
            policies: &self.policies.1,
            trusted: &trusted,
        };
        let (mut desired, errors) = spec::expand_guarded(
            snapshots.iter().map(|(k, v)| (k, &v[..])),
            &settings,
            &self.cwd,
            Some(&guard),
        );
        let mut refusals = self.restrict(&mut desired, &config);
        refusals.extend(self.discovery.update(
            snapshots.iter().map(|(k, v)| (k, &v[..])),
            &mut desired,
            |id| self.running.contains_key(id),
            config.tail.ignore_older,
            &self.ctx.checkpoints,
        ));
        self.publish_refusals(refusals, &config);
        if errors != self.last_errors {
            for e in &errors {
                tracing::warn!(source = %e.source, path = %e.path, "cannot expand declaration: {}", e.message);
            }
            self.last_errors = errors;
        }
        let now = Instant::now();
        let actions = plan(&desired, &self.running, now);
        let mut last: Option<Arc<BTreeSet<SourceId>>> = None;
        let owners = desired.into_iter().map(|(id, d)| {
            let id = self
                .running
                .get_key_value(&id)
                .map_or(id, |(id, _)| id.clone());
            let owners = match last.take() {
                Some(same) if *same == d.owners => same,
                _ => Arc::new(d.owners),
            };
            last = Some(owners.clone());
            (id, owners)
        });
        self.owners = owners.collect();
        for action in actions {
            self.apply(action, now);
        }
        self.publish_status();
        self.board.set_applied(snapshots);
        self.events
            .reconciled(true, started.elapsed().as_secs_f64());
    }

    /// The trust boundary: etcd-declared files must match `etcd.allowed_paths` once
    /// symlinks are resolved and their topics `etcd.allowed_topics` (a key under a policy's
    /// prefix: the policy's), each policy's keys run at most its `max_tailers`, and at
    /// most `etcd.max_tailers` tailers run; config-file declarations are trusted.
    fn restrict(&mut self, desired: &mut spec::DesiredSet, config: &Config) -> Vec<Refusal> {
        let policies = &self.policies.1;
        let mut refusals = spec::restrict(desired, policies, trusted);
        refusals.extend(spec::limit_policies(desired, policies, trusted));
        refusals.extend(spec::limit(desired, config.etcd.max_tailers, trusted));
        refusals
    }

    /// Refusals go to the source status, and each is logged once (those of a rule that
    /// refuses many at once in one line).
    fn publish_refusals(&mut self, refusals: Vec<Refusal>, config: &Config) {
        let mut table: BTreeMap<String, Vec<RefusedPath>> = BTreeMap::new();
        for r in refusals {
            table
                .entry(r.source.to_string())
                .or_default()
                .push(RefusedPath {
                    topic: r.id.topic.to_string(),
                    path: r.id.path.display().to_string(),
                    kind: r.kind,
                    reason: r.reason,
                });
        }
        // Per bound (the global one, each policy's): how many, and the first.
        let mut over_limit: BTreeMap<String, (usize, String)> = BTreeMap::new();
        let mut ignored = Vec::new();
        for (source, refused) in self.sources.status().set_refused(table) {
            if refused.kind == RefusalKind::MaxTailers {
                let first = format!("{}:{} ({source})", refused.topic, refused.path);
                over_limit.entry(refused.reason).or_insert((0, first)).0 += 1;
            } else if refused.kind == RefusalKind::IgnoreOlder {
                ignored.push(format!("{}:{}", refused.topic, refused.path));
            } else {
                tracing::error!(source, topic = %refused.topic, path = %refused.path, "refused: {}", refused.reason);
            }
        }
        // One line per bound for however many, so a flood of declarations does not flood
        // the log.
        for (reason, (count, first)) in over_limit {
            tracing::error!(
                not_started = count,
                "{reason}: {count} more declared tailers not started, first {first}; see /status"
            );
        }
        if let Some(first) = ignored.first() {
            tracing::info!(
                ignore_older = ?config.tail.ignore_older,
                not_followed = ignored.len(),
                "tail.ignore_older: {} files not modified for longer are not followed until written again, first {first}; see /status",
                ignored.len()
            );
        }
    }

    /// Watches the directory of every declared glob (its deepest literal one): a file
    /// created there wakes the loop. A name no tailer follows stands for the directory.
    /// A directory missing (not made yet, removed, renamed away: its watch ended, which
    /// causes a pass) is tried again each pass, and meanwhile its parent is watched the
    /// same way: the directory made there wakes the loop, which then watches it.
    fn watch_glob_dirs<'a>(&mut self, specs: impl Iterator<Item = &'a Arc<[spec::LogSpec]>>) {
        let dirs: BTreeSet<PathBuf> = specs
            .flat_map(|specs| specs.iter())
            .filter_map(|spec| spec::glob_directory(&self.cwd, &spec.path))
            .collect();
        self.glob_dirs.retain(|dir, _| dirs.contains(dir));
        for dir in dirs {
            if self.glob_dirs.get(&dir).is_some_and(GlobWatch::is_of_dir) {
                continue;
            }
            // The parent's watch it replaces ends after this one began: nothing is missed.
            let watch = GlobWatch::new(&self.ctx.wakeups, &dir);
            self.glob_dirs.insert(dir, watch);
        }
    }

    /// The sources declaring `id`: `config`, `etcd:/logcatch/nodes/n1@1234` (the mod
    /// revision of the key's value in force).
    fn declared_by(&self, id: &TailerId) -> String {
        let owners = self.owners.get(id).into_iter().flat_map(|o| o.iter());
        let status = self.sources.status();
        let named = owners.map(|owner| match status.revision(owner) {
            Some(revision) => format!("{owner}@{revision}"),
            None => owner.to_string(),
        });
        named.collect::<Vec<_>>().join(",")
    }

    /// The span of `id`'s tailer: every log line of the tailer names the declarations
    /// that started it (each owner, an etcd key with the revision of its value).
    fn span(&mut self, id: &TailerId) -> tracing::Span {
        let declared_by = self.declared_by(id);
        if self.spans.len() >= MAX_SPANS && !self.spans.contains_key(&declared_by) {
            self.spans.clear();
        }
        let span = self.spans.entry(declared_by);
        span.or_insert_with_key(
            |declared_by| tracing::info_span!("tailer", declared_by = %declared_by),
        )
        .clone()
    }

    /// Compiles the `etcd:` section's rules again when it changed.
    fn update_policies(&mut self, config: &Config) {
        if self.policies.0 != config.etcd {
            let policies = spec::Policies::new(&config.etcd);
            self.policies = (config.etcd.clone(), policies);
        }
    }

    fn apply(&mut self, action: Action, now: Instant) {
        match action {
            Action::Start { id, settings } => {
                let control = self.control.entry(id.clone()).or_insert_with(|| Control {
                    stop: None,
                    backoff: None,
                    restarts: 0,
                    progress: Arc::default(),
                });
                let stop = Stop::new();
                control.stop = Some(stop.clone());
                control.progress.set_state(TailerState::Starting, None);
                // Not part of the settings `plan` compares: it is how this file is first
                // opened, not how it is followed.
                let tailer_settings = if self.discovery.appeared_later(&id) {
                    Arc::new(TailerSettings {
                        start_at: StartAt::Beginning,
                        ..(*settings).clone()
                    })
                } else {
                    settings.clone()
                };
                let tailer = Tailer::new(
                    id.clone(),
                    tailer_settings,
                    self.ctx.clone(),
                    control.progress.clone(),
                );
                let span = self.span(&id);
                let handle = self.tasks.spawn(tailer.into_task(stop, span));
                self.task_ids.insert(handle.id(), id.clone());
                tracing::debug!(tailer = %id, "tailer started");
                self.running.insert(
                    id,
                    RunningTailer {
                        settings,
                        phase: Phase::Running { since: now },
                    },
                );
            }
            Action::Stop { id } => self.stop(&id),
            Action::Restart { id, reason } => {
                tracing::info!(tailer = %id, reason, "restarting tailer");
                if let Some(control) = self.control.get_mut(&id) {
                    control.restarts += 1;
                }
                self.events.tailer_restarted(&id.topic);
                self.stop(&id);
            }
            Action::Forget { id } => {
                self.running.remove(&id);
                self.control.remove(&id);
                // Not started again: the deleted files it held when it failed are let go.
                self.ctx.deleted.forget(&id);
            }
        }
    }

    fn stop(&mut self, id: &TailerId) {
        if let Some(stop) = self.control.get(id).and_then(|c| c.stop.as_ref()) {
            stop.cancel();
        }
        if let Some(tailer) = self.running.get_mut(id) {
            tailer.phase = Phase::Stopping;
        }
    }

    fn on_exit(&mut self, done: Result<(tokio::task::Id, Result<(), TailError>), JoinError>) {
        let (task, outcome) = match done {
            Ok((task, result)) => (task, result.map_err(|e| e.to_string())),
            Err(e) => (e.id(), Err(format!("tailer task failed: {e}"))),
        };
        let Some(id) = self.task_ids.remove(&task) else {
            return;
        };
        let Some(tailer) = self.running.get_mut(&id) else {
            return;
        };
        let since = match tailer.phase {
            Phase::Stopping => {
                if let Err(reason) = outcome {
                    tracing::warn!(tailer = %id, "tailer stopped with an error: {reason}");
                }
                self.running.remove(&id);
                if !self.owners.contains_key(&id) {
                    self.control.remove(&id);
                }
                return;
            }
            Phase::Running { since } => since,
            Phase::Backoff { .. } => return,
        };
        let reason = outcome
            .err()
            .unwrap_or_else(|| "tailer ended unexpectedly".into());
        let config = self.config.borrow().clone();
        let Some(control) = self.control.get_mut(&id) else {
            return;
        };
        if control.backoff.is_none() || since.elapsed() >= config.reconcile.backoff.reset_after {
            control.backoff = Some(Box::new(new_backoff(&config.reconcile.backoff)));
        }
        let delay = control
            .backoff
            .as_mut()
            .and_then(|backoff| backoff.next())
            .unwrap_or(config.reconcile.backoff.max);
        control.restarts += 1;
        control.stop = None;
        self.events.tailer_restarted(&id.topic);
        tracing::warn!(tailer = %id, retry_in = ?delay, "tailer failed: {reason}");
        tailer.phase = Phase::Backoff {
            retry_at: Instant::now() + delay,
            reason,
        };
        self.publish_status();
    }

    async fn stop_all(&mut self) {
        let ids: Vec<TailerId> = self.running.keys().cloned().collect();
        for id in &ids {
            self.stop(id);
        }
        self.publish_status();
        while let Some(done) = self.tasks.join_next_with_id().await {
            self.on_exit(done);
        }
        self.publish_status();
    }

    fn publish_status(&self) {
        let mut table = BTreeMap::new();
        for (id, tailer) in &self.running {
            let Some(control) = self.control.get(id) else {
                continue;
            };
            let phase = match &tailer.phase {
                Phase::Running { .. } => None,
                Phase::Backoff { reason, .. } => Some((TailerState::Backoff, Some(reason.clone()))),
                Phase::Stopping => Some((TailerState::Stopping, None)),
            };
            let owners = self
                .owners
                .get(id)
                .map(|o| o.iter().cloned().collect())
                .unwrap_or_default();
            table.insert(
                id.clone(),
                TailerEntry {
                    owners,
                    labels: tailer.settings.labels.clone(),
                    fields: tailer.settings.fields.clone(),
                    fallback: tailer.settings.fallback.clone(),
                    phase,
                    restarts: control.restarts,
                    progress: control.progress.clone(),
                },
            );
        }
        self.board.replace(table);
    }
}
