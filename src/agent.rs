//! Wires the agent together and runs it until SIGTERM/SIGINT, then shuts down in order:
//! stop reconciling → stop tailers (their in-flight data acknowledged) → flush the sink →
//! final checkpoint, within `shutdown_timeout`.

use crate::config::{Config, ConfigError};
use crate::ports::health::Change;
use crate::ports::{Events, Health};
use crate::reconcile::Reconciler;
use crate::sink::{self, SinkError};
use crate::source::config_file::{specs, ConfigWatcher};
use crate::source::etcd::EtcdSource;
use crate::source::{Sources, CONFIG_SOURCE};
use crate::tail::checkpoint::CheckpointError;
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
    let sink = sink::build(&config, events.clone())?;
    let board = Arc::new(StatusBoard::default());
    let sources = Arc::new(Sources::default());
    sources.publish(CONFIG_SOURCE, specs(&config.logs));
    let (config_tx, config_rx) = watch::channel(config.clone());

    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    // Background tasks outlive the reconciler so that the final acks still checkpoint.
    let background = CancellationToken::new();

    if let Some(addr) = config.http_listen() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let state = HttpState {
            board: board.clone(),
            sink: sink.clone(),
            liveness_window: config.reconcile.resync_interval * 3,
            node: node.clone(),
            sources: sources.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        let stop = background.clone();
        tokio::spawn(async move {
            if let Err(e) = http::serve(listener, state, stop).await {
                tracing::error!("http server failed: {e}");
            }
        });
        tracing::info!(%addr, "http server listening");
    }
    let claims: Arc<Claims> = Arc::default();
    tokio::spawn(checkpoints.clone().run(
        background.clone(),
        config.tail.checkpoint_expiry,
        claims.clone(),
        {
            let (events, health) = (events.clone(), health.clone());
            move |result| report_checkpoint_write(&*events, &health, result)
        },
        {
            let events = events.clone();
            move |swept| events.checkpoints_swept(swept.kept, swept.expired)
        },
    ));
    let etcd = EtcdSource::new(config_rx.clone(), sources.clone(), &config.state_dir);
    tokio::spawn(etcd.run(shutdown.clone()));
    let watcher = ConfigWatcher::new(
        absolute(&cwd, config_path),
        text,
        config_tx,
        sources.clone(),
        events.clone(),
        health.clone(),
    );
    tokio::spawn(watcher.run(shutdown.clone()));

    let ctx = Arc::new(TailerContext {
        sink: sink.clone(),
        checkpoints: checkpoints.clone(),
        events: events.clone(),
        claims,
        wakeups: crate::tail::Wakeups::new(),
        open_files: Arc::new(tokio::sync::Semaphore::new(config.tail.max_open_files)),
    });
    let reconciler = Reconciler::new(sources, config_rx, ctx, board, cwd);
    let reconcile = tokio::spawn(reconciler.run(shutdown.clone()));
    tracing::info!(node = %node, config = %config_path.display(), sink = ?config.sink.kind, "logcatch started");

    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping tailers, flushing, checkpointing");
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        let _ = reconcile.await;
        if let Err(e) = sink.flush().await {
            tracing::error!("{e}");
        }
    })
    .await;
    background.cancel();
    if let Err(e) = checkpoints.flush() {
        tracing::error!("{e}");
    }
    match drained {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(_) => Err(AgentError::ShutdownTimeout(config.shutdown_timeout)),
    }
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
