//! An etcd value: a JSON array `[{"path": "/var/log/app/*.log", "topic": "app"}]`, as in
//! the Go system logcatch replaces; strictly validated, errors name the key and index.

use crate::config::{validate_exclude, validate_fields, validate_labels, validate_routing};
use crate::encoding::Encoding;
use crate::format::{Format, LineFilters, Multiline, Parsing};
use crate::record::{Fields, Labels};
use crate::spec::LogSpec;
use crate::throttle::Throttle;
use serde::{Deserialize, Serialize};

/// Why a value was refused: `etcd key /logcatch/all: [2].topic: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("etcd key {key}: {field}{sep}{message}", sep = if field.is_empty() { "" } else { ": " })]
pub struct ValueError {
    pub key: String,
    /// `[2].topic`, or empty when the whole value is wrong.
    pub field: String,
    pub message: String,
}

/// One entry exactly as it is stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub topic: String,
    /// Globs of files not to tail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `raw` (default), `cri`, `docker`, `auto`.
    #[serde(default, skip_serializing_if = "Format::is_raw")]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<Multiline>,
    /// Owner, ticket, ...: a map of strings.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Regexes: only records matching one of them are shipped (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_lines: Vec<String>,
    /// Regexes: records matching one of them are not shipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_lines: Vec<String>,
    /// Static fields (Kafka headers named as the fields): a map of strings.
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub fields: Fields,
    /// A rate limit: pause (default) or drop over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// The record key, a template (`{{pod}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where a templated topic's records go when it renders no legal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_topic: Option<String>,
    /// The Kafka record value: `raw` (default) or `json`.
    #[serde(default, skip_serializing_if = "Encoding::is_raw")]
    pub encoding: Encoding,
    /// With `json`: a line that is a JSON object goes under this member as an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_json: Option<String>,
}

impl Entry {
    pub fn of(spec: &LogSpec) -> Self {
        Entry {
            path: spec.path.clone(),
            topic: spec.topic.clone(),
            exclude: spec.exclude.clone(),
            format: spec.parsing.format,
            multiline: spec.parsing.multiline.clone(),
            labels: spec.labels.clone(),
            include_lines: spec.filters.include_lines.clone(),
            exclude_lines: spec.filters.exclude_lines.clone(),
            fields: spec.fields.clone(),
            throttle: spec.throttle.clone(),
            key: spec.key.clone(),
            fallback_topic: spec.fallback_topic.clone(),
            encoding: spec.encoding,
            merge_json: spec.merge_json.clone(),
        }
    }

    pub fn spec(&self) -> LogSpec {
        LogSpec {
            path: self.path.clone(),
            topic: self.topic.clone(),
            exclude: self.exclude.clone(),
            parsing: Parsing {
                format: self.format,
                multiline: self.multiline.clone(),
            },
            labels: self.labels.clone(),
            filters: LineFilters {
                include_lines: self.include_lines.clone(),
                exclude_lines: self.exclude_lines.clone(),
            },
            fields: self.fields.clone(),
            throttle: self.throttle.clone(),
            key: self.key.clone(),
            fallback_topic: self.fallback_topic.clone(),
            encoding: self.encoding,
            merge_json: self.merge_json.clone(),
        }
    }
}

/// Largest value accepted. etcd's own default request limit is 1.5 MiB; a bigger value
/// (an etcd with `--max-request-bytes` raised) is refused before it is parsed.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most entries in one value: a bound on the work one key can cause before globs expand
/// (the number of tailers is bounded separately by `etcd.max_tailers`).
pub const MAX_ENTRIES: usize = 10_000;

/// Parses and validates the value of `key`.
pub fn parse(key: &str, value: &[u8]) -> Result<Vec<LogSpec>, ValueError> {
    let error = |field: String, message: String| ValueError {
        key: key.to_string(),
        field,
        message,
    };
    if value.len() > MAX_VALUE_BYTES {
        return Err(error(
            String::new(),
            format!(
                "value is {} bytes; values over {MAX_VALUE_BYTES} bytes (1 MiB) are refused",
                value.len()
            ),
        ));
    }
    // serde_json stops nesting at depth 128 with an error, never a stack overflow; with
    // these types anything nested deeper than an entry's fields is a type error anyway.
    let text = std::str::from_utf8(value)
        .map_err(|e| error(String::new(), format!("not UTF-8 text: {e}")))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let entries: Vec<Entry> =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = if path == "." || !inner.is_data() {
                String::new()
            } else {
                path
            };
            let message = if !inner.is_data() {
                format!("invalid JSON: {inner}")
            } else {
                format!(
                    "{inner}; expected a JSON array like [{{\"path\": \"/var/log/app.log\", \"topic\": \"app\"}}]"
                )
            };
            error(field, message)
        })?;
    deserializer
        .end()
        .map_err(|e| error(String::new(), format!("invalid JSON: {e}")))?;
    if entries.len() > MAX_ENTRIES {
        return Err(error(
            String::new(),
            format!(
                "{} entries; a value may hold at most {MAX_ENTRIES}",
                entries.len()
            ),
        ));
    }
    let mut specs = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        validate_path(&entry.path).map_err(|m| error(format!("[{index}].path"), m))?;
        validate_routing(
            &entry.topic,
            entry.key.as_deref(),
            entry.fallback_topic.as_deref(),
        )
        .map_err(|(f, m)| error(format!("[{index}].{f}"), m))?;
        for (i, glob) in entry.exclude.iter().enumerate() {
            validate_exclude(glob).map_err(|m| error(format!("[{index}].exclude[{i}]"), m))?;
        }
        let spec = entry.spec();
        spec.parsing
            .validate()
            .map_err(|(f, m)| error(format!("[{index}].{f}"), m))?;
        validate_labels(&spec.labels).map_err(|(f, m)| error(format!("[{index}].{f}"), m))?;
        spec.filters
            .validate()
            .map_err(|(f, m)| error(format!("[{index}].{f}"), m))?;
        validate_fields(&spec.fields).map_err(|(f, m)| error(format!("[{index}].{f}"), m))?;
        if let Some(throttle) = &spec.throttle {
            throttle
                .validate()
                .map_err(|(f, m)| error(format!("[{index}].{f}"), m))?;
        }
        crate::encoding::validate(spec.encoding, spec.merge_json.as_deref())
            .map_err(|(f, m)| error(format!("[{index}].{f}"), m))?;
        specs.push(spec);
    }
    Ok(specs)
}

fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.contains('\0') {
        return Err("must not contain NUL bytes".into());
    }
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?} is relative; paths from etcd must be absolute"
        ));
    }
    // Resolved lexically, `..` would still land inside or outside the allow-list; a
    // declaration that needs it is suspicious, so it is refused with a reason instead.
    if path.split('/').any(|part| part == "..") {
        return Err(format!("{path:?} contains a `..` component"));
    }
    globset::Glob::new(path).map_err(|e| format!("invalid glob: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(value: &str) -> String {
        parse("/logcatch/all", value.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parse_should_accept_the_go_systems_format() {
        let specs = parse(
            "/k",
            br#"[{"path": "/var/log/app/*.log", "topic": "app"}, {"path": "/var/log/x.log", "topic": "x.y_z-1"}]"#,
        )
        .unwrap();
        assert_eq!(
            specs,
            [
                LogSpec {
                    path: "/var/log/app/*.log".into(),
                    topic: "app".into(),
                    ..Default::default()
                },
                LogSpec {
                    path: "/var/log/x.log".into(),
                    topic: "x.y_z-1".into(),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(parse("/k", b" [] ").unwrap(), []);
        let labelled = parse(
            "/k",
            br#"[{"path": "/a", "topic": "a", "labels": {"owner": "payments", "ticket": "PAY-1"}}]"#,
        )
        .unwrap();
        let labels: Vec<_> = labelled[0].labels.iter().collect();
        assert_eq!(
            labels,
            [
                (&"owner".to_string(), &"payments".to_string()),
                (&"ticket".to_string(), &"PAY-1".to_string())
            ]
        );
    }

    #[test]
    fn parse_should_name_the_key_index_and_field_of_a_bad_entry() {
        let ok = r#"{"path": "/var/log/a.log", "topic": "a"}"#;
        let cases = [
            (
                format!(r#"[{ok}, {ok}, {{"path": "/var/log/b.log", "topic": ""}}]"#),
                "etcd key /logcatch/all: [2].topic: topic must not be empty",
            ),
            (
                r#"[{"path": "/var/log/b.log", "topic": "a b"}]"#.to_string(),
                "etcd key /logcatch/all: [0].topic: topic \"a b\" contains ' '",
            ),
            (
                r#"[{"path": "var/log/b.log", "topic": "a"}]"#.to_string(),
                "etcd key /logcatch/all: [0].path: \"var/log/b.log\" is relative",
            ),
            (
                r#"[{"path": "/var/log/\u0000", "topic": "a"}]"#.to_string(),
                "etcd key /logcatch/all: [0].path: must not contain NUL bytes",
            ),
            (
                r#"[{"path": "", "topic": "a"}]"#.to_string(),
                "etcd key /logcatch/all: [0].path: must not be empty",
            ),
            (
                format!(r#"[{ok}, {{"path": "/a", "topic": "a", "extra": 1}}]"#),
                "etcd key /logcatch/all: [1].extra: unknown field `extra`",
            ),
            (
                r#"[{"path": "/a"}]"#.to_string(),
                "etcd key /logcatch/all: [0]: missing field `topic`",
            ),
            (
                format!(r#"[{ok}, {{"path": "/a", "topic": "a", "labels": ["owner"]}}]"#),
                "etcd key /logcatch/all: [1].labels: invalid type: sequence, expected a map",
            ),
            (
                r#"[{"path": "/a", "topic": "a", "labels": {"owner": 5}}]"#.to_string(),
                "etcd key /logcatch/all: [0].labels.owner: invalid type: integer `5`, expected a string",
            ),
            (
                r#"[{"path": "/a", "topic": "a", "labels": {"team name": "x"}}]"#.to_string(),
                "etcd key /logcatch/all: [0].labels.team name: label name \"team name\": 1-63",
            ),
            (
                r#"[{"path": "/a", "topic": "a", "labels": {"owner": "a\nb"}}]"#.to_string(),
                "etcd key /logcatch/all: [0].labels.owner: must not contain control characters",
            ),
            (
                format!(r#"[{ok}, {{"path": "/a", "topic": "a", "exclude_lines": ["ok", "(unclosed"]}}]"#),
                "etcd key /logcatch/all: [1].exclude_lines[1]: invalid regex \"(unclosed\"",
            ),
            (
                r#"[{"path": "/a", "topic": "a", "include_lines": "GET"}]"#.to_string(),
                "etcd key /logcatch/all: [0].include_lines: invalid type: string \"GET\", expected a sequence",
            ),
            (
                r#"[{"path": "/a", "topic": "a", "fields": {"replicas": 3}}]"#.to_string(),
                "etcd key /logcatch/all: [0].fields.replicas: invalid type: integer `3`, expected a string",
            ),
            (
                r#"[{"path": "/a", "topic": "a", "fields": {"k8s.pod": "x"}}]"#.to_string(),
                "etcd key /logcatch/all: [0].fields.k8s.pod: names starting with \"k8s.\" are reserved",
            ),
            (
                r#"[{"path": "/a", "topic": "a", "fields": {"": "x"}}]"#.to_string(),
                "etcd key /logcatch/all: [0].fields: a field name must not be empty",
            ),
        ];
        for (value, expected) in cases {
            let got = error(&value);
            assert!(
                got.starts_with(expected),
                "{value}\n got: {got}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn parse_should_carry_line_filters_and_fields_and_write_them_back_alike() {
        let value = br#"[{"path": "/a", "topic": "a", "include_lines": ["^GET"], "exclude_lines": ["kube-probe", "/healthz"], "fields": {"cluster": "prod-eu", "team": "shop"}}]"#;
        let specs = parse("/k", value).unwrap();
        let filters = &specs[0].filters;
        assert_eq!(filters.include_lines, ["^GET"]);
        assert_eq!(filters.exclude_lines, ["kube-probe", "/healthz"]);
        let fields: Vec<_> = specs[0]
            .fields
            .iter()
            .map(|(k, v)| (&k[..], &v[..]))
            .collect();
        assert_eq!(fields, [("cluster", "prod-eu"), ("team", "shop")]);
        // `logcatch etcd put` writes what it parsed: the same entry again.
        let written = serde_json::to_vec(&[Entry::of(&specs[0])]).unwrap();
        assert_eq!(parse("/k", &written).unwrap(), specs);
    }

    #[test]
    fn parse_should_accept_exclude_globs_and_refuse_bad_ones() {
        let specs = parse(
            "/k",
            br#"[{"path": "/var/log/app*", "topic": "a", "exclude": ["/var/log/*.old"]}]"#,
        )
        .unwrap();
        assert_eq!(specs[0].exclude, ["/var/log/*.old"]);
        let err = error(r#"[{"path": "/a", "topic": "a", "exclude": ["x", "[bad"]}]"#);
        assert!(
            err.starts_with("etcd key /logcatch/all: [0].exclude[1]: invalid glob"),
            "{err}"
        );
        let err = error(r#"[{"path": "/a", "topic": "a", "exclude": "/x"}]"#);
        assert!(err.contains("[0].exclude"), "{err}");
    }

    #[test]
    fn parse_should_read_format_and_multiline_like_the_config_file() {
        let specs = parse(
            "/k",
            br#"[{"path": "/var/log/containers/*.log", "topic": "k8s", "format": "cri",
                 "multiline": {"start_pattern": "^\\d{4}-", "max_bytes": "64KiB", "timeout": "2s"}}]"#,
        )
        .unwrap();
        assert_eq!(specs[0].parsing.format, crate::format::Format::Cri);
        let multiline = specs[0].parsing.multiline.as_ref().unwrap();
        assert_eq!(multiline.start_pattern, r"^\d{4}-");
        assert_eq!(multiline.max_bytes, 65536);
        assert_eq!(multiline.max_lines, 500);
        assert_eq!(multiline.timeout, std::time::Duration::from_secs(2));
        // The cache writes entries back: the same spec comes out.
        let entry = Entry::of(&specs[0]);
        let again = parse("/k", &serde_json::to_vec(&[entry]).unwrap()).unwrap();
        assert_eq!(again, specs);
    }

    #[test]
    fn parse_should_name_the_key_and_field_of_a_bad_format_or_multiline() {
        let entry = |extra: &str| format!(r#"[{{"path": "/a", "topic": "a", {extra}}}]"#);
        let cases = [
            (
                r#""format": "xml""#,
                "etcd key /logcatch/all: [0].format: unknown variant `xml`",
            ),
            (
                r#""multiline": {"start_pattern": "("}"#,
                "etcd key /logcatch/all: [0].multiline.start_pattern: invalid regex",
            ),
            (
                r#""multiline": {"start_pattern": "x", "max_lines": 0}"#,
                "etcd key /logcatch/all: [0].multiline.max_lines: must be at least 1",
            ),
            (
                r#""multiline": {"start_pattern": "x", "timeout": "0s"}"#,
                "etcd key /logcatch/all: [0].multiline.timeout: must be greater than 0",
            ),
            (
                r#""multiline": {"start_pattern": "x", "timeout": 5}"#,
                "etcd key /logcatch/all: [0].multiline.timeout: invalid type",
            ),
        ];
        for (extra, expected) in cases {
            let got = error(&entry(extra));
            assert!(
                got.starts_with(expected),
                "{extra}\n got: {got}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn parse_should_read_an_encoding_and_name_the_key_index_and_field_of_a_bad_one() {
        let specs = parse(
            "/k",
            br#"[{"path": "/var/log/pods/*/*/*.log", "topic": "k8s", "encoding": "json", "merge_json": "log"},
                 {"path": "/var/log/a.log", "topic": "a"}]"#,
        )
        .unwrap();
        assert_eq!(specs[0].encoding, Encoding::Json);
        assert_eq!(specs[0].merge_json.as_deref(), Some("log"));
        assert_eq!(specs[1].encoding, Encoding::Raw);
        // The cache writes entries back: the same specs come out, raw left unsaid.
        let entries: Vec<Entry> = specs.iter().map(Entry::of).collect();
        let text = serde_json::to_string(&entries).unwrap();
        assert!(!text.contains("raw"), "{text}");
        assert_eq!(parse("/k", text.as_bytes()).unwrap(), specs);
        let cases = [
            (
                r#""encoding": "xml""#,
                "etcd key /logcatch/all: [1].encoding: unknown variant `xml`",
            ),
            (
                r#""merge_json": "log""#,
                "etcd key /logcatch/all: [1].merge_json: applies only with encoding: json",
            ),
            (
                r#""encoding": "json", "merge_json": "time""#,
                "etcd key /logcatch/all: [1].merge_json: \"time\" is a member the agent writes",
            ),
            (
                r#""encoding": "json", "merge_json": 3"#,
                "etcd key /logcatch/all: [1].merge_json: invalid type: integer",
            ),
        ];
        for (fields, expected) in cases {
            let value = format!(
                r#"[{{"path": "/a", "topic": "a"}}, {{"path": "/b", "topic": "b", {fields}}}]"#
            );
            let got = error(&value);
            assert!(
                got.starts_with(expected),
                "{fields}\n got: {got}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn parse_should_read_a_throttle_and_name_the_key_index_and_field_of_a_bad_one() {
        let specs = parse(
            "/k",
            br#"[{"path": "/var/log/pods/*/*/*.log", "topic": "k8s",
                 "throttle": {"lines_per_s": 100, "bytes_per_s": "64KiB", "per": "namespace"}}]"#,
        )
        .unwrap();
        let throttle = specs[0].throttle.as_ref().unwrap();
        assert_eq!(throttle.lines_per_s, Some(100));
        assert_eq!(throttle.bytes_per_s, Some(65536));
        assert_eq!(throttle.per, crate::throttle::Per::Namespace);
        // The cache writes entries back: the same spec comes out.
        let entry = Entry::of(&specs[0]);
        let again = parse("/k", &serde_json::to_vec(&[entry]).unwrap()).unwrap();
        assert_eq!(again, specs);
        let entry = |throttle: &str| {
            format!(
                r#"[{{"path": "/a", "topic": "a"}}, {{"path": "/b", "topic": "b", "throttle": {throttle}}}]"#
            )
        };
        let cases = [
            (
                r#"{}"#,
                "etcd key /logcatch/all: [1].throttle: set lines_per_s, bytes_per_s or both",
            ),
            (
                r#"{"lines_per_s": 0}"#,
                "etcd key /logcatch/all: [1].throttle.lines_per_s: must be at least 1",
            ),
            (
                r#"{"lines_per_s": -5}"#,
                "etcd key /logcatch/all: [1].throttle.lines_per_s: invalid value",
            ),
            (
                r#"{"bytes_per_s": "fast"}"#,
                "etcd key /logcatch/all: [1].throttle.bytes_per_s: invalid size",
            ),
            (
                r#"{"lines_per_s": 1, "burst": "0s"}"#,
                "etcd key /logcatch/all: [1].throttle.burst: must be greater than 0",
            ),
            (
                r#"{"lines_per_s": 1, "per": "pod"}"#,
                "etcd key /logcatch/all: [1].throttle.per: unknown variant `pod`",
            ),
            (
                r#"{"lines_per_s": 1, "on_limit": "block"}"#,
                "etcd key /logcatch/all: [1].throttle.on_limit: unknown variant `block`",
            ),
            (
                r#"{"lines_per_s": 1, "rate": 1}"#,
                "etcd key /logcatch/all: [1].throttle.rate: unknown field `rate`",
            ),
        ];
        for (throttle, expected) in cases {
            let got = error(&entry(throttle));
            assert!(
                got.starts_with(expected),
                "{throttle}\n got: {got}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn parse_should_name_the_key_index_and_field_of_a_bad_template() {
        let good = r#"[{"path": "/a", "topic": "k8s-{{namespace}}", "fallback_topic": "k8s", "key": "{{pod}}-{{stream}}"}]"#;
        let specs = parse("/logcatch/all", good.as_bytes()).unwrap();
        assert_eq!(specs[0].topic, "k8s-{{namespace}}");
        assert_eq!(specs[0].key.as_deref(), Some("{{pod}}-{{stream}}"));
        assert_eq!(specs[0].fallback_topic.as_deref(), Some("k8s"));
        let cases = [
            (
                r#""topic": "k8s-{{namespaces}}", "fallback_topic": "k8s""#,
                r#"etcd key /logcatch/all: [1].topic: "k8s-{{namespaces}}": unknown variable {{namespaces}}"#,
            ),
            (
                r#""topic": "k8s-{{namespace}}""#,
                "etcd key /logcatch/all: [1].fallback_topic: must be set when topic is a template",
            ),
            (
                r#""topic": "k8s-{{stream}}", "fallback_topic": "k8s""#,
                "etcd key /logcatch/all: [1].topic: {{stream}} varies from record to record",
            ),
            (
                r#""topic": "k8s-{{pod}}", "fallback_topic": "bad topic""#,
                r#"etcd key /logcatch/all: [1].fallback_topic: topic "bad topic" contains ' '"#,
            ),
            (
                r#""topic": "a", "fallback_topic": "b""#,
                "etcd key /logcatch/all: [1].fallback_topic: applies only when topic is a template",
            ),
            (
                r#""topic": "a", "key": "{{pod""#,
                r#"etcd key /logcatch/all: [1].key: "{{pod": "{{" is not closed"#,
            ),
            (
                r#""topic": "a", "key": 7"#,
                "etcd key /logcatch/all: [1].key: invalid type: integer",
            ),
        ];
        for (fields, expected) in cases {
            let value = format!(r#"[{{"path": "/a", "topic": "a"}}, {{"path": "/b", {fields}}}]"#);
            let got = error(&value);
            assert!(
                got.starts_with(expected),
                "{fields}\n got: {got}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn parse_should_refuse_values_that_are_not_a_json_array() {
        assert!(error("[not json").starts_with("etcd key /logcatch/all: invalid JSON"));
        assert!(error(r#"{"path": "/a", "topic": "a"}"#)
            .starts_with("etcd key /logcatch/all: invalid type: map, expected a sequence"));
        assert!(error("[] trailing").starts_with("etcd key /logcatch/all: invalid JSON"));
        assert!(parse("/k", b"\xff")
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
    }

    #[test]
    fn parse_should_refuse_hostile_values_with_a_reason() {
        let entry = r#"{"path":"/","topic":"a"}"#;
        let many = |n: usize| format!("[{}]", vec![entry; n].join(","));
        let huge = format!(
            r#"[{{"path": "/var/log/{}", "topic": "a"}}]"#,
            "x".repeat(MAX_VALUE_BYTES)
        );
        let deep_arrays = "[".repeat(100_000) + &"]".repeat(100_000);
        let deep_field = format!(
            r#"[{{"path": {}"/a"{}, "topic": "a"}}]"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let deep_objects = r#"{"a":"#.repeat(100_000) + &"}".repeat(100_000);
        let cases = [
            (huge, "etcd key /logcatch/all: value is 1048613 bytes; values over 1048576 bytes (1 MiB) are refused"),
            (many(100_000), "etcd key /logcatch/all: value is 2500001 bytes"),
            (many(MAX_ENTRIES + 1), "etcd key /logcatch/all: 10001 entries; a value may hold at most 10000"),
            (deep_arrays, "etcd key /logcatch/all: [0][0]: invalid type: sequence, expected a string"),
            (deep_field, "etcd key /logcatch/all: [0].path: invalid type: sequence, expected a string"),
            (deep_objects, "etcd key /logcatch/all: invalid type: map, expected a sequence"),
            (
                r#"[{"path": "/var/log/../../etc/shadow", "topic": "a"}]"#.into(),
                r#"etcd key /logcatch/all: [0].path: "/var/log/../../etc/shadow" contains a `..` component"#,
            ),
            (
                r#"[{"path": "/var/log/a.log", "topic": "a\u0000b"}]"#.into(),
                "etcd key /logcatch/all: [0].topic: topic \"a\\0b\" contains '\\0'",
            ),
        ];
        for (value, expected) in cases {
            let got = error(&value);
            assert!(got.starts_with(expected), "got: {got}\nwant: {expected}");
        }
        assert_eq!(
            parse("/k", many(MAX_ENTRIES).as_bytes()).unwrap().len(),
            MAX_ENTRIES
        );
        // A name that only starts with two dots is an ordinary file.
        assert!(parse("/k", br#"[{"path": "/var/log/..app.log", "topic": "a"}]"#).is_ok());
    }

    #[test]
    fn serde_json_should_refuse_deep_nesting_without_overflowing_the_stack() {
        // The recursion limit holds for any value type, not just for our entry shape.
        let deep = "[".repeat(1_000_000) + &"]".repeat(1_000_000);
        let err = serde_json::from_str::<serde_json::Value>(&deep).unwrap_err();
        assert!(
            err.to_string().contains("recursion limit exceeded"),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Hostile values never panic: they parse or are refused with the key named.
        #[test]
        fn any_bytes_parse_or_fail_with_the_key(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Err(e) = parse("/hostile", &bytes) {
                proptest::prop_assert!(e.to_string().contains("/hostile"), "{}", e);
            }
        }

        #[test]
        fn json_shaped_values_parse_or_fail_with_the_key(
            path in "[ -~]{0,40}",
            topic in "[ -~]{0,20}",
            extra in proptest::option::of("[a-z]{1,8}"),
        ) {
            let mut entry = serde_json::json!({"path": path, "topic": topic});
            if let Some(field) = extra {
                entry[field] = serde_json::json!(1);
            }
            let value = serde_json::to_vec(&serde_json::json!([entry])).unwrap();
            match parse("/k", &value) {
                Ok(specs) => proptest::prop_assert!(specs.iter().all(|s| s.path.starts_with('/'))),
                Err(e) => proptest::prop_assert!(e.to_string().contains("/k"), "{}", e),
            }
        }
    }
}
