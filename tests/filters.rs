//! Line filters (`include_lines`, `exclude_lines`) and static `fields`, against a real
//! Kafka-protocol broker (tansu) read back with librdkafka, and real etcd: exactly the
//! right records are shipped, the checkpoint moves past the dropped ones (a restart reads
//! none of them again), each drop is counted by reason, every record carries the fields
//! as headers, and a bad etcd value is refused naming key, index and field while the
//! previous one keeps running.

mod common;

use common::kafka::{consume, consume_json_with_librdkafka, create_topic, kafka_sink_yaml};
use common::servers::{Broker, Etcd};
use common::{all_acknowledged, append_bytes, append_lines, metric, wait_for, Agent, Workspace};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// A topic name unique to this test run.
fn topic(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// An access log's line `i`: kinds 0 and 3 are kept by the filters below, kind 1 (a
/// kube-probe health check) is dropped by `exclude_lines`, kind 2 by `include_lines`.
fn access(i: usize) -> String {
    match i % 4 {
        0 => format!("GET /api/orders/{i} 200"),
        1 => format!("GET /healthz 200 kube-probe/1.29 {i}"),
        2 => format!("INFO cache warmed {i}"),
        _ => format!("POST /api/orders/{i} 201"),
    }
}

fn kept(range: std::ops::Range<usize>) -> Vec<String> {
    range
        .filter(|i| i % 4 == 0 || i % 4 == 3)
        .map(access)
        .collect()
}

/// Records of each kind dropped in `range`: (by include_lines, by exclude_lines).
fn dropped(range: std::ops::Range<usize>) -> (usize, usize) {
    let (mut include, mut exclude) = (0, 0);
    for i in range {
        match i % 4 {
            1 => exclude += 1,
            2 => include += 1,
            _ => {}
        }
    }
    (include, exclude)
}

fn filtered(agent: &Agent, topic: &str, reason: &str) -> f64 {
    let name = format!("logcatch_records_filtered_total{{reason=\"{reason}\",topic=\"{topic}\"}}");
    metric(agent.http_port, &name)
}

fn start_with_cluster(ws: &Workspace) -> Agent {
    let env = [("CLUSTER_NAME", "prod-eu-1")];
    Agent::start_with_env(&env, &ws.config_path(), ws.dir.path(), ws.http_port)
}

/// Waits until every running tailer acknowledged its whole file: its checkpoint is at
/// the file's end, past the filtered lines at the end too.
fn wait_acknowledged(agent: &Agent, tailers: usize) {
    wait_for("every file acknowledged to its end", LONG, || {
        (all_acknowledged(agent.http_port)? == tailers).then_some(())
    });
}

/// `topic` holds exactly `count` records (read with rskafka, after a librdkafka read).
fn assert_no_more(broker: &Broker, topic: &str, count: usize) {
    let all = consume(&broker.address(), topic, count + 1, Duration::from_secs(2));
    assert_eq!(all.len(), count, "no extra records");
}

fn values(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect()
}

#[test]
fn filters_ship_exactly_the_kept_lines_and_a_restart_reads_no_dropped_line_again() {
    let broker = Broker::start_memory();
    let topic = topic("filters");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let (access_log, probes) = (ws.path("access.log"), ws.path("probes.log"));
    // The access log ends with two dropped lines; the probes log holds nothing else.
    append_lines(&access_log, (0..1003).map(access));
    append_lines(&probes, (0..300).map(|i| access(i * 4 + 1)));
    let logs = format!(
        "  - path: {}\n    topic: {topic}\n    include_lines: ['^(GET|POST) ']\n    exclude_lines: ['kube-probe/', '^GET /healthz']\n    fields: {{ env: staging, team: shop }}\n  - path: {}\n    topic: {topic}\n    exclude_lines: ['kube-probe/']\n",
        access_log.display(),
        probes.display()
    );
    let config = ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), ""));
    ws.write_config(&format!(
        "{config}fields: {{ cluster: \"${{CLUSTER_NAME}}\", env: production }}\n"
    ));
    let agent = start_with_cluster(&ws);
    wait_acknowledged(&agent, 2);

    let want = kept(0..1003);
    let records = consume_json_with_librdkafka(&broker.address(), &topic, want.len());
    assert_eq!(values(&records), want, "exactly the kept lines, in order");
    for record in &records {
        let headers = &record["headers"];
        assert_eq!(
            headers["cluster"], "prod-eu-1",
            "global, from ${{CLUSTER_NAME}}"
        );
        assert_eq!(
            headers["env"], "staging",
            "the declaration's over the global"
        );
        assert_eq!(headers["team"], "shop");
        assert_eq!(headers["logcatch.path"], access_log.display().to_string());
    }
    let (include, exclude) = dropped(0..1003);
    assert_eq!(filtered(&agent, &topic, "include_lines"), include as f64);
    assert_eq!(
        filtered(&agent, &topic, "exclude_lines"),
        (exclude + 300) as f64
    );
    let read = metric(
        agent.http_port,
        &format!("logcatch_lines_read_total{{topic=\"{topic}\"}}"),
    );
    assert_eq!(read, 1303.0, "dropped lines are read too");
    let status = agent.status();
    let tailer = status["tailers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == access_log.display().to_string())
        .unwrap()
        .clone();
    assert_eq!(
        tailer["fields"],
        json!({"cluster": "prod-eu-1", "env": "staging", "team": "shop"})
    );
    assert_eq!(agent.terminate().code(), Some(0));

    // Restarted: it resumes at the end of both files, so nothing dropped is read (or
    // counted) again, and nothing kept is shipped twice.
    let agent = start_with_cluster(&ws);
    append_lines(&access_log, (1003..1203).map(access));
    append_lines(&probes, [access(1)]);
    wait_acknowledged(&agent, 2);
    let want = kept(0..1203);
    let records = consume_json_with_librdkafka(&broker.address(), &topic, want.len());
    assert_eq!(values(&records), want);
    let (include, exclude) = dropped(1003..1203);
    assert_eq!(filtered(&agent, &topic, "include_lines"), include as f64);
    assert_eq!(
        filtered(&agent, &topic, "exclude_lines"),
        (exclude + 1) as f64
    );
    assert_eq!(agent.terminate().code(), Some(0));
    assert_no_more(&broker, &topic, want.len());
}

/// One CRI line with its newline.
fn cri(second: usize, stream: &str, tag: &str, message: &str) -> String {
    format!("2026-05-01T10:20:{second:02}.123456789Z {stream} {tag} {message}\n")
}

#[test]
fn a_cri_log_is_filtered_on_its_joined_messages_not_on_its_lines() {
    let broker = Broker::start_memory();
    let topic = topic("filters-cri");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("web.log");
    // The probe's request is split in two fragments: neither alone matches the first
    // regex; the second matches every CRI line as written (its time), never a message.
    let logs = format!(
        "  - path: {}\n    topic: {topic}\n    format: cri\n    exclude_lines: ['^GET /healthz .*kube-probe', '^\\d{{4}}-\\d\\d-\\d\\dT']\n",
        log.display()
    );
    ws.write_config(&ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), "")));
    let agent = ws.start();
    let written = [
        cri(0, "stdout", "P", "GET /healthz "),
        cri(1, "stdout", "F", "HTTP/1.1 200 kube-probe/1.29"),
        cri(2, "stdout", "F", "GET /healthz HTTP/1.1 200 curl/8.5"),
        cri(3, "stderr", "P", "GET /api "),
        cri(
            4,
            "stdout",
            "F",
            "GET /healthz HTTP/1.1 200 kube-probe/1.29",
        ),
        cri(5, "stderr", "F", "500 upstream timeout"),
        cri(6, "stdout", "P", "GET /healthz HTTP/1.1 "),
        cri(7, "stdout", "F", "200 kube-probe/1.29"),
    ];
    append_bytes(&log, written.concat().as_bytes());
    wait_acknowledged(&agent, 1);
    let records = consume_json_with_librdkafka(&broker.address(), &topic, 2);
    assert_eq!(
        values(&records),
        [
            "GET /healthz HTTP/1.1 200 curl/8.5",
            "GET /api 500 upstream timeout"
        ]
    );
    assert_eq!(records[1]["headers"]["logcatch.stream"], "stderr");
    assert_eq!(filtered(&agent, &topic, "exclude_lines"), 3.0);
    assert_eq!(filtered(&agent, &topic, "include_lines"), 0.0);
    assert_eq!(agent.terminate().code(), Some(0));
    assert_no_more(&broker, &topic, 2);
}

/// The `etcd:` section watching `/lc/node`, allowing the workspace's `logs/`.
fn etcd_section(root: &Path, etcd: &Etcd) -> String {
    format!(
        "etcd:\n  endpoints: [\"{}\"]\n  keys: [\"/lc/node\"]\n  allowed_paths: [\"{}/logs/**\"]\n  dial_timeout: 1s\n  request_timeout: 2s\n",
        etcd.endpoint,
        root.display()
    )
}

fn key_error(agent: &Agent) -> Option<String> {
    let status = agent.status();
    let key = status["sources"]["keys"]
        .as_array()?
        .iter()
        .find(|k| k["key"] == "/lc/node")?
        .clone();
    key["error"].as_str().map(String::from)
}

#[test]
fn etcd_values_carry_filters_and_fields_and_a_bad_one_is_refused_while_the_last_runs_on() {
    let etcd = Etcd::start();
    let broker = Broker::start_memory();
    let topic = topic("filters-etcd");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let root = ws.dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("logs")).unwrap();
    let (a, b) = (root.join("logs/a.log"), root.join("logs/b.log"));
    let config = ws.config_with_sink("  []", &kafka_sink_yaml(&broker.address(), ""));
    ws.write_config(&format!(
        "{config}{}fields: {{ cluster: c1, env: production }}\n",
        etcd_section(&root, &etcd)
    ));
    let agent = ws.start();
    let good = json!([{
        "path": a, "topic": topic,
        "exclude_lines": ["kube-probe"], "fields": {"env": "staging"}
    }]);
    etcd.etcdctl(&["put", "/lc/node", &good.to_string()])
        .unwrap();
    let shipped = |lines: &[&str], want: &[String]| {
        append_lines(&a, lines.iter().map(|l| l.to_string()));
        let records = consume_json_with_librdkafka(&broker.address(), &topic, want.len());
        assert_eq!(values(&records), want);
        for record in &records {
            assert_eq!(record["headers"]["cluster"], "c1");
            assert_eq!(record["headers"]["env"], "staging");
        }
    };
    wait_for("a's tailer", LONG, || {
        (agent.tailer_states().len() == 1).then_some(())
    });
    let mut want = vec!["a-1".to_string(), "a-2".to_string()];
    shipped(&["a-1", "GET /healthz kube-probe/1.29", "a-2"], &want);

    // Refused, naming key, index and field; the last valid value keeps running.
    let refused = [
        (
            json!([good[0], {"path": b, "topic": topic, "exclude_lines": ["ok", "(unclosed"]}]),
            "etcd key /lc/node: [1].exclude_lines[1]: invalid regex \"(unclosed\"",
        ),
        (
            json!([{"path": a, "topic": topic, "fields": {"replicas": 3}}]),
            "etcd key /lc/node: [0].fields.replicas: invalid type: integer `3`, expected a string",
        ),
    ];
    for (round, (value, error)) in refused.iter().enumerate() {
        etcd.etcdctl(&["put", "/lc/node", &value.to_string()])
            .unwrap();
        let shown = wait_for("the refusal in /status", LONG, || {
            key_error(&agent).filter(|e| e.starts_with(error))
        });
        assert!(shown.starts_with(error), "{shown}");
        want.push(format!("a-kept-{round}"));
        let probe = format!("kube-probe {round}");
        shipped(&[probe.as_str(), want.last().unwrap().as_str()], &want);
    }
    let tailers = agent.status()["tailers"].clone();
    assert_eq!(tailers.as_array().unwrap().len(), 1, "b never started");
    assert_eq!(tailers[0]["restarts"], 0, "a never restarted");
    assert_eq!(filtered(&agent, &topic, "exclude_lines"), 3.0);
    assert_eq!(agent.terminate().code(), Some(0));
    assert_no_more(&broker, &topic, want.len());
}

#[test]
fn a_reloaded_global_field_goes_with_the_next_records_and_nothing_is_shipped_twice() {
    let broker = Broker::start_memory();
    let topic = topic("fields-reload");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let logs = format!("  - {{ path: {}, topic: {topic} }}", log.display());
    let config = ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), ""));
    ws.write_config(&format!("{config}fields: {{ cluster: blue }}\n"));
    let agent = ws.start();
    append_lines(&log, ["before".to_string()]);
    let records = consume_json_with_librdkafka(&broker.address(), &topic, 1);
    assert_eq!(records[0]["headers"]["cluster"], "blue");

    ws.write_config(&format!("{config}fields: {{ cluster: green }}\n"));
    wait_for("the new field in /status", LONG, || {
        let status = agent.status();
        (status["tailers"][0]["fields"]["cluster"] == "green").then_some(())
    });
    append_lines(&log, ["after".to_string()]);
    let records = consume_json_with_librdkafka(&broker.address(), &topic, 2);
    assert_eq!(values(&records), ["before", "after"]);
    assert_eq!(records[1]["headers"]["cluster"], "green");
    assert_eq!(agent.terminate().code(), Some(0));
    assert_no_more(&broker, &topic, 2);
}
