//! Kubernetes container logs end to end, on files laid out as the kubelet does
//! (`containers/<pod>_<ns>_<container>-<id>.log` symlinks into
//! `pods/<ns>_<pod>_<uid>/<container>/0.log`): CRI `P`/`F` fragments across read
//! boundaries and restarts, Docker json-file partials, the kubelet's rotation through
//! the symlink, multiline stack traces, malformed lines, the pod metadata on records
//! read back from a real broker, and etcd declarations checked at the symlinks' targets.

mod common;

use common::kafka::{consume, create_topic};
use common::servers::Broker;
use common::{all_acknowledged, append_bytes, metric_sum, wait_for, Record, Workspace};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const ID: &str = "5f2b7c3d9e1a4b6c8d0e2f4a6b8c0d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c";

/// A container's log as the kubelet lays it out.
struct ContainerLog {
    /// `containers/<pod>_<ns>_<container>-<id>.log`, the symlink operators declare.
    link: PathBuf,
    /// The directory of the real files, `pods/<ns>_<pod>_<uid>/<container>`.
    dir: PathBuf,
}

impl ContainerLog {
    fn new(ws: &Workspace, namespace: &str, pod: &str, container: &str) -> Self {
        let dir = ws.path(&format!("pods/{namespace}_{pod}_0b6e3c1a-uid/{container}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(ws.path("containers")).unwrap();
        std::fs::write(dir.join("0.log"), "").unwrap();
        let link = ws.path(&format!(
            "containers/{pod}_{namespace}_{container}-{ID}.log"
        ));
        let target = format!("../pods/{namespace}_{pod}_0b6e3c1a-uid/{container}/0.log");
        std::os::unix::fs::symlink(target, &link).unwrap();
        ContainerLog { link, dir }
    }

    /// The file the runtime writes now.
    fn current(&self) -> PathBuf {
        self.dir.join("0.log")
    }

    fn write(&self, text: &str) {
        append_bytes(&self.current(), text.as_bytes());
    }
}

/// The runtime's time of the `i`th line.
fn time(i: usize) -> String {
    format!(
        "2024-05-01T10:20:{:02}.{:09}Z",
        i / 1000 % 60,
        i % 1000 * 1_000_001
    )
}

/// One CRI line with its newline.
fn cri(i: usize, stream: &str, tag: &str, message: &str) -> String {
    format!("{} {stream} {tag} {message}\n", time(i))
}

fn entry(glob: &Path, topic: &str, extra: &str) -> String {
    format!("  - {{ path: {}, topic: {topic}{extra} }}", glob.display())
}

fn lines_of(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.line.as_str()).collect()
}

/// Gives the agent time to read what was written (it polls every 20 ms).
fn let_it_read() {
    std::thread::sleep(Duration::from_millis(400));
}

#[test]
fn cri_fragments_are_joined_across_read_boundaries_and_restarts_and_bad_lines_shipped_raw() {
    let ws = Workspace::new();
    let log = ContainerLog::new(&ws, "payments", "api-7d9f8-x2x9q", "server");
    ws.write_config(&ws.config(&entry(&ws.path("containers/*.log"), "k8s", ", format: cri")));
    let agent = ws.start();

    // Fragments arrive in separate writes, one of them cut inside its line; a stderr
    // line and two malformed lines come between them.
    log.write(&cri(0, "stdout", "P", "first half, "));
    let_it_read();
    let second = cri(1, "stdout", "P", "second part, ");
    log.write(&second[..20]);
    let_it_read();
    log.write(&second[20..]);
    log.write(&cri(2, "stderr", "F", "an error meanwhile"));
    log.write("not a cri line at all\n");
    log.write(&format!("{} stdout\n", time(3)));
    let_it_read();
    log.write(&cri(4, "stdout", "F", "the end"));
    let records = ws.wait_records(4, LONG);
    assert_eq!(
        lines_of(&records),
        [
            "an error meanwhile",
            "not a cri line at all",
            &format!("{} stdout", time(3)),
            "first half, second part, the end",
        ]
    );
    let joined = &records[3];
    assert_eq!(joined.offset, 0, "a record starts at its first fragment");
    assert_eq!(joined.stream.as_deref(), Some("stdout"));
    assert_eq!(
        joined.time.as_deref(),
        Some(time(0).as_str()),
        "the first fragment's time"
    );
    assert_eq!(joined.namespace.as_deref(), Some("payments"));
    assert_eq!(joined.pod.as_deref(), Some("api-7d9f8-x2x9q"));
    assert_eq!(joined.container.as_deref(), Some("server"));
    assert_eq!(joined.container_id.as_deref(), Some(ID));
    assert_eq!(joined.path, log.link.display().to_string());
    assert_eq!(records[0].stream.as_deref(), Some("stderr"));
    for bad in &records[1..3] {
        assert!(
            bad.parse_error.as_deref().unwrap().starts_with("cri: "),
            "{bad:?}"
        );
        assert_eq!(bad.stream, None);
    }
    assert!(records[0].parse_error.is_none() && joined.parse_error.is_none());
    wait_for("the parse errors counted", LONG, || {
        (metric_sum(agent.http_port, "logcatch_parse_errors_total") == 2.0).then_some(())
    });

    // A clean stop in the middle of a line: its fragments are not shipped, and the
    // checkpoint before them makes the restart join them with the rest.
    log.write(&cri(5, "stdout", "P", "before "));
    log.write(&cri(6, "stdout", "P", "the stop, "));
    let_it_read();
    assert_eq!(agent.terminate().code(), Some(0));
    let agent = ws.start();
    log.write(&cri(7, "stdout", "F", "after it"));
    let records = ws.wait_records(5, LONG);
    assert_eq!(records[4].line, "before the stop, after it");

    // The same across a crash: wait past the checkpoint interval, kill -9.
    log.write(&cri(8, "stderr", "P", "crash "));
    std::thread::sleep(Duration::from_millis(1500));
    agent.kill9();
    let agent = ws.start();
    log.write(&cri(9, "stderr", "F", "survived"));
    let records = ws.wait_records(6, LONG);
    assert_eq!(records[5].line, "crash survived");
    assert_eq!(records[5].stream.as_deref(), Some("stderr"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ws.records().len(),
        6,
        "nothing repeated, no fragment shipped alone"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// A container killed in the middle of a line leaves a `P` fragment whose rest never comes:
/// it is shipped as it is after 4 s, marked and counted, and the checkpoint passes it.
#[test]
fn a_fragment_whose_rest_never_comes_is_shipped_unfinished() {
    let ws = Workspace::new();
    let log = ContainerLog::new(&ws, "batch", "job-x1", "worker");
    ws.write_config(&ws.config(&entry(&ws.path("containers/*.log"), "k8s", ", format: cri")));
    let agent = ws.start();
    log.write(&cri(0, "stdout", "F", "started"));
    log.write(&cri(1, "stdout", "P", "killed in the middle of "));
    let records = ws.wait_records(2, LONG);
    assert_eq!(lines_of(&records), ["started", "killed in the middle of "]);
    let unfinished = &records[1];
    let reason = unfinished.parse_error.as_deref().unwrap_or_default();
    assert!(reason.starts_with("unfinished: "), "{unfinished:?}");
    assert_eq!(unfinished.stream.as_deref(), Some("stdout"));
    assert_eq!(unfinished.time.as_deref(), Some(time(1).as_str()));
    assert_eq!(unfinished.pod.as_deref(), Some("job-x1"));
    let port = agent.http_port;
    wait_for("the unfinished record counted", LONG, || {
        (metric_sum(port, "logcatch_unfinished_records_total") == 1.0).then_some(())
    });
    // The checkpoint moved past it: a restart ships nothing again.
    wait_for("the whole file acknowledged", LONG, || {
        all_acknowledged(port).filter(|&running| running == 1)
    });
    assert_eq!(agent.terminate().code(), Some(0));
    let agent = ws.start();
    wait_for(
        "the whole file acknowledged after the restart",
        LONG,
        || all_acknowledged(agent.http_port).filter(|&running| running == 1),
    );
    assert_eq!(ws.records().len(), 2, "nothing shipped twice");
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn docker_json_partials_are_joined_and_auto_detects_the_format() {
    let ws = Workspace::new();
    let log = ContainerLog::new(&ws, "web", "nginx-0", "nginx");
    ws.write_config(&ws.config(&entry(
        &ws.path("containers/*.log"),
        "k8s",
        ", format: auto",
    )));
    let agent = ws.start();
    let docker = |log: &str, stream: &str, i: usize| {
        format!(
            "{}\n",
            serde_json::json!({"log": log, "stream": stream, "time": time(i)})
        )
    };
    // Docker splits lines at 16 KiB: a long line arrives as fragments without "\n".
    let long = "x".repeat(40_000);
    log.write(&docker(&long[..16_384], "stdout", 0));
    log.write(&docker("GET /health 200 \"ok\"\n", "stderr", 1));
    log.write(&docker(&long[16_384..32_768], "stdout", 2));
    let_it_read();
    log.write(&docker(&format!("{}\n", &long[32_768..]), "stdout", 3));
    log.write("{\"log\": truncated json\n");
    log.write(&docker("tab\tand unicode é\n", "stdout", 4));
    let records = ws.wait_records(4, LONG);
    assert_eq!(
        lines_of(&records),
        [
            "GET /health 200 \"ok\"",
            long.as_str(),
            "{\"log\": truncated json",
            "tab\tand unicode é"
        ]
    );
    assert_eq!(records[1].offset, 0);
    assert_eq!(records[1].time.as_deref(), Some(time(0).as_str()));
    assert_eq!(records[0].stream.as_deref(), Some("stderr"));
    assert_eq!(records[3].stream.as_deref(), Some("stdout"));
    assert!(records[2]
        .parse_error
        .as_deref()
        .unwrap()
        .starts_with("docker: "));
    assert_eq!(records[0].namespace.as_deref(), Some("web"));
    wait_for("the parse error counted", LONG, || {
        (metric_sum(agent.http_port, "logcatch_parse_errors_total") == 1.0).then_some(())
    });
}

#[test]
fn kubelet_rotation_through_the_symlink_ships_every_line_once() {
    let ws = Workspace::new();
    let log = ContainerLog::new(&ws, "batch", "worker-5", "job");
    ws.write_config(&ws.config(&entry(&ws.path("containers/*.log"), "k8s", ", format: cri")));
    let agent = ws.start();
    let written: Vec<String> = (0..350).map(|i| format!("line {i}")).collect();
    let write = |log: &ContainerLog, range: std::ops::Range<usize>| {
        let text: String = range
            .map(|i| cri(i, "stdout", "F", &format!("line {i}")))
            .collect();
        log.write(&text);
    };
    write(&log, 0..100);
    ws.wait_records(100, LONG);

    // The kubelet renames 0.log and the runtime reopens 0.log; later the kubelet
    // compresses the rotated file (gzip deletes the original).
    write(&log, 100..110);
    let rotated = log.dir.join("0.log.20240501-102030");
    std::fs::rename(log.current(), &rotated).unwrap();
    std::fs::write(log.current(), "").unwrap();
    write(&log, 110..200);
    ws.wait_records(200, LONG);
    let gzip = std::process::Command::new("gzip").arg(&rotated).status();
    assert!(gzip.expect("running gzip").success());
    assert!(log.dir.join("0.log.20240501-102030.gz").exists());
    write(&log, 200..300);
    let records = ws.wait_records(300, LONG);
    assert_eq!(lines_of(&records), written[..300]);

    // Rotated while the agent was down: the rest of the renamed file first, then 0.log.
    assert_eq!(agent.terminate().code(), Some(0));
    write(&log, 300..320);
    std::fs::rename(log.current(), log.dir.join("0.log.20240501-103000")).unwrap();
    std::fs::write(log.current(), "").unwrap();
    write(&log, 320..350);
    let agent = ws.start();
    let records = ws.wait_records(350, LONG);
    assert_eq!(lines_of(&records), written, "every line once, in order");
    assert!(records.iter().all(|r| r.pod.as_deref() == Some("worker-5")));
    assert!(records
        .iter()
        .all(|r| r.path == log.link.display().to_string()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ws.records().len(), 350, "nothing repeated");
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn multiline_joins_a_java_stack_trace_cuts_at_max_lines_and_flushes_on_timeout_and_stop() {
    let ws = Workspace::new();
    let log = ContainerLog::new(&ws, "shop", "checkout-1", "app");
    let plain = ws.path("app.log");
    std::fs::write(&plain, "").unwrap();
    let logs = [
        entry(
            &ws.path("containers/*.log"),
            "java",
            r#", format: cri, multiline: { start_pattern: '^\d{4}-\d{2}-\d{2} ', timeout: 300ms }"#,
        ),
        entry(
            &plain,
            "plain",
            ", multiline: { start_pattern: '^START', max_lines: 3, timeout: 1h }",
        ),
    ];
    ws.write_config(&ws.config(&logs.join("\n")));
    let agent = ws.start();

    let trace = [
        "2024-05-01 10:00:01 ERROR request failed",
        "java.lang.IllegalStateException: payment declined",
        "\tat com.example.shop.Checkout.pay(Checkout.java:42)",
        "\tat com.example.shop.Checkout.run(Checkout.java:17)",
        "Caused by: java.io.IOException: connection reset",
        "\t... 2 more",
    ];
    log.write(&cri(0, "stdout", "F", "2024-05-01 10:00:00 INFO started"));
    for (i, line) in trace.iter().enumerate() {
        if i == 2 {
            // The runtime split this line: P then F.
            log.write(&cri(i + 1, "stdout", "P", &line[..20]));
            log.write(&cri(i + 1, "stdout", "F", &line[20..]));
        } else {
            log.write(&cri(i + 1, "stdout", "F", line));
        }
    }
    // No next record starts: only the timeout ships the trace.
    let records = ws.wait_records(2, LONG);
    assert_eq!(records[0].line, "2024-05-01 10:00:00 INFO started");
    assert_eq!(records[1].line, trace.join("\n"));
    assert_eq!(records[1].time.as_deref(), Some(time(1).as_str()));
    assert_eq!(records[1].container.as_deref(), Some("app"));

    // max_lines: 3 cuts a record and counts it; nothing is dropped.
    let lines = ["START one", "a", "b", "c", "d", "START two", "e"];
    append_bytes(&plain, (lines.join("\n") + "\n").as_bytes());
    let records = ws.wait_records(4, LONG);
    assert_eq!(records[2].line, "START one\na\nb");
    assert_eq!(records[3].line, "c\nd");
    assert_eq!(records[2].stream, None, "a raw file has no stream");
    assert_eq!(
        metric_sum(agent.http_port, "logcatch_multiline_cut_total"),
        1.0
    );

    // "START two\ne" waits for its 1 h timeout; a clean stop ships it.
    let_it_read();
    assert_eq!(ws.records().len(), 4);
    assert_eq!(agent.terminate().code(), Some(0));
    let records = ws.records();
    assert_eq!(lines_of(&records)[4..], ["START two\ne"]);
    // The checkpoint is past it: a restart does not ship it again.
    let agent = ws.start();
    append_bytes(&plain, b"START three\n");
    // Read but held (nothing observable): give a loaded machine time.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(agent.terminate().code(), Some(0));
    assert_eq!(
        lines_of(&ws.records())[4..],
        ["START two\ne", "START three"]
    );
}

#[test]
fn pod_metadata_labels_stream_and_runtime_time_arrive_in_kafka() {
    let broker = Broker::start_memory();
    let topic = format!("k8s-{}", std::process::id());
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ContainerLog::new(&ws, "payments", "api-0", "server");
    let sink = format!(
        "  kind: kafka\n  kafka:\n    brokers: [\"{}\"]\n    linger: 5ms\n    request_timeout: 5s\n",
        broker.address()
    );
    ws.write_config(&ws.config_with_sink(
        &entry(
            &ws.path("containers/*.log"),
            &topic,
            ", format: cri, labels: {owner: payments, ticket: PAY-1}",
        ),
        &sink,
    ));
    let agent = ws.start();
    log.write(&cri(0, "stdout", "P", "hello "));
    log.write(&cri(1, "stderr", "F", "warning: disk 91%"));
    log.write(&cri(2, "stdout", "F", "world"));
    log.write("garbage\n");

    let records = consume(&broker.address(), &topic, 3, LONG);
    let values: Vec<String> = records.iter().map(|r| r.value()).collect();
    assert_eq!(values, ["warning: disk 91%", "hello world", "garbage"]);
    // The declaration's labels: with every record, and in /status.
    for record in &records {
        assert_eq!(record.header("label.owner"), "payments");
        assert_eq!(record.header("label.ticket"), "PAY-1");
    }
    let status = agent.status();
    let labels = &status["tailers"][0]["labels"];
    assert_eq!(
        labels,
        &serde_json::json!({"owner": "payments", "ticket": "PAY-1"})
    );
    for record in &records[..2] {
        assert_eq!(record.header("k8s.namespace"), "payments");
        assert_eq!(record.header("k8s.pod"), "api-0");
        assert_eq!(record.header("k8s.container"), "server");
        assert_eq!(record.header("k8s.container_id"), ID);
        assert!(!record.record.headers.contains_key("logcatch.parse_error"));
    }
    assert_eq!(records[0].header("logcatch.stream"), "stderr");
    assert_eq!(records[1].header("logcatch.stream"), "stdout");
    assert_eq!(records[1].header("logcatch.time"), time(0));
    assert_eq!(records[1].header("logcatch.offset"), "0");
    // The record timestamp is the runtime's (Kafka keeps milliseconds).
    let runtime = chrono::DateTime::parse_from_rfc3339(&time(0)).unwrap();
    assert_eq!(
        records[1].record.timestamp.timestamp_millis(),
        runtime.timestamp_millis()
    );
    assert_eq!(
        records[2].header("logcatch.parse_error"),
        "cri: expected `<time> <stdout|stderr> <P|F> <message>`"
    );
    assert_eq!(records[2].header("k8s.pod"), "api-0");
    assert!(!records[2].record.headers.contains_key("logcatch.stream"));
    assert_eq!(agent.terminate().code(), Some(0));
    assert_eq!(
        consume(&broker.address(), &topic, 4, Duration::from_secs(2)).len(),
        3,
        "no extra records"
    );
}

#[test]
fn container_logs_declared_in_etcd_are_allowed_by_their_pods_target() {
    let etcd = common::servers::Etcd::start();
    let ws = Workspace::new();
    let root = ws.dir.path().canonicalize().unwrap();
    let team = ContainerLog::new(&ws, "team", "api-0", "server");
    let other = ContainerLog::new(&ws, "other", "db-0", "postgres");
    // The symlinks' own directory is allowed, but only one namespace's pod directories:
    // the check is at the target.
    let config = format!(
        "{}etcd:\n  endpoints: [\"{}\"]\n  keys: [\"/lc/node\"]\n  allowed_paths: [\"{root}/containers/**\", \"{root}/pods/team_*/**\"]\n  dial_timeout: 1s\n  request_timeout: 2s\n",
        ws.config("  []"),
        etcd.endpoint,
        root = root.display(),
    );
    ws.write_config(&config);
    let agent = ws.start();
    let value = serde_json::json!([{
        "path": format!("{}/containers/*.log", root.display()),
        "topic": "k8s",
        "format": "cri",
    }]);
    etcd.etcdctl(&["put", "/lc/node", &value.to_string()])
        .unwrap();
    team.write(&cri(0, "stdout", "P", "from "));
    team.write(&cri(1, "stdout", "F", "team"));
    other.write(&cri(2, "stdout", "F", "from other"));
    let records = ws.wait_records(1, LONG);
    assert_eq!(records[0].line, "from team");
    assert_eq!(records[0].namespace.as_deref(), Some("team"));
    let refused = wait_for("the other pod refused in /status", LONG, || {
        let keys = agent.status()["sources"]["keys"].as_array()?.clone();
        let refused = keys.iter().find(|k| k["key"] == "/lc/node")?["refused"]
            .as_array()?
            .clone();
        (refused.len() == 1).then_some(refused)
    });
    let other_link = root
        .join("containers")
        .join(other.link.file_name().unwrap());
    assert_eq!(refused[0]["path"], other_link.display().to_string());
    assert!(refused[0]["reason"].as_str().unwrap().contains("symlink"));
    let_it_read();
    assert!(ws.records().iter().all(|r| r.line != "from other"));
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_topic_template_sends_each_namespace_to_its_topic_and_unnamed_files_to_the_fallback() {
    let broker = Broker::start_memory();
    let pid = std::process::id();
    let topic = |ns: &str| format!("k8s-{ns}-{pid}");
    let fallback = format!("k8s-other-{pid}");
    let ws = Workspace::new();
    let shop = ContainerLog::new(&ws, "shop", "cart-0", "app");
    let payments = ContainerLog::new(&ws, "payments", "api-0", "server");
    // A file in the same directory that is no container log: no {{namespace}}.
    let plain = ws.path("containers/node-agent.log");
    std::fs::write(&plain, "").unwrap();
    let sink = format!(
        "  kind: kafka\n  kafka:\n    brokers: [\"{}\"]\n    linger: 5ms\n    request_timeout: 5s\n    create_topics: true\n",
        broker.address()
    );
    let declared = entry(
        &ws.path("containers/*.log"),
        &format!("\"k8s-{{{{namespace}}}}-{pid}\""),
        &format!(", format: cri, fallback_topic: {fallback}, key: \"{{{{pod}}}}/{{{{stream}}}}\""),
    );
    ws.write_config(&ws.config_with_sink(&declared, &sink));
    let agent = ws.start();
    shop.write(&cri(0, "stdout", "F", "cart one"));
    payments.write(&cri(1, "stderr", "F", "payment one"));
    shop.write(&cri(2, "stderr", "F", "cart two"));
    payments.write(&cri(3, "stdout", "F", "payment two"));
    append_bytes(&plain, cri(4, "stdout", "F", "plain").as_bytes());

    // Read back by the independent client: each namespace in its own topic, in order.
    let values =
        |topic: &str, want| common::kafka::consume_with_librdkafka(&broker.address(), topic, want);
    assert_eq!(values(&topic("shop"), 2), ["cart one", "cart two"]);
    assert_eq!(
        values(&topic("payments"), 2),
        ["payment one", "payment two"]
    );
    // The plain file's name has no namespace: its line goes to the fallback.
    assert_eq!(values(&fallback, 1), ["plain"]);

    // Keys: the pod and the record's stream.
    let keys = |topic: &str| -> Vec<String> {
        consume(&broker.address(), topic, 2, LONG)
            .iter()
            .map(|r| String::from_utf8(r.record.key.clone().unwrap_or_default()).unwrap())
            .collect()
    };
    assert_eq!(keys(&topic("shop")), ["cart-0/stdout", "cart-0/stderr"]);
    assert_eq!(keys(&topic("payments")), ["api-0/stderr", "api-0/stdout"]);
    // The plain file has neither pod nor stream: its record has no key.
    let fell_back = consume(&broker.address(), &fallback, 1, LONG);
    assert_eq!(fell_back[0].record.key, None);

    // Counted, and the reason shown.
    wait_for("the fallback counted", LONG, || {
        let counted = metric_sum(agent.http_port, "logcatch_topic_fallback_records_total");
        (counted == 1.0).then_some(())
    });
    let status = agent.status();
    let tailers = status["tailers"].as_array().unwrap();
    let plain_row = tailers
        .iter()
        .find(|t| t["path"].as_str() == Some(&plain.display().to_string()))
        .expect("the plain file's tailer");
    assert_eq!(plain_row["topic"], fallback.as_str());
    let why = plain_row["fallback"].as_str().unwrap();
    assert!(why.contains("{{namespace}} has no value"), "{why}");
    assert!(tailers
        .iter()
        .filter(|t| t["path"] != plain_row["path"])
        .all(|t| t["fallback"].is_null()));
    assert_eq!(agent.terminate().code(), Some(0));
}
