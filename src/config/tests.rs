use super::*;
use crate::format::Format;

const FULL: &str = r#"
node: "${NODE_NAME:-}"
state_dir: ./data/state
logs:
  - path: /var/log/app/*.log
    topic: app
sink:
  kind: stdout
  file: { path: ./data/out.jsonl }
tail:
  start_at: beginning
  max_line_bytes: 1048576
  poll_interval: 250ms
  rotate_wait: 5s
reconcile:
  resync_interval: 60s
  backoff: { initial: 1s, max: 60s, reset_after: 60s }
http:
  listen: "127.0.0.1:9733"
shutdown_timeout: 10s
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Loaded> {
    Config::parse(text, "test.yaml", &no_env)
}

fn field_error(text: &str) -> (String, String) {
    match parse(text) {
        Err(ConfigError::Field { field, message, .. }) => (field, message),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn parse_should_accept_the_documented_example_and_match_the_defaults() {
    let loaded = parse(FULL).unwrap();
    assert!(loaded.warnings.is_empty());
    let mut expected = Config::default();
    expected.logs.push(LogEntry {
        path: "/var/log/app/*.log".into(),
        topic: "app".into(),
        exclude: vec![],
        format: Default::default(),
        multiline: None,
        labels: Default::default(),
        include_lines: Default::default(),
        exclude_lines: Default::default(),
        fields: Default::default(),
        throttle: None,
        key: None,
        fallback_topic: None,
        encoding: Default::default(),
        merge_json: None,
    });
    assert_eq!(loaded.config, expected);
}

#[test]
fn parse_should_fill_defaults_for_a_minimal_config() {
    let config = parse("logs: []\n").unwrap().config;
    assert_eq!(config.tail.poll_interval, Duration::from_millis(250));
    assert_eq!(config.tail.rotate_wait, Duration::from_secs(5));
    assert_eq!(config.tail.min_read_interval, Duration::from_millis(750));
    assert_eq!(config.sink.kind, SinkKind::Stdout);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
}

#[test]
fn parse_should_accept_a_rotate_wait_of_zero_and_name_a_bad_one() {
    let config = parse("tail: { rotate_wait: 0s }\n").unwrap().config;
    assert_eq!(config.tail.rotate_wait, Duration::ZERO);
    assert_eq!(
        field_error("tail: { rotate_wait: soon }\n").0,
        "tail.rotate_wait"
    );
}

#[test]
fn parse_should_read_checkpoint_expiry_and_name_a_bad_one() {
    assert_eq!(
        parse("tail: {}\n").unwrap().config.tail.checkpoint_expiry,
        Duration::from_secs(300)
    );
    let config = parse("tail: { checkpoint_expiry: 1h }\n").unwrap().config;
    assert_eq!(config.tail.checkpoint_expiry, Duration::from_secs(3600));
    assert_eq!(
        field_error("tail: { checkpoint_expiry: -1s }\n").0,
        "tail.checkpoint_expiry"
    );
}

#[test]
fn parse_should_read_sizes_given_as_strings() {
    let config = parse("tail: { max_line_bytes: 1MiB }\n").unwrap().config;
    assert_eq!(config.tail.max_line_bytes, 1 << 20);
}

#[test]
fn parse_should_name_the_field_of_an_invalid_topic() {
    let text = "logs:\n  - {path: /a, topic: a}\n  - {path: /b, topic: b}\n  - {path: /c, topic: 'no spaces'}\n";
    let (field, message) = field_error(text);
    assert_eq!(field, "logs[2].topic");
    assert!(message.contains("\"no spaces\""), "{message}");
}

#[test]
fn parse_should_reject_empty_and_overlong_topics() {
    assert_eq!(
        field_error("logs: [{path: /a, topic: ''}]\n").0,
        "logs[0].topic"
    );
    let long = "t".repeat(250);
    let (field, message) = field_error(&format!("logs: [{{path: /a, topic: {long}}}]\n"));
    assert_eq!(field, "logs[0].topic");
    assert!(message.contains("249"));
}

#[test]
fn parse_should_reject_unknown_keys_with_their_path() {
    let (field, message) = field_error("tail: { poll_intervall: 1s }\n");
    assert_eq!(field, "tail.poll_intervall");
    assert!(message.contains("unknown field"), "{message}");
    let (field, _) = field_error("logs: [{path: /a, topic: a, tpoic: b}]\n");
    assert_eq!(field, "logs[0].tpoic");
}

#[test]
fn parse_should_reject_a_bad_duration_with_its_path() {
    let (field, message) = field_error("reconcile: { backoff: { initial: soon } }\n");
    assert_eq!(field, "reconcile.backoff.initial");
    assert!(message.contains("invalid duration"), "{message}");
}

#[test]
fn parse_should_take_an_unquoted_null_kind_as_the_null_sink() {
    assert_eq!(
        parse("sink: { kind: null }\n").unwrap().config.sink.kind,
        SinkKind::Null
    );
    assert_eq!(
        parse("sink: { kind: 'null' }\n").unwrap().config.sink.kind,
        SinkKind::Null
    );
}

#[test]
fn parse_should_reject_an_unknown_sink_kind() {
    let (field, message) = field_error("sink: { kind: carrier-pigeon }\n");
    assert_eq!(field, "sink.kind");
    assert!(message.contains("stdout"), "{message}");
}

#[test]
fn parse_should_reject_bad_listen_address_and_zero_intervals() {
    assert_eq!(
        field_error("http: { listen: 'localhost' }\n").0,
        "http.listen"
    );
    assert_eq!(
        field_error("tail: { poll_interval: 0s }\n").0,
        "tail.poll_interval"
    );
    assert_eq!(
        field_error("tail: { max_line_bytes: 0 }\n").0,
        "tail.max_line_bytes"
    );
    let (field, message) = field_error("tail: { min_read_interval: 1m }\n");
    assert_eq!(field, "tail.min_read_interval");
    assert!(message.contains("at most 10s"), "{message}");
    let zero = parse("tail: { min_read_interval: 0s }\n").unwrap().config;
    assert_eq!(
        zero.tail.min_read_interval,
        Duration::ZERO,
        "0 = every notification"
    );
    assert!(parse("http: { listen: '' }\n")
        .unwrap()
        .config
        .http_listen()
        .is_none());
}

#[test]
fn parse_should_expand_environment_variables_in_every_string() {
    let env = |name: &str| (name == "NODE_NAME").then(|| "node-7".to_string());
    let text = "node: '${NODE_NAME:-}'\nlogs: [{path: '/var/log/${NODE_NAME}/*.log', topic: '${TOPIC:-app}'}]\n";
    let config = Config::parse(text, "t.yaml", &env).unwrap().config;
    assert_eq!(config.node, "node-7");
    assert_eq!(config.logs[0].path, "/var/log/node-7/*.log");
    assert_eq!(config.logs[0].topic, "app");
}

#[test]
fn parse_should_name_the_field_of_an_unset_variable() {
    let (field, message) = field_error("logs: [{path: '/x/${NOPE}', topic: a}]\n");
    assert_eq!(field, "logs[0].path");
    assert!(message.contains("NOPE is not set"), "{message}");
}

#[test]
fn parse_should_accept_exclude_globs_and_name_a_bad_one() {
    let loaded = parse("logs: [{path: '/l/app*', topic: a, exclude: ['/l/*.old']}]\n").unwrap();
    assert_eq!(loaded.config.logs[0].exclude, ["/l/*.old"]);
    let (field, message) = field_error("logs: [{path: /l/a, topic: a, exclude: ['', x]}]\n");
    assert_eq!(
        (field.as_str(), message.as_str()),
        ("logs[0].exclude[0]", "must not be empty")
    );
    let err = parse("logs: [{path: /l/a, topic: a, exclude: /x}]\n").unwrap_err();
    assert!(err.to_string().contains("exclude"), "{err}");
}

#[test]
fn parse_should_accept_the_legacy_seed_format_with_a_warning() {
    let loaded = parse("collectlogs:\n  - logpath: /var/log/a.log\n    logtopic: a\n").unwrap();
    assert_eq!(
        loaded.config.logs,
        vec![LogEntry {
            path: "/var/log/a.log".into(),
            topic: "a".into(),
            exclude: vec![],
            format: Default::default(),
            multiline: None,
            labels: Default::default(),
            include_lines: Default::default(),
            exclude_lines: Default::default(),
            fields: Default::default(),
            throttle: None,
            key: None,
            fallback_topic: None,
            encoding: Default::default(),
            merge_json: None,
        }]
    );
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn parse_should_read_topic_and_key_templates_and_name_the_field_of_a_bad_one() {
    let config = |log: &str| format!("logs:\n  - {{path: /var/log/containers/*.log, {log}}}\n");
    let loaded = parse(&config(
        r#"topic: "k8s-{{namespace}}", fallback_topic: k8s-other, key: "{{pod}}""#,
    ))
    .unwrap();
    let log = &loaded.config.logs[0];
    assert_eq!(log.topic, "k8s-{{namespace}}");
    assert_eq!(log.fallback_topic.as_deref(), Some("k8s-other"));
    assert_eq!(log.key.as_deref(), Some("{{pod}}"));
    // `${ENV}` is expanded at load and leaves `{{…}}` alone.
    let env = |name: &str| (name == "CLUSTER").then(|| "eu1".to_string());
    let text = config(r#"topic: "${CLUSTER}-{{namespace}}", fallback_topic: "${CLUSTER}""#);
    let loaded = Config::parse(&text, "test.yaml", &env).unwrap();
    assert_eq!(loaded.config.logs[0].topic, "eu1-{{namespace}}");
    let cases = [
        (
            r#"topic: "k8s-{{ns}}", fallback_topic: x"#,
            "logs[0].topic",
            "unknown variable {{ns}}",
        ),
        (
            r#"topic: "k8s-{{pod}}""#,
            "logs[0].fallback_topic",
            "must be set when topic is a template",
        ),
        (
            r#"topic: "{{stream}}", fallback_topic: x"#,
            "logs[0].topic",
            "{{stream}} varies",
        ),
        (
            r#"topic: app, key: "{{pod}}}}""#,
            "logs[0].key",
            "without an opening",
        ),
        (r#"topic: app, key: """#, "logs[0].key", "must not be empty"),
    ];
    for (log, field, message) in cases {
        let (got_field, got) = field_error(&config(log));
        assert_eq!(got_field, field, "{log}: {got}");
        assert!(got.contains(message), "{log}: {got}");
    }
}

#[test]
fn parse_should_refuse_empty_files_and_non_mappings_naming_the_file() {
    let err = parse("  \n").unwrap_err().to_string();
    assert_eq!(err, "config test.yaml: the file is empty");
    let err = parse("- a\n- b\n").unwrap_err().to_string();
    assert!(
        err.starts_with("config test.yaml: expected a mapping"),
        "{err}"
    );
    let err = parse("logs: [\n").unwrap_err().to_string();
    assert!(err.starts_with("config test.yaml: invalid YAML"), "{err}");
}

#[test]
fn load_should_name_the_file_it_cannot_read() {
    let err = Config::load(Path::new("/nonexistent/logcatch.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config /nonexistent/logcatch.yaml: cannot read"),
        "{err}"
    );
}

proptest::proptest! {
    /// Arbitrary text never panics the config parser; errors always name the file.
    #[test]
    fn any_text_parses_or_fails_naming_the_file(text in "\\PC{0,300}") {
        if let Err(e) = parse(&text) {
            proptest::prop_assert!(e.to_string().starts_with("config test.yaml"), "{}", e);
        }
    }

    #[test]
    fn yaml_shaped_configs_parse_or_fail_naming_the_field(
        key in "[a-z_]{1,12}",
        value in "[ -~]{0,20}",
        section in proptest::sample::select(vec!["tail", "sink", "reconcile", "http", "etcd"]),
    ) {
        let text = format!("{section}:\n  {key}: {value:?}\n");
        if let Err(e) = parse(&text) {
            proptest::prop_assert!(matches!(e, ConfigError::Field { .. } | ConfigError::Document { .. }), "{}", e);
        }
    }
}

#[test]
fn parse_should_read_format_and_multiline_per_log_entry() {
    let loaded = parse(
        r#"
logs:
  - path: /var/log/containers/*_payments_*.log
    topic: payments
    format: cri
    multiline:
      start_pattern: '^\d{4}-\d{2}-\d{2}'
      max_lines: 200
      max_bytes: 64KiB
      timeout: 500ms
  - path: /var/log/app.log
    topic: app
    multiline: { start_pattern: '^\S' }
"#,
    )
    .unwrap();
    let logs = &loaded.config.logs;
    assert_eq!(logs[0].format, Format::Cri);
    let multiline = logs[0].multiline.as_ref().unwrap();
    assert_eq!(multiline.start_pattern, r"^\d{4}-\d{2}-\d{2}");
    assert_eq!(multiline.max_lines, 200);
    assert_eq!(multiline.max_bytes, 65536);
    assert_eq!(multiline.timeout, std::time::Duration::from_millis(500));
    assert_eq!(logs[1].format, Format::Raw, "raw is the default");
    let defaults = logs[1].multiline.as_ref().unwrap();
    assert_eq!(
        (defaults.max_lines, defaults.max_bytes, defaults.timeout),
        (500, 1 << 20, std::time::Duration::from_secs(1))
    );
}

#[test]
fn parse_should_name_the_field_of_a_bad_format_or_multiline_setting() {
    let entry = |extra: &str| format!("logs:\n  - path: /a.log\n    topic: a\n{extra}");
    let cases = [
        (
            "    format: xml\n",
            "logs[0].format",
            "unknown variant `xml`",
        ),
        (
            "    multiline: { start_pattern: '(' }\n",
            "logs[0].multiline.start_pattern",
            "invalid regex",
        ),
        (
            "    multiline: { start_pattern: '' }\n",
            "logs[0].multiline.start_pattern",
            "must not be empty",
        ),
        (
            "    multiline: { start_pattern: x, max_lines: 0 }\n",
            "logs[0].multiline.max_lines",
            "at least 1",
        ),
        (
            "    multiline: { start_pattern: x, max_bytes: lots }\n",
            "logs[0].multiline.max_bytes",
            "invalid size",
        ),
        (
            "    multiline: { start_pattern: x, timeout: 0s }\n",
            "logs[0].multiline.timeout",
            "greater than 0",
        ),
        (
            "    multiline: { start_pattern: x, timeout: soon }\n",
            "logs[0].multiline.timeout",
            "invalid duration",
        ),
        (
            "    multiline: { pattern: x }\n",
            "logs[0].multiline.pattern",
            "unknown field `pattern`",
        ),
    ];
    for (extra, field, message) in cases {
        let (f, m) = field_error(&entry(extra));
        assert_eq!(f, field, "{extra}");
        assert!(m.contains(message), "{extra}: {m}");
    }
}

#[test]
fn parse_should_refuse_an_in_flight_budget_of_4_gib_or_more() {
    // The budget is a semaphore whose permits are taken 32 bits at a time: at 4 GiB a
    // flush would wait for nothing.
    let kafka = |budget: &str| {
        format!(
            "sink:\n  kind: kafka\n  kafka:\n    brokers: [\"127.0.0.1:9092\"]\n    max_in_flight_bytes: {budget}\n"
        )
    };
    let (field, message) = field_error(&kafka("4GiB"));
    assert_eq!(field, "sink.kafka.max_in_flight_bytes");
    assert!(message.contains("less than 4GiB"), "{message}");
    assert!(parse(&kafka("3GiB")).is_ok());
}

#[test]
fn parse_should_refuse_a_max_message_bytes_too_small_for_a_records_headers() {
    let kafka = |size: &str| {
        format!(
            "sink:\n  kind: kafka\n  kafka:\n    brokers: [\"127.0.0.1:9092\"]\n    max_message_bytes: {size}\n"
        )
    };
    let (field, message) = field_error(&kafka("100"));
    assert_eq!(field, "sink.kafka.max_message_bytes");
    assert!(message.contains("at least 1024 bytes"), "{message}");
    assert!(parse(&kafka("0")).is_ok(), "0 asks the broker");
    assert!(parse(&kafka("1KiB")).is_ok());
}

#[test]
fn parse_should_read_line_filters_and_fields_with_environment_variables() {
    let env = |name: &str| (name == "CLUSTER").then(|| "prod-eu".to_string());
    let text = r#"
fields: { cluster: "${CLUSTER}", env: production }
logs:
  - path: /var/log/containers/web_shop_nginx-0123.log
    topic: k8s
    format: cri
    include_lines: ['^\{', 'level=(warn|error)']
    exclude_lines: ['kube-probe/', 'GET /healthz']
    fields: { env: staging, team: shop }
"#;
    let config = Config::parse(text, "t.yaml", &env).unwrap().config;
    let global: Vec<_> = config
        .fields
        .iter()
        .map(|(k, v)| (&k[..], &v[..]))
        .collect();
    assert_eq!(global, [("cluster", "prod-eu"), ("env", "production")]);
    let log = &config.logs[0];
    assert_eq!(log.include_lines, ["^\\{", "level=(warn|error)"]);
    assert_eq!(log.exclude_lines, ["kube-probe/", "GET /healthz"]);
    assert_eq!(log.fields["env"], "staging");
    // The declaration's fields over the global ones, as its tailers get them.
    let settings = crate::spec::TailerSettings::of(&config);
    let specs = crate::source::config_file::specs(&config.logs);
    let source: crate::spec::SourceId = "config".into();
    let (desired, _) = crate::spec::expand([(&source, &specs[..])], &settings, Path::new("/"));
    // A plain path is desired whether or not the file exists.
    let tailer = desired.values().next().expect("one tailer");
    let merged: Vec<_> = tailer
        .settings
        .fields
        .iter()
        .map(|(k, v)| (&k[..], &v[..]))
        .collect();
    assert_eq!(
        merged,
        [("cluster", "prod-eu"), ("env", "staging"), ("team", "shop")]
    );
    assert_eq!(tailer.settings.filters.exclude_lines, log.exclude_lines);
}

#[test]
fn parse_should_name_the_field_of_a_bad_line_filter_or_field() {
    let entry = |extra: &str| format!("logs:\n  - path: /a.log\n    topic: a\n{extra}");
    let cases = [
        (
            entry("    exclude_lines: [ok, '[z-a]']\n"),
            "logs[0].exclude_lines[1]",
            "invalid regex",
        ),
        (
            entry("    include_lines: ['']\n"),
            "logs[0].include_lines[0]",
            "must not be empty",
        ),
        (
            entry("    include_lines: GET\n"),
            "logs[0].include_lines",
            "expected a sequence",
        ),
        (
            entry("    fields: { replicas: 3 }\n"),
            "logs[0].fields.replicas",
            "expected a string",
        ),
        (
            entry("    fields: { label.owner: x }\n"),
            "logs[0].fields.label.owner",
            "reserved",
        ),
        (
            entry("    fields: { '': x }\n"),
            "logs[0].fields",
            "must not be empty",
        ),
        (
            "fields: { logcatch.node: x }\n".to_string(),
            "fields.logcatch.node",
            "reserved",
        ),
        (
            "fields: { k8s.namespace: x }\n".to_string(),
            "fields.k8s.namespace",
            "reserved",
        ),
        (
            "fields: { cluster: \"a\\nb\" }\n".to_string(),
            "fields.cluster",
            "control characters",
        ),
        (
            "fields: { cluster: '${NOPE}' }\n".to_string(),
            "fields.cluster",
            "NOPE is not set",
        ),
        (
            "fields: [cluster]\n".to_string(),
            "fields",
            "expected a map",
        ),
    ];
    for (text, field, message) in cases {
        let (f, m) = field_error(&text);
        assert_eq!(f, field, "{text}");
        assert!(m.contains(message), "{text}: {m}");
    }
}

#[test]
fn parse_should_read_a_log_entrys_throttle_and_name_its_bad_fields() {
    let loaded = parse(
        "logs:\n  - path: /var/log/containers/*.log\n    topic: k8s\n    throttle: { lines_per_s: 500, bytes_per_s: 1MiB, burst: 2s, per: container, on_limit: drop }\n",
    )
    .unwrap();
    let throttle = loaded.config.logs[0].throttle.as_ref().unwrap();
    assert_eq!(throttle.lines_per_s, Some(500));
    assert_eq!(throttle.bytes_per_s, Some(1 << 20));
    assert_eq!(throttle.burst, Duration::from_secs(2));
    assert_eq!(throttle.per, crate::throttle::Per::Container);
    assert_eq!(throttle.on_limit, crate::throttle::OnLimit::Drop);
    let entry = |throttle: &str| {
        format!("logs:\n  - {{ path: /a.log, topic: a }}\n  - path: /b.log\n    topic: b\n    throttle: {throttle}\n")
    };
    let cases = [
        (
            "{ burst: 2s }",
            "logs[1].throttle",
            "set lines_per_s, bytes_per_s or both",
        ),
        (
            "{ lines_per_s: 0 }",
            "logs[1].throttle.lines_per_s",
            "must be at least 1",
        ),
        (
            "{ bytes_per_s: lots }",
            "logs[1].throttle.bytes_per_s",
            "invalid size",
        ),
        (
            "{ lines_per_s: 1, burst: 0s }",
            "logs[1].throttle.burst",
            "must be greater than 0",
        ),
        (
            "{ lines_per_s: 1, per: pod }",
            "logs[1].throttle.per",
            "unknown variant `pod`",
        ),
        (
            "{ lines_per_s: 1, on_limit: block }",
            "logs[1].throttle.on_limit",
            "unknown variant `block`",
        ),
    ];
    for (throttle, field, message) in cases {
        let (got_field, got_message) = field_error(&entry(throttle));
        assert_eq!(got_field, field, "{throttle}: {got_message}");
        assert!(got_message.contains(message), "{throttle}: {got_message}");
    }
}

#[test]
fn parse_should_read_a_log_entrys_encoding_and_name_a_bad_one() {
    let loaded = parse(
        "logs:\n  - path: /var/log/containers/*.log\n    topic: k8s\n    encoding: json\n    merge_json: log\n  - { path: /b.log, topic: b }\n",
    )
    .unwrap();
    let logs = &loaded.config.logs;
    assert_eq!(logs[0].encoding, crate::encoding::Encoding::Json);
    assert_eq!(logs[0].merge_json.as_deref(), Some("log"));
    assert_eq!(
        logs[1].encoding,
        crate::encoding::Encoding::Raw,
        "the default"
    );
    let entry = |extra: &str| {
        format!(
            "logs:\n  - {{ path: /a.log, topic: a }}\n  - {{ path: /b.log, topic: b, {extra} }}\n"
        )
    };
    let cases = [
        (
            "encoding: avro",
            "logs[1].encoding",
            "unknown variant `avro`",
        ),
        (
            "merge_json: log",
            "logs[1].merge_json",
            "applies only with encoding: json",
        ),
        (
            "encoding: json, merge_json: ''",
            "logs[1].merge_json",
            "must not be empty",
        ),
        (
            "encoding: json, merge_json: offset",
            "logs[1].merge_json",
            "\"offset\" is a member the agent writes",
        ),
        (
            "encoding: json, merge_json: [a]",
            "logs[1].merge_json",
            "invalid type",
        ),
    ];
    for (extra, field, message) in cases {
        let (got_field, got_message) = field_error(&entry(extra));
        assert_eq!(got_field, field, "{extra}: {got_message}");
        assert!(got_message.contains(message), "{extra}: {got_message}");
    }
}
