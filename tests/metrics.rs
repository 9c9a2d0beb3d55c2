//! Observability end to end: /metrics values move with the data, /readyz flips with the
//! sink and etcd, /status matches the running tailers, and `logcatch status` prints them.

mod common;

use common::servers::{tool, Broker, Etcd};
use common::{append_lines, free_port, http_get, metric, scrape, wait_for, Workspace};
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn metrics_move_with_lines_restarts_and_reloads() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let dir_as_file = ws.path("a-directory");
    std::fs::create_dir(&dir_as_file).unwrap();
    append_lines(&log, (0..1_234).map(|i| format!("line {i}")));
    let logs = format!(
        "  - {{ path: {}, topic: app }}\n  - {{ path: {}, topic: broken }}",
        log.display(),
        dir_as_file.display()
    );
    let config = ws.config(&logs);
    ws.write_config(&config);
    let agent = ws.start();
    ws.wait_records(1_234, LONG);
    let port = agent.http_port;
    wait_for("lines_read to count every line", LONG, || {
        (metric(port, "logcatch_lines_read_total{topic=\"app\"}") == 1_234.0).then_some(())
    });
    let m = scrape(port);
    assert_eq!(m["logcatch_records_sent_total{topic=\"app\"}"], 1_234.0);
    assert_eq!(m["logcatch_tailers{state=\"running\"}"], 1.0);
    assert_eq!(m["logcatch_desired_tailers{source=\"config\"}"], 2.0);
    assert_eq!(m["logcatch_build_info{version=\"0.1.0\"}"], 1.0);
    assert!(m["logcatch_reconcile_total{result=\"ok\"}"] >= 1.0);

    // A directory given as a path fails and is restarted with backoff: restarts move.
    wait_for("restarts of the broken tailer", LONG, || {
        (metric(port, "logcatch_tailer_restarts_total{topic=\"broken\"}") >= 2.0).then_some(())
    });
    let status = agent.status();
    let broken = status["tailers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "broken")
        .unwrap()
        .clone();
    assert!(broken["restarts"].as_u64().unwrap() >= 2, "{broken}");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not a regular file"),
        "{broken}"
    );

    // An invalid reload counts as an error.
    let errors_before = metric(port, "logcatch_config_reloads_total{result=\"error\"}");
    ws.write_config("logs: [ {path: x, topic: 'bad topic'} ]\n");
    wait_for("the refused reload in the metrics", LONG, || {
        (metric(port, "logcatch_config_reloads_total{result=\"error\"}") == errors_before + 1.0)
            .then_some(())
    });
    ws.write_config(&config.replace("topic: broken", "topic: fixed"));
    wait_for("the good reload in the metrics", LONG, || {
        (metric(port, "logcatch_config_reloads_total{result=\"ok\"}") >= 1.0).then_some(())
    });

    // promtool lints the exposition (names, help, units).
    let (_, body) = http_get(port, "/metrics").unwrap();
    let mut promtool = Command::new(tool("promtool", "PROMTOOL_BIN"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool check metrics:\n{complaints}"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn status_matches_the_running_tailers_and_the_cli_prints_them() {
    let ws = Workspace::new();
    let (a, b) = (ws.path("a.log"), ws.path("b.log"));
    append_lines(&a, (0..10).map(|i| format!("a {i}")));
    let logs = format!(
        "  - {{ path: {}, topic: one }}\n  - {{ path: {}, topic: two }}",
        a.display(),
        b.display()
    );
    ws.write_config(&ws.config(&logs));
    let agent = ws.start();
    ws.wait_records(10, LONG);
    let states = wait_for("a running and b waiting", LONG, || {
        let mut states = agent.tailer_states();
        states.sort();
        (states.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>() == ["running", "waiting"])
            .then_some(states)
    });
    assert_eq!(states[0].0, a.display().to_string());
    // An idle tailer takes its last acknowledgement within 2 s (tail/idle.rs).
    let a_size = std::fs::metadata(&a).unwrap().len();
    let status = wait_for("a's offset at its end in /status", LONG, || {
        let status = agent.status();
        (status["tailers"][0]["offset"].as_u64() == Some(a_size)).then_some(status)
    });
    let a_row = &status["tailers"][0];
    assert_eq!(a_row["lag_bytes"], 0);
    assert_eq!(a_row["owners"], serde_json::json!(["config"]));

    let addr = format!("http://127.0.0.1:{}", agent.http_port);
    let out = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["status", "--addr", &addr])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TOPIC   PATH"), "{table}");
    assert!(
        lines[1].starts_with("one") && lines[1].contains("running"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("two") && lines[2].contains("waiting"),
        "{table}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["status", "--addr", &addr, "-o", "json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tailers"].as_array().unwrap().len(), 2);
    assert_eq!(agent.terminate().code(), Some(0));

    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["status", "--addr", &closed])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
}

#[test]
fn readiness_follows_the_sink_and_etcd() {
    let mut broker = Broker::start_memory();
    broker.stop();
    let mut etcd = Etcd::start();
    etcd.stop();
    let ws = Workspace::new();
    let log = ws.path("a.log");
    append_lines(&log, (0..5).map(|i| format!("r {i}")));
    let sink = format!(
        "  kind: kafka\n  kafka: {{ brokers: [\"{}\"], request_timeout: 2s, create_topics: true }}",
        broker.address()
    );
    let mut config = ws.config_with_sink(
        &format!("  - {{ path: {}, topic: ready }}", log.display()),
        &sink,
    );
    config.push_str(&format!(
        "etcd: {{ endpoints: [\"{}\"], keys: [/logcatch/ready], allowed_paths: ['/**'], dial_timeout: 1s, request_timeout: 1s }}\n",
        etcd.endpoint
    ));
    ws.write_config(&config);
    let agent = ws.start();
    let port = agent.http_port;
    let reason = wait_for("not ready", LONG, || {
        let (code, body) = http_get(port, "/readyz")?;
        (code == 503).then_some(body)
    });
    assert!(
        reason.contains("etcd key /logcatch/ready has not synced yet"),
        "{reason}"
    );
    assert!(reason.contains("the sink is not connected"), "{reason}");

    etcd.restart();
    let reason = wait_for("etcd synced", LONG, || {
        let (_, body) = http_get(port, "/readyz")?;
        (!body.contains("etcd")).then_some(body)
    });
    assert!(reason.contains("the sink is not connected"), "{reason}");
    assert_eq!(metric(port, "logcatch_etcd_connected{}"), 1.0);
    assert_eq!(
        metric(port, "logcatch_ready{}"),
        0.0,
        "the sink is still down"
    );

    broker.restart();
    wait_for("ready", LONG, || {
        (http_get(port, "/readyz")?.0 == 200).then_some(())
    });
    assert_eq!(metric(port, "logcatch_ready{}"), 1.0);
    let addr = format!("http://127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["status", "--addr", &addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "status exits 0 when ready");
    assert_eq!(agent.terminate().code(), Some(0));
}
