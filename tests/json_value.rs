//! `encoding: json` (docs/json-value.md) against a real Kafka-protocol broker (tansu),
//! read back with the independent librdkafka client: every member of the value of a CRI
//! log's records (through the kubelet's symlink and through the pods directory, with
//! `merge_json`) and of a raw file's, with labels and fields; the headers as they were;
//! a value over the topic's `max.message.bytes` cut inside its message, still JSON; and
//! values whose escapes take their batch over a request (the producer writes the values
//! into the request: it must know their size first), each shipped whole, no request
//! over the limit.

mod common;

use common::kafka::{
    consume, consume_json_with_librdkafka, create_topic, create_topic_with_configs,
    kafka_sink_yaml, KafkaProxy,
};
use common::servers::Broker;
use common::{all_acknowledged, append_bytes, metric, wait_for, Workspace};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const ID: &str = "5f2b7c3d9e1a4b6c8d0e2f4a6b8c0d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c";
const UID: &str = "0b6e3c1a-11ef-4a5b-9c3d-2e1f0a9b8c7d";

fn topic(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// A container's log as the kubelet lays it out: the real file and the symlink to it.
fn container_log(
    ws: &Workspace,
    namespace: &str,
    pod: &str,
    container: &str,
) -> (PathBuf, PathBuf) {
    let dir = ws.path(&format!("pods/{namespace}_{pod}_{UID}/{container}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(ws.path("containers")).unwrap();
    let file = dir.join("0.log");
    std::fs::write(&file, "").unwrap();
    let link = ws.path(&format!(
        "containers/{pod}_{namespace}_{container}-{ID}.log"
    ));
    let target = format!("../pods/{namespace}_{pod}_{UID}/{container}/0.log");
    std::os::unix::fs::symlink(target, &link).unwrap();
    (file, link)
}

/// The values of `records` parsed as JSON; each must be one.
fn values(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            let text = r["value"].as_str().expect("a value");
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
        })
        .collect()
}

/// Checks that `value["time"]` is RFC 3339 with nanoseconds within `[from, to]`, and
/// takes it out (a raw file's time is when the agent encoded the line for Kafka).
fn take_read_time(
    value: &mut Value,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) {
    let time = value
        .as_object_mut()
        .unwrap()
        .remove("time")
        .expect("a time");
    let time = time.as_str().expect("a string");
    assert_eq!(time.len(), "2026-01-01T00:00:00.000000000Z".len(), "{time}");
    assert!(time.ends_with('Z'), "{time}");
    let parsed = chrono::DateTime::parse_from_rfc3339(time).unwrap();
    assert!(
        parsed >= from && parsed <= to,
        "{time} not in [{from}, {to}]"
    );
}

#[test]
fn json_values_carry_every_member_for_a_cri_log_and_a_raw_file() {
    let broker = Broker::start_memory();
    let (k8s, pods, raw) = (topic("json-k8s"), topic("json-pods"), topic("json-raw"));
    for t in [&k8s, &pods, &raw] {
        create_topic(&broker.address(), t, 1);
    }
    let ws = Workspace::new();
    let (file, link) = container_log(&ws, "payments", "api-0", "server");
    let app = ws.path("app.log");
    let logs = format!(
        "  - {{ path: {containers}, topic: {k8s}, format: cri, encoding: json, labels: {{owner: payments}}, fields: {{team: pay}} }}\n\
         \x20 - {{ path: {pods_glob}, topic: {pods}, format: cri, encoding: json, merge_json: log }}\n\
         \x20 - {{ path: {app}, topic: {raw}, encoding: json, merge_json: log, labels: {{ticket: PAY-1}} }}\n",
        containers = ws.path("containers/*.log").display(),
        pods_glob = ws.path("pods/*/*/*.log").display(),
        app = app.display(),
    );
    let config = ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), ""));
    ws.write_config(&format!("{config}fields: {{ cluster: prod-eu }}\n"));
    let before = chrono::Utc::now();
    let agent = ws.start();
    let cri = [
        "2026-05-01T10:20:00.123456789Z stdout P hello \n",
        "2026-05-01T10:20:01.000000001Z stderr F {\"level\": \"warn\", \"msg\": \"disk 91%\"}\n",
        "2026-05-01T10:20:02.5Z stdout F world \"quoted\"\ttab\n",
        "garbage\n",
    ];
    for line in cri {
        append_bytes(&file, line.as_bytes());
    }
    let raw_lines: [&[u8]; 4] = [
        b"plain text\n",
        b"{\"user\": \"ann\", \"n\": 1.50}\n",
        b"bad \xff bytes\n",
        b"{\"broken\": \n",
    ];
    for line in raw_lines {
        append_bytes(&app, line);
    }
    wait_for("every file acknowledged to its end", LONG, || {
        (all_acknowledged(agent.http_port)? == 3).then_some(())
    });
    let after = chrono::Utc::now();
    let offset = |i: usize| cri[..i].iter().map(|l| l.len()).sum::<usize>();

    // Through the symlink: the container id, and the pod uid from the link's target; the
    // message a string.
    let records = consume_json_with_librdkafka(&broker.address(), &k8s, 3);
    let mut got = values(&records);
    let shared = json!({
        "schema": "logcatch.v1",
        "node": "test-node",
        "path": link.display().to_string(),
        "namespace": "payments",
        "pod": "api-0",
        "pod_uid": UID,
        "container": "server",
        "container_id": ID,
        "labels": {"owner": "payments"},
        "fields": {"cluster": "prod-eu", "team": "pay"},
    });
    let with = |members: Value| {
        let mut value = shared.clone();
        value
            .as_object_mut()
            .unwrap()
            .extend(members.as_object().unwrap().clone());
        value
    };
    assert_eq!(
        got[0],
        with(json!({
            "time": "2026-05-01T10:20:01.000000001Z",
            "offset": offset(1),
            "stream": "stderr",
            "message": "{\"level\": \"warn\", \"msg\": \"disk 91%\"}",
        }))
    );
    assert_eq!(
        got[1],
        with(json!({
            "time": "2026-05-01T10:20:00.123456789Z",
            "offset": 0,
            "stream": "stdout",
            "message": "hello world \"quoted\"\ttab",
        }))
    );
    take_read_time(&mut got[2], before, after);
    assert_eq!(
        got[2],
        with(json!({
            "offset": offset(3),
            "parse_error": "cri: expected `<time> <stdout|stderr> <P|F> <message>`",
            "message": "garbage",
        }))
    );
    // The headers are as they were.
    let headers = &records[0]["headers"];
    assert_eq!(headers["k8s.pod"], "api-0");
    assert_eq!(headers["k8s.container_id"], ID);
    assert_eq!(headers["label.owner"], "payments");
    assert_eq!(headers["cluster"], "prod-eu");
    assert_eq!(headers["team"], "pay");
    assert_eq!(headers["logcatch.stream"], "stderr");
    assert_eq!(headers["logcatch.time"], "2026-05-01T10:20:01.000000001Z");
    assert_eq!(headers["logcatch.offset"], offset(1).to_string());
    assert_eq!(headers["logcatch.path"], link.display().to_string());
    assert_eq!(headers["logcatch.node"], "test-node");

    // Through the pods directory: the pod uid, no container id; merge_json puts the
    // JSON object under `log` (and nothing else).
    let got = values(&consume_json_with_librdkafka(&broker.address(), &pods, 3));
    assert_eq!(
        got[0],
        json!({
            "schema": "logcatch.v1",
            "time": "2026-05-01T10:20:01.000000001Z",
            "node": "test-node",
            "path": file.display().to_string(),
            "offset": offset(1),
            "stream": "stderr",
            "namespace": "payments",
            "pod": "api-0",
            "pod_uid": UID,
            "container": "server",
            "fields": {"cluster": "prod-eu"},
            "log": {"level": "warn", "msg": "disk 91%"},
        })
    );
    assert_eq!(got[1]["message"], "hello world \"quoted\"\ttab");
    assert_eq!(
        got[1]["time"], "2026-05-01T10:20:00.123456789Z",
        "the first fragment's"
    );
    assert!(got[1].get("log").is_none());

    // A raw file: the read time, no stream or pod; JSON objects merged, the rest strings
    // (invalid UTF-8 replaced by U+FFFD).
    let records = consume_json_with_librdkafka(&broker.address(), &raw, 4);
    let mut got = values(&records);
    let mut at = 0;
    let members = [
        json!({"message": "plain text"}),
        json!({"log": {"user": "ann", "n": 1.50}}),
        json!({"message": "bad \u{FFFD} bytes"}),
        json!({"message": "{\"broken\": "}),
    ];
    for ((value, line), members) in got.iter_mut().zip(raw_lines).zip(members) {
        take_read_time(value, before, after);
        let mut want = json!({
            "schema": "logcatch.v1",
            "node": "test-node",
            "path": app.display().to_string(),
            "offset": at,
            "labels": {"ticket": "PAY-1"},
            "fields": {"cluster": "prod-eu"},
        });
        want.as_object_mut()
            .unwrap()
            .extend(members.as_object().unwrap().clone());
        assert_eq!(*value, want);
        at += line.len();
    }
    // The merged object is the line's text as written (its numbers too).
    let text = records[1]["value"].as_str().unwrap();
    assert!(
        text.ends_with(r#","log":{"user": "ann", "n": 1.50}}"#),
        "{text}"
    );
    assert_eq!(records[1]["headers"]["label.ticket"], "PAY-1");
    assert_eq!(records[1]["headers"]["logcatch.offset"], "11");
    assert_eq!(agent.terminate().code(), Some(0));
    for (t, count) in [(&k8s, 3), (&pods, 3), (&raw, 4)] {
        let all = consume(&broker.address(), t, count + 1, Duration::from_secs(2));
        assert_eq!(all.len(), count, "no extra records on {t}");
    }
}

#[test]
fn a_json_value_over_the_topics_limit_is_cut_inside_its_message_and_stays_json() {
    let broker = Broker::start_memory();
    let cut = topic("json-cut");
    create_topic_with_configs(&broker.address(), &cut, 1, &[("max.message.bytes", "4096")]);
    let ws = Workspace::new();
    let log = ws.path("big.log");
    // Quotes double when escaped: 20,000 bytes of line are 40,000 of value.
    let huge = "\"q\"".repeat(6_667);
    let written = ["before".to_string(), huge.clone(), "after".to_string()];
    for line in &written {
        append_bytes(&log, format!("{line}\n").as_bytes());
    }
    let logs = format!(
        "  - {{ path: {}, topic: {cut}, encoding: json }}\n",
        log.display()
    );
    ws.write_config(&ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), "")));
    let agent = ws.start();
    wait_for("the file acknowledged to its end", LONG, || {
        (all_acknowledged(agent.http_port)? == 1).then_some(())
    });
    let records = consume_json_with_librdkafka(&broker.address(), &cut, 3);
    let got = values(&records);
    let messages: Vec<&str> = got.iter().map(|v| v["message"].as_str().unwrap()).collect();
    assert_eq!(messages[0], "before");
    assert_eq!(messages[2], "after");
    assert!(
        huge.starts_with(messages[1]) && messages[1].len() > 1_000,
        "cut inside the message, not gutted: {} bytes",
        messages[1].len()
    );
    assert_eq!(got[1]["truncated"], huge.len());
    assert_eq!(got[1]["offset"], "before\n".len());
    assert_eq!(got[1]["schema"], "logcatch.v1");
    let value = records[1]["value"].as_str().unwrap();
    assert!(value.len() < 4096, "{}", value.len());
    assert_eq!(
        records[1]["headers"]["logcatch.truncated"],
        huge.len().to_string()
    );
    let name = format!("logcatch_records_cut_total{{topic=\"{cut}\"}}");
    assert_eq!(metric(agent.http_port, &name), 1.0);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn json_values_whose_escapes_outgrow_a_request_are_cut_or_go_alone_none_over_the_limit() {
    // A real Kafka refuses a request over the topic's limit; tansu does not, the proxy
    // does (and counts it).
    let (broker, proxy) = KafkaProxy::with_memory_broker(16 * 1024 + 1024);
    let escapes = topic("json-escapes");
    create_topic_with_configs(
        &broker.address(),
        &escapes,
        1,
        &[("max.message.bytes", "16384")],
    );
    let ws = Workspace::new();
    let log = ws.path("controls.log");
    // Control characters, 6 bytes each escaped (`\u0001`): a line of 2,000 is a value of
    // 12,000 bytes (one fits a request, two do not, by their bytes they would); one of
    // 4,000 is 24,000 (over the limit alone: cut, by its bytes it is not).
    let written: Vec<String> = (0..30u8)
        .map(|i| {
            let control = char::from(1 + i % 7).to_string();
            let len = if i % 3 == 0 { 4_000 } else { 2_000 };
            format!("{i:02}{}", control.repeat(len))
        })
        .collect();
    let text: String = written.iter().map(|line| format!("{line}\n")).collect();
    append_bytes(&log, text.as_bytes());
    let logs = format!(
        "  - {{ path: {}, topic: {escapes}, encoding: json }}\n",
        log.display()
    );
    let sink = kafka_sink_yaml(&proxy.address(), "    compression: none\n");
    ws.write_config(&ws.config_with_sink(&logs, &sink));
    let agent = ws.start();
    wait_for("the file acknowledged to its end", LONG, || {
        (all_acknowledged(agent.http_port)? == 1).then_some(())
    });
    let records = consume_json_with_librdkafka(&broker.address(), &escapes, written.len());
    let got = values(&records);
    assert_eq!(got.len(), written.len());
    for (value, line) in got.iter().zip(&written) {
        let message = value["message"].as_str().unwrap();
        if line.len() > 4_000 {
            assert!(
                line.starts_with(message) && message.len() > 1_000,
                "cut inside the message: {} bytes",
                message.len()
            );
            assert_eq!(value["truncated"], line.len());
        } else {
            assert_eq!(message, line, "whole");
            assert!(value.get("truncated").is_none());
        }
    }
    let name = format!("logcatch_records_cut_total{{topic=\"{escapes}\"}}");
    assert_eq!(metric(agent.http_port, &name), 10.0);
    assert_eq!(
        proxy.refused.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no request over the topic's limit; agent log:\n{}",
        agent.log()
    );
    assert_eq!(agent.terminate().code(), Some(0));
}
