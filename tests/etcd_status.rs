//! The status agents write back to etcd (`etcd.status`) and `logcatch etcd status`:
//! real etcd, real agent binaries, the file sink.

mod common;

use common::servers::Etcd;
use common::{append_lines, metric_sum, wait_for, Agent, Workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);
const KEY: &str = "/lc/node";

/// A directory with symlinks resolved (the allow-list compares resolved paths).
fn real(path: &Path) -> PathBuf {
    path.canonicalize().unwrap()
}

/// The config of an agent named `node` watching [`KEY`], allowed to tail under
/// `allowed`, writing its status every 300 ms under a 2 s lease unless `extra` (more of
/// the `etcd:` section) says otherwise.
fn config(ws: &Workspace, etcd: &Etcd, node: &str, allowed: &Path, extra: &str) -> String {
    let config = format!(
        "{}etcd:\n  endpoints: [\"{}\"]\n  keys: [\"{KEY}\"]\n  allowed_paths: [\"{}/**\"]\n  dial_timeout: 1s\n  request_timeout: 2s\n{extra}",
        ws.config("  []").replace("node: test-node", &format!("node: {node}")),
        etcd.endpoint,
        allowed.display(),
    );
    if extra.contains("status:") {
        config
    } else {
        format!("{config}  status: {{ interval: 300ms, lease_ttl: 2s }}\n")
    }
}

fn start(ws: &Workspace, etcd: &Etcd, node: &str, allowed: &Path, extra: &str) -> Agent {
    ws.write_config(&config(ws, etcd, node, allowed, extra));
    ws.start()
}

fn put(etcd: &Etcd, entries: &[(&Path, &str)]) -> i64 {
    let value: Vec<Value> = entries
        .iter()
        .map(|(path, topic)| serde_json::json!({"path": path, "topic": topic}))
        .collect();
    etcd.etcdctl(&["put", KEY, &Value::Array(value).to_string()])
        .unwrap();
    revision(etcd, KEY).expect("the key just written")
}

/// `key`'s etcd metadata (`etcdctl get -w json`): mod_revision, version, lease.
fn meta(etcd: &Etcd, key: &str) -> Option<Value> {
    let out = etcd.etcdctl(&["get", key, "-w", "json"]).unwrap();
    let response: Value = serde_json::from_str(&out).unwrap();
    response["kvs"].as_array()?.first().cloned()
}

fn revision(etcd: &Etcd, key: &str) -> Option<i64> {
    meta(etcd, key).map(|kv| kv["mod_revision"].as_i64().unwrap())
}

fn status_key(node: &str) -> String {
    format!("/logcatch/status/{node}/{KEY}")
}

/// The status `node` wrote for [`KEY`].
fn report(etcd: &Etcd, node: &str) -> Option<Value> {
    let out = etcd
        .etcdctl(&["get", &status_key(node), "--print-value-only"])
        .unwrap();
    let text = out.trim();
    (!text.is_empty()).then(|| serde_json::from_str(text).unwrap())
}

fn file_states(report: &Value, entry: usize) -> Vec<(String, String)> {
    report["entries"][entry]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let field = |n: &str| f[n].as_str().unwrap().to_string();
            (field("path"), field("state"))
        })
        .collect()
}

/// Appends `line` and waits until the sink has it.
fn shipped(ws: &Workspace, path: &Path, line: &str) {
    append_lines(path, [line.to_string()]);
    wait_for(&format!("{line} shipped"), LONG, || {
        ws.records().iter().any(|r| r.line == line).then_some(())
    });
}

/// Waits until `/status` `status_publish` is in `state`; returns it.
fn publish_state(agent: &Agent, state: &str) -> Value {
    wait_for(&format!("status_publish {state}"), LONG, || {
        let publish = agent.status()["status_publish"].clone();
        (publish["state"] == state).then_some(publish)
    })
}

/// A workspace with a logs dir and `app.log` in it (not created), declared on topic
/// `app` at [`KEY`]: the workspace, the logs dir, the file and the key's revision.
fn one_log(etcd: &Etcd) -> (Workspace, PathBuf, PathBuf, i64) {
    let ws = Workspace::new();
    let logs = real(ws.dir.path()).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let revision = put(etcd, &[(&app, "app")]);
    (ws, logs, app, revision)
}

/// Waits until `node`'s status reports `revision` observed.
fn observed(etcd: &Etcd, node: &str, revision: i64) {
    wait_for(
        &format!("{node} to observe revision {revision}"),
        LONG,
        || (report(etcd, node)?["observed_revision"] == revision).then_some(()),
    );
}

fn logcatch(args: &[&str]) -> (i32, String, String) {
    common::logcatch(args, Path::new("/"))
}

#[test]
fn each_node_writes_its_status_under_a_lease_and_the_cli_gathers_it() {
    let etcd = Etcd::start();
    let shared = tempfile::tempdir().unwrap();
    let logs = real(shared.path()).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (app, missing) = (logs.join("app.log"), logs.join("missing.log"));
    append_lines(&app, ["one".to_string()]);
    let revision = put(&etcd, &[(&app, "app"), (&missing, "app")]);
    let (ws_a, ws_b) = (Workspace::new(), Workspace::new());
    // node-a may tail the shared logs; node-b's allow-list refuses them.
    let a = start(&ws_a, &etcd, "node-a", &logs, "");
    let b = start(&ws_b, &etcd, "node-b", Path::new("/nonexistent"), "");

    let report_a = wait_for("node-a's status", LONG, || {
        let report = report(&etcd, "node-a")?;
        let running = file_states(&report, 0) == [(app.display().to_string(), "running".into())];
        running.then_some(report)
    });
    assert_eq!(report_a["node"], "node-a");
    assert_eq!(report_a["key"], KEY);
    assert_eq!(report_a["observed_revision"], revision);
    assert_eq!(report_a["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        file_states(&report_a, 1),
        [(missing.display().to_string(), "waiting".into())]
    );
    let lease = meta(&etcd, &status_key("node-a")).unwrap()["lease"].clone();
    assert!(
        lease.as_i64().is_some_and(|l| l != 0),
        "held under a lease: {lease}"
    );
    let status_a = a.status();
    assert_eq!(
        status_a["status_publish"]["state"], "publishing",
        "{status_a}"
    );
    assert_eq!(status_a["status_publish"]["lease_id"], lease);
    assert_eq!(
        metric_sum(a.http_port, "logcatch_etcd_status_published"),
        1.0
    );

    let report_b = wait_for("node-b's refusal", LONG, || {
        let report = report(&etcd, "node-b")?;
        (report["entries"][0]["refused"][0]["rule"] == "allowed_paths").then_some(report)
    });
    assert!(report_b["entries"][0]["files"]
        .as_array()
        .unwrap()
        .is_empty());

    // Gathered across nodes: node-b reports an error, so the command fails.
    let endpoints = format!("--endpoints={}", etcd.endpoint);
    let (code, out, err) = logcatch(&["etcd", "status", KEY, &endpoints]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "key {KEY} (revision {revision}): 2 nodes, 2 synced, 1 failing\n"
        )),
        "{out}"
    );
    let row = |node: &str| {
        out.lines()
            .find(|l| l.starts_with(node))
            .unwrap()
            .to_string()
    };
    let columns =
        |row: String| -> Vec<String> { row.split_whitespace().map(String::from).collect() };
    // NODE OBSERVED SEEN SHIPPING FAILING NO-FILE FILES
    assert_eq!(
        columns(row("node-a")),
        [
            "node-a",
            &revision.to_string(),
            "synced",
            "1/2",
            "0",
            "1",
            "2"
        ]
    );
    assert_eq!(
        columns(row("node-b")),
        [
            "node-b",
            &revision.to_string(),
            "synced",
            "0/2",
            "2",
            "0",
            "0"
        ]
    );
    assert!(
        out.contains(&format!(
            "error: node-b: {} -> app: {}: refused by allowed_paths",
            app.display(),
            app.display()
        )),
        "{out}"
    );
    assert!(
        err.contains("1 of 2 nodes report errors for etcd key /lc/node"),
        "{err}"
    );
    let (code, out, err) = logcatch(&["etcd", "status", KEY, &endpoints, "-o", "json"]);
    assert_eq!(code, 1, "{err}");
    let gathered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(gathered["revision"], revision);
    let nodes: Vec<&str> = gathered["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["node-a", "node-b"]);
    assert_eq!(gathered["nodes"][0]["report"], report_a);
    let (code, out, err) = logcatch(&["etcd", "status", KEY, &endpoints, "--node", "node-a"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 node, 1 synced, 0 failing"), "{out}");

    // The observed revision follows a put.
    let revision = put(&etcd, &[(&app, "app")]);
    wait_for("node-a to observe the put", LONG, || {
        let report = report(&etcd, "node-a")?;
        (report["observed_revision"] == revision && report["entries"].as_array()?.len() == 1)
            .then_some(())
    });

    // A deleted declaration takes its status with it.
    etcd.etcdctl(&["del", KEY]).unwrap();
    wait_for("both statuses to go with the key", LONG, || {
        (report(&etcd, "node-a").is_none() && report(&etcd, "node-b").is_none()).then_some(())
    });

    // A killed node's status expires with its lease; one stopped cleanly revokes it.
    put(&etcd, &[(&app, "app")]);
    wait_for("both statuses back", LONG, || {
        (report(&etcd, "node-a").is_some() && report(&etcd, "node-b").is_some()).then_some(())
    });
    a.kill9();
    let killed = Instant::now();
    wait_for("node-a's lease to expire", LONG, || {
        report(&etcd, "node-a").is_none().then_some(())
    });
    assert!(
        killed.elapsed() >= Duration::from_secs(1),
        "went with the lease, not before"
    );
    assert!(report(&etcd, "node-b").is_some());
    assert!(b.terminate().success());
    assert!(report(&etcd, "node-b").is_none(), "revoked at a clean stop");
}

#[test]
fn a_churning_declaration_rewrites_the_status_at_most_once_per_interval() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let logs = real(ws.dir.path()).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    append_lines(&app, ["one".to_string()]);
    let interval = Duration::from_secs(2);
    let first = put(&etcd, &[(&app, "app")]);
    let agent = start(
        &ws,
        &etcd,
        "churn",
        &logs,
        "  status: { interval: 2s, lease_ttl: 6s }\n",
    );
    wait_for("the first status", LONG, || {
        let report = report(&etcd, "churn")?;
        (report["observed_revision"] == first && file_states(&report, 0)[0].1 == "running")
            .then_some(())
    });
    let version = |etcd: &Etcd| {
        meta(etcd, &status_key("churn")).unwrap()["version"]
            .as_i64()
            .unwrap()
    };
    let before = version(&etcd);

    // 40 new revisions of the same entries (whitespace differs), 100 ms apart.
    let started = Instant::now();
    let mut last = first;
    for i in 0..40 {
        let pad = " ".repeat(i % 2);
        let value = format!(
            "[{pad}{{\"path\": \"{}\", \"topic\": \"app\"}}]",
            app.display()
        );
        etcd.etcdctl(&["put", KEY, &value]).unwrap();
        last = revision(&etcd, KEY).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let churned = started.elapsed();
    wait_for("the last revision observed", LONG, || {
        (report(&etcd, "churn")?["observed_revision"] == last).then_some(())
    });
    let writes = version(&etcd) - before;
    let most = (churned.as_secs_f64() / interval.as_secs_f64()).ceil() as i64 + 2;
    assert!(
        (1..=most).contains(&writes),
        "{writes} writes for 40 changes in {churned:?} (at most {most})"
    );
    assert!(metric_sum(agent.http_port, "logcatch_etcd_status_writes_total") >= writes as f64);

    // Nothing changes: nothing is written.
    let quiet = version(&etcd);
    std::thread::sleep(interval * 3);
    assert_eq!(
        version(&etcd),
        quiet,
        "an unchanged status is not rewritten"
    );
}

#[test]
fn a_status_prefix_overlapping_a_watched_prefix_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "logs: []\netcd:\n  endpoints: [\"127.0.0.1:2379\"]\n  prefixes: [/lc/]\n  status: { prefix: /lc/status }\n",
    )
    .unwrap();
    let (code, out, err) = logcatch(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("etcd.status.prefix"), "{err}");
    assert!(err.contains("etcd.prefixes[0] \"/lc/\""), "{err}");
    assert!(err.contains("c.yaml"), "names the file: {err}");
}

#[test]
fn a_node_that_cannot_write_its_status_keeps_shipping_and_says_so() {
    let mut etcd = Etcd::start();
    // `shipper` may read /lc/ and write nothing.
    etcd.enable_auth("root-Pa55", "shipper", "ship-Pa55", "/lc/");
    let (ws, logs, app, _) = one_log(&etcd);
    let password_file = ws.path("etcd.pass");
    std::fs::write(&password_file, "ship-Pa55\n").unwrap();
    let credentials = format!(
        "  username: shipper\n  password_file: {}\n  status: {{ interval: 300ms, lease_ttl: 2s }}\n",
        password_file.display()
    );
    let agent = start(&ws, &etcd, "reader", &logs, &credentials);

    shipped(&ws, &app, "shipped-1");
    let publish = publish_state(&agent, "failing");
    let error = publish["error"].as_str().unwrap();
    assert!(error.contains("permission denied"), "{publish}");
    assert!(
        error.contains(&etcd.endpoint),
        "names the endpoint: {error}"
    );
    assert_eq!(
        metric_sum(agent.http_port, "logcatch_etcd_status_published"),
        0.0
    );
    // Retried with backoff: the errors keep counting, shipping goes on.
    wait_for("a retry", LONG, || {
        (metric_sum(agent.http_port, "logcatch_etcd_status_publish_errors_total") >= 2.0)
            .then_some(())
    });
    shipped(&ws, &app, "shipped-2");
    assert!(report(&etcd, "reader").is_none());
    assert_eq!(agent.status()["sources"]["ready"], true);
}

#[test]
fn a_lost_etcd_fails_the_status_until_it_returns_then_it_is_written_again() {
    let mut etcd = Etcd::start();
    let (ws, logs, app, revision) = one_log(&etcd);
    let agent = start(&ws, &etcd, "lost", &logs, "");
    observed(&etcd, "lost", revision);
    let lease = agent.status()["status_publish"]["lease_id"].clone();

    etcd.stop();
    let publish = publish_state(&agent, "failing");
    assert!(publish["failing_since_ms"].as_u64().is_some(), "{publish}");
    shipped(&ws, &app, "while-etcd-is-down");

    etcd.restart();
    let publish = publish_state(&agent, "publishing");
    assert_ne!(publish["lease_id"], lease, "a new lease: {publish}");
    assert_eq!(publish["error"], Value::Null);
    // Written again under the new lease, not left to the old one's expiry.
    wait_for("the status under the new lease", LONG, || {
        let kv = meta(&etcd, &status_key("lost"))?;
        (kv["lease"] == publish["lease_id"]).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        report(&etcd, "lost").is_some(),
        "outlives the old lease's TTL"
    );
}

#[test]
fn a_reloaded_config_whose_status_prefix_overlaps_a_watched_prefix_is_refused_and_nothing_stops() {
    let etcd = Etcd::start();
    let (ws, logs, app, revision) = one_log(&etcd);
    let agent = start(&ws, &etcd, "reload", &logs, "");
    shipped(&ws, &app, "before");
    observed(&etcd, "reload", revision);

    // /logcatch/ covers the default status prefix /logcatch/status.
    let overlapping = "  prefixes: [\"/logcatch/\"]\n";
    ws.write_config(&config(&ws, &etcd, "reload", &logs, overlapping));
    let error = wait_for("the refused reload", LONG, || {
        let error = agent.status()["config"]["error"].as_str()?.to_string();
        Some(error)
    });
    assert!(error.contains("etcd.status.prefix"), "{error}");
    assert!(error.contains("etcd.prefixes[0] \"/logcatch/\""), "{error}");
    assert_eq!(
        agent.status()["sources"]["watches"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the prefix is not watched"
    );
    shipped(&ws, &app, "after");
    assert_eq!(agent.status()["status_publish"]["state"], "publishing");
    let revision = put(&etcd, &[(&app, "app")]);
    wait_for("the status still written", LONG, || {
        (report(&etcd, "reload")?["observed_revision"] == revision).then_some(())
    });
}

#[test]
fn an_agent_stopped_while_etcd_hangs_exits_cleanly_within_its_shutdown_timeout() {
    let etcd = Etcd::start();
    let (ws, logs, _, revision) = one_log(&etcd);
    // Requests to a hung etcd take their whole timeout: longer than shutdown_timeout (10 s)
    // if a stop waited for them one after the other.
    let slow = "  status: { interval: 300ms, lease_ttl: 2s }\n";
    let config = config(&ws, &etcd, "hung", &logs, slow)
        .replace("request_timeout: 2s", "request_timeout: 8s");
    ws.write_config(&config);
    let agent = ws.start();
    observed(&etcd, "hung", revision);
    etcd.freeze();
    // A keep-alive (every 2 s / 3) is now waiting for an answer.
    std::thread::sleep(Duration::from_secs(1));
    let stopping = Instant::now();
    let exit = agent.terminate();
    let took = stopping.elapsed();
    etcd.thaw();
    assert!(exit.success(), "{exit:?} after {took:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}
