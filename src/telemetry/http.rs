//! The HTTP server: `/healthz` (the reconcile loop is alive), `/readyz`, `/metrics`,
//! `/status` (JSON) and `/tap` (what the sink ships, as JSON lines, while connected).

use super::metrics::Metrics;
use super::status::{StatusBoard, TailerStatus};
use crate::ports::health::{Condition, Health};
use crate::sink::tap::{self, Tap};
use crate::sink::Sink;
use crate::source::status::{PublishView, SourcesView, WatchState};
use crate::source::Sources;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct HttpState {
    pub board: Arc<StatusBoard>,
    pub sink: Arc<dyn Sink>,
    /// The loop is alive while it published within this long.
    pub liveness_window: Duration,
    pub node: Arc<str>,
    /// Source status (etcd watches and keys, allow-list refusals).
    pub sources: Arc<Sources>,
    pub metrics: Arc<Metrics>,
    /// The config file's and the checkpoint store's conditions.
    pub health: Arc<Health>,
    /// What the sink ships, for `/tap`.
    pub tap: Arc<Tap>,
}

#[derive(Serialize)]
struct StatusBody {
    node: String,
    version: &'static str,
    tailers: Vec<TailerStatus>,
    sink: SinkStatus,
    sources: SourcesView,
    /// The status written back to etcd (`etcd.status`): state, lease, last error.
    status_publish: PublishView,
    /// The last config reload: `error` is set while the running config is the last good one.
    config: Condition,
    /// Checkpoint writes: `error` is set while they fail (the agent keeps shipping).
    checkpoints: Condition,
    /// Background tasks restarted after a panic or an unexpected end.
    tasks: std::collections::BTreeMap<String, crate::ports::health::TaskView>,
    /// Deleted files held open (pinning disk) and those closed at the bounds.
    deleted_files: crate::ports::health::DeletedView,
    /// `logcatch tap` clients connected (`/tap`).
    taps: usize,
}

#[derive(Serialize)]
struct SinkStatus {
    connected: bool,
    /// Why connecting last failed (e.g. TLS or SASL), until it succeeds.
    error: Option<String>,
    in_flight_bytes: u64,
}

/// The routes; `/tap` streams end at `stop` (a graceful shutdown waits for every
/// response to end).
pub fn router(state: HttpState, stop: CancellationToken) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route(
            "/tap",
            get(move |state, query| tap(state, query, stop.clone())),
        )
        .with_state(state)
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, shutdown.clone()))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn healthz(State(state): State<HttpState>) -> (StatusCode, String) {
    match state.board.last_update() {
        Some(at) if at.elapsed() <= state.liveness_window => (StatusCode::OK, "ok\n".into()),
        Some(at) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("reconcile loop last ran {:.0?} ago\n", at.elapsed()),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "reconcile loop has not run yet\n".into(),
        ),
    }
}

/// Ready once the config is loaded (it is, when this serves), every etcd key synced once
/// or was served from cache and none is refused by etcd now (credentials), and the sink is
/// connected.
async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    let mut reasons = Vec::new();
    let sources = state.sources.status().view();
    for watch in sources.watches.iter().filter(|w| !w.ready()) {
        let (kind, key) = (watch_kind(watch), &watch.key);
        reasons.push(match (watch.state, &watch.error) {
            (WatchState::Unauthorized, Some(error)) => {
                format!("etcd {kind} {key} cannot sync: {error}")
            }
            _ => format!("etcd {kind} {key} has not synced yet"),
        });
    }
    if !state.sink.connected() {
        match state.sink.connect_error() {
            Some(error) => reasons.push(format!("the sink is not connected: {error}")),
            None => reasons.push("the sink is not connected".to_string()),
        }
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
    }
}

fn watch_kind(watch: &crate::source::status::WatchStatus) -> &'static str {
    match watch.kind {
        crate::source::status::WatchKind::Key => "key",
        crate::source::status::WatchKind::Prefix => "prefix",
    }
}

async fn metrics(
    State(state): State<HttpState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let body = state
        .metrics
        .render(&state.board, &*state.sink, state.sources.status());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

/// Serialized straight into the response: through a `serde_json::Value` first, the
/// status of 10,000 tailers was a tree of ≈ 320,000 allocations (7.4 MB) at each request.
async fn status(State(state): State<HttpState>) -> Json<StatusBody> {
    let health = state.health.view();
    let body = StatusBody {
        node: state.node.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        tailers: state.board.tailers(),
        sink: SinkStatus {
            connected: state.sink.connected(),
            error: state.sink.connect_error(),
            in_flight_bytes: state.sink.in_flight_bytes(),
        },
        sources: state.sources.status().view(),
        status_publish: state.sources.status().publish_view(),
        config: health.config,
        checkpoints: health.checkpoints,
        tasks: health.tasks,
        deleted_files: health.deleted_files,
        taps: state.tap.taps(),
    };
    Json(body)
}

#[derive(Deserialize)]
struct TapQuery {
    /// Only this topic's records.
    topic: Option<String>,
    /// Only the records of files matching this glob.
    path: Option<String>,
}

/// `GET /tap?topic=&path=`: the records the sink ships from now on, one JSON object a
/// line (`sink::tap::write_json_line`); `{"skipped": N}` when this tap fell behind and N
/// records (of any topic or path) went by unseen; `{"error": ...}` when a batch could not
/// be shown. 400 for a bad glob, 429 when `MAX_TAPS` taps are connected.
async fn tap(
    State(state): State<HttpState>,
    Query(query): Query<TapQuery>,
    stop: CancellationToken,
) -> Response {
    let filter = match tap::Filter::new(query.topic.as_deref(), query.path.as_deref()) {
        Ok(filter) => filter,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let subscription = match state.tap.subscribe() {
        Ok(subscription) => subscription,
        Err(e) => return (StatusCode::TOO_MANY_REQUESTS, format!("{e}\n")).into_response(),
    };
    let tapped = (subscription, filter, state.sink, stop);
    let lines = futures::stream::unfold(tapped, |tapped| async move {
        let (mut subscription, filter, sink, stop) = tapped;
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => None,
                next = subscription.recv() => next,
            };
            let (batch, skipped) = next?;
            let chunk = tap_chunk(&*sink, &filter, &batch, skipped);
            if !chunk.is_empty() {
                let chunk = Ok::<_, std::convert::Infallible>(Bytes::from(chunk));
                return Some((chunk, (subscription, filter, sink, stop)));
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The lines a tap shows for `batch`: the skipped count before it, then its records.
fn tap_chunk(
    sink: &dyn Sink,
    filter: &tap::Filter,
    batch: &crate::record::Batch,
    skipped: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    if skipped > 0 {
        out.extend_from_slice(
            serde_json::json!({ "skipped": skipped })
                .to_string()
                .as_bytes(),
        );
        out.push(b'\n');
    }
    if !filter.matches(batch) {
        return out;
    }
    match sink.shipped(batch) {
        Ok(records) => {
            for record in &records {
                tap::write_json_line(record, &mut out);
            }
        }
        Err(e) => {
            let error =
                serde_json::json!({ "error": e.to_string(), "path": batch.path.to_string_lossy() });
            out.extend_from_slice(error.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    out
}
