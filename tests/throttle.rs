//! `throttle:` against a real broker (tansu): a noisy file is read at its limit while
//! others keep their rate, and pausing loses nothing; `on_limit: drop` accounts for every
//! line; `per: container` shares one bucket between a container's files. Rates are
//! measured from the Kafka record timestamps of raw lines (the agent's encoding time).

mod common;

use common::accounting::Accounting;
use common::kafka::{consume, create_topic, kafka_sink_yaml, settled_end, unique_topic, Consumed};
use common::servers::{Broker, Etcd};
use common::{all_acknowledged, append_lines, metric, wait_for, Agent, Workspace};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Everything the topic holds now (reading for `for_` from the start).
fn everything(broker: &Broker, topic: &str, for_: Duration) -> Vec<Consumed> {
    consume(&broker.address(), topic, usize::MAX, for_)
}

fn arrived_ms(record: &Consumed) -> i64 {
    record.record.timestamp.timestamp_millis()
}

/// A broker, a topic of one partition on it, and a workspace.
fn kafka(name: &str) -> (Broker, String, Workspace) {
    let broker = Broker::start_memory();
    let topic = unique_topic(name);
    create_topic(&broker.address(), &topic, 1);
    (broker, topic, Workspace::new())
}

/// Starts an agent shipping `path` to `topic` with `throttle` (its fields), once its
/// `tailers` run.
fn start(
    ws: &Workspace,
    broker: &Broker,
    path: &str,
    topic: &str,
    throttle: &str,
    tailers: usize,
) -> Agent {
    let logs = format!("  - {{ path: {path}, topic: {topic}, throttle: {{ {throttle} }} }}");
    ws.write_config(&ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), "")));
    let agent = ws.start();
    wait_running(&agent, tailers);
    agent
}

/// Waits until `/status` lists `n` tailers, each running.
fn wait_running(agent: &Agent, n: usize) {
    wait_for(
        &format!("{n} running tailers"),
        Duration::from_secs(20),
        || {
            let states = agent.tailer_states();
            (states.len() == n && states.iter().all(|(_, s)| s == "running")).then_some(())
        },
    );
}

fn tailer<'a>(status: &'a serde_json::Value, path: &Path) -> &'a serde_json::Value {
    let path = path.display().to_string();
    status["tailers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == path.as_str())
        .unwrap_or_else(|| panic!("no tailer for {path}: {status}"))
}

#[test]
fn a_noisy_file_should_be_read_at_its_limit_while_nine_others_keep_their_rate_and_lose_nothing() {
    const LIMIT: i64 = 200;
    let (broker, topic, ws) = kafka("throttle-noisy");
    let dir = ws.path("logs");
    std::fs::create_dir(&dir).unwrap();
    let noisy = dir.join("noisy.log");
    let quiet: Vec<PathBuf> = (0..9).map(|i| dir.join(format!("quiet-{i}.log"))).collect();
    for path in quiet.iter().chain([&noisy]) {
        std::fs::write(path, "").unwrap();
    }
    let logs = |throttle: &str| {
        format!(
            "  - {{ path: {}/*.log, topic: {topic}{throttle} }}",
            dir.display()
        )
    };
    let sink = kafka_sink_yaml(&broker.address(), "");
    ws.write_config(&ws.config_with_sink(
        &logs(&format!(", throttle: {{ lines_per_s: {LIMIT} }}")),
        &sink,
    ));
    let agent = ws.start();
    wait_running(&agent, 10);

    // Three seconds: the noisy file at 100 × its limit, the nine at a fifth of it. Each
    // line says when it was written.
    let (mut noisy_written, mut quiet_written) = (Vec::new(), Vec::new());
    let started = now_ms();
    let mut tick = 0;
    while now_ms() < started + 3_000 {
        let at = now_ms();
        let lines: Vec<String> = (0..LIMIT)
            .map(|i| format!("noisy {tick:04}-{i:03} at={at} {}", "n".repeat(40)))
            .collect();
        append_lines(&noisy, lines.iter().cloned());
        noisy_written.extend(lines);
        if tick % 5 == 0 {
            for (f, path) in quiet.iter().enumerate() {
                let lines: Vec<String> = (0..2)
                    .map(|i| format!("quiet-{f} {tick:04}-{i} at={at} {}", "q".repeat(40)))
                    .collect();
                append_lines(path, lines.iter().cloned());
                quiet_written.extend(lines);
            }
        }
        tick += 1;
        // Pacing the writer (10 ms ticks), not waiting for the agent.
        std::thread::sleep(Duration::from_millis(10));
    }
    let stopped = now_ms();

    // The nine arrive promptly: all of them, each within a few seconds of its write.
    let quiet_set: HashSet<&str> = quiet_written.iter().map(String::as_str).collect();
    let records = wait_for("every quiet line", Duration::from_secs(20), || {
        let records = everything(&broker, &topic, Duration::from_millis(500));
        let seen = records
            .iter()
            .filter(|r| quiet_set.contains(r.value().as_str()));
        (seen.count() >= quiet_written.len()).then_some(records)
    });
    let written_at = |line: &str| -> i64 {
        let at = line.split(" at=").nth(1).unwrap();
        at.split(' ').next().unwrap().parse().unwrap()
    };
    let quiet_latency = records
        .iter()
        .filter(|r| r.value().starts_with("quiet"))
        .map(|r| arrived_ms(r) - written_at(&r.value()))
        .max()
        .unwrap();
    assert!(
        quiet_latency < 3_000,
        "a quiet line took {quiet_latency} ms to reach Kafka"
    );

    // The noisy one: paused, its lag in /status, at about its limit while written.
    let status = agent.status();
    let noisy_status = tailer(&status, &noisy);
    assert_eq!(noisy_status["state"], "throttled", "{noisy_status}");
    assert!(
        noisy_status["lag_bytes"].as_u64().unwrap() > 1 << 20,
        "{noisy_status}"
    );
    let noisy_by_then = records
        .iter()
        .filter(|r| r.value().starts_with("noisy") && arrived_ms(r) <= stopped)
        .count() as i64;
    let seconds = (stopped - started) as f64 / 1_000.0;
    println!(
        "noisy: {noisy_by_then} of {} lines in {seconds} s at {LIMIT} lines/s; quiet: at most {quiet_latency} ms to Kafka",
        noisy_written.len()
    );
    // A full bucket (one second's worth), then the rate.
    let most = (LIMIT as f64 * (1.0 + seconds) * 1.15) as i64;
    let least = (LIMIT as f64 * seconds * 0.6) as i64;
    assert!(
        (least..=most).contains(&noisy_by_then),
        "{noisy_by_then} noisy lines in {seconds} s at {LIMIT} lines/s (written: {})",
        noisy_written.len()
    );
    assert!(
        metric(
            ws.http_port,
            &format!("logcatch_throttled_seconds_total{{topic=\"{topic}\"}}")
        ) > 1.0
    );
    assert!(
        metric(
            ws.http_port,
            &format!("logcatch_lag_bytes{{topic=\"{topic}\"}}")
        ) > 1e6
    );

    // The limit lifted: the noisy tailer starts again where it was, and every line of the
    // ten is there once.
    ws.write_config(&ws.config_with_sink(&logs(""), &sink));
    let written: Vec<String> = noisy_written.into_iter().chain(quiet_written).collect();
    let records = consume(
        &broker.address(),
        &topic,
        written.len(),
        Duration::from_secs(60),
    );
    let delivered: Vec<String> = records.iter().map(Consumed::value).collect();
    Accounting::of(&written, &delivered).check(
        "throttled noisy file",
        0,
        "a graceful restart repeats nothing",
    );
    agent.terminate();
}

#[test]
fn on_limit_drop_should_count_every_line_it_drops_and_move_the_checkpoint_past_them() {
    let (broker, topic, ws) = kafka("throttle-drop");
    let log = ws.path("app.log");
    std::fs::write(&log, "").unwrap();
    let path = log.display().to_string();
    let throttle = "lines_per_s: 100, on_limit: drop";
    let agent = start(&ws, &broker, &path, &topic, throttle, 1);
    let written: Vec<String> = (0..3_000).map(|i| format!("drop {i:05}")).collect();
    append_lines(&log, written.iter().cloned());

    // Read to the end and acknowledged: the checkpoint is past the dropped lines.
    wait_for(
        "the whole file acknowledged",
        Duration::from_secs(20),
        || (all_acknowledged(ws.http_port) == Some(1)).then_some(()),
    );
    let dropped = metric(
        ws.http_port,
        &format!("logcatch_records_dropped_total{{reason=\"throttled\",topic=\"{topic}\"}}"),
    ) as usize;
    let end = settled_end(&broker.address(), &topic, 0, 0) as usize;
    let records = consume(&broker.address(), &topic, end, Duration::from_secs(20));
    let delivered: Vec<String> = records.iter().map(Consumed::value).collect();
    println!("drop: delivered {}, dropped {dropped}", delivered.len());
    assert_eq!(
        delivered.len() + dropped,
        written.len(),
        "delivered {} + dropped {dropped}",
        delivered.len()
    );
    // The burst passed (and whatever refilled while reading), the rest was dropped.
    assert!(
        (100..1_000).contains(&delivered.len()),
        "{} delivered",
        delivered.len()
    );
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "a line arrived twice");
    assert!(delivered.iter().all(|l| written.contains(l)));
    // In order: the first ones passed.
    assert_eq!(delivered[..100], written[..100]);
    agent.terminate();
}

#[test]
fn per_container_should_share_one_bucket_between_the_files_of_a_container() {
    const LIMIT: i64 = 100;
    let (broker, topic, ws) = kafka("throttle-container");
    let container = ws.path("pods/shop_web-7d4_0b6f2c1e/nginx");
    std::fs::create_dir_all(&container).unwrap();
    let files = [container.join("0.log"), container.join("1.log")];
    for file in &files {
        std::fs::write(file, "").unwrap();
    }
    let path = format!("{}/*.log", container.display());
    let throttle = format!("lines_per_s: {LIMIT}, per: container");
    let agent = start(&ws, &broker, &path, &topic, &throttle, 2);
    let started = now_ms();
    for (i, file) in files.iter().enumerate() {
        append_lines(file, (0..2_000).map(|n| format!("file-{i} {n:05}")));
    }
    // Three seconds of delivery.
    let records = wait_for("3 s of delivery", Duration::from_secs(20), || {
        let records = everything(&broker, &topic, Duration::from_millis(500));
        records
            .iter()
            .any(|r| arrived_ms(r) > started + 3_000)
            .then_some(records)
    });
    let within = |ms: i64| {
        records
            .iter()
            .filter(|r| arrived_ms(r) <= started + ms)
            .count() as i64
    };
    // One bucket for both files: a second's worth, then 100 lines/s — not twice that.
    let delivered = within(3_000);
    println!("per container: {delivered} lines of two files in 3 s at {LIMIT} lines/s");
    assert!(
        (LIMIT * 2..=LIMIT * 4 + LIMIT / 2).contains(&delivered),
        "{delivered} lines of the container in 3 s at {LIMIT} lines/s"
    );
    let status = agent.status();
    for file in &files {
        let state = &tailer(&status, file)["state"];
        assert_eq!(state, "throttled", "{file:?}");
    }
    agent.terminate();
}

#[test]
fn a_throttle_from_etcd_should_pause_its_file_and_a_bad_one_should_be_refused_without_disturbing_it(
) {
    let etcd = Etcd::start();
    let ws = Workspace::new();
    // The allow-list compares resolved paths.
    let root = ws.dir.path().canonicalize().unwrap();
    let log = root.join("logs/app.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "").unwrap();
    ws.write_config(&format!(
        "{}etcd:\n  endpoints: [\"{}\"]\n  keys: [\"/lc/node\"]\n  allowed_paths: [\"{}/logs/**\"]\n",
        ws.config("  []"),
        etcd.endpoint,
        root.display()
    ));
    let agent = ws.start();
    let put = |throttle: &str| {
        let value = format!(
            r#"[{{"path": "{}", "topic": "app"{throttle}}}]"#,
            log.display()
        );
        etcd.put_bytes("/lc/node", value.as_bytes())
    };
    put(r#", "throttle": {"lines_per_s": 50}"#);
    wait_running(&agent, 1);
    let written: Vec<String> = (0..1_000).map(|i| format!("etcd {i:05}")).collect();
    append_lines(&log, written.iter().cloned());
    let throttled = |agent: &Agent| {
        let status = agent.status();
        let row = tailer(&status, &log).clone();
        (row["state"] == "throttled").then_some(row)
    };
    let row = wait_for("the tailer throttled", Duration::from_secs(20), || {
        throttled(&agent)
    });
    assert_eq!(row["restarts"], 0, "{row}");

    // A bad throttle is refused naming key, index and field; the tailer goes on as it was.
    let revision = put(r#", "throttle": {"lines_per_s": 0}"#);
    let error = wait_for("the value refused", Duration::from_secs(20), || {
        let keys = agent.status()["sources"]["keys"].clone();
        let row = keys
            .as_array()?
            .iter()
            .find(|k| k["key"] == "/lc/node")?
            .clone();
        (row["revision"] == revision).then(|| row["error"].as_str().map(str::to_string))?
    });
    assert!(
        error.starts_with("etcd key /lc/node: [0].throttle.lines_per_s: must be at least 1"),
        "{error}"
    );
    let before = ws.records().len();
    let row = wait_for("more lines, at the limit", Duration::from_secs(20), || {
        (ws.records().len() > before + 50).then(|| throttled(&agent))?
    });
    assert_eq!(row["restarts"], 0, "not restarted: {row}");
    assert!(
        ws.records().len() < written.len(),
        "still paused at 50 lines/s"
    );

    // The throttle removed: the rest arrives, each line once.
    put("");
    let records = ws.wait_records(written.len(), Duration::from_secs(20));
    let delivered: Vec<String> = records.into_iter().map(|r| r.line).collect();
    Accounting::of(&written, &delivered).check("throttle from etcd", 0, "graceful restart");
    agent.terminate();
}
