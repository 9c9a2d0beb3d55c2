//! Every Prometheus metric of the agent, declared in one struct on one Registry. Events
//! from the logic move counters; state (tailers, lag, in-flight bytes, etcd) is read at
//! scrape time from the status model, so it can never drift from `/status`.

use super::status::{StatusBoard, TailerState};
use crate::ports::Events;
use crate::sink::Sink;
use crate::source::status::{SourceStatusTable, WatchState};
use crate::spec::RefusalKind;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

pub struct Metrics {
    registry: Registry,
    tailers: IntGaugeVec,
    desired_tailers: IntGaugeVec,
    reconcile_total: IntCounterVec,
    reconcile_duration: Histogram,
    tailer_restarts: IntCounterVec,
    lines_read: IntCounterVec,
    bytes_read: IntCounterVec,
    records_sent: IntCounterVec,
    topic_fallback: IntCounterVec,
    send_errors: IntCounterVec,
    lines_truncated: IntCounterVec,
    records_cut: IntCounterVec,
    records_dropped: IntCounterVec,
    records_filtered: IntCounterVec,
    throttled_seconds: CounterVec,
    parse_errors: IntCounterVec,
    multiline_cut: IntCounterVec,
    unfinished: IntCounterVec,
    file_rotations: IntCounterVec,
    files_skipped: IntCounterVec,
    file_truncations: IntCounterVec,
    lag_bytes: IntGaugeVec,
    file_lag_bytes: Option<IntGaugeVec>,
    inflight_bytes: IntGauge,
    kafka_buffer_bytes: IntGauge,
    kafka_producers: IntGauge,
    checkpoint_writes: IntCounterVec,
    checkpoint_ok: IntGauge,
    checkpoint_recoveries: IntCounterVec,
    checkpoints: IntGauge,
    checkpoints_expired: IntCounter,
    task_restarts: IntCounterVec,
    deleted_files: IntGauge,
    deleted_file_bytes: IntGauge,
    deleted_file_oldest: IntGauge,
    deleted_released_files: IntCounterVec,
    deleted_released_bytes: IntCounter,
    config_reloads: IntCounterVec,
    config_ok: IntGauge,
    etcd_connected: IntGauge,
    ready: IntGauge,
    etcd_watch_events: IntCounterVec,
    etcd_invalid_values: IntCounterVec,
    refused_tailers: IntGaugeVec,
    produce_latency: Histogram,
    etcd_status_published: IntGauge,
    etcd_status_keys: IntGauge,
    etcd_status_writes: IntCounter,
    notification_overflows: IntCounter,
    etcd_status_errors: IntCounter,
    /// What the etcd counters were last moved to, per key (they count in the status table).
    etcd_exported: Mutex<HashMap<(String, bool), u64>>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

/// A 0/1 gauge that starts at 1.
fn ok_gauge(gauge: IntGauge) -> IntGauge {
    gauge.set(1);
    gauge
}

impl Metrics {
    /// `per_file_lag` adds `logcatch_file_lag_bytes{topic,path}` (one series per file).
    pub fn new(per_file_lag: bool) -> Self {
        let registry = Registry::new();
        let r = &registry;
        let scalar = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric registered once");
            metric
        };
        let scalar_counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric registered once");
            metric
        };
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "logcatch_reconcile_duration_seconds",
                "Duration of a reconcile pass.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 4.0, 10).expect("valid buckets")),
        )
        .expect("valid metric");
        registry
            .register(Box::new(reconcile_duration.clone()))
            .expect("metric registered once");
        let produce_latency = Histogram::with_opts(
            HistogramOpts::new(
                "logcatch_kafka_produce_latency_seconds",
                "Time from sending a produce request to Kafka's acknowledgement.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.5, 12).expect("valid buckets")),
        )
        .expect("valid metric");
        registry
            .register(Box::new(produce_latency.clone()))
            .expect("metric registered once");
        let build_info = gauge(
            r,
            "logcatch_build_info",
            "Always 1; the version as a label.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            tailers: gauge(r, "logcatch_tailers", "Tailers by state.", &["state"]),
            desired_tailers: gauge(
                r,
                "logcatch_desired_tailers",
                "Desired tailers by owning source.",
                &["source"],
            ),
            reconcile_total: counter(
                r,
                "logcatch_reconcile_total",
                "Reconcile passes by result.",
                &["result"],
            ),
            reconcile_duration,
            tailer_restarts: counter(
                r,
                "logcatch_tailer_restarts_total",
                "Tailer restarts.",
                &["topic"],
            ),
            lines_read: counter(
                r,
                "logcatch_lines_read_total",
                "Lines read from files.",
                &["topic"],
            ),
            bytes_read: counter(
                r,
                "logcatch_bytes_read_total",
                "Line bytes read from files.",
                &["topic"],
            ),
            records_sent: counter(
                r,
                "logcatch_records_sent_total",
                "Records acknowledged by the sink.",
                &["topic"],
            ),
            topic_fallback: counter(
                r,
                "logcatch_topic_fallback_records_total",
                "Records sent to a declaration's fallback_topic because its topic template rendered no legal topic name for their file.",
                &["topic"],
            ),
            send_errors: counter(
                r,
                "logcatch_send_errors_total",
                "Sink errors by kind.",
                &["topic", "kind"],
            ),
            lines_truncated: counter(
                r,
                "logcatch_lines_truncated_total",
                "Lines cut to tail.max_line_bytes.",
                &["topic"],
            ),
            records_cut: counter(
                r,
                "logcatch_records_cut_total",
                "Records cut by the sink to fit the topic's max.message.bytes, marked with a logcatch.truncated header.",
                &["topic"],
            ),
            records_dropped: counter(
                r,
                "logcatch_records_dropped_total",
                "Records dropped, by reason (too_large: not even cut could they fit the topic's max.message.bytes; throttled: over a throttle with on_limit: drop); the checkpoint moves past them.",
                &["topic", "reason"],
            ),
            records_filtered: counter(
                r,
                "logcatch_records_filtered_total",
                "Records a declaration's line filters kept from the sink, by reason (include_lines: matching none of them, exclude_lines: matching one); the checkpoint moves past them.",
                &["topic", "reason"],
            ),
            throttled_seconds: {
                let metric = CounterVec::new(
                    Opts::new(
                        "logcatch_throttled_seconds_total",
                        "Seconds tailers paused reading over their declaration's throttle (summed over tailers).",
                    ),
                    &["topic"],
                )
                .expect("valid metric");
                r.register(Box::new(metric.clone()))
                    .expect("metric registered once");
                metric
            },
            parse_errors: counter(
                r,
                "logcatch_parse_errors_total",
                "Lines their format (cri, docker) could not parse, shipped raw with a logcatch.parse_error header.",
                &["topic", "format"],
            ),
            multiline_cut: counter(
                r,
                "logcatch_multiline_cut_total",
                "Multiline records cut at multiline.max_lines or multiline.max_bytes.",
                &["topic"],
            ),
            unfinished: counter(
                r,
                "logcatch_unfinished_records_total",
                "Container-log fragments (CRI P, Docker without its newline) whose rest did not come within 4 s, shipped as they were with logcatch.parse_error \"unfinished: ...\".",
                &["topic"],
            ),
            file_rotations: counter(
                r,
                "logcatch_file_rotations_total",
                "Files renamed away or deleted from a followed path: the tailer moved on to what the path names now.",
                &["topic"],
            ),
            files_skipped: counter(
                r,
                "logcatch_files_skipped_total",
                "Files that were at a followed path and were never read, by reason (deleted: rotated away and deleted before the tailer reached them).",
                &["topic", "reason"],
            ),
            file_truncations: counter(
                r,
                "logcatch_file_truncations_total",
                "Files that shrank below the read offset (copytruncate).",
                &["topic"],
            ),
            lag_bytes: gauge(
                r,
                "logcatch_lag_bytes",
                "Bytes written but not yet acknowledged, summed over files.",
                &["topic"],
            ),
            file_lag_bytes: per_file_lag.then(|| {
                gauge(
                    r,
                    "logcatch_file_lag_bytes",
                    "Bytes written but not yet acknowledged, per file.",
                    &["topic", "path"],
                )
            }),
            inflight_bytes: scalar(
                "logcatch_inflight_bytes",
                "Bytes handed to the sink and not yet acknowledged.",
            ),
            kafka_buffer_bytes: scalar(
                "logcatch_kafka_buffer_bytes",
                "Bytes of memory in the Kafka producers' encoding buffers, in use or kept for reuse.",
            ),
            kafka_producers: scalar(
                "logcatch_kafka_producers",
                "Kafka producer tasks running (one per partition written to lately).",
            ),
            checkpoint_writes: counter(
                r,
                "logcatch_checkpoint_writes_total",
                "Checkpoint file writes by result.",
                &["result"],
            ),
            checkpoint_recoveries: counter(
                r,
                "logcatch_checkpoint_recoveries_total",
                "Damaged checkpoint files found at start, by what was loaded instead: previous (the generation before the last write) or none.",
                &["loaded"],
            ),
            checkpoints: scalar(
                "logcatch_checkpoints",
                "Checkpoints in the store (files on disk or held open, and those gone for less than tail.checkpoint_expiry).",
            ),
            checkpoints_expired: scalar_counter(
                "logcatch_checkpoints_expired_total",
                "Checkpoints dropped because their file was gone (deleted, not held open) for tail.checkpoint_expiry.",
            ),
            task_restarts: counter(
                r,
                "logcatch_task_restarts_total",
                "Background tasks (http, checkpoint-writer, etcd-source, config-watcher, kafka-producer) restarted after a panic or an unexpected end.",
                &["task"],
            ),
            deleted_files: scalar(
                "logcatch_deleted_files",
                "Deleted files held open (lines left to ship): they pin disk until closed.",
            ),
            deleted_file_bytes: scalar(
                "logcatch_deleted_file_bytes",
                "Size of the deleted files held open: disk space the node gets back when they are closed.",
            ),
            deleted_file_oldest: scalar(
                "logcatch_deleted_file_oldest_seconds",
                "Seconds since the oldest deleted file held open was found deleted.",
            ),
            deleted_released_files: counter(
                r,
                "logcatch_deleted_files_released_total",
                "Deleted files closed at tail.deleted_files_max_bytes / max_age before the sink took all of them, by reason.",
                &["topic", "reason"],
            ),
            deleted_released_bytes: scalar_counter(
                "logcatch_deleted_bytes_released_total",
                "Bytes of deleted files closed at tail.deleted_files_max_bytes / max_age that were never handed to the sink: lost on purpose.",
            ),
            checkpoint_ok: ok_gauge(scalar(
                "logcatch_checkpoint_last_write_successful",
                "1 when the last checkpoint write succeeded, 0 while they fail.",
            )),
            config_reloads: counter(
                r,
                "logcatch_config_reloads_total",
                "Config reloads by result.",
                &["result"],
            ),
            config_ok: ok_gauge(scalar(
                "logcatch_config_last_reload_successful",
                "1 when the config file last read was applied, 0 while the last good one runs instead.",
            )),
            etcd_connected: scalar(
                "logcatch_etcd_connected",
                "1 when every etcd watch is synced, else 0.",
            ),
            ready: scalar(
                "logcatch_ready",
                "1 when /readyz answers 200 (etcd synced or cached, sink connected).",
            ),
            etcd_watch_events: counter(
                r,
                "logcatch_etcd_watch_events_total",
                "Values seen per configured etcd key or prefix.",
                &["key"],
            ),
            etcd_invalid_values: counter(
                r,
                "logcatch_etcd_invalid_values_total",
                "Invalid values refused per configured etcd key or prefix.",
                &["key"],
            ),
            refused_tailers: gauge(
                r,
                "logcatch_refused_tailers",
                "etcd-declared tailers not started, by rule (allowed_paths, max_tailers).",
                &["kind"],
            ),
            produce_latency,
            etcd_status_published: scalar(
                "logcatch_etcd_status_published",
                "1 while this node's status is held in etcd under a live lease (etcd.status), else 0.",
            ),
            etcd_status_keys: scalar(
                "logcatch_etcd_status_keys",
                "Status keys this node holds in etcd (one per declaring key).",
            ),
            etcd_status_writes: scalar_counter(
                "logcatch_etcd_status_writes_total",
                "Status keys written to etcd (puts of changed reports and deletes).",
            ),
            notification_overflows: scalar_counter(
                "logcatch_notification_overflows_total",
                "Times the kernel's queue of file notifications (inotify, fs.inotify.max_queued_events) overflowed: events were lost, every followed file was looked at, and a file that arrived at a path and was deleted meanwhile may be lost uncounted.",
            ),
            etcd_status_errors: scalar_counter(
                "logcatch_etcd_status_publish_errors_total",
                "Failed attempts to hold this node's status in etcd (lease grant, keep-alive or write); retried with backoff.",
            ),
            etcd_exported: Mutex::new(HashMap::new()),
            registry,
        }
    }

    /// Reads the state gauges from the status model and renders the text format.
    /// A damaged checkpoint file was found at start; `loaded`: `previous` or `none`.
    pub fn checkpoint_recovered(&self, loaded: &str) {
        self.checkpoint_recoveries
            .with_label_values(&[loaded])
            .inc();
    }

    pub fn render(
        &self,
        board: &StatusBoard,
        sink: &dyn Sink,
        sources: &SourceStatusTable,
    ) -> String {
        self.refresh(board, sink, sources);
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding our own registry into a Vec cannot fail.
        let _ = encoder.encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn refresh(&self, board: &StatusBoard, sink: &dyn Sink, sources: &SourceStatusTable) {
        let tailers = board.tailers();
        let mut by_state: BTreeMap<&str, i64> =
            TailerState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut by_source: BTreeMap<String, i64> = BTreeMap::new();
        let mut lag: BTreeMap<&str, i64> = BTreeMap::new();
        if let Some(per_file) = &self.file_lag_bytes {
            per_file.reset();
        }
        for t in &tailers {
            *by_state.entry(t.state.as_str()).or_default() += 1;
            for owner in &t.owners {
                // The source kind keeps the label low-cardinality (`etcd:<key>` → `etcd`).
                let kind = owner.split(':').next().unwrap_or(owner);
                *by_source.entry(kind.to_string()).or_default() += 1;
            }
            *lag.entry(&t.topic).or_default() += t.lag_bytes as i64;
            if let Some(per_file) = &self.file_lag_bytes {
                per_file
                    .with_label_values(&[&t.topic, &t.path])
                    .set(t.lag_bytes as i64);
            }
        }
        for (state, n) in by_state {
            self.tailers.with_label_values(&[state]).set(n);
        }
        self.desired_tailers.reset();
        for (source, n) in by_source {
            self.desired_tailers.with_label_values(&[&source]).set(n);
        }
        self.lag_bytes.reset();
        for (topic, bytes) in lag {
            self.lag_bytes.with_label_values(&[topic]).set(bytes);
        }
        self.inflight_bytes.set(sink.in_flight_bytes() as i64);
        self.kafka_buffer_bytes.set(sink.buffer_bytes() as i64);
        self.kafka_producers.set(sink.producers() as i64);
        self.ready
            .set(i64::from(sources.ready() && sink.connected()));
        let view = sources.view();
        let synced = view.watches.iter().all(|w| w.state == WatchState::Synced);
        self.etcd_connected
            .set(i64::from(!view.watches.is_empty() && synced));
        for kind in RefusalKind::ALL {
            let n = view
                .keys
                .iter()
                .flat_map(|k| &k.refused)
                .filter(|r| r.kind == kind)
                .count();
            self.refused_tailers
                .with_label_values(&[kind.as_str()])
                .set(n as i64);
        }
        let publish = sources.publish_view();
        self.etcd_status_published.set(i64::from(
            publish.state == crate::source::status::PublishState::Publishing,
        ));
        self.etcd_status_keys.set(publish.keys as i64);
        // Counted in the status table: move the counters up to it.
        for (counter, total) in [
            (&self.etcd_status_writes, publish.writes),
            (&self.etcd_status_errors, publish.errors),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut exported = self.etcd_exported.lock().unwrap_or_else(|e| e.into_inner());
        for w in &view.watches {
            for (invalid, total, counter) in [
                (false, w.events, &self.etcd_watch_events),
                (true, w.invalid_values, &self.etcd_invalid_values),
            ] {
                let last = exported.entry((w.key.clone(), invalid)).or_default();
                counter
                    .with_label_values(&[&w.key])
                    .inc_by(total.saturating_sub(*last));
                *last = (*last).max(total);
            }
        }
    }
}

impl Events for Metrics {
    fn lines_read(&self, topic: &str, lines: u64, bytes: u64) {
        self.lines_read.with_label_values(&[topic]).inc_by(lines);
        self.bytes_read.with_label_values(&[topic]).inc_by(bytes);
    }

    fn line_truncated(&self, topic: &str) {
        self.lines_truncated.with_label_values(&[topic]).inc();
    }

    fn record_cut(&self, topic: &str) {
        self.records_cut.with_label_values(&[topic]).inc();
    }

    fn records_dropped(&self, topic: &str, reason: &str, count: u64) {
        self.records_dropped
            .with_label_values(&[topic, reason])
            .inc_by(count);
    }

    fn throttled(&self, topic: &str, seconds: f64) {
        self.throttled_seconds
            .with_label_values(&[topic])
            .inc_by(seconds);
    }

    fn parse_error(&self, topic: &str, format: &str) {
        self.parse_errors.with_label_values(&[topic, format]).inc();
    }

    fn multiline_cut(&self, topic: &str) {
        self.multiline_cut.with_label_values(&[topic]).inc();
    }

    fn unfinished_record(&self, topic: &str) {
        self.unfinished.with_label_values(&[topic]).inc();
    }

    fn file_skipped(&self, topic: &str, reason: &str) {
        self.files_skipped.with_label_values(&[topic, reason]).inc();
    }

    fn notifications_overflowed(&self) {
        self.notification_overflows.inc();
    }

    fn file_rotated(&self, topic: &str) {
        self.file_rotations.with_label_values(&[topic]).inc();
    }

    fn file_truncated(&self, topic: &str) {
        self.file_truncations.with_label_values(&[topic]).inc();
    }

    fn records_sent(&self, topic: &str, records: u64) {
        self.records_sent
            .with_label_values(&[topic])
            .inc_by(records);
    }

    fn records_filtered(&self, topic: &str, reason: &str, records: u64) {
        self.records_filtered
            .with_label_values(&[topic, reason])
            .inc_by(records);
    }

    fn topic_fallback(&self, topic: &str, records: u64) {
        self.topic_fallback
            .with_label_values(&[topic])
            .inc_by(records);
    }

    fn send_error(&self, topic: &str, kind: &str) {
        self.send_errors.with_label_values(&[topic, kind]).inc();
    }

    fn tailer_restarted(&self, topic: &str) {
        self.tailer_restarts.with_label_values(&[topic]).inc();
    }

    fn checkpoint_written(&self, ok: bool) {
        self.checkpoint_writes
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        self.checkpoint_ok.set(i64::from(ok));
    }

    fn deleted_files(&self, files: u64, bytes: u64, oldest_seconds: u64) {
        self.deleted_files.set(files as i64);
        self.deleted_file_bytes.set(bytes as i64);
        self.deleted_file_oldest.set(oldest_seconds as i64);
    }

    fn deleted_file_released(&self, topic: &str, reason: &str, lost: u64) {
        self.deleted_released_files
            .with_label_values(&[topic, reason])
            .inc();
        self.deleted_released_bytes.inc_by(lost);
    }

    fn task_restarted(&self, task: &str) {
        self.task_restarts.with_label_values(&[task]).inc();
    }

    fn checkpoints_swept(&self, kept: usize, expired: usize) {
        self.checkpoints.set(kept as i64);
        self.checkpoints_expired.inc_by(expired as u64);
    }

    fn config_reloaded(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        self.config_ok.set(i64::from(ok));
    }

    fn reconciled(&self, ok: bool, seconds: f64) {
        self.reconcile_total
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        self.reconcile_duration.observe(seconds);
    }

    fn produce_latency(&self, seconds: f64) {
        self.produce_latency.observe(seconds);
    }
}
