//! `logcatch check` and argument handling.

mod common;

use common::logcatch;
use std::process::Command;

#[test]
fn check_prints_the_desired_tailers_after_glob_expansion() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    for name in ["a.log", "b.log"] {
        std::fs::write(dir.path().join("logs").join(name), "x\n").unwrap();
    }
    std::fs::write(
        dir.path().join("c.yaml"),
        "logs:\n  - { path: 'logs/*.log', topic: app }\n  - { path: /nonexistent/x.log, topic: other, format: cri, multiline: { start_pattern: '^\\S' } }\n",
    )
    .unwrap();
    let (code, out, err) = logcatch(&["check", "--config", "c.yaml"], dir.path());
    assert_eq!(code, 0, "{err}");
    let root = dir.path().canonicalize().unwrap();
    assert!(
        out.contains(&format!(
            "app    -    exists    raw               {}/logs/a.log",
            root.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "app    -    exists    raw               {}/logs/b.log",
            root.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("other  -    waiting   cri+multiline     /nonexistent/x.log"),
        "{out}"
    );
}

#[test]
fn check_prints_each_tailers_key_and_fields_as_far_as_they_do_not_depend_on_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let id = "0123456789abcdef".repeat(4);
    let web = format!("/var/log/containers/web-1_shop_nginx-{id}.log");
    std::fs::write(
        dir.path().join("c.yaml"),
        format!(
            "node: node-7\nfields: {{ cluster: eu1, env: prod }}\nsink: {{ kind: kafka, kafka: {{ brokers: [\"k:9092\"], key: path }} }}\nlogs:\n  - {{ path: '{web}', topic: 'k8s-{{{{namespace}}}}', fallback_topic: k8s-other, key: '{{{{pod}}}}-{{{{stream}}}}', fields: {{ env: staging, team: shop }} }}\n  - {{ path: /nonexistent/plain.log, topic: plain }}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = logcatch(&["check", "--config", "c.yaml"], dir.path());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let row = |path: &str| {
        let at = lines
            .iter()
            .position(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{out}"));
        (lines[at], lines.get(at + 1).copied().unwrap_or(""))
    };
    // The topic rendered, the key as far as the record does not matter, the fields merged.
    let (web_row, web_fields) = row(&web);
    assert!(web_row.starts_with("k8s-shop  web-1-{{stream}}  "), "{out}");
    assert_eq!(
        web_fields, "  fields: cluster=eu1 env=staging team=shop",
        "{out}"
    );
    // No key template: `sink.kafka.key: path` gives the path.
    let (plain_row, plain_fields) = row("/nonexistent/plain.log");
    assert!(
        plain_row.starts_with("plain     /nonexistent/plain.log  waiting"),
        "{out}"
    );
    assert_eq!(plain_fields, "  fields: cluster=eu1 env=prod", "{out}");
}

#[test]
fn check_fails_with_the_file_and_field_of_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "logs:\n  - { path: /a, topic: ok }\n  - { path: /b, topic: 'bad topic' }\n",
    )
    .unwrap();
    let (code, _, err) = logcatch(&["check", "--config", "c.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("config c.yaml: logs[1].topic: topic \"bad topic\""),
        "{err}"
    );
}

#[test]
fn check_reads_the_config_path_from_the_environment_and_warns_on_legacy_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("legacy.yaml"),
        "collectlogs:\n  - { logpath: /var/log/a.log, logtopic: a }\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .arg("check")
        .env("LOGCATCH_CONFIG", dir.path().join("legacy.yaml"))
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("legacy key `collectlogs` is deprecated"),
        "{err}"
    );
    assert!(out.contains("/var/log/a.log"), "{out}");
}

#[test]
fn unknown_arguments_and_missing_config_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = logcatch(&["run", "--confg", "x"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--confg"), "{err}");
    let (code, _, err) = logcatch(&["run", "--config", "missing.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("config missing.yaml: cannot read"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let (code, out, _) = logcatch(&["--version"], dir.path());
    assert_eq!(code, 0);
    assert!(out.starts_with("logcatch "), "{out}");
}

/// The Go system's own config.yaml, as its users keep it: `catsyslog`, and `etcdkeys` with
/// every entry commented out (a null list), which that system reads as "no keys".
#[test]
fn check_accepts_the_seed_config_file_with_its_empty_lists_and_extra_sections() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed-config.yaml"
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = logcatch(&["check", "--config", seed], dir.path());
    assert_eq!(code, 0, "{err}");
    for key in [
        "collectlogs",
        "etcdkeys",
        "etcdconfig",
        "kafkaconfig",
        "catsyslog",
    ] {
        assert!(err.contains(&format!("legacy key `{key}`")), "{key}: {err}");
    }
    assert!(out.contains("/var/log/logdir2/log.txt"), "{out}");
    assert!(out.contains("/var/log/logdir3/log.txt"), "{out}");
    assert!(!out.contains("logdir1"), "the commented-out entry: {out}");

    // Every list of the seed format commented out, every section left empty.
    std::fs::write(
        dir.path().join("empty.yaml"),
        "catsyslog:\ncollectlogs:\n#  - logpath: /var/log/a.log\n#    logtopic: a\n\
         etcdkeys:\n  #- \"collectlogkey1\"\netcdconfig:\n  #- \"localhost:2379\"\nkafkaconfig:\n",
    )
    .unwrap();
    let (code, _, err) = logcatch(&["check", "--config", "empty.yaml"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("legacy key `etcdkeys`"), "{err}");
}
