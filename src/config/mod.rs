//! The YAML config: types, defaults, `${ENV}` templating, the legacy seed format, validation.

mod env;
pub mod etcd;
pub mod kafka;
mod legacy;

pub use etcd::{EtcdConfig, EtcdStatusConfig};
pub use kafka::KafkaConfig;

use crate::format::{Format, LineFilters, Multiline, Parsing};
use crate::record::Fields;
use crate::units;
use serde::Deserialize;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// A config error: always names the file, and the field path where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {file}: {message}")]
    Document { file: String, message: String },
    #[error("config {file}: {field}: {message}")]
    Field {
        file: String,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Node name; empty means the hostname.
    pub node: String,
    pub state_dir: PathBuf,
    pub logs: Vec<LogEntry>,
    pub sink: SinkConfig,
    pub tail: TailConfig,
    pub reconcile: ReconcileConfig,
    pub http: HttpConfig,
    #[serde(deserialize_with = "units::duration")]
    pub shutdown_timeout: Duration,
    pub etcd: EtcdConfig,
    /// Static fields sent with every record (Kafka headers named as the fields); a
    /// declaration's own `fields` override these by name.
    pub fields: Fields,
}

/// One `(topic, path)` declaration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    pub path: String,
    pub topic: String,
    /// Globs of files not to tail, e.g. `/var/log/app/*.old`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// What the lines are: `raw` (default), `cri`, `docker`, `auto`.
    #[serde(default)]
    pub format: Format,
    /// Joining continuation lines into one record.
    #[serde(default)]
    pub multiline: Option<Multiline>,
    /// Owner, ticket, ...: in `/status` and as Kafka headers `label.<name>`.
    #[serde(default)]
    pub labels: crate::record::Labels,
    /// Regexes: only records matching one of them are shipped (all when empty).
    #[serde(default)]
    pub include_lines: Vec<String>,
    /// Regexes: records matching one of them are not shipped.
    #[serde(default)]
    pub exclude_lines: Vec<String>,
    /// Static fields, over the global ones of the same name.
    #[serde(default)]
    pub fields: Fields,
    /// A rate limit: pause (default) or drop over it.
    #[serde(default)]
    pub throttle: Option<crate::throttle::Throttle>,
    /// The Kafka record key, a template (`{{pod}}`); instead of `sink.kafka.key`.
    #[serde(default)]
    pub key: Option<String>,
    /// Where records go when a templated `topic` renders no legal topic name.
    #[serde(default)]
    pub fallback_topic: Option<String>,
    /// The Kafka record value: `raw` (the line, default) or `json` (docs/json-value.md).
    #[serde(default)]
    pub encoding: crate::encoding::Encoding,
    /// With `json`: a line that is a JSON object goes under this member as an object.
    #[serde(default)]
    pub merge_json: Option<String>,
}

impl LogEntry {
    pub fn parsing(&self) -> Parsing {
        Parsing {
            format: self.format,
            multiline: self.multiline.clone(),
        }
    }

    pub fn filters(&self) -> LineFilters {
        LineFilters {
            include_lines: self.include_lines.clone(),
            exclude_lines: self.exclude_lines.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Stdout,
    File,
    Null,
    Kafka,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub kind: SinkKind,
    pub file: FileSinkConfig,
    pub kafka: KafkaConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSinkConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    pub start_at: StartAt,
    #[serde(deserialize_with = "units::size")]
    pub max_line_bytes: u64,
    #[serde(deserialize_with = "units::duration")]
    pub poll_interval: Duration,
    /// The least time between two reads of a file at its end that notifications start:
    /// writes that come closer together are read, batched and shipped together (a file
    /// written a line at a time costs a wake-up, a read and a batch per line otherwise).
    /// Sooner for a file written fast (`tail/idle.rs` `READ_AT_LEAST`). Adds up to this
    /// much to a line's latency; 0 = read at every notification.
    #[serde(deserialize_with = "units::duration")]
    pub min_read_interval: Duration,
    /// How long a file renamed away is still looked at after its last write (a writer
    /// that has not reopened its log yet appends to the old file); 0 = close it at its end.
    #[serde(deserialize_with = "units::duration")]
    pub rotate_wait: Duration,
    /// Files held open at once; idle files beyond it are closed and reopened by identity.
    /// Read at start.
    pub max_open_files: usize,
    /// How long the checkpoint of a file that is gone (not on disk, not held open) is
    /// kept after it was first found gone: a copy made before deleting it still resumes.
    /// Read at start.
    #[serde(deserialize_with = "units::duration")]
    pub checkpoint_expiry: Duration,
    /// A file not modified for longer than this when first found is not followed until
    /// it is written again; 0 = off.
    #[serde(deserialize_with = "units::duration")]
    pub ignore_older: Duration,
    /// Deleted files held open (lines left to ship) are closed, oldest first, beyond
    /// this many bytes node-wide; what they had not shipped is lost, counted. Read at start.
    #[serde(deserialize_with = "units::size")]
    pub deleted_files_max_bytes: u64,
    /// ... and once deleted this long. Read at start.
    #[serde(deserialize_with = "units::duration")]
    pub deleted_files_max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    #[serde(deserialize_with = "units::duration")]
    pub resync_interval: Duration,
    pub backoff: BackoffConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    #[serde(deserialize_with = "units::duration")]
    pub initial: Duration,
    #[serde(deserialize_with = "units::duration")]
    pub max: Duration,
    #[serde(deserialize_with = "units::duration")]
    pub reset_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `""` disables the HTTP server.
    pub listen: String,
    /// Export `logcatch_file_lag_bytes{topic,path}`: one series per file, off by default.
    pub file_lag_metrics: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: String::new(),
            state_dir: PathBuf::from("./data/state"),
            logs: Vec::new(),
            sink: SinkConfig::default(),
            tail: TailConfig::default(),
            reconcile: ReconcileConfig::default(),
            http: HttpConfig::default(),
            shutdown_timeout: Duration::from_secs(10),
            etcd: EtcdConfig::default(),
            fields: Fields::new(),
        }
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: SinkKind::Stdout,
            file: FileSinkConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            path: PathBuf::from("./data/out.jsonl"),
        }
    }
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            start_at: StartAt::Beginning,
            max_line_bytes: 1024 * 1024,
            poll_interval: Duration::from_millis(250),
            min_read_interval: MIN_READ_INTERVAL,
            rotate_wait: Duration::from_secs(5),
            max_open_files: 1024,
            checkpoint_expiry: Duration::from_secs(300),
            ignore_older: Duration::ZERO,
            // Ten of the kubelet's default containerLogMaxSize (10Mi) rotations, and an
            // hour of outage: docs/configuration.md says why.
            deleted_files_max_bytes: 512 * 1024 * 1024,
            deleted_files_max_age: Duration::from_secs(3600),
        }
    }
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            resync_interval: Duration::from_secs(60),
            backoff: BackoffConfig::default(),
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9733".into(),
            file_lag_metrics: false,
        }
    }
}

/// A loaded config and the warnings its loading produced (legacy keys).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads, templates, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Loaded> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `file` names it in errors, `lookup` resolves `${VAR}`.
    pub fn parse(
        text: &str,
        file: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded> {
        let document = |message: String| ConfigError::Document {
            file: file.to_string(),
            message,
        };
        let field = |field: String, message: String| ConfigError::Field {
            file: file.to_string(),
            field,
            message,
        };
        if text.trim().is_empty() {
            return Err(document("the file is empty".into()));
        }
        let value: Value =
            serde_yaml::from_str(text).map_err(|e| document(format!("invalid YAML: {e}")))?;
        let Value::Mapping(mut root) = value else {
            return Err(document(
                "expected a mapping of settings at the top level".into(),
            ));
        };
        let warnings = legacy::rewrite(&mut root).map_err(|(f, m)| field(f, m))?;
        null_sink_kind(&mut root);
        let mut value = Value::Mapping(root);
        expand_strings(&mut value, &mut String::new(), lookup).map_err(|(f, m)| field(f, m))?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                "(top level)".to_string()
            } else {
                path
            };
            field(path, e.into_inner().to_string())
        })?;
        config.validate().map_err(|(f, m)| field(f, m))?;
        Ok(Loaded { config, warnings })
    }

    /// The node name: `node`, or the hostname when empty.
    pub fn node_name(&self) -> String {
        if self.node.is_empty() {
            gethostname::gethostname().to_string_lossy().into_owned()
        } else {
            self.node.clone()
        }
    }

    /// The HTTP listen address, `None` when disabled.
    pub fn http_listen(&self) -> Option<SocketAddr> {
        // Validated in `validate`, so a parse failure cannot happen here.
        self.http.listen.parse().ok()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (index, log) in self.logs.iter().enumerate() {
            if log.path.trim().is_empty() {
                return Err((format!("logs[{index}].path"), "must not be empty".into()));
            }
            if log.path.contains('\0') {
                return Err((
                    format!("logs[{index}].path"),
                    "must not contain NUL bytes".into(),
                ));
            }
            if let Err(e) = globset::Glob::new(&log.path) {
                return Err((format!("logs[{index}].path"), format!("invalid glob: {e}")));
            }
            validate_routing(
                &log.topic,
                log.key.as_deref(),
                log.fallback_topic.as_deref(),
            )
            .map_err(|(f, m)| (format!("logs[{index}].{f}"), m))?;
            for (i, glob) in log.exclude.iter().enumerate() {
                validate_exclude(glob).map_err(|m| (format!("logs[{index}].exclude[{i}]"), m))?;
            }
            log.parsing()
                .validate()
                .map_err(|(f, m)| (format!("logs[{index}].{f}"), m))?;
            validate_labels(&log.labels).map_err(|(f, m)| (format!("logs[{index}].{f}"), m))?;
            log.filters()
                .validate()
                .map_err(|(f, m)| (format!("logs[{index}].{f}"), m))?;
            validate_fields(&log.fields).map_err(|(f, m)| (format!("logs[{index}].{f}"), m))?;
            if let Some(throttle) = &log.throttle {
                throttle
                    .validate()
                    .map_err(|(f, m)| (format!("logs[{index}].{f}"), m))?;
            }
            crate::encoding::validate(log.encoding, log.merge_json.as_deref())
                .map_err(|(f, m)| (format!("logs[{index}].{f}"), m))?;
        }
        validate_fields(&self.fields)?;
        if self.state_dir.as_os_str().is_empty() {
            return Err(("state_dir".into(), "must not be empty".into()));
        }
        if self.sink.kind == SinkKind::File && self.sink.file.path.as_os_str().is_empty() {
            return Err((
                "sink.file.path".into(),
                "must be set when sink.kind is file".into(),
            ));
        }
        if self.sink.kind == SinkKind::Kafka {
            self.sink
                .kafka
                .validate()
                .map_err(|(f, m)| (format!("sink.kafka.{f}"), m))?;
        }
        if self.tail.max_open_files == 0 {
            return Err(("tail.max_open_files".into(), "must be at least 1".into()));
        }
        if self.tail.max_line_bytes == 0 {
            return Err(("tail.max_line_bytes".into(), "must be at least 1".into()));
        }
        if self.tail.min_read_interval > MAX_MIN_READ_INTERVAL {
            return Err((
                "tail.min_read_interval".into(),
                format!(
                    "must be at most {}s: every line may wait this long before it is read",
                    MAX_MIN_READ_INTERVAL.as_secs()
                ),
            ));
        }
        let positive = [
            ("tail.poll_interval", self.tail.poll_interval),
            ("reconcile.resync_interval", self.reconcile.resync_interval),
            ("reconcile.backoff.initial", self.reconcile.backoff.initial),
            ("reconcile.backoff.max", self.reconcile.backoff.max),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err((name.to_string(), "must be greater than 0".into()));
        }
        if self.reconcile.backoff.max < self.reconcile.backoff.initial {
            return Err((
                "reconcile.backoff.max".into(),
                "must not be below reconcile.backoff.initial".into(),
            ));
        }
        self.etcd.validate()?;
        if !self.http.listen.is_empty() && self.http.listen.parse::<SocketAddr>().is_err() {
            return Err((
                "http.listen".into(),
                format!(
                    "{:?} is not an address like \"127.0.0.1:9733\" (\"\" disables HTTP)",
                    self.http.listen
                ),
            ));
        }
        Ok(())
    }
}

/// `tail.min_read_interval`'s default: a file written ten times a second is read every
/// 750 ms, seven or eight writes at a time. A read costs about the same whatever it
/// carries, so this is 0.7 × the CPU per line of `500ms` at 1,000 files × 10 lines/s
/// (BENCHMARKS.md "Fewer reads"); a line waits at most 0.83 s (1.1 × this, the
/// grid), less than with Fluent Bit's 1 s flush.
pub const MIN_READ_INTERVAL: Duration = Duration::from_millis(750);
/// The most `tail.min_read_interval` may be: every line may wait that long.
pub const MAX_MIN_READ_INTERVAL: Duration = Duration::from_secs(10);

/// At most this many labels per declaration.
pub const MAX_LABELS: usize = 32;
/// The longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 256;

/// A declaration's labels: at most [`MAX_LABELS`], names of 1-63 characters of
/// `[a-zA-Z0-9._-]` starting with a letter or digit (Kafka header `label.<name>`), values
/// of at most [`MAX_LABEL_VALUE`] bytes without control characters. Errors are
/// `(field, message)` with the field `labels` or `labels.<name>`.
pub fn validate_labels(labels: &crate::record::Labels) -> Result<(), (String, String)> {
    if labels.len() > MAX_LABELS {
        let message = format!("{} labels; at most {MAX_LABELS}", labels.len());
        return Err(("labels".into(), message));
    }
    for (name, value) in labels {
        let field = format!("labels.{name}");
        let valid_name = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_name {
            let message = format!(
                "label name {name:?}: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
            );
            return Err((field, message));
        }
        check_value(value, MAX_LABEL_VALUE).map_err(|m| (field, m))?;
    }
    Ok(())
}

/// A label's or field's value: at most `max` bytes, no control characters.
fn check_value(value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{} bytes; at most {max}", value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// At most this many static fields in one map.
pub const MAX_FIELDS: usize = 32;
/// The longest field name and value, in bytes.
pub const MAX_FIELD_NAME: usize = 255;
pub const MAX_FIELD_VALUE: usize = 1024;
/// Header name prefixes of the agent's own headers, refused as field names.
pub const RESERVED_FIELD_PREFIXES: [&str; 3] = ["k8s.", "logcatch.", "label."];

/// Static fields: at most [`MAX_FIELDS`], names (the Kafka header names) of 1-255 bytes
/// without control characters and not starting with a reserved prefix (`k8s.`,
/// `logcatch.`, `label.`: the agent's own headers), values of at most
/// [`MAX_FIELD_VALUE`] bytes without control characters. Errors are `(field, message)`
/// with the field `fields` or `fields.<name>`.
pub fn validate_fields(fields: &Fields) -> Result<(), (String, String)> {
    if fields.len() > MAX_FIELDS {
        let message = format!("{} fields; at most {MAX_FIELDS}", fields.len());
        return Err(("fields".into(), message));
    }
    for (name, value) in fields {
        let field = format!("fields.{name}");
        if name.is_empty() {
            return Err(("fields".into(), "a field name must not be empty".into()));
        }
        if name.len() > MAX_FIELD_NAME {
            let message = format!("the name is {} bytes; at most {MAX_FIELD_NAME}", name.len());
            return Err((field, message));
        }
        if name.chars().any(char::is_control) {
            return Err((field, "the name must not contain control characters".into()));
        }
        if let Some(prefix) = RESERVED_FIELD_PREFIXES
            .iter()
            .find(|p| name.starts_with(*p))
        {
            let message = format!(
                "names starting with {prefix:?} are reserved for the agent's own headers (k8s., logcatch., label.)"
            );
            return Err((field, message));
        }
        check_value(value, MAX_FIELD_VALUE).map_err(|m| (field, m))?;
    }
    Ok(())
}

/// An `exclude` entry: a non-empty glob.
pub fn validate_exclude(glob: &str) -> Result<(), String> {
    if glob.trim().is_empty() {
        return Err("must not be empty".into());
    }
    globset::Glob::new(glob).map_err(|e| format!("invalid glob: {e}"))?;
    Ok(())
}

/// A declaration's `topic` (a name, or a template with a `fallback_topic`), `key` (a
/// template) and `fallback_topic`; the error names the field.
pub fn validate_routing(
    topic: &str,
    key: Option<&str>,
    fallback_topic: Option<&str>,
) -> Result<(), (String, String)> {
    use crate::template::{is_template, Template, Var};
    fn field(name: &'static str) -> impl Fn(String) -> (String, String) {
        move |message| (name.to_string(), message)
    }
    if is_template(topic) {
        let template = Template::parse(topic).map_err(field("topic"))?;
        if template.vars().any(|v| *v == Var::Stream) {
            return Err(field("topic")(
                "{{stream}} varies from record to record, and a file's records go to one topic (their order holds within it); use it in `key`".into(),
            ));
        }
        let Some(fallback) = fallback_topic else {
            return Err(field("fallback_topic")(format!(
                "must be set when topic is a template ({topic:?}): records whose rendered topic is not a legal Kafka topic name go there"
            )));
        };
        validate_topic(fallback).map_err(field("fallback_topic"))?;
    } else {
        validate_topic(topic).map_err(field("topic"))?;
        if fallback_topic.is_some() {
            return Err(field("fallback_topic")(
                "applies only when topic is a template ({{namespace}}, ...)".into(),
            ));
        }
    }
    if let Some(key) = key {
        if key.is_empty() {
            return Err(field("key")(
                "must not be empty (leave it out for no key)".into(),
            ));
        }
        Template::parse(key).map_err(field("key"))?;
    }
    Ok(())
}

/// Validates a Kafka topic name: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic must not be empty".into());
    }
    if topic.len() > 249 {
        return Err(format!(
            "topic is {} characters long; Kafka allows at most 249",
            topic.len()
        ));
    }
    if topic == "." || topic == ".." {
        return Err(format!("topic {topic:?} is not allowed by Kafka"));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic {topic:?} contains {bad:?}; Kafka topics use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// `sink: {kind: null}` is YAML's null, not the string "null": take it as the null sink.
fn null_sink_kind(root: &mut serde_yaml::Mapping) {
    if let Some(Value::Mapping(sink)) = root.get_mut("sink") {
        if let Some(kind @ Value::Null) = sink.get_mut("kind") {
            *kind = Value::String("null".into());
        }
    }
}

/// Expands `${VAR}` in every string value, tracking the field path for errors.
fn expand_strings(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    match value {
        Value::String(text) => {
            *text = env::expand(text, lookup).map_err(|m| (path.clone(), m))?;
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                expand_strings(item, path, lookup)?;
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key.as_str().unwrap_or("?"));
                expand_strings(item, path, lookup)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
