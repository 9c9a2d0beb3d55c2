//! The deployment files: every manifest passes the Kubernetes schemas offline
//! (`kubernetes-validate --strict`), the ConfigMap's config passes `logcatch check`, the
//! alerts pass `promtool check rules` and their unit tests, and the Dockerfile passes
//! hadolint. A missing tool is a failure with the install hint, never a skip.

mod common;

use common::servers::{tool, Broker};
use common::{append_lines, http_get, wait_for, Workspace};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(name: &str) -> PathBuf {
    repo().join("deploy").join(name)
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn yaml_docs(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

/// The kustomization's resources, in order.
fn kustomization_resources() -> Vec<String> {
    let docs = yaml_docs(&deploy("kustomization.yaml"));
    docs[0]["resources"]
        .as_sequence()
        .expect("resources: [...]")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// Manifests of kinds the bundled Kubernetes schemas know (everything but CRD kinds).
fn core_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = kustomization_resources()
        .iter()
        .map(|r| deploy(r))
        .filter(|p| {
            yaml_docs(p)
                .iter()
                .all(|d| !d["apiVersion"].as_str().unwrap().contains(".coreos.com/"))
        })
        .collect();
    files.push(deploy("secrets.example.yaml"));
    files.push(deploy("examples/configmap-container-logs.yaml"));
    files
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas_strictly() {
    let validate = tool("kubernetes-validate", "KUBERNETES_VALIDATE_BIN");
    let files = core_manifests();
    let out = run(Command::new(validate).arg("--strict").args(&files));
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !report.contains("WARN") && !report.contains("ERROR"),
        "{report}"
    );
    for file in &files {
        for doc in yaml_docs(file) {
            let name = doc["metadata"]["name"].as_str().unwrap();
            let kind = doc["kind"].as_str().unwrap().to_lowercase();
            assert!(
                report.contains(&format!("passed for resource {kind}/{name}")),
                "{} {kind}/{name} not validated:\n{report}",
                file.display()
            );
        }
    }
}

#[test]
fn the_kustomization_lists_every_manifest_and_only_existing_files() {
    let resources = kustomization_resources();
    for resource in &resources {
        assert!(deploy(resource).is_file(), "{resource} is missing");
    }
    for entry in std::fs::read_dir(repo().join("deploy")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let expected = name.ends_with(".yaml")
            && name != "kustomization.yaml"
            && !name.ends_with(".example.yaml");
        assert_eq!(
            resources.contains(&name),
            expected,
            "deploy/{name}: listed in kustomization.yaml = {}",
            resources.contains(&name)
        );
    }
    let monitor = &yaml_docs(&deploy("podmonitor.yaml"))[0];
    assert_eq!(monitor["kind"], "PodMonitor");
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["port"],
        daemonset()["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]
    );
}

fn daemonset() -> serde_yaml::Value {
    yaml_docs(&deploy("daemonset.yaml")).remove(0)
}

/// The config inside the ConfigMap, as the pod sees it.
fn configmap_config() -> String {
    config_in(&deploy("configmap.yaml"))
}

fn config_in(configmap: &Path) -> String {
    let cm = &yaml_docs(configmap)[0];
    cm["data"]["logcatch.yaml"].as_str().unwrap().to_string()
}

/// `logcatch check` on a config with the pod's environment; its stdout.
fn check_with_pod_env(config: &Path) -> String {
    let out = run(Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["check", "--config"])
        .arg(config)
        .env("NODE_NAME", "node-1")
        .env("ETCD_USERNAME", "logcatch")
        .env("KAFKA_USERNAME", "logcatch"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_container_logs_examples_pass_logcatch_check_and_the_etcd_value_parser() {
    let example = deploy("examples/configmap-container-logs.yaml");
    let text = config_in(&example);
    // The same agent settings as the production ConfigMap; only logs and comments differ.
    let settings = |text: &str| {
        let mut config: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        config.as_mapping_mut().unwrap().remove("logs");
        config
    };
    assert_eq!(settings(&text), settings(&configmap_config()));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logcatch.yaml");
    std::fs::write(&config, &text).unwrap();
    let out = check_with_pod_env(&config);
    assert!(out.contains(": ok"), "{out}");
    let loaded = logcatch::config::Config::parse(&text, "example", &|_| Some("x".into()))
        .unwrap()
        .config;
    let formats: Vec<_> = loaded.logs.iter().map(|l| l.format).collect();
    assert_eq!(formats, [logcatch::format::Format::Cri; 2]);
    assert!(loaded.logs[1].multiline.is_some());
    assert!(
        loaded
            .etcd
            .allowed_paths
            .iter()
            .any(|glob| globset::Glob::new(glob)
                .unwrap()
                .compile_matcher()
                .is_match("/var/log/pods/ns_pod_uid/c/0.log")),
        "etcd-declared container logs resolve into /var/log/pods"
    );

    // The etcd value example is what `logcatch etcd put` accepts.
    let value = std::fs::read(deploy("examples/container-logs.etcd.json")).unwrap();
    let specs = logcatch::source::etcd::value::parse("/logcatch/all", &value).unwrap();
    assert_eq!(specs.len(), 2);
    assert!(specs[0].parsing.multiline.is_some());
}

#[test]
fn the_configmap_config_passes_logcatch_check_with_the_pod_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logcatch.yaml");
    std::fs::write(&config, configmap_config()).unwrap();
    let text = check_with_pod_env(&config);
    assert!(text.contains(": ok"), "{text}");

    // The pod sets every variable the config uses, NODE_NAME from spec.nodeName.
    let ds = daemonset();
    let env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .clone();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(
        var("NODE_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    for name in ["ETCD_USERNAME", "KAFKA_USERNAME"] {
        assert!(var(name).is_some(), "{name} is not set in the DaemonSet");
    }
    // Unset variables are an error: prove the check above depended on them.
    let out = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["check", "--config"])
        .arg(&config)
        .env_remove("NODE_NAME")
        .env("ETCD_USERNAME", "logcatch")
        .env("KAFKA_USERNAME", "logcatch")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NODE_NAME"));
}

#[test]
fn the_daemonset_mounts_what_the_config_names_and_outlives_shutdown_timeout() {
    let config: serde_yaml::Value = serde_yaml::from_str(&configmap_config()).unwrap();
    let ds = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    let shutdown: Duration =
        humantime::parse_duration(config["shutdown_timeout"].as_str().unwrap()).unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > shutdown.as_secs() + 5,
        "grace {grace}s vs shutdown_timeout {shutdown:?}"
    );

    let mounts: Vec<(String, bool)> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_string(),
                m["readOnly"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let mounted = |path: &str| {
        mounts
            .iter()
            .find(|(dir, _)| Path::new(path).starts_with(dir))
            .unwrap_or_else(|| panic!("{path} is not on a volume: {mounts:?}"))
            .1
    };
    // The config file the container runs with, the files the config names, the logs.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(mounted(args[args.len() - 1]));
    for file in [
        &config["etcd"]["password_file"],
        &config["etcd"]["tls"]["ca_file"],
        &config["etcd"]["tls"]["cert_file"],
        &config["sink"]["kafka"]["tls"]["ca_file"],
        &config["sink"]["kafka"]["sasl"]["password_file"],
    ] {
        assert!(
            mounted(file.as_str().unwrap()),
            "{file:?} must be read-only"
        );
    }
    assert!(mounted("/var/log/pods/x.log"), "/var/log must be read-only");
    let state = config["state_dir"].as_str().unwrap();
    assert!(!mounted(state), "{state} must be writable");
    assert_eq!(config["http"]["listen"], "0.0.0.0:9733");
    assert_eq!(container["ports"][0]["containerPort"], 9733);

    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(
        security["capabilities"],
        serde_yaml::from_str::<serde_yaml::Value>("{drop: [ALL], add: [DAC_READ_SEARCH]}").unwrap()
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
}

#[test]
fn the_alerts_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("promtool", "PROMTOOL_BIN");
    run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yaml")));
    let out = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(deploy("prometheus/alerts_test.yaml")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = tool("hadolint", "HADOLINT_BIN");
    run(Command::new(hadolint).current_dir(repo()).args([
        "--config",
        ".hadolint.yaml",
        "Dockerfile",
    ]));
}

/// Every `logcatch_*` name in a file (PromQL in alerts and dashboard).
fn metric_names_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("logcatch_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if name.len() > "logcatch_".len() {
            names.insert(name);
        }
    }
    names
}

/// The sample names in the agent's `/metrics` (histograms as `_bucket`, `_sum`, `_count`).
fn exposed_names(port: u16) -> BTreeSet<String> {
    let (code, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Scrapes `port` until every name in `wanted` that `owned` says this agent can show
/// is exposed; returns what it exposes.
fn scrape_until(port: u16, wanted: &BTreeSet<String>, owned: &[&str]) -> BTreeSet<String> {
    wait_for(&format!("{owned:?} in /metrics"), LONG, || {
        let exposed = exposed_names(port);
        owned
            .iter()
            .filter(|name| wanted.contains(**name))
            .all(|name| exposed.contains(*name))
            .then_some(exposed)
    })
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn every_metric_in_the_alerts_and_the_dashboard_exists_in_metrics() {
    let mut wanted = metric_names_in(&deploy("prometheus/alerts.yaml"));
    wanted.extend(metric_names_in(&deploy("grafana/logcatch.json")));
    assert!(wanted.len() >= 10, "{wanted:?}");

    // Agent A, file sink: lines flow, a directory given as a log path keeps failing
    // (backoff, restarts), a line is over max_line_bytes, and a container log has a
    // malformed line and a multiline record over max_lines. Labelled counters appear
    // only once they have moved.
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, (0..100).map(|i| format!("line {i}")));
    append_lines(&log, ["x".repeat(1_100_000)]);
    std::fs::create_dir(ws.path("a-directory")).unwrap();
    let cri = ws.path("cri.log");
    let at = "2026-11-26T00:00:00.000000000Z stdout F";
    append_lines(
        &cri,
        [
            format!("{at} Start 1"),
            format!("{at}  continued"),
            "not a CRI line".to_string(),
            format!("{at} Start 2"),
        ],
    );
    let logs = format!(
        "  - {{ path: {}, topic: app }}\n  - {{ path: {}, topic: broken }}\n  \
         - {{ path: {}, topic: pods, format: cri, multiline: {{ start_pattern: '^S', max_lines: 1, timeout: 100ms }} }}",
        log.display(),
        ws.path("a-directory").display(),
        cri.display()
    );
    ws.write_config(&ws.config(&logs));
    let agent = ws.start();
    ws.wait_records(101, LONG);
    let mut exposed = scrape_until(
        agent.http_port,
        &wanted,
        &[
            "logcatch_tailer_restarts_total",
            "logcatch_checkpoint_writes_total",
            "logcatch_records_sent_total",
            "logcatch_lines_truncated_total",
            "logcatch_parse_errors_total",
            "logcatch_multiline_cut_total",
        ],
    );

    // Agent B, Kafka sink: a topic the broker does not have is a send error.
    let broker = Broker::start_memory();
    let ws_b = Workspace::new();
    let log_b = ws_b.path("app.log");
    append_lines(&log_b, (0..10).map(|i| format!("line {i}")));
    let sink = format!(
        "  kind: kafka\n  kafka:\n    brokers: [\"{}\"]\n    request_timeout: 5s",
        broker.address()
    );
    let missing = format!("missing-{}", std::process::id());
    let logs_b = format!("  - {{ path: {}, topic: {missing} }}", log_b.display());
    ws_b.write_config(&ws_b.config_with_sink(&logs_b, &sink));
    let agent_b = ws_b.start();
    exposed.extend(scrape_until(
        agent_b.http_port,
        &wanted,
        &["logcatch_send_errors_total"],
    ));

    let missing: Vec<&String> = wanted.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not in /metrics: {missing:?}\nexposed: {exposed:?}"
    );
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses PromQL in rule files: wrap each panel query in a recording rule,
    // with Grafana's variables replaced by values.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/logcatch.json")).unwrap())
            .unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut count = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$pod", ".*");
            rules += &format!(
                "      - record: dashboard:query_{count}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            );
            count += 1;
        }
    }
    assert!(count >= 15, "{count} queries");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let out = run(Command::new(tool("promtool", "PROMTOOL_BIN"))
        .args(["check", "rules"])
        .arg(&file));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
}
