//! Wires the agent together and runs it until SIGTERM/SIGINT, then shuts down in order:
//! stop reconciling → stop tailers (their in-flight data acknowledged) → flush the sink →
//! final checkpoint, within `shutdown_timeout`.

use crate::config::{Config, ConfigError};
use crate::ports::health::Change;
use crate::ports::{Events, Health};
use crate::reconcile::Reconciler;
use crate::sink::{self, SinkError};
use crate::source::config_file::{specs, ConfigWatcher};
use crate::source::etcd::publish::{Publisher, Reports};
use crate::source::etcd::shared::ClientSlot;
use crate::source::etcd::EtcdSource;
use crate::source::{Sources, CONFIG_SOURCE};
use crate::supervise::{panic_message, Supervisor};
use crate::tail::checkpoint::CheckpointError;
use crate::tail::deleted::DeletedFiles;
use crate::tail::{Checkpoints, Claims, TailerContext};
use crate::telemetry::http::{self, HttpState};
use crate::telemetry::{Metrics, StatusBoard};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("http.listen {addr}: cannot listen: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot read the working directory: {0}")]
    Cwd(#[source] std::io::Error),
    #[error("the reconcile loop {0}; nothing else can follow or stop files")]
    ReconcileLoop(String),
    #[error("shutdown took longer than shutdown_timeout ({0:?}); unacknowledged lines are read again at the next start")]
    ShutdownTimeout(std::time::Duration),
}

/// Runs the agent with the config at `config_path` until a termination signal.
pub async fn run(config_path: &Path) -> Result<(), AgentError> {
    let text = std::fs::read(config_path).map_err(|source| ConfigError::Read {
        file: config_path.display().to_string(),
        source,
    })?;
    let loaded = Config::load(config_path)?;
    for warning in &loaded.warnings {
        tracing::warn!(config = %config_path.display(), "{warning}");
    }
    let config = Arc::new(loaded.config);
    let node: Arc<str> = config.node_name().into();
    let cwd = std::env::current_dir().map_err(AgentError::Cwd)?;

    let (checkpoints, recovered) = Checkpoints::open(&config.state_dir)?;
    let health = Arc::new(Health::new(
        &absolute(&cwd, config_path),
        checkpoints.path(),
    ));
    let metrics = Arc::new(Metrics::new(config.http.file_lag_metrics));
    if let Some(what) = recovered.describe() {
        tracing::error!(state_dir = %config.state_dir.display(), "checkpoints: {what}");
        let loaded = match recovered.previous {
            Some(_) => "previous",
            None => "none",
        };
        metrics.checkpoint_recovered(loaded);
        health.checkpoints_recovered(what);
    }
    let events: Arc<dyn Events> = metrics.clone();
    let tap = Arc::new(sink::tap::Tap::default());
    let sink: Arc<dyn sink::Sink> = Arc::new(sink::tap::TapSink::new(
        sink::build(&config, events.clone())?,
        tap.clone(),
    ));
    let board = Arc::new(StatusBoard::default());
    let sources = Arc::new(Sources::default());
    sources.publish(CONFIG_SOURCE, specs(&config.logs));
    let (config_tx, config_rx) = watch::channel(config.clone());

    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    // Background tasks outlive the reconciler so that the final acks still checkpoint.
    let background = CancellationToken::new();

    let deleted: Arc<DeletedFiles> = Arc::default();
    let supervisor = Supervisor {
        events: events.clone(),
        health: health.clone(),
    };
    if let Some(addr) = config.http_listen() {
        let listen = |source| AgentError::Listen {
            addr: addr.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
        // Kept as a std listener so that a restarted server listens on the same socket.
        let listener = listener.into_std().map_err(listen)?;
        let state = HttpState {
            board: board.clone(),
            sink: sink.clone(),
            liveness_window: config.reconcile.resync_interval * 3,
            node: node.clone(),
            sources: sources.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            tap: tap.clone(),
        };
        let stop = background.clone();
        supervisor.spawn("http", background.clone(), move || {
            let (listener, state, stop) = (listener.try_clone(), state.clone(), stop.clone());
            async move {
                let served = match listener.and_then(tokio::net::TcpListener::from_std) {
                    Ok(listener) => http::serve(listener, state, stop).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!("http server failed: {e}");
                }
            }
        });
        tracing::info!(%addr, "http server listening");
    }
    let claims: Arc<Claims> = Arc::default();
    supervisor.spawn("checkpoint-writer", background.clone(), {
        let (checkpoints, stop, claims) = (checkpoints.clone(), background.clone(), claims.clone());
        let (events, health) = (events.clone(), health.clone());
        let expiry = config.tail.checkpoint_expiry;
        move || {
            let (events, health, swept) = (events.clone(), health.clone(), events.clone());
            checkpoints.clone().run(
                stop.clone(),
                expiry,
                claims.clone(),
                move |result| report_checkpoint_write(&*events, &health, result),
                move |s| swept.checkpoints_swept(s.kept, s.expired),
            )
        }
    });
    // One etcd client for the watches and the status writer: one connection, one login.
    let etcd_client = Arc::new(ClientSlot::default());
    supervisor.spawn("etcd-source", shutdown.clone(), {
        let (config_rx, sources, stop) = (config_rx.clone(), sources.clone(), shutdown.clone());
        let (state_dir, slot) = (config.state_dir.clone(), etcd_client.clone());
        move || {
            EtcdSource::new(config_rx.clone(), sources.clone(), &state_dir, slot.clone())
                .run(stop.clone())
        }
    });
    // Awaited at shutdown: it revokes its lease, so a node stopped cleanly leaves no status.
    let status_publisher = supervisor.spawn("etcd-status", shutdown.clone(), {
        let (config_rx, sources, stop) = (config_rx.clone(), sources.clone(), shutdown.clone());
        let reports = status_reports(&node, &board, &sources, &cwd);
        let (node, slot) = (node.clone(), etcd_client.clone());
        move || {
            Publisher::new(
                config_rx.clone(),
                sources.clone(),
                &node,
                reports.clone(),
                slot.clone(),
            )
            .run(stop.clone())
        }
    });
    supervisor.spawn("config-watcher", shutdown.clone(), {
        let path = absolute(&cwd, config_path);
        let (config_tx, sources, stop) = (config_tx.clone(), sources.clone(), shutdown.clone());
        let (events, health) = (events.clone(), health.clone());
        // A restarted watcher reads the file again (applying the same config changes
        // nothing running).
        let mut text = Some(text);
        move || {
            ConfigWatcher::new(
                path.clone(),
                text.take(),
                config_tx.clone(),
                sources.clone(),
                events.clone(),
                health.clone(),
            )
            .run(stop.clone())
        }
    });

    let bounds = crate::tail::deleted::Bounds {
        max_bytes: config.tail.deleted_files_max_bytes,
        max_age: config.tail.deleted_files_max_age,
    };
    let wakeups = crate::tail::Wakeups::new();
    wakeups.report_to(events.clone());
    supervisor.spawn("deleted-files", background.clone(), {
        let (deleted, events, stop) = (deleted.clone(), events.clone(), background.clone());
        let health = health.clone();
        let publish: Arc<dyn Fn(_) + Send + Sync> =
            Arc::new(move |view| health.deleted_files(view));
        let wakeups = wakeups.clone();
        let names_left: Arc<dyn Fn() -> Option<u64> + Send + Sync> =
            Arc::new(move || wakeups.names_left());
        move || {
            let (events, names_left) = (events.clone(), names_left.clone());
            deleted
                .clone()
                .run(bounds, events, names_left, publish.clone(), stop.clone())
        }
    });
    let ctx = Arc::new(TailerContext {
        deleted: deleted.clone(),
        sink: sink.clone(),
        checkpoints: checkpoints.clone(),
        events: events.clone(),
        claims,
        wakeups,
        open_files: Arc::new(tokio::sync::Semaphore::new(config.tail.max_open_files)),
        filling: Arc::new(tokio::sync::Semaphore::new(crate::tail::filling_permits(
            config.sink.kafka.max_in_flight_bytes,
        ))),
        throttles: Arc::default(),
    });
    let reconciler = Reconciler::new(sources, config_rx, ctx, board, cwd);
    let reconcile = tokio::spawn(reconciler.run(shutdown.clone()));
    // Without its reconcile loop the agent follows nothing new and stops nothing: that
    // is not replaced, the agent exits with an error (its supervisor restarts the pod).
    let reconcile = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let ended = reconcile.await;
            if !shutdown.is_cancelled() {
                let why = match ended {
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e)),
                    Err(e) => e.to_string(),
                    Ok(()) => "ended".to_string(),
                };
                tracing::error!("the reconcile loop {why}; exiting");
                shutdown.cancel();
                return Err(why);
            }
            Ok(())
        })
    };
    tracing::info!(node = %node, config = %config_path.display(), sink = ?config.sink.kind, "logcatch started");

    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping tailers, flushing, checkpointing");
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        let reconciled = reconcile.await.unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = sink.flush().await {
            tracing::error!("{e}");
        }
        let _ = status_publisher.await;
        reconciled
    })
    .await;
    background.cancel();
    if let Err(e) = checkpoints.flush() {
        tracing::error!("{e}");
    }
    match drained {
        Ok(Ok(())) => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Err(why)) => Err(AgentError::ReconcileLoop(why)),
        Err(_) => Err(AgentError::ShutdownTimeout(config.shutdown_timeout)),
    }
}

/// What `etcd.status` publishes: the status model seen per declaring etcd key.
pub fn status_reports(
    node: &Arc<str>,
    board: &Arc<StatusBoard>,
    sources: &Arc<Sources>,
    cwd: &Path,
) -> Reports {
    let (node, board, sources) = (node.clone(), board.clone(), sources.clone());
    let cwd = cwd.to_path_buf();
    Arc::new(move || {
        crate::telemetry::declared::reports(
            &node,
            &board.tailers(),
            &sources.status().view(),
            &sources.snapshot(),
            &board.applied(),
            &cwd,
        )
    })
}

/// Counts a checkpoint write and logs only the transitions: a full or read-only state
/// dir fails every second, and the agent keeps shipping meanwhile (at-least-once holds:
/// the file on disk only lags, so a crash repeats more lines, never loses one).
fn report_checkpoint_write(
    events: &dyn Events,
    health: &Health,
    result: Result<bool, CheckpointError>,
) {
    match result {
        Ok(false) => {}
        Ok(true) => {
            events.checkpoint_written(true);
            if let Change::Recovered { after_ms } = health.checkpoint_written(None) {
                tracing::info!(
                    failed_for_s = after_ms / 1000,
                    "checkpoints are written again"
                );
            }
        }
        Err(e) => {
            events.checkpoint_written(false);
            if health.checkpoint_written(Some(e.to_string())) == Change::Failing {
                tracing::error!("{e}; shipping goes on, the write is retried every second (a crash meanwhile repeats lines, it loses none)");
            }
        }
    }
}

fn spawn_signal_handler(shutdown: CancellationToken) -> Result<(), AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        shutdown.cancel();
    });
    Ok(())
}

fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}
