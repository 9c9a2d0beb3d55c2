//! What is desired: `(source, topic, path)` declarations, expanded into tailers keyed by
//! `(topic, file path)` with the set of sources that own each.

use crate::encoding::{Encoding, JsonValue};
use crate::format::{LineFilters, Parsing};
use crate::record::{Fields, Labels, PodMeta};
use crate::template::{self, Template};
use crate::throttle::Throttle;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

mod glob;
mod policy;

pub use glob::is_glob;
use glob::{glob_files, literal_base, resolve, WalkLimits};
pub use policy::{Policies, Rules};

/// A source of declarations: `config` for the config file, `etcd:<key>` for an etcd key.
pub type SourceId = Arc<str>;

/// One declaration as a source publishes it: a path (maybe a glob), a topic, and globs
/// of files not to tail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogSpec {
    pub path: String,
    pub topic: String,
    pub exclude: Vec<String>,
    /// Format and multiline joining of the files' lines.
    pub parsing: Parsing,
    /// Owner, ticket, ...: in `/status` and as Kafka headers.
    pub labels: Labels,
    /// Which records are shipped (`include_lines`, `exclude_lines`).
    pub filters: LineFilters,
    /// Static fields; they override the config's global ones of the same name.
    pub fields: Fields,
    /// A rate limit on reading (`throttle.rs`).
    pub throttle: Option<Throttle>,
    /// The record key template (instead of `sink.kafka.key`).
    pub key: Option<String>,
    /// Where a templated topic's records go when it renders no legal name.
    pub fallback_topic: Option<String>,
    /// The Kafka record value: the line or a JSON object (`encoding.rs`).
    pub encoding: Encoding,
    /// With `json`: a line that is a JSON object goes under this member.
    pub merge_json: Option<String>,
}

/// A tailer's identity: one file on one topic. The same file on two topics is two tailers.
///
/// Compared, ordered and hashed by the bytes of the path, which is absolute and
/// normalised by [`absolute`]: `Path`'s own comparison walks components and dominated
/// an idle agent's CPU with 10,000 tailers in its maps.
#[derive(Debug, Clone)]
pub struct TailerId {
    pub topic: Arc<str>,
    pub path: Arc<Path>,
}

impl TailerId {
    fn key(&self) -> (&str, &[u8]) {
        (&self.topic, self.path.as_os_str().as_bytes())
    }
}

impl PartialEq for TailerId {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for TailerId {}

impl std::hash::Hash for TailerId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl PartialOrd for TailerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TailerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl TailerId {
    pub fn new(topic: &str, path: &Path) -> Self {
        TailerId {
            topic: topic.into(),
            path: path.into(),
        }
    }
}

impl fmt::Display for TailerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.topic, self.path.display())
    }
}

/// Settings a running tailer was started with; a change restarts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailerSettings {
    pub max_line_bytes: u64,
    pub poll_interval: std::time::Duration,
    pub min_read_interval: std::time::Duration,
    pub rotate_wait: std::time::Duration,
    pub start_at: crate::config::StartAt,
    /// The declaration's format and multiline joining.
    pub parsing: Parsing,
    /// The declaration's labels.
    pub labels: Arc<Labels>,
    /// The declaration's line filters.
    pub filters: Arc<LineFilters>,
    /// The static fields: the config's global ones, overridden by the declaration's.
    pub fields: Arc<Fields>,
    /// The declaration's rate limit.
    pub throttle: Option<Throttle>,
    /// This node's name (templates' `{{node}}`).
    pub node: Arc<str>,
    /// The declaration's record key template.
    pub key: Option<Arc<Template>>,
    /// Why the records go to the declaration's `fallback_topic`: its topic template
    /// rendered no legal name for this file.
    pub fallback: Option<Arc<str>>,
    /// The declaration's JSON value settings; `None`: raw values.
    pub json: Option<Arc<JsonValue>>,
}

impl TailerSettings {
    pub fn from_config(tail: &crate::config::TailConfig) -> Self {
        TailerSettings {
            max_line_bytes: tail.max_line_bytes,
            poll_interval: tail.poll_interval,
            min_read_interval: tail.min_read_interval,
            rotate_wait: tail.rotate_wait,
            start_at: tail.start_at,
            parsing: Parsing::default(),
            labels: Arc::default(),
            filters: Arc::default(),
            fields: Arc::default(),
            throttle: None,
            node: Arc::from(""),
            key: None,
            fallback: None,
            json: None,
        }
    }

    /// On the node `node` (what templates' `{{node}}` renders).
    pub fn on_node(self, node: &str) -> Self {
        TailerSettings {
            node: node.into(),
            ..self
        }
    }

    /// The settings every tailer starts from: `tail`'s, and the global `fields`.
    pub fn of(config: &crate::config::Config) -> Self {
        TailerSettings {
            fields: Arc::new(config.fields.clone()),
            node: config.node_name().into(),
            ..Self::from_config(&config.tail)
        }
    }

    /// The fields of a tailer of `spec`: the global ones with the declaration's over them.
    fn fields_of(&self, spec: &LogSpec) -> Arc<Fields> {
        if spec.fields.is_empty() {
            return self.fields.clone();
        }
        let mut fields = (*self.fields).clone();
        fields.extend(spec.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        Arc::new(fields)
    }
}

/// One desired tailer with the sources that declare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTailer {
    pub owners: BTreeSet<SourceId>,
    /// Shared by every file one declaration matches (one copy, not one per file: the
    /// reconcile loop and each tailer hold it).
    pub settings: Arc<TailerSettings>,
    /// The glob declarations that match it, as (source, pattern): whether the file
    /// appeared after a declaration was first seen decides how `start_at` applies.
    pub globs: BTreeSet<(SourceId, String)>,
}

pub type DesiredSet = BTreeMap<TailerId, DesiredTailer>;

/// A declaration that could not be expanded (e.g. an unreadable directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub source: SourceId,
    pub path: String,
    pub message: String,
}

/// Expands every source's declarations into the desired set. Globs match regular files
/// that exist now (the periodic resync picks up later ones); a plain path is desired
/// whether or not it exists yet (its tailer waits for it). Relative paths are taken
/// relative to `cwd`.
pub fn expand<'a>(
    snapshots: impl IntoIterator<Item = (&'a SourceId, &'a [LogSpec])>,
    settings: &TailerSettings,
    cwd: &Path,
) -> (DesiredSet, Vec<ExpandError>) {
    expand_guarded(snapshots, settings, cwd, None)
}

/// Where an untrusted source's globs may look: the allow-list, and which sources are
/// trusted (their globs walk wherever they point).
pub struct Guard<'a> {
    pub policies: &'a Policies,
    pub trusted: &'a dyn Fn(&SourceId) -> bool,
}

/// [`expand`], with the globs of sources `guard` does not trust walking only inside the
/// allow-list's directories (symlinks resolved), so that a value such as `/**` cannot
/// make every node walk its whole filesystem.
pub fn expand_guarded<'a>(
    snapshots: impl IntoIterator<Item = (&'a SourceId, &'a [LogSpec])>,
    settings: &TailerSettings,
    cwd: &Path,
    guard: Option<&Guard<'_>>,
) -> (DesiredSet, Vec<ExpandError>) {
    let mut desired = DesiredSet::new();
    let mut errors = Vec::new();
    for (source, specs) in snapshots {
        let roots = guard
            .filter(|g| !(g.trusted)(source))
            .map(|g| g.policies.for_source(source).allow.roots());
        for spec in specs {
            let pattern = absolute(cwd, Path::new(&spec.path));
            let excluded = exclusions(cwd, &spec.exclude);
            let (filters, fields) = (Arc::new(spec.filters.clone()), settings.fields_of(spec));
            let files = if is_glob(&spec.path) {
                match glob_files(&pattern, roots.as_deref(), &WalkLimits::default()) {
                    Ok(files) => files,
                    Err(message) => {
                        errors.push(ExpandError {
                            source: source.clone(),
                            path: spec.path.clone(),
                            message,
                        });
                        continue;
                    }
                }
            } else {
                vec![pattern]
            };
            let key = spec
                .key
                .as_deref()
                .and_then(|k| Template::parse(k).ok())
                .map(Arc::new);
            let json = crate::encoding::json_value(spec.encoding, spec.merge_json.as_deref())
                .map(Arc::new);
            let shared = Arc::new(TailerSettings {
                parsing: spec.parsing.clone(),
                labels: Arc::new(spec.labels.clone()),
                filters: filters.clone(),
                fields: fields.clone(),
                throttle: spec.throttle.clone(),
                key: key.clone(),
                fallback: None,
                json: json.clone(),
                ..settings.clone()
            });
            for file in files.into_iter().filter(|f| !excluded.is_match(f)) {
                let (topic, fallback) = route(spec, &file, &settings.node, &fields);
                let tailer = desired
                    .entry(TailerId::new(&topic, &file))
                    .or_insert_with(|| DesiredTailer {
                        owners: BTreeSet::new(),
                        // Only a file sent to the fallback topic has settings of its own.
                        settings: match fallback {
                            None => shared.clone(),
                            Some(why) => Arc::new(TailerSettings {
                                fallback: Some(Arc::from(why)),
                                ..(*shared).clone()
                            }),
                        },
                        globs: BTreeSet::new(),
                    });
                // The first declaration (config, then etcd keys in order) decides how
                // the file is read; a different one is reported, not applied.
                let first = &tailer.settings;
                if first.parsing != spec.parsing
                    || *first.labels != spec.labels
                    || first.filters != filters
                    || first.fields != fields
                    || first.throttle != spec.throttle
                    || first.key != key
                    || first.json != json
                {
                    errors.push(ExpandError {
                        source: source.clone(),
                        path: file.display().to_string(),
                        message: format!(
                            "declared on topic {topic} with another format, multiline setting, labels, line filters, fields, throttle, key or encoding than by {}; the first declaration's are used",
                            tailer.owners.iter().next().map_or("another source", |o| o),
                        ),
                    });
                }
                tailer.owners.insert(source.clone());
                if is_glob(&spec.path) {
                    tailer.globs.insert((source.clone(), spec.path.clone()));
                }
            }
        }
    }
    (desired, errors)
}

/// The topic `spec` sends `file`'s records to, and why it is the `fallback_topic` when it
/// is: its topic template rendered from the file's container log names, the node's name
/// and the declaration's fields. A file's records all go to one topic (their order holds
/// there), so the topic is chosen per file, not per record.
pub fn route(spec: &LogSpec, file: &Path, node: &str, fields: &Fields) -> (String, Option<String>) {
    if !template::is_template(&spec.topic) {
        return (spec.topic.clone(), None);
    }
    let fallback = spec.fallback_topic.clone().unwrap_or_default();
    let pod = PodMeta::from_path(file);
    let context = template::Context {
        node,
        pod: pod.as_ref().map(PodMeta::names),
        stream: None,
        fields,
    };
    let why = match Template::parse(&spec.topic).map(|t| t.render(&context)) {
        Ok(Ok(topic)) => match crate::config::validate_topic(&topic) {
            Ok(()) => return (topic, None),
            Err(m) => format!("topic template {:?} rendered {topic:?}: {m}", spec.topic),
        },
        Ok(Err(var)) => format!(
            "topic template {:?}: {{{{{var}}}}} has no value for {}",
            spec.topic,
            file.display()
        ),
        Err(m) => m,
    };
    (
        fallback.clone(),
        Some(format!("{why}; shipped to fallback_topic {fallback}")),
    )
}

/// The trust boundary: the globs an untrusted (etcd) declaration's file must match once
/// symlinks are resolved.
#[derive(Debug, Clone)]
pub struct AllowList {
    set: GlobSet,
    empty: bool,
    roots: Vec<PathBuf>,
    /// How refusals name the list (`etcd.allowed_paths`, or a policy's).
    field: String,
}

/// An untrusted declaration that is not tailed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub source: SourceId,
    pub id: TailerId,
    pub kind: RefusalKind,
    pub reason: String,
}

/// Which rule refused a declaration (the `kind` label of `logcatch_refused_tailers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// Outside `etcd.allowed_paths` (or its policy's) after symlinks are resolved.
    AllowedPaths,
    /// A topic outside `etcd.allowed_topics` (or its policy's).
    AllowedTopics,
    /// Beyond `etcd.max_tailers`.
    MaxTailers,
    /// Not modified for `tail.ignore_older` when first found (any source).
    IgnoreOlder,
}

impl RefusalKind {
    pub const ALL: [RefusalKind; 4] = [
        RefusalKind::AllowedPaths,
        RefusalKind::AllowedTopics,
        RefusalKind::MaxTailers,
        RefusalKind::IgnoreOlder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::AllowedPaths => "allowed_paths",
            RefusalKind::AllowedTopics => "allowed_topics",
            RefusalKind::MaxTailers => "max_tailers",
            RefusalKind::IgnoreOlder => "ignore_older",
        }
    }
}

impl AllowList {
    /// Invalid patterns are skipped (the config validation refuses them first).
    pub fn new(patterns: &[String]) -> Self {
        let mut builder = GlobSetBuilder::new();
        let mut roots = Vec::new();
        for pattern in patterns {
            if let Ok(glob) = GlobBuilder::new(pattern).literal_separator(true).build() {
                builder.add(glob);
                roots.push(literal_base(Path::new(pattern)));
            }
        }
        AllowList {
            set: builder.build().unwrap_or_else(|_| GlobSet::empty()),
            empty: patterns.is_empty(),
            roots,
            field: "etcd.allowed_paths".into(),
        }
    }

    /// The directories the allowed globs start from (each pattern's part before its first
    /// glob character): nothing outside them can be allowed.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots.clone()
    }

    /// Checks `path` after resolving symlinks. A path that does not exist yet is checked
    /// with its existing ancestors resolved; every pass checks again, so a file that
    /// later appears as a symlink pointing outside is stopped.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let field = &self.field;
        if self.empty {
            return Err(format!("{field} is empty, so no path from etcd is tailed"));
        }
        let resolved = resolve(path);
        if self.set.is_match(&resolved) {
            Ok(())
        } else if resolved != path {
            Err(format!(
                "resolves to {} (symlink), which is outside {field}",
                resolved.display()
            ))
        } else {
            Err(format!("outside {field}"))
        }
    }
}

/// Removes from each tailer the owners `trusted` rejects whose rules (`policies`: the
/// key's policy, else the global ones) refuse its file (outside their allowed paths once
/// symlinks are resolved) or its topic; a tailer left without owners is no longer
/// desired. Returns the refusals.
pub fn restrict(
    desired: &mut DesiredSet,
    policies: &Policies,
    trusted: impl Fn(&SourceId) -> bool,
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    desired.retain(|id, tailer| {
        tailer.owners.retain(|owner| {
            if trusted(owner) {
                return true;
            }
            let rules = policies.for_source(owner);
            let (kind, reason) = match rules.allow.check(&id.path) {
                Err(reason) => (RefusalKind::AllowedPaths, reason),
                Ok(()) if !rules.allows_topic(&id.topic) => (
                    RefusalKind::AllowedTopics,
                    format!(
                        "topic {} is outside {}",
                        id.topic,
                        rules.field("allowed_topics")
                    ),
                ),
                Ok(()) => return true,
            };
            refusals.push(Refusal {
                source: owner.clone(),
                id: id.clone(),
                kind,
                reason,
            });
            false
        });
        !tailer.owners.is_empty()
    });
    refusals
}

/// Bounds, per policy with a `max_tailers` of its own, the tailers its keys declare, in
/// `TailerId` order (topic, then path): an owner beyond is refused, and a tailer left
/// without owners is no longer desired. Returns the refusals.
pub fn limit_policies(
    desired: &mut DesiredSet,
    policies: &Policies,
    trusted: impl Fn(&SourceId) -> bool,
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    for (rules, max) in policies.bounded() {
        let member =
            |owner: &SourceId| !trusted(owner) && std::ptr::eq(policies.for_source(owner), rules);
        let mut room = max;
        for (id, tailer) in desired.iter_mut() {
            if !tailer.owners.iter().any(member) {
                continue;
            }
            if room > 0 {
                room -= 1;
                continue;
            }
            tailer.owners.retain(|owner| {
                if !member(owner) {
                    return true;
                }
                refusals.push(Refusal {
                    source: owner.clone(),
                    id: id.clone(),
                    kind: RefusalKind::MaxTailers,
                    reason: format!(
                        "not started: {} ({max}) reached (in topic, path order)",
                        rules.field("max_tailers")
                    ),
                });
                false
            });
        }
    }
    desired.retain(|_, tailer| !tailer.owners.is_empty());
    refusals
}

/// Bounds the desired set to `max` tailers. Tailers with a trusted (config-file) owner
/// are always kept and count first; the untrusted rest fill the remaining room in
/// `TailerId` order (topic, then path), so the outcome depends only on the desired set.
/// Returns a refusal per untrusted owner of every tailer left out.
pub fn limit(
    desired: &mut DesiredSet,
    max: usize,
    trusted: impl Fn(&SourceId) -> bool,
) -> Vec<Refusal> {
    let is_trusted = |tailer: &DesiredTailer| tailer.owners.iter().any(&trusted);
    let mut room = max.saturating_sub(desired.values().filter(|t| is_trusted(t)).count());
    let mut refusals = Vec::new();
    desired.retain(|id, tailer| {
        if is_trusted(tailer) {
            return true;
        }
        if room > 0 {
            room -= 1;
            return true;
        }
        for owner in &tailer.owners {
            refusals.push(Refusal {
                source: owner.clone(),
                id: id.clone(),
                kind: RefusalKind::MaxTailers,
                reason: format!(
                    "not started: etcd.max_tailers ({max}) reached (config-file tailers count first, then etcd ones in topic, path order)"
                ),
            });
        }
        false
    });
    refusals
}

/// The `exclude` globs of a declaration, made absolute like its path. Invalid ones were
/// refused by the parsers; here they are skipped.
fn exclusions(cwd: &Path, globs: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        let pattern = absolute(cwd, Path::new(glob));
        if let Ok(glob) = GlobBuilder::new(&pattern.to_string_lossy())
            .literal_separator(true)
            .build()
        {
            builder.add(glob);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

/// Tells whether a file is one that a declaration names: its path, or a match of its
/// glob, and not excluded. For reporting which entry a tailer serves.
pub struct Declares {
    path: PathBuf,
    glob: Option<globset::GlobMatcher>,
    excluded: GlobSet,
}

impl Declares {
    pub fn new(cwd: &Path, spec: &LogSpec) -> Self {
        let path = absolute(cwd, Path::new(&spec.path));
        let glob = is_glob(&spec.path)
            .then(|| {
                GlobBuilder::new(&path.to_string_lossy())
                    .literal_separator(true)
                    .build()
                    .ok()
            })
            .flatten()
            .map(|g| g.compile_matcher());
        Declares {
            path,
            glob,
            excluded: exclusions(cwd, &spec.exclude),
        }
    }

    pub fn matches(&self, file: &Path) -> bool {
        let named = match &self.glob {
            Some(glob) => glob.is_match(file),
            None => self.path == file,
        };
        named && !self.excluded.is_match(file)
    }
}

/// `path` made absolute against `cwd`, with `.` and `..` resolved lexically.
/// The deepest directory of a glob declaration without glob characters (absolute): new
/// files there are what the glob finds next. `None` for a plain path.
pub fn glob_directory(cwd: &Path, spec_path: &str) -> Option<PathBuf> {
    is_glob(spec_path).then(|| glob::literal_base(&absolute(cwd, Path::new(spec_path))))
}

pub fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in cwd.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
impl TailerSettings {
    /// Raw lines from the beginning, 1 MiB at most, polled every 20 ms, node `n1`.
    pub fn for_tests() -> Self {
        TailerSettings {
            max_line_bytes: 1 << 20,
            poll_interval: std::time::Duration::from_millis(20),
            min_read_interval: std::time::Duration::from_millis(20),
            rotate_wait: std::time::Duration::from_millis(200),
            start_at: crate::config::StartAt::Beginning,
            parsing: Default::default(),
            labels: Default::default(),
            filters: Default::default(),
            fields: Default::default(),
            throttle: None,
            node: "n1".into(),
            key: None,
            fallback: None,
            json: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> TailerSettings {
        TailerSettings {
            max_line_bytes: 1024,
            poll_interval: Duration::from_millis(10),
            rotate_wait: Duration::from_secs(5),
            ..TailerSettings::for_tests()
        }
    }

    #[test]
    fn route_should_render_the_topic_per_file_and_fall_back_with_the_reason() {
        let templated = LogSpec {
            topic: "k8s-{{namespace}}-{{node}}".into(),
            fallback_topic: Some("k8s-other".into()),
            ..spec("/var/log/containers/*.log", "unused")
        };
        let id = "5f2b7c3d9e1a4b6c8d0e2f4a6b8c0d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c";
        let link = format!("/var/log/containers/cart-0_shop_app-{id}.log");
        assert_eq!(
            route(&templated, Path::new(&link), "n1", &Fields::new()),
            ("k8s-shop-n1".to_string(), None)
        );
        let target = Path::new("/var/log/pods/payments_api-0_uid/server/0.log");
        assert_eq!(
            route(&templated, target, "n1", &Fields::new()).0,
            "k8s-payments-n1"
        );
        // No namespace in a plain file's name: the fallback, with the reason.
        let (topic, why) = route(
            &templated,
            Path::new("/var/log/containers/x.log"),
            "n1",
            &Fields::new(),
        );
        assert_eq!(topic, "k8s-other");
        let why = why.unwrap();
        assert!(
            why.contains("{{namespace}} has no value for /var/log/containers/x.log"),
            "{why}"
        );
        // A node name Kafka refuses in a topic.
        let (topic, why) = route(&templated, Path::new(&link), "node one", &Fields::new());
        assert_eq!(topic, "k8s-other");
        assert!(why.unwrap().contains("rendered \"k8s-shop-node one\""));
        // A plain topic is used as it is.
        let plain = spec("/var/log/a.log", "app");
        assert_eq!(
            route(&plain, Path::new("/var/log/a.log"), "n1", &Fields::new()),
            ("app".into(), None)
        );
    }

    #[test]
    fn expand_should_render_fields_in_a_topic_template_the_declarations_over_the_global_ones() {
        let source: SourceId = "config".into();
        let templated = |fields: &[(&str, &str)]| LogSpec {
            topic: "logs-{{fields.team}}".into(),
            fallback_topic: Some("logs".into()),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..spec("/var/log/a.log", "unused")
        };
        let settings = TailerSettings {
            fields: Arc::new(Fields::from([("team".to_string(), "core".to_string())])),
            ..settings()
        };
        let topics = |specs: &[LogSpec]| {
            let (desired, _) = expand([(&source, specs)], &settings, Path::new("/"));
            desired
                .iter()
                .map(|(id, t)| (id.topic.to_string(), t.settings.fallback.is_some()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            topics(&[templated(&[])]),
            [("logs-core".to_string(), false)]
        );
        assert_eq!(
            topics(&[templated(&[("team", "shop")])]),
            [("logs-shop".to_string(), false)]
        );
        // No such field anywhere: the fallback topic, with the reason.
        let no_field = TailerSettings {
            fields: Arc::default(),
            ..settings.clone()
        };
        let (desired, _) = expand(
            [(&source, &[templated(&[])][..])],
            &no_field,
            Path::new("/"),
        );
        let (id, tailer) = desired.iter().next().unwrap();
        assert_eq!(&*id.topic, "logs");
        assert!(tailer
            .settings
            .fallback
            .as_deref()
            .unwrap()
            .contains("fields.team"));
    }

    fn spec(path: &str, topic: &str) -> LogSpec {
        LogSpec {
            path: path.into(),
            topic: topic.into(),
            ..Default::default()
        }
    }

    #[test]
    fn expand_should_merge_owners_of_the_same_topic_and_path() {
        let (a, b): (SourceId, SourceId) = ("config".into(), "etcd:/k".into());
        let specs_a = [spec("/var/log/x.log", "t")];
        let specs_b = [spec("/var/log/x.log", "t"), spec("/var/log/x.log", "other")];
        let (desired, errors) = expand(
            [(&a, &specs_a[..]), (&b, &specs_b[..])],
            &settings(),
            Path::new("/"),
        );
        assert!(errors.is_empty());
        assert_eq!(desired.len(), 2, "same path on two topics is two tailers");
        let owners = &desired[&TailerId::new("t", Path::new("/var/log/x.log"))].owners;
        assert_eq!(
            owners.iter().map(|s| &**s).collect::<Vec<_>>(),
            ["config", "etcd:/k"]
        );
    }

    #[test]
    fn expand_should_match_globs_against_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.log", "b.log", "c.txt"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("d.log")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/e.log"), "x\n").unwrap();
        let source: SourceId = "config".into();
        let specs = [spec("*.log", "t")];
        let (desired, _) = expand([(&source, &specs[..])], &settings(), dir.path());
        let names: Vec<_> = desired
            .keys()
            .map(|id| id.path.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.log", "b.log"]);

        let specs = [spec("**/*.log", "t")];
        let (desired, _) = expand([(&source, &specs[..])], &settings(), dir.path());
        assert_eq!(desired.len(), 3, "** descends into subdirectories");
    }

    #[test]
    fn expand_should_skip_compressed_and_excluded_files() {
        let dir = tempfile::tempdir().unwrap();
        let write =
            |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        write("app.log", b"x\n");
        write("app.log.1", b"x\n");
        write("app.log.2.gz", b"");
        write("app.log.3", &[0x28, 0xb5, 0x2f, 0xfd, 0, 0]);
        write("app.log.old", b"x\n");
        let source: SourceId = "config".into();
        let mut with_exclude = spec("app.log*", "t");
        with_exclude.exclude = vec!["*.old".into()];
        let specs = [with_exclude];
        let (desired, _) = expand([(&source, &specs[..])], &settings(), dir.path());
        let names: Vec<_> = desired
            .keys()
            .map(|id| id.path.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["app.log", "app.log.1"]);
    }

    fn restricted(allowed: &[&str], path: &Path, owners: &[&str]) -> (bool, Vec<Refusal>) {
        let id = TailerId::new("t", path);
        let mut desired = DesiredSet::from([(
            id.clone(),
            DesiredTailer {
                owners: owners.iter().map(|o| SourceId::from(*o)).collect(),
                settings: settings().into(),
                globs: BTreeSet::new(),
            },
        )]);
        let config = crate::config::EtcdConfig {
            allowed_paths: allowed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let refusals = restrict(&mut desired, &Policies::new(&config), |s| {
            !s.starts_with("etcd:")
        });
        (desired.contains_key(&id), refusals)
    }

    #[test]
    fn restrict_should_refuse_etcd_paths_outside_the_allow_list_but_trust_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("logs")).unwrap();
        std::fs::write(root.join("logs/a.log"), "x\n").unwrap();
        std::fs::write(root.join("secret"), "x\n").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("logs/evil.log")).unwrap();
        let allowed = format!("{}/logs/**", root.display());
        let cases = [
            ("logs/a.log", &["etcd:/k"][..], true, 0),
            ("logs/later.log", &["etcd:/k"][..], true, 0),
            ("secret", &["etcd:/k"][..], false, 1),
            ("logs/evil.log", &["etcd:/k"][..], false, 1),
            ("secret", &["config"][..], true, 0),
            ("secret", &["config", "etcd:/k"][..], true, 1),
        ];
        for (path, owners, kept, refused) in cases {
            let (got_kept, refusals) = restricted(&[&allowed], &root.join(path), owners);
            assert_eq!(
                (got_kept, refusals.len()),
                (kept, refused),
                "{path} {owners:?}"
            );
        }
        let (_, refusals) = restricted(&[&allowed], &root.join("logs/evil.log"), &["etcd:/k"]);
        assert!(
            refusals[0].reason.contains("symlink"),
            "{}",
            refusals[0].reason
        );
        let (kept, refusals) = restricted(&[], &root.join("logs/a.log"), &["etcd:/k"]);
        assert!(!kept && refusals[0].reason.contains("empty"));
    }

    #[test]
    fn limit_should_keep_config_tailers_then_etcd_ones_in_topic_path_order() {
        let tailer = |owners: &[&str]| DesiredTailer {
            owners: owners.iter().map(|o| SourceId::from(*o)).collect(),
            settings: settings().into(),
            globs: BTreeSet::new(),
        };
        let desired = DesiredSet::from([
            (TailerId::new("a", Path::new("/2")), tailer(&["etcd:/k"])),
            (
                TailerId::new("a", Path::new("/1")),
                tailer(&["etcd:/j", "etcd:/k"]),
            ),
            (TailerId::new("b", Path::new("/0")), tailer(&["etcd:/k"])),
            (TailerId::new("z", Path::new("/9")), tailer(&["config"])),
            (
                TailerId::new("z", Path::new("/8")),
                tailer(&["config", "etcd:/k"]),
            ),
        ]);
        let trusted = |s: &SourceId| &**s == "config";
        let kept = |max: usize| {
            let mut d = desired.clone();
            let refusals = limit(&mut d, max, trusted);
            let kept: Vec<String> = d.keys().map(|id| id.to_string()).collect();
            (kept, refusals)
        };
        let (all, refusals) = kept(5);
        assert_eq!(all.len(), 5);
        assert!(refusals.is_empty());
        let (three, refusals) = kept(3);
        assert_eq!(three, ["a:/1", "z:/8", "z:/9"]);
        let refused: Vec<(String, String)> = refusals
            .iter()
            .map(|r| (r.source.to_string(), r.id.to_string()))
            .collect();
        assert_eq!(
            refused,
            [
                ("etcd:/k".into(), "a:/2".into()),
                ("etcd:/k".into(), "b:/0".into())
            ]
        );
        assert!(refusals.iter().all(|r| r.kind == RefusalKind::MaxTailers
            && r.reason.contains("etcd.max_tailers (3) reached")));
        // The config's own tailers are never dropped, even beyond the limit.
        let (config_only, refusals) = kept(1);
        assert_eq!(config_only, ["z:/8", "z:/9"]);
        assert_eq!(refusals.len(), 4, "a:/1 has two etcd owners");
        // The same desired set always gives the same outcome (level-triggered).
        assert_eq!(kept(3).0, three);
    }

    fn desired_of(tailers: &[(&str, &str, &[&str])]) -> DesiredSet {
        tailers
            .iter()
            .map(|(topic, path, owners)| {
                let tailer = DesiredTailer {
                    owners: owners.iter().map(|o| SourceId::from(*o)).collect(),
                    settings: settings().into(),
                    globs: BTreeSet::new(),
                };
                (TailerId::new(topic, Path::new(path)), tailer)
            })
            .collect()
    }

    #[test]
    fn a_policy_should_refuse_topics_and_tailers_beyond_its_rules_naming_itself() {
        let config: crate::config::EtcdConfig = serde_yaml::from_str(
            r#"
allowed_paths: ["/logs/**"]
policies:
  - { prefix: /t/pay/, allowed_topics: ["pay-*"], max_tailers: 1 }
"#,
        )
        .unwrap();
        let policies = Policies::new(&config);
        let mut desired = desired_of(&[
            ("pay-a", "/logs/a.log", &["etcd:/t/pay/x"]),
            ("pay-a", "/logs/b.log", &["etcd:/t/pay/x", "etcd:/nodes/n1"]),
            ("pay-b", "/logs/c.log", &["etcd:/t/pay/y"]),
            ("web", "/logs/d.log", &["etcd:/t/pay/x", "config"]),
            ("web", "/logs/e.log", &["etcd:/nodes/n1"]),
            ("web", "/secret", &["etcd:/nodes/n1"]),
        ]);
        let trusted = |s: &SourceId| &**s == "config";
        let mut refusals = restrict(&mut desired, &policies, trusted);
        refusals.extend(limit_policies(&mut desired, &policies, trusted));
        let got: Vec<_> = refusals
            .iter()
            .map(|r| {
                (
                    &*r.source,
                    r.id.path.to_str().unwrap(),
                    r.kind,
                    r.reason.as_str(),
                )
            })
            .collect();
        let pay = "etcd.policies[prefix /t/pay/]";
        assert_eq!(
            got,
            [
                (
                    "etcd:/t/pay/x",
                    "/logs/d.log",
                    RefusalKind::AllowedTopics,
                    &*format!("topic web is outside {pay}.allowed_topics")
                ),
                (
                    "etcd:/nodes/n1",
                    "/secret",
                    RefusalKind::AllowedPaths,
                    "outside etcd.allowed_paths"
                ),
                (
                    "etcd:/t/pay/x",
                    "/logs/b.log",
                    RefusalKind::MaxTailers,
                    &*format!("not started: {pay}.max_tailers (1) reached (in topic, path order)")
                ),
                (
                    "etcd:/t/pay/y",
                    "/logs/c.log",
                    RefusalKind::MaxTailers,
                    &*format!("not started: {pay}.max_tailers (1) reached (in topic, path order)")
                ),
            ]
        );
        let left: Vec<_> = desired
            .iter()
            .map(|(id, t)| (id.path.to_str().unwrap(), t.owners.len()))
            .collect();
        assert_eq!(
            left,
            [
                ("/logs/a.log", 1),
                ("/logs/b.log", 1),
                ("/logs/d.log", 1),
                ("/logs/e.log", 1)
            ],
            "b.log runs for its other owner, d.log for the config"
        );
    }

    #[test]
    fn an_untrusted_glob_should_walk_only_inside_the_allowed_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("allowed")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        std::fs::write(root.join("allowed/a.log"), "x\n").unwrap();
        std::fs::write(root.join("other/b.log"), "x\n").unwrap();
        std::os::unix::fs::symlink(root.join("other"), root.join("allowed/link")).unwrap();
        let policies = Policies::new(&crate::config::EtcdConfig {
            allowed_paths: vec![format!("{}/allowed/**", root.display())],
            ..Default::default()
        });
        let etcd: SourceId = "/logcatch/a".into();
        let config: SourceId = crate::source::CONFIG_SOURCE.into();
        let specs = [spec(&format!("{}/**/*.log", root.display()), "t")];
        let trusted = |source: &SourceId| &**source == crate::source::CONFIG_SOURCE;
        let guard = Guard {
            policies: &policies,
            trusted: &trusted,
        };
        let found = |source: &SourceId| {
            let (desired, errors) =
                expand_guarded([(source, &specs[..])], &settings(), &root, Some(&guard));
            assert!(errors.is_empty(), "{errors:?}");
            desired
                .keys()
                .map(|id| id.path.strip_prefix(&root).unwrap().display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found(&etcd),
            ["allowed/a.log"],
            "nothing outside, no symlink out"
        );
        assert_eq!(
            found(&config),
            ["allowed/a.log", "allowed/link/b.log", "other/b.log"],
            "the config file is trusted"
        );
        // The glob's own directory is listed (its files are judged by `restrict`, which
        // refuses them with a reason); nothing below it outside the allowed roots.
        let outside = [spec(&format!("{}/other/**", root.display()), "t")];
        std::fs::create_dir_all(root.join("other/deeper")).unwrap();
        std::fs::write(root.join("other/deeper/c.log"), "x\n").unwrap();
        let (desired, errors) =
            expand_guarded([(&etcd, &outside[..])], &settings(), &root, Some(&guard));
        assert!(errors.is_empty(), "{errors:?}");
        let listed: Vec<_> = desired.keys().map(|id| id.path.to_path_buf()).collect();
        assert_eq!(listed, [root.join("other/b.log")]);
    }

    #[test]
    fn expand_should_keep_plain_paths_that_do_not_exist_yet() {
        let source: SourceId = "config".into();
        let specs = [spec("logs/../later.log", "t")];
        let (desired, _) = expand([(&source, &specs[..])], &settings(), Path::new("/srv"));
        assert_eq!(
            desired.keys().next().unwrap(),
            &TailerId::new("t", Path::new("/srv/later.log"))
        );
    }

    #[test]
    fn restrict_should_check_container_log_symlinks_at_their_pods_target() {
        // /var/log/containers/*.log point into /var/log/pods/: the target must be allowed.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let pods = root.join("pods/ns_pod_uid/c");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::create_dir(root.join("containers")).unwrap();
        std::fs::write(pods.join("0.log"), "x\n").unwrap();
        let link = root.join("containers/pod_ns_c-1.log");
        std::os::unix::fs::symlink("../pods/ns_pod_uid/c/0.log", &link).unwrap();
        let containers_only = format!("{}/containers/**", root.display());
        let (kept, refusals) = restricted(&[&containers_only], &link, &["etcd:/k"]);
        assert!(!kept, "the link's own directory is not enough");
        assert!(
            refusals[0].reason.contains("ns_pod_uid/c/0.log"),
            "{}",
            refusals[0].reason
        );
        let with_pods = format!("{}/pods/**", root.display());
        let (kept, refusals) = restricted(&[&containers_only, &with_pods], &link, &["etcd:/k"]);
        assert!(kept && refusals.is_empty());
    }

    #[test]
    fn expand_should_use_the_first_declarations_format_and_report_a_different_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.log");
        std::fs::write(&file, "x\n").unwrap();
        let path = file.display().to_string();
        let cri = LogSpec {
            parsing: Parsing {
                format: crate::format::Format::Cri,
                multiline: None,
            },
            ..spec(&path, "t")
        };
        let (config, etcd): (SourceId, SourceId) = ("config".into(), "etcd:/k".into());
        let (a, b) = ([cri.clone()], [spec(&path, "t")]);
        let (desired, errors) = expand(
            [(&config, &a[..]), (&etcd, &b[..])],
            &settings(),
            Path::new("/"),
        );
        let tailer = desired.values().next().unwrap();
        assert_eq!(tailer.settings.parsing, cri.parsing);
        assert_eq!(tailer.owners.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(&*errors[0].source, "etcd:/k");
        assert!(
            errors[0].message.contains("first declaration"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn expand_should_lay_a_declarations_fields_over_the_global_ones_and_keep_the_first_filters() {
        let fields = |pairs: &[(&str, &str)]| -> Fields {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let global = TailerSettings {
            fields: Arc::new(fields(&[("cluster", "prod-eu"), ("env", "production")])),
            ..settings()
        };
        let filtered = LogSpec {
            filters: LineFilters {
                include_lines: vec![],
                exclude_lines: vec!["kube-probe".into()],
            },
            fields: fields(&[("env", "staging"), ("team", "shop")]),
            ..spec("/var/log/a.log", "t")
        };
        let (config, etcd): (SourceId, SourceId) = ("config".into(), "etcd:/k".into());
        let (a, b) = (
            [filtered.clone(), spec("/var/log/b.log", "t")],
            [spec("/var/log/a.log", "t")],
        );
        let (desired, errors) = expand(
            [(&config, &a[..]), (&etcd, &b[..])],
            &global,
            Path::new("/"),
        );
        let a = &desired[&TailerId::new("t", Path::new("/var/log/a.log"))].settings;
        let b = &desired[&TailerId::new("t", Path::new("/var/log/b.log"))].settings;
        assert_eq!(
            *a.fields,
            fields(&[("cluster", "prod-eu"), ("env", "staging"), ("team", "shop")])
        );
        assert_eq!(*a.filters, filtered.filters, "the first declaration's");
        assert_eq!(b.fields, global.fields, "the global fields alone");
        assert!(b.filters.is_empty());
        // etcd declares a.log without filters or fields: reported, not applied.
        assert_eq!(errors.len(), 1);
        assert_eq!(&*errors[0].source, "etcd:/k");
        assert!(errors[0].message.contains("line filters, fields"));
    }
}
