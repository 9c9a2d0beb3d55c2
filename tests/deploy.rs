//! The deployment files: every manifest passes the Kubernetes schemas offline
//! (`kubernetes-validate --strict`), the ConfigMap's config passes `logcatch check`, the
//! alerts pass `promtool check rules` and their unit tests, and the Dockerfile passes
//! hadolint. A missing tool is a failure with the install hint, never a skip.

mod common;

use common::servers::tool;
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
    let cm = &yaml_docs(&deploy("configmap.yaml"))[0];
    cm["data"]["logcatch.yaml"].as_str().unwrap().to_string()
}

#[test]
fn the_configmap_config_passes_logcatch_check_with_the_pod_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logcatch.yaml");
    std::fs::write(&config, configmap_config()).unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["check", "--config"])
        .arg(&config)
        .env("NODE_NAME", "node-1")
        .env("ETCD_USERNAME", "logcatch")
        .env("KAFKA_USERNAME", "logcatch"));
    let text = String::from_utf8_lossy(&out.stdout);
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
