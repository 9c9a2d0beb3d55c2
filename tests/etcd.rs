//! End-to-end tests of the etcd source: a real etcd, the real agent binary, the file sink.

mod common;

use common::servers::Etcd;
use common::tls::TestPki;
use common::{append_lines, metric, wait_for, Agent, Workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// The workspace dir with symlinks resolved (the allow-list compares resolved paths).
fn root(ws: &Workspace) -> PathBuf {
    ws.dir.path().canonicalize().unwrap()
}

fn config(ws: &Workspace, etcd: &Etcd, keys: &[&str], prefixes: &[&str]) -> String {
    let quote = |list: &[&str]| {
        list.iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{}etcd:\n  endpoints: [\"{}\"]\n  keys: [{}]\n  prefixes: [{}]\n  allowed_paths: [\"{}/logs/**\"]\n  dial_timeout: 1s\n  request_timeout: 2s\n",
        ws.config("  []"),
        etcd.endpoint,
        quote(keys),
        quote(prefixes),
        root(ws).display(),
    )
}

fn start(ws: &Workspace, etcd: &Etcd, keys: &[&str], prefixes: &[&str]) -> Agent {
    std::fs::create_dir_all(root(ws).join("logs")).unwrap();
    ws.write_config(&config(ws, etcd, keys, prefixes));
    ws.start()
}

fn put(etcd: &Etcd, key: &str, entries: &[(&Path, &str)]) {
    let value: Vec<Value> = entries
        .iter()
        .map(|(path, topic)| serde_json::json!({"path": path, "topic": topic}))
        .collect();
    etcd.etcdctl(&["put", key, &Value::Array(value).to_string()])
        .unwrap();
}

/// Appends one marker line to `path` and waits until it is shipped on `topic`.
fn shipped(ws: &Workspace, path: &Path, topic: &str, marker: &str) {
    append_lines(path, [marker.to_string()]);
    wait_for(&format!("{marker} on {topic}"), LONG, || {
        ws.records()
            .iter()
            .any(|r| r.line == marker && r.topic == topic && Path::new(&r.path) == path)
            .then_some(())
    });
}

/// Appends a marker and checks it is not shipped within a while.
fn not_shipped(ws: &Workspace, path: &Path, marker: &str) {
    append_lines(path, [marker.to_string()]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !ws.records().iter().any(|r| r.line == marker),
        "{marker} in {} must not be shipped",
        path.display()
    );
}

fn tailers(agent: &Agent) -> Vec<(String, String, Vec<String>)> {
    agent.status()["tailers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let owners = t["owners"].as_array().unwrap();
            (
                t["topic"].as_str().unwrap().to_string(),
                t["path"].as_str().unwrap().to_string(),
                owners.iter().map(|o| o.as_str().unwrap().into()).collect(),
            )
        })
        .collect()
}

fn key_status(agent: &Agent, key: &str) -> Option<Value> {
    agent.status()["sources"]["keys"]
        .as_array()?
        .iter()
        .find(|k| k["key"] == key)
        .cloned()
}

#[test]
fn entries_added_changed_and_removed_in_etcd_start_and_stop_tailers() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let agent = start(&ws, &etcd, &["/lc/node"], &[]);
    let (a, b) = (root(&ws).join("logs/a.log"), root(&ws).join("logs/b.log"));
    put(&etcd, "/lc/node", &[(&a, "app")]);
    shipped(&ws, &a, "app", "a-1");
    assert!(agent.status()["sources"]["ready"].as_bool().unwrap());

    // Path changed: a stops, b starts.
    put(&etcd, "/lc/node", &[(&b, "app")]);
    shipped(&ws, &b, "app", "b-1");
    wait_for("a's tailer to stop", LONG, || {
        (tailers(&agent).len() == 1).then_some(())
    });
    not_shipped(&ws, &a, "a-2");

    // Topic changed: stop + start on the new topic.
    put(&etcd, "/lc/node", &[(&b, "other")]);
    shipped(&ws, &b, "other", "b-2");
    assert_eq!(tailers(&agent)[0].0, "other");

    // Entries removed.
    put(&etcd, "/lc/node", &[]);
    wait_for("no tailers", LONG, || {
        tailers(&agent).is_empty().then_some(())
    });
    not_shipped(&ws, &b, "b-3");
}

#[test]
fn two_keys_declaring_the_same_log_share_one_tailer_until_both_are_deleted() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let a = root(&ws).join("logs/a.log");
    let agent = start(&ws, &etcd, &["/lc/one"], &["/lc/shared/"]);
    put(&etcd, "/lc/one", &[(&a, "app")]);
    put(&etcd, "/lc/shared/two", &[(&a, "app")]);
    wait_for("one tailer owned by both keys", LONG, || {
        let t = tailers(&agent);
        (t.len() == 1 && t[0].2 == ["etcd:/lc/one", "etcd:/lc/shared/two"]).then_some(())
    });
    shipped(&ws, &a, "app", "a-1");

    etcd.etcdctl(&["del", "/lc/one"]).unwrap();
    wait_for("one owner left", LONG, || {
        let t = tailers(&agent);
        (t.len() == 1 && t[0].2 == ["etcd:/lc/shared/two"]).then_some(())
    });
    shipped(&ws, &a, "app", "a-2");
    let count = ws.records().iter().filter(|r| r.line == "a-2").count();
    assert_eq!(count, 1, "one tailer, so one copy");

    etcd.etcdctl(&["del", "/lc/shared/two"]).unwrap();
    wait_for("no tailers", LONG, || {
        tailers(&agent).is_empty().then_some(())
    });
    not_shipped(&ws, &a, "a-3");
}

#[test]
fn an_invalid_value_keeps_the_last_valid_snapshot_and_shows_the_error() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let a = root(&ws).join("logs/a.log");
    let agent = start(&ws, &etcd, &["/lc/node"], &[]);
    put(&etcd, "/lc/node", &[(&a, "app")]);
    shipped(&ws, &a, "app", "a-1");
    etcd.etcdctl(&[
        "put",
        "/lc/node",
        r#"[{"path": "relative.log", "topic": "app"}]"#,
    ])
    .unwrap();
    let error = wait_for("the error in /status", LONG, || {
        key_status(&agent, "/lc/node")?["error"]
            .as_str()
            .map(String::from)
    });
    assert!(
        error.starts_with("etcd key /lc/node: [0].path: \"relative.log\" is relative"),
        "{error}"
    );
    shipped(&ws, &a, "app", "a-2");
    etcd.etcdctl(&["put", "/lc/node", "not json"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    shipped(&ws, &a, "app", "a-3");
    let logged = agent
        .log()
        .matches("keeping the last valid snapshot")
        .count();
    assert_eq!(
        logged,
        2,
        "each invalid revision logged once:\n{}",
        agent.log()
    );
}

#[test]
fn etcd_killed_and_restarted_with_a_compaction_meanwhile_converges() {
    let mut etcd = Etcd::start();
    let ws = Workspace::new();
    let (a, b, c) = (
        root(&ws).join("logs/a.log"),
        root(&ws).join("logs/b.log"),
        root(&ws).join("logs/c.log"),
    );
    let agent = start(&ws, &etcd, &["/lc/node"], &["/lc/p/"]);
    put(&etcd, "/lc/node", &[(&a, "app")]);
    put(&etcd, "/lc/p/x", &[(&c, "app")]);
    shipped(&ws, &a, "app", "a-1");
    shipped(&ws, &c, "app", "c-1");

    etcd.stop();
    // Last known good: tailers keep running while etcd is gone.
    shipped(&ws, &a, "app", "a-2");
    etcd.restart();
    // Change values and compact before the agent re-lists.
    put(&etcd, "/lc/node", &[(&b, "app")]);
    etcd.etcdctl(&["del", "/lc/p/x"]).unwrap();
    let out = etcd.etcdctl(&["put", "/lc/p/y", "[]"]).unwrap();
    assert!(out.contains("OK"));
    let status = etcd.etcdctl(&["endpoint", "status", "-w", "json"]).unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    let revision = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
    etcd.etcdctl(&["compact", &revision.to_string()]).unwrap();

    shipped(&ws, &b, "app", "b-1");
    wait_for("a and c stopped", LONG, || {
        let t = tailers(&agent);
        (t.len() == 1 && t[0].1 == b.display().to_string()).then_some(())
    });
    not_shipped(&ws, &a, "a-3");
}

#[test]
fn etcd_down_at_start_serves_the_cached_snapshot() {
    let mut etcd = Etcd::start();
    let ws = Workspace::new();
    let a = root(&ws).join("logs/a.log");
    let agent = start(&ws, &etcd, &["/lc/node"], &[]);
    put(&etcd, "/lc/node", &[(&a, "app")]);
    shipped(&ws, &a, "app", "a-1");
    assert_eq!(agent.terminate().code(), Some(0));

    etcd.stop();
    append_lines(&a, ["a-2".to_string()]);
    let agent = ws.start();
    shipped(&ws, &a, "app", "a-3");
    assert!(ws.records().iter().any(|r| r.line == "a-2"));
    let status = agent.status();
    let watch = &status["sources"]["watches"][0];
    assert_eq!(watch["from_cache"], true, "{status}");
    assert_eq!(status["sources"]["ready"], true);

    // etcd back: the source syncs and follows changes again.
    etcd.restart();
    let b = root(&ws).join("logs/b.log");
    put(&etcd, "/lc/node", &[(&b, "app")]);
    shipped(&ws, &b, "app", "b-1");
}

#[test]
fn paths_outside_allowed_paths_are_refused_even_through_a_symlink() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let secret = root(&ws).join("secret.log");
    std::fs::write(&secret, "secret-1\n").unwrap();
    let agent = start(&ws, &etcd, &["/lc/node"], &[]);
    let link = root(&ws).join("logs/link.log");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let ok = root(&ws).join("logs/ok.log");
    put(
        &etcd,
        "/lc/node",
        &[(&secret, "app"), (&link, "app"), (&ok, "app")],
    );
    shipped(&ws, &ok, "app", "ok-1");
    let refused = wait_for("two refusals in /status", LONG, || {
        let refused = key_status(&agent, "/lc/node")?["refused"]
            .as_array()?
            .clone();
        (refused.len() == 2).then_some(refused)
    });
    assert!(refused
        .iter()
        .any(|r| r["reason"].as_str().unwrap().contains("symlink")));
    assert!(ws.records().iter().all(|r| !r.line.starts_with("secret")));
    assert_eq!(tailers(&agent).len(), 1);
    assert!(agent.log().contains("refused"));
}

/// Tenants: the keys under a policy's prefix are held to its rules — its paths, its
/// topics, its own tailer bound — and each refusal names the policy in /status and counts
/// in the metric; a key under no policy keeps the global rules.
#[test]
fn keys_under_a_policy_prefix_are_held_to_its_rules() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let logs = root(&ws).join("logs");
    std::fs::create_dir_all(logs.join("pay")).unwrap();
    let policy = format!(
        "  policies:\n    - {{prefix: /lc/teams/pay/, allowed_paths: [\"{}/pay/**\"], allowed_topics: [\"pay-*\"], max_tailers: 1}}\n",
        logs.display()
    );
    ws.write_config(&(config(&ws, &etcd, &[], &["/lc/"]) + &policy));
    let agent = ws.start();
    let (a, b, web) = (
        logs.join("pay/a.log"),
        logs.join("pay/b.log"),
        logs.join("web.log"),
    );
    for file in [&a, &b, &web] {
        std::fs::write(file, "").unwrap();
    }
    let team = "/lc/teams/pay/api";
    put(
        &etcd,
        team,
        &[
            (&a, "pay-api"),
            (&b, "pay-api"),
            (&web, "pay-api"),
            (&a, "web"),
        ],
    );
    put(&etcd, "/lc/nodes/n1", &[(&web, "web")]);
    shipped(&ws, &a, "pay-api", "pay-1");
    shipped(&ws, &web, "web", "web-1");
    let refused = wait_for("three refusals under the policy", LONG, || {
        let refused = key_status(&agent, team)?["refused"].as_array()?.clone();
        (refused.len() == 3).then_some(refused)
    });
    let mut got: Vec<(String, String, String, String)> = refused
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap().to_string();
            let path = field("path");
            let file = Path::new(&path).file_name().unwrap();
            let file = file.to_string_lossy().into_owned();
            (field("topic"), file, field("kind"), field("reason"))
        })
        .collect();
    got.sort();
    let pay = "etcd.policies[prefix /lc/teams/pay/]";
    let expected = [
        (
            "pay-api",
            "b.log",
            "max_tailers",
            format!("not started: {pay}.max_tailers (1) reached (in topic, path order)"),
        ),
        (
            "pay-api",
            "web.log",
            "allowed_paths",
            format!("outside {pay}.allowed_paths"),
        ),
        (
            "web",
            "a.log",
            "allowed_topics",
            format!("topic web is outside {pay}.allowed_topics"),
        ),
    ]
    .map(|(t, f, k, r)| (t.to_string(), f.to_string(), k.to_string(), r));
    assert_eq!(got, expected);
    assert!(key_status(&agent, "/lc/nodes/n1").unwrap()["refused"]
        .as_array()
        .is_none_or(|r| r.is_empty()));
    let kind = |k: &str| {
        metric(
            agent.http_port,
            &format!("logcatch_refused_tailers{{kind=\"{k}\"}}"),
        )
    };
    assert_eq!(
        (
            kind("allowed_topics"),
            kind("allowed_paths"),
            kind("max_tailers")
        ),
        (1.0, 1.0, 1.0)
    );
    not_shipped(&ws, &b, "pay-b-1");
    assert_eq!(tailers(&agent).len(), 2, "pay-api a.log and web web.log");
    // A tailer's log lines name the key and the revision of the value that started it.
    let revision = key_status(&agent, team).unwrap()["revision"]
        .as_i64()
        .unwrap();
    let started = format!("declared_by={}", format_args!("etcd:{team}@{revision}"));
    let log = agent.log();
    let following = |line: &&str| line.contains("following file") && line.contains("pay/a.log");
    assert!(
        log.lines()
            .filter(following)
            .all(|line| line.contains(&started)),
        "{started} in:\n{log}"
    );
    assert!(log.lines().any(|line| following(&line)), "{log}");
}

fn cli(etcd: &Etcd, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["etcd", "--endpoints", &etcd.endpoint])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_cli_round_trips_values_and_refuses_invalid_ones() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logs.json");
    let value = r#"[{"path": "/var/log/app.log", "topic": "app"}]"#;
    std::fs::write(&file, value).unwrap();
    let (ok, out, err) = cli(
        &etcd,
        &["put", "/lc/a", "--file", file.to_str().unwrap()],
        None,
    );
    assert!(ok, "{out}{err}");
    let (ok, out, _) = cli(&etcd, &["put", "/lc/b"], Some("[]"));
    assert!(ok, "{out}");
    let (ok, out, _) = cli(&etcd, &["get", "/lc/a"], None);
    assert!(ok);
    assert_eq!(out.trim(), value);
    etcd.etcdctl(&["put", "/lc/c", "junk"]).unwrap();
    let (ok, out, _) = cli(&etcd, &["list", "/lc/"], None);
    assert!(ok);
    assert!(
        out.contains(&format!("/lc/a {value}")) && out.contains("/lc/b []"),
        "{out}"
    );
    assert!(out.contains("invalid: etcd key /lc/c"), "{out}");

    let (ok, _, err) = cli(
        &etcd,
        &["put", "/lc/a"],
        Some(r#"[{"path": "/x", "topic": ""}]"#),
    );
    assert!(!ok);
    assert!(
        err.contains("etcd key /lc/a: [0].topic: topic must not be empty"),
        "{err}"
    );
    let stored = etcd
        .etcdctl(&["get", "/lc/a", "--print-value-only"])
        .unwrap();
    assert_eq!(stored.trim(), value, "a refused value is not written");

    let (ok, _, _) = cli(&etcd, &["del", "/lc/a"], None);
    assert!(ok);
    let (ok, _, err) = cli(&etcd, &["get", "/lc/a"], None);
    assert!(!ok && err.contains("does not exist"), "{err}");
}

#[test]
fn a_config_reload_adds_and_removes_etcd_keys_live() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let (a, b) = (root(&ws).join("logs/a.log"), root(&ws).join("logs/b.log"));
    put(&etcd, "/lc/a", &[(&a, "app")]);
    put(&etcd, "/lc/b", &[(&b, "app")]);
    let agent = start(&ws, &etcd, &["/lc/a"], &[]);
    shipped(&ws, &a, "app", "a-1");
    not_shipped(&ws, &b, "b-0");

    ws.write_config(&config(&ws, &etcd, &["/lc/b"], &[]));
    shipped(&ws, &b, "app", "b-1");
    wait_for("a's tailer to stop", LONG, || {
        let t = tailers(&agent);
        (t.len() == 1 && t[0].2 == ["etcd:/lc/b"]).then_some(())
    });
    not_shipped(&ws, &a, "a-2");
}

/// Waits until `/status` shows `key`'s value of `revision` refused; returns the reason.
fn refused_value(agent: &Agent, key: &str, revision: i64) -> String {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let row = key_status(agent, key).unwrap_or_default();
        if let (true, Some(error)) = (row["revision"] == revision, row["error"].as_str()) {
            return error.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "revision {revision} of {key} not refused: {}\n{}",
            agent.status(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hostile_values_are_refused_with_a_reason_and_running_tailers_go_on() {
    // Raised so that etcd itself accepts the huge values the agent must refuse.
    let etcd = Etcd::start_with_args(&["--max-request-bytes", "10485760"]);
    let ws = Workspace::new();
    let (a, b) = (root(&ws).join("logs/a.log"), root(&ws).join("logs/b.log"));
    let agent = start(&ws, &etcd, &["/lc/node"], &[]);
    put(&etcd, "/lc/node", &[(&a, "app")]);
    shipped(&ws, &a, "app", "a-0");

    let logs = root(&ws).join("logs").display().to_string();
    let entry = |path: &str| format!(r#"{{"path":"{path}","topic":"app"}}"#);
    let many = |n: usize, path: &str| format!("[{}]", vec![entry(path); n].join(","));
    let hostile: Vec<(String, Vec<u8>, String)> = vec![
        (
            "a 1.2 MiB value".into(),
            format!("[{}]", entry(&format!("{logs}/{}", "x".repeat(1_200_000)))).into_bytes(),
            "etcd key /lc/node: value is 1200".into(),
        ),
        (
            "100,000 entries".into(),
            many(100_000, "/").into_bytes(),
            "etcd key /lc/node: value is 2700001 bytes; values over 1048576 bytes (1 MiB) are refused".into(),
        ),
        (
            "10,001 entries".into(),
            many(10_001, &b.display().to_string()).into_bytes(),
            "etcd key /lc/node: 10001 entries; a value may hold at most 10000".into(),
        ),
        (
            "100,000 nested arrays".into(),
            ("[".repeat(100_000) + &"]".repeat(100_000)).into_bytes(),
            "etcd key /lc/node: [0][0]: invalid type: sequence".into(),
        ),
        (
            "a path with ..".into(),
            format!("[{}]", entry(&format!("{logs}/../../../etc/shadow"))).into_bytes(),
            "etcd key /lc/node: [0].path:".into(),
        ),
        (
            "a NUL byte in a path".into(),
            format!("[{}]", entry(&format!("{logs}/a.log\\u0000.txt"))).into_bytes(),
            "etcd key /lc/node: [0].path: must not contain NUL bytes".into(),
        ),
        (
            "a NUL byte in a topic".into(),
            format!(r#"[{{"path":"{}","topic":"app\u0000"}}]"#, b.display()).into_bytes(),
            "etcd key /lc/node: [0].topic: topic \"app\\0\" contains '\\0'".into(),
        ),
    ];
    for (i, (what, value, expected)) in hostile.iter().enumerate() {
        let revision = etcd.put_bytes("/lc/node", value);
        let reason = refused_value(&agent, "/lc/node", revision);
        assert!(reason.starts_with(expected.as_str()), "{what}: {reason}");
        // The last valid snapshot stays in force: a still ships, b never starts.
        shipped(&ws, &a, "app", &format!("a-{}", i + 1));
        let running = tailers(&agent);
        assert_eq!(running.len(), 1, "after {what}: {running:?}");
        assert_eq!(running[0].1, a.display().to_string(), "after {what}");
    }
    let log = agent.log();
    assert_eq!(
        log.matches("keeping the last valid snapshot").count(),
        hostile.len(),
        "each refused value logged once:\n{log}"
    );
    assert_eq!(
        metric(
            agent.http_port,
            "logcatch_etcd_invalid_values_total{key=\"/lc/node\"}"
        ),
        hostile.len() as f64
    );

    // Larger than the gRPC client takes in one message (4 MiB): the watch, then every
    // re-list fails; the error names the key, and the last valid snapshot stays in force.
    etcd.put_bytes("/lc/node", &vec![b' '; 5 << 20]);
    let error = wait_for("the watch error", LONG, || {
        let status = agent.status();
        let error = status["sources"]["watches"][0]["error"]
            .as_str()?
            .to_string();
        error.contains("too large").then_some(error)
    });
    assert!(error.starts_with("etcd key /lc/node: "), "{error}");
    shipped(&ws, &a, "app", "a-huge");
    assert_eq!(tailers(&agent).len(), 1);

    // A valid value again: the key recovers; a symlink in the allowed dir that points
    // at /etc/shadow is refused by the allow-list after resolution.
    let shadow = root(&ws).join("logs/shadow.log");
    std::os::unix::fs::symlink("/etc/shadow", &shadow).unwrap();
    put(
        &etcd,
        "/lc/node",
        &[(&a, "app"), (&b, "app"), (&shadow, "app")],
    );
    shipped(&ws, &b, "app", "b-1");
    let refused = wait_for("the symlink refused", LONG, || {
        key_status(&agent, "/lc/node")?["refused"]
            .as_array()?
            .first()
            .cloned()
    });
    assert_eq!(refused["path"], shadow.display().to_string());
    assert_eq!(
        refused["reason"],
        "resolves to /etc/shadow (symlink), which is outside etcd.allowed_paths"
    );
    assert_eq!(tailers(&agent).len(), 2);
    assert!(ws
        .records()
        .iter()
        .all(|r| r.path != shadow.display().to_string()));
}

/// A value whose glob covers the whole filesystem (`/**`, which follows symlinks such as
/// `/proc/self/root` back to `/`) walks only the directories of `etcd.allowed_paths`: it
/// ships the allowed files at once instead of making every node walk everything.
#[test]
fn a_glob_over_the_whole_filesystem_walks_only_the_allowed_directories() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let agent = start(&ws, &etcd, &["/lc/node"], &[]);
    let app = root(&ws).join("logs/app.log");
    append_lines(&app, ["first".to_string()]);
    put(&etcd, "/lc/node", &[(Path::new("/**"), "all")]);
    shipped(&ws, &app, "all", "second");
    let (code, _) = common::http_get(agent.http_port, "/healthz").expect("/healthz");
    assert_eq!(code, 200);
    let running = tailers(&agent);
    assert_eq!(running.len(), 1, "only the allowed file: {running:?}");
    assert_eq!(running[0].1, app.display().to_string());
}

/// An idle watch stays one watch: etcd (by default) closes the connection of a client
/// that pings more often than every 5 s, and each close made the agent list the key again
/// (in a loop, as its backoff was reset by every successful list).
#[test]
fn an_idle_watch_is_not_listed_again() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let agent = start(&ws, &etcd, &["/lc/node"], &[]);
    let app = root(&ws).join("logs/app.log");
    put(&etcd, "/lc/node", &[(&app, "app")]);
    shipped(&ws, &app, "app", "first");
    let last_list =
        |agent: &Agent| agent.status()["sources"]["watches"][0]["last_sync_unix_ms"].as_u64();
    let listed = last_list(&agent).expect("listed once");
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        last_list(&agent),
        Some(listed),
        "listed again: {}",
        agent.log()
    );
    shipped(&ws, &app, "app", "second");
}

#[test]
fn max_tailers_bounds_what_etcd_can_start_and_reports_the_rest() {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    let many = root(&ws).join("logs/many");
    std::fs::create_dir_all(&many).unwrap();
    let files: Vec<PathBuf> = (0..20).map(|i| many.join(format!("f{i:02}.log"))).collect();
    for (i, file) in files.iter().enumerate() {
        append_lines(file, [format!("early-{i:02}")]);
    }
    let from_config = ws.path("config.log");
    let with_limit = |max: usize| {
        config(&ws, &etcd, &["/lc/node"], &[]).replace(
            "logs:\n  []",
            &format!(
                "logs:\n  - {{ path: {}, topic: cfg }}",
                from_config.display()
            ),
        ) + &format!("  max_tailers: {max}\n")
    };
    std::fs::create_dir_all(root(&ws).join("logs")).unwrap();
    ws.write_config(&with_limit(5));
    let agent = ws.start();
    let glob = many.join("*.log");
    put(&etcd, "/lc/node", &[(&glob, "app")]);

    // The config's tailer counts first, then etcd's in (topic, path) order: f00..f03.
    // Both awaited: a pass reports its refusals before it starts the tailers it allows.
    let mut expected: Vec<String> = files[..4].iter().map(|f| f.display().to_string()).collect();
    expected.push(from_config.display().to_string());
    expected.sort();
    let (refused, running) = wait_for("16 tailers over the limit, 5 running", LONG, || {
        let refused = key_status(&agent, "/lc/node")?["refused"]
            .as_array()?
            .clone();
        let mut running: Vec<String> = tailers(&agent).into_iter().map(|t| t.1).collect();
        running.sort();
        (refused.len() == 16 && running.len() == expected.len()).then_some((refused, running))
    });
    assert_eq!(running, expected);
    for (r, file) in refused.iter().zip(&files[4..]) {
        assert_eq!(r["path"], file.display().to_string());
        assert_eq!(r["kind"], "max_tailers");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("etcd.max_tailers (5) reached"),
            "{r}"
        );
    }
    wait_for("the metric", LONG, || {
        (metric(
            agent.http_port,
            "logcatch_refused_tailers{kind=\"max_tailers\"}",
        ) == 16.0)
            .then_some(())
    });
    shipped(&ws, &from_config, "cfg", "cfg-1");
    shipped(&ws, &files[0], "app", "f00-1");
    not_shipped(&ws, &files[4], "f04-1");
    let log = agent.log();
    assert_eq!(
        log.matches("etcd.max_tailers (5) reached (config-file tailers count first, then etcd ones in topic, path order): 16 more declared tailers not started")
            .count(),
        1,
        "logged once, in one line:\n{log}"
    );

    // A higher limit (config reload) starts the rest; nothing they held was lost.
    ws.write_config(&with_limit(100));
    shipped(&ws, &files[19], "app", "f19-1");
    wait_for("21 tailers", LONG, || {
        (tailers(&agent).len() == 21).then_some(())
    });
    let records = ws.wait_records(20 + 4, LONG);
    for i in 0..20 {
        let early = format!("early-{i:02}");
        assert_eq!(
            records.iter().filter(|r| r.line == early).count(),
            1,
            "{early}"
        );
    }
    assert!(records.iter().any(|r| r.line == "f04-1"));
    assert_eq!(
        metric(
            agent.http_port,
            "logcatch_refused_tailers{kind=\"max_tailers\"}"
        ),
        0.0
    );
}

#[test]
fn etcd_with_tls_and_auth_is_followed_and_a_wrong_password_is_retried_until_fixed() {
    let ws = Workspace::new();
    let pki = TestPki::new(&root(&ws), "etcd");
    let mut etcd = Etcd::start_tls(&pki);
    assert!(etcd.endpoint.starts_with("https://"));
    etcd.enable_auth("root-Pa55", "shipper", "right-Pa55", "/lc/");
    let a = root(&ws).join("logs/a.log");
    put(&etcd, "/lc/node", &[(&a, "app")]);
    let password_file = ws.path("etcd.pass");
    std::fs::write(&password_file, "wrong-Pa55\n").unwrap();
    std::fs::create_dir_all(root(&ws).join("logs")).unwrap();
    ws.write_config(&format!(
        "{}  username: shipper\n  password_file: {}\n  tls: {{ ca_file: {} }}\n",
        config(&ws, &etcd, &["/lc/node"], &[]),
        password_file.display(),
        pki.ca.display()
    ));
    let agent = ws.start();

    // A wrong password: a clear error on the key's watch, retried, nothing tailed.
    let error = wait_for("the authentication error", LONG, || {
        let status = agent.status();
        let error = status["sources"]["watches"][0]["error"]
            .as_str()?
            .to_string();
        error.contains("authentication failed").then_some(error)
    });
    assert!(
        error.starts_with("etcd key /lc/node: etcd https://127.0.0.1:"),
        "{error}"
    );
    assert!(tailers(&agent).is_empty());
    assert!(agent.log().contains("authentication failed"));
    assert_eq!(
        agent.status()["sources"]["watches"][0]["state"],
        "unauthorized"
    );

    // The password file fixed: the next retry reads it, connects over TLS and tails.
    std::fs::write(&password_file, "right-Pa55\n").unwrap();
    shipped(&ws, &a, "app", "a-1");
    let status = agent.status();
    assert_eq!(
        status["sources"]["watches"][0]["state"], "synced",
        "{status}"
    );
    let b = root(&ws).join("logs/b.log");
    put(&etcd, "/lc/node", &[(&b, "app")]);
    shipped(&ws, &b, "app", "b-1");

    // Neither password is ever printed.
    let (log, status) = (agent.log(), agent.status().to_string());
    for secret in ["wrong-Pa55", "right-Pa55", "root-Pa55"] {
        assert!(
            !log.contains(secret) && !status.contains(secret),
            "{secret} printed"
        );
    }
}

/// Starts the agent watching `/lc/node` with `credentials` (YAML lines under `etcd:`).
fn start_with_credentials(ws: &Workspace, etcd: &Etcd, credentials: &str) -> Agent {
    std::fs::create_dir_all(root(ws).join("logs")).unwrap();
    let config = config(ws, etcd, &["/lc/node"], &[]);
    ws.write_config(&format!("{config}{credentials}"));
    ws.start()
}

/// `/readyz`: its status code and body.
fn readyz(agent: &Agent) -> (u16, String) {
    common::http_get(agent.http_port, "/readyz").expect("GET /readyz")
}

/// How long a change may take to reach the agent once etcd is back: etcd answers ≈ 2 s
/// after it starts, and the watcher retries at most 5 s apart.
const RECOVERY: Duration = Duration::from_secs(20);

/// Polls `check` for at most `within`; on timeout fails with the agent's `/status` and
/// log, which say why its etcd source is stuck.
fn wait_agent<T>(agent: &Agent, what: &str, within: Duration, check: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}\n/status: {}\n/readyz: {:?}\nlog:\n{}",
            agent.status()["sources"],
            readyz(agent),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Appends `marker` to `path` and waits at most `within` for it on `topic`.
fn shipped_within(
    agent: &Agent,
    ws: &Workspace,
    path: &Path,
    topic: &str,
    marker: &str,
    within: Duration,
) {
    append_lines(path, [marker.to_string()]);
    wait_agent(agent, &format!("{marker} on {topic}"), within, || {
        ws.records()
            .iter()
            .any(|r| r.line == marker && r.topic == topic && Path::new(&r.path) == path)
            .then_some(())
    });
}

/// A login that expired, without any rotation: etcd's simple tokens expire when unused
/// for `--auth-token-ttl` (2 s here; 5 min by default), and the watch outlives its token.
/// When the watch breaks (etcd frozen until the keep-alive gives up; a restart would not
/// do, as etcd 3.4 accepts the tokens it issued before a restart), the list must log in
/// again with the same password instead of failing with "invalid auth token" forever.
#[test]
fn an_expired_etcd_login_is_renewed_when_the_watch_reconnects() {
    let mut etcd = Etcd::start_with_args(&["--auth-token-ttl", "2"]);
    etcd.enable_auth("root-Pa55", "shipper", "same-Pa55", "/lc/");
    let ws = Workspace::new();
    let (a, b) = (root(&ws).join("logs/a.log"), root(&ws).join("logs/b.log"));
    put(&etcd, "/lc/node", &[(&a, "app")]);
    let password_file = ws.path("etcd.pass");
    std::fs::write(&password_file, "same-Pa55\n").unwrap();
    let agent = start_with_credentials(
        &ws,
        &etcd,
        &format!(
            "  username: shipper\n  password_file: {}\n",
            password_file.display()
        ),
    );
    shipped(&ws, &a, "app", "a-1");
    std::thread::sleep(Duration::from_secs(4));

    // Keep-alive: a ping every 10 s, unanswered for 5 s ends the watch.
    etcd.freeze();
    wait_agent(&agent, "the watch to break", LONG, || {
        let status = agent.status();
        (status["sources"]["watches"][0]["state"] != "synced").then_some(())
    });
    etcd.thaw();
    put(&etcd, "/lc/node", &[(&a, "app"), (&b, "app")]);
    shipped_within(&agent, &ws, &b, "app", "b-1", RECOVERY);
    assert_eq!(agent.status()["sources"]["watches"][0]["state"], "synced");
    assert_eq!(readyz(&agent).0, 200);
    shipped(&ws, &a, "app", "a-2");
}

/// An agent watching `/lc/node` (declaring `logs/a.log`) as user `shipper` with the
/// password `old-Pa55` in its password file: (workspace, a, b, password file, agent).
fn start_as_shipper(etcd: &Etcd) -> (Workspace, PathBuf, PathBuf, PathBuf, Agent) {
    let ws = Workspace::new();
    let (a, b) = (root(&ws).join("logs/a.log"), root(&ws).join("logs/b.log"));
    put(etcd, "/lc/node", &[(&a, "app")]);
    let password_file = ws.path("etcd.pass");
    std::fs::write(&password_file, "old-Pa55\n").unwrap();
    let agent = start_with_credentials(
        &ws,
        etcd,
        &format!(
            "  username: shipper\n  password_file: {}\n",
            password_file.display()
        ),
    );
    (ws, a, b, password_file, agent)
}

/// A password rotation: the user's password changes in etcd (which drops the user's
/// tokens: the agent's next request is refused with "invalid auth token") and in the
/// password file; then the watch breaks (etcd restarts). The next session must log in
/// again with the new file, not retry the old token or the old password.
#[test]
fn a_rotated_etcd_password_is_used_when_the_watch_reconnects() {
    let mut etcd = Etcd::start();
    etcd.enable_auth("root-Pa55", "shipper", "old-Pa55", "/lc/");
    let (ws, a, b, password_file, agent) = start_as_shipper(&etcd);
    shipped(&ws, &a, "app", "a-1");

    etcd.change_password("shipper", "new-Pa55");
    std::fs::write(&password_file, "new-Pa55\n").unwrap();
    etcd.restart();
    put(&etcd, "/lc/node", &[(&a, "app"), (&b, "app")]);
    shipped_within(&agent, &ws, &b, "app", "b-1", RECOVERY);
    shipped(&ws, &a, "app", "a-2");
    let status = agent.status();
    assert_eq!(
        status["sources"]["watches"][0]["state"], "synced",
        "{status}"
    );
    let log = agent.log();
    assert!(!log.contains("new-Pa55") && !log.contains("old-Pa55"));
}

/// etcd refuses the agent's credentials (the password changed in etcd, not yet in the
/// file): the source cannot sync, and `/readyz`, `/status` and `logcatch_etcd_connected`
/// say so, naming the key and the reason, while the tailers of the last good declarations
/// keep shipping. Fixing the file is enough to recover.
#[test]
fn a_source_refused_by_etcd_is_not_ready_until_its_credentials_are_fixed() {
    let mut etcd = Etcd::start();
    etcd.enable_auth("root-Pa55", "shipper", "old-Pa55", "/lc/");
    let (ws, a, b, password_file, agent) = start_as_shipper(&etcd);
    shipped(&ws, &a, "app", "a-1");
    wait_for("/readyz 200", LONG, || {
        (readyz(&agent).0 == 200).then_some(())
    });

    etcd.change_password("shipper", "new-Pa55");
    etcd.restart();
    put(&etcd, "/lc/node", &[(&a, "app"), (&b, "app")]);
    let body = wait_agent(
        &agent,
        "/readyz 503 naming the key and the reason",
        RECOVERY,
        || {
            let (code, body) = readyz(&agent);
            let named =
                body.contains("etcd key /lc/node") && body.contains("authentication failed");
            (code == 503 && named).then_some(body)
        },
    );
    assert!(!body.contains("Pa55"), "{body}");
    let status = agent.status();
    let watch = &status["sources"]["watches"][0];
    assert_eq!(watch["state"], "unauthorized", "{status}");
    assert!(
        watch["error"]
            .as_str()
            .unwrap()
            .starts_with("etcd key /lc/node: "),
        "{status}"
    );
    assert_eq!(status["sources"]["ready"], false, "{status}");
    assert_eq!(metric(agent.http_port, "logcatch_etcd_connected{}"), 0.0);
    assert_eq!(metric(agent.http_port, "logcatch_ready{}"), 0.0);
    // Last known good: a's tailer never stops; b is not declared as far as it knows.
    shipped(&ws, &a, "app", "a-2");
    not_shipped(&ws, &b, "b-0");
    assert_eq!(tailers(&agent).len(), 1);

    std::fs::write(&password_file, "new-Pa55\n").unwrap();
    shipped_within(&agent, &ws, &b, "app", "b-1", RECOVERY);
    wait_for("/readyz 200 again", LONG, || {
        (readyz(&agent).0 == 200).then_some(())
    });
    assert_eq!(metric(agent.http_port, "logcatch_etcd_connected{}"), 1.0);
    assert_eq!(agent.status()["sources"]["watches"][0]["state"], "synced");
    shipped(&ws, &a, "app", "a-3");
}

/// A client certificate rotation under mutual TLS: the agent's certificate expires and a
/// new one from the same CA replaces it in the same files. Until the files change the
/// source is not ready (naming the key); after the next reconnect the new one is used.
#[test]
fn an_expired_client_certificate_replaced_in_its_files_is_used_when_the_watch_reconnects() {
    let ws = Workspace::new();
    let pki = TestPki::new(&root(&ws), "etcd");
    const VALID_FOR: Duration = Duration::from_secs(20);
    let (cert, key) = pki.client_cert("agent", Some(VALID_FOR));
    let expires = std::time::Instant::now() + VALID_FOR;
    let mut etcd = Etcd::start_mtls(&pki);
    let (a, b) = (root(&ws).join("logs/a.log"), root(&ws).join("logs/b.log"));
    put(&etcd, "/lc/node", &[(&a, "app")]);
    let agent = start_with_credentials(
        &ws,
        &etcd,
        &format!(
            "  tls: {{ ca_file: {}, cert_file: {}, key_file: {} }}\n",
            pki.ca.display(),
            cert.display(),
            key.display()
        ),
    );
    shipped(&ws, &a, "app", "a-1");
    assert!(
        std::time::Instant::now() < expires,
        "the first sync took longer than the certificate lived"
    );
    std::thread::sleep(expires.saturating_duration_since(std::time::Instant::now()));
    std::thread::sleep(Duration::from_secs(1));

    // Expired: the reconnect after a restart is refused by etcd.
    etcd.restart();
    put(&etcd, "/lc/node", &[(&a, "app"), (&b, "app")]);
    let body = wait_agent(
        &agent,
        "/readyz 503 naming the key and the reason",
        RECOVERY,
        || {
            let (code, body) = readyz(&agent);
            let named = body.contains("etcd key /lc/node cannot sync: ")
                && body.contains(&format!(
                    "{}: the client certificate expired at",
                    cert.display()
                ));
            (code == 503 && named).then_some(body)
        },
    );
    assert!(body.starts_with("not ready: "), "{body}");
    assert_eq!(
        agent.status()["sources"]["watches"][0]["state"],
        "unauthorized"
    );
    assert_eq!(metric(agent.http_port, "logcatch_etcd_connected{}"), 0.0);
    shipped(&ws, &a, "app", "a-2");

    // Rotated: a new certificate in the same files.
    pki.client_cert("agent", None);
    shipped_within(&agent, &ws, &b, "app", "b-1", RECOVERY);
    wait_for("/readyz 200 again", LONG, || {
        (readyz(&agent).0 == 200).then_some(())
    });
    shipped(&ws, &a, "app", "a-3");
}

/// The port of `etcd`'s client URL.
fn client_port(etcd: &Etcd) -> u16 {
    etcd.endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

/// How many logins (`Authenticate` calls) `etcd` has served.
fn logins(etcd: &Etcd) -> f64 {
    common::metric_sum(
        client_port(etcd),
        "grpc_server_started_total{grpc_method=\"Authenticate\"",
    )
}

/// Three keys and two prefixes, the agent logged in as `shipper` with `password`.
struct FiveWatches {
    ws: Workspace,
    agent: Agent,
    paths: Vec<PathBuf>,
    password_file: PathBuf,
    /// etcd's count of logins before the agent started.
    logins_before: f64,
}

const KEYS: [&str; 3] = ["/lc/a", "/lc/b", "/lc/c"];
const PREFIXES: [&str; 2] = ["/lc/p/", "/lc/q/"];

fn watch_five(etcd: &Etcd, password: &str) -> FiveWatches {
    let ws = Workspace::new();
    let declared = ["/lc/a", "/lc/b", "/lc/c", "/lc/p/one", "/lc/q/two"];
    let paths: Vec<PathBuf> = (0..declared.len())
        .map(|i| root(&ws).join(format!("logs/{i}.log")))
        .collect();
    for (key, path) in declared.iter().zip(&paths) {
        put(etcd, key, &[(path, "app")]);
    }
    let password_file = ws.path("etcd.pass");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    std::fs::create_dir_all(root(&ws).join("logs")).unwrap();
    ws.write_config(&format!(
        "{}  username: shipper\n  password_file: {}\n",
        config(&ws, etcd, &KEYS, &PREFIXES),
        password_file.display()
    ));
    let logins_before = logins(etcd);
    let agent = ws.start();
    let five = FiveWatches {
        ws,
        agent,
        paths,
        password_file,
        logins_before,
    };
    five.all_synced_since(0);
    five.all_ship("1");
    five
}

impl FiveWatches {
    /// Waits until every watch synced at or after `since_ms` (ms since the epoch).
    fn all_synced_since(&self, since_ms: u64) {
        let agent = &self.agent;
        wait_agent(agent, "every watch synced", LONG, || {
            let status = agent.status();
            let watches = status["sources"]["watches"].as_array()?.clone();
            let synced = |w: &Value| {
                w["state"] == "synced" && w["last_sync_unix_ms"].as_u64() >= Some(since_ms)
            };
            (watches.len() == KEYS.len() + PREFIXES.len() && watches.iter().all(synced))
                .then_some(())
        });
    }

    fn all_ship(&self, marker: &str) {
        for path in &self.paths {
            shipped(
                &self.ws,
                path,
                "app",
                &format!("{}-{marker}", path.display()),
            );
        }
    }
}

/// Every key and prefix is listed and watched through the agent's one client: one
/// connection to etcd and one login, however many keys and prefixes are configured.
#[test]
fn every_key_and_prefix_is_watched_over_one_connection_and_one_login() {
    let mut etcd = Etcd::start();
    etcd.enable_auth("root-Pa55", "shipper", "one-Pa55", "/lc/");
    let five = watch_five(&etcd, "one-Pa55");
    assert_eq!(
        common::established_connections(five.agent.pid(), client_port(&etcd)),
        1,
        "connections from the agent to etcd"
    );
    assert_eq!(
        logins(&etcd) - five.logins_before,
        1.0,
        "logins of the agent"
    );
}

/// A rotated password: the shared client is built again once, for every key and prefix.
#[test]
fn a_rotated_password_rebuilds_the_client_once_for_every_key_and_prefix() {
    let mut etcd = Etcd::start();
    etcd.enable_auth("root-Pa55", "shipper", "old-Pa55", "/lc/");
    let five = watch_five(&etcd, "old-Pa55");
    etcd.change_password("shipper", "new-Pa55");
    std::fs::write(&five.password_file, "new-Pa55\n").unwrap();
    let restarted_ms = logcatch::source::status::now_unix_ms();
    // Every watch ends; each watcher's next session finds the files changed.
    etcd.restart();
    five.all_synced_since(restarted_ms);
    five.all_ship("2");
    let rebuilds = five
        .agent
        .log()
        .lines()
        .filter(|l| l.contains("etcd credential files changed"))
        .count();
    assert_eq!(rebuilds, 1, "{}", five.agent.log());
    assert_eq!(
        common::established_connections(five.agent.pid(), client_port(&etcd)),
        1
    );
}
