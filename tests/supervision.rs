//! Background tasks that die — a panic in the checkpoint writer, the HTTP server, the
//! config watcher, a tailer's path watch task or a Kafka partition's producer — are
//! restarted, counted in `logcatch_task_restarts_total{task}`, shown in `/status` and
//! logged, and nothing they carried is lost (the real binary, a debug build, with
//! `LOGCATCH_PANIC_ONCE` injecting one panic per task).

mod common;

use common::kafka::{consume, create_topic, kafka_sink_yaml, unique_topic};
use common::servers::Broker;
use common::{append_lines, count_lines, wait_for, Agent, Workspace};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn lines(prefix: &str, range: std::ops::Range<usize>) -> impl Iterator<Item = String> + '_ {
    range.map(move |i| format!("{prefix} line {i:05}"))
}

fn log_entry(path: &std::path::Path, topic: &str) -> String {
    format!("  - {{ path: '{}', topic: {topic} }}", path.display())
}

fn restarts(port: u16, task: &str) -> f64 {
    common::metric_sum(
        port,
        &format!("logcatch_task_restarts_total{{task=\"{task}\"}}"),
    )
}

#[test]
fn background_tasks_that_panic_are_restarted_counted_and_lose_nothing() {
    let ws = Workspace::new();
    let app = ws.path("app.log");
    append_lines(&app, lines("app", 0..100));
    ws.write_config(&ws.config(&log_entry(&app, "app")));
    let tasks = "checkpoint-writer,http,config-watcher,path-watch";
    let agent = Agent::start_with_env(
        &[("LOGCATCH_PANIC_ONCE", tasks)],
        &ws.config_path(),
        ws.dir.path(),
        ws.http_port,
    );
    let port = agent.http_port;
    ws.wait_records(100, LONG);
    // The checkpoint writer was restarted: the file's checkpoint is written.
    let size = std::fs::metadata(&app).unwrap().len();
    wait_for("the checkpoint written", LONG, || {
        let text = std::fs::read_to_string(ws.path("state/checkpoints.json")).ok()?;
        let document: serde_json::Value = serde_json::from_str(&text).ok()?;
        (document["checkpoints"][0]["offset"].as_u64() == Some(size)).then_some(())
    });
    // The config watcher was restarted: a change to the config applies.
    let other = ws.path("other.log");
    append_lines(&other, lines("other", 0..10));
    let both = format!("{}\n{}", log_entry(&app, "app"), log_entry(&other, "app"));
    ws.write_config(&ws.config(&both));
    append_lines(&app, lines("app", 100..110));
    let records = ws.wait_records(120, LONG);
    let counts = count_lines(&records);
    assert!(
        lines("app", 0..110)
            .chain(lines("other", 0..10))
            .all(|l| counts.get(l.as_str()) == Some(&1)),
        "every line once: {records:?}"
    );
    for task in ["checkpoint-writer", "http", "config-watcher"] {
        wait_for(&format!("{task} counted"), LONG, || {
            (restarts(port, task) == 1.0).then_some(())
        });
    }
    // A tailer whose path watch task died fails and is restarted by the reconcile loop.
    assert!(common::metric_sum(port, "logcatch_tailer_restarts_total") >= 1.0);
    let status = agent.status();
    assert_eq!(
        status["tasks"]["checkpoint-writer"]["restarts"], 1,
        "{status}"
    );
    let error = status["tasks"]["http"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("injected panic"), "{status}");
    let log = agent.log();
    assert!(
        log.contains("background task checkpoint-writer panicked"),
        "{log}"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_kafka_producer_that_panics_is_replaced_and_its_partition_ships_again() {
    let broker = Broker::start_memory();
    let topic = unique_topic("producer-panic");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let app = ws.path("app.log");
    append_lines(&app, lines("k", 0..200));
    ws.write_config(&ws.config_with_sink(
        &log_entry(&app, &topic),
        &kafka_sink_yaml(&broker.address(), ""),
    ));
    let agent = Agent::start_with_env(
        &[("LOGCATCH_PANIC_ONCE", "kafka-producer")],
        &ws.config_path(),
        ws.dir.path(),
        ws.http_port,
    );
    let values: Vec<String> = consume(&broker.address(), &topic, 200, LONG)
        .iter()
        .map(|r| r.value())
        .collect();
    let counts: std::collections::HashMap<&str, usize> =
        values.iter().fold(Default::default(), |mut m, v| {
            *m.entry(v.as_str()).or_default() += 1;
            m
        });
    assert!(
        lines("k", 0..200).all(|l| counts.get(l.as_str()) == Some(&1)),
        "every line once after the producer was replaced ({} records)",
        values.len()
    );
    assert_eq!(restarts(agent.http_port, "kafka-producer"), 1.0);
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Nothing replaces the reconcile loop (it owns every tailer): when it dies the agent
/// says so and exits with an error, for its supervisor (the kubelet) to start it again.
#[test]
fn the_agent_exits_with_an_error_when_its_reconcile_loop_dies() {
    let ws = Workspace::new();
    let app = ws.path("app.log");
    append_lines(&app, lines("app", 0..10));
    ws.write_config(&ws.config(&log_entry(&app, "app")));
    let stderr_path = ws.path("agent.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["run", "--config"])
        .arg(ws.config_path())
        .env("LOGCATCH_PANIC_ONCE", "reconcile")
        .current_dir(ws.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("running logcatch");
    let exited = wait_for("the agent to exit", LONG, || child.try_wait().unwrap());
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(!exited.success(), "{stderr}");
    assert!(
        stderr.contains("the reconcile loop panicked: injected panic in reconcile"),
        "{stderr}"
    );
}
