//! `logcatch tap` against a real agent shipping to a real Kafka-protocol broker (tansu),
//! read back with librdkafka: a tap shows exactly the records that pass the filters, with
//! the topic, key, headers and value Kafka receives; a tap for other paths shows nothing
//! of them; and a tap that never reads neither stops nor loses shipping (it is told what
//! it skipped).

mod common;

use common::kafka::{consume_json_with_librdkafka, create_topic, kafka_sink_yaml, unique_topic};
use common::servers::Broker;
use common::{all_acknowledged, append_lines, wait_for, Agent, Workspace};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Starts `logcatch tap` with `args` against the agent, its stdout piped.
fn start_tap(agent: &Agent, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .arg("tap")
        .args(["--addr", &format!("127.0.0.1:{}", agent.http_port)])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The records a tap printed (one JSON object a line) once it exited successfully.
fn tap_output(tap: Child) -> Vec<Value> {
    let output = tap.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Waits until `/status` counts `taps` connected taps.
fn wait_taps(agent: &Agent, taps: u64) {
    wait_for(&format!("{taps} taps connected"), LONG, || {
        (agent.status()["taps"].as_u64() == Some(taps)).then_some(())
    });
}

/// One CRI line: the message on `stream`, whole (`F`).
fn cri(i: usize, stream: &str, message: &str) -> String {
    format!(
        "2026-05-01T10:20:{:02}.123456789Z {stream} F {message}",
        i % 60
    )
}

/// Line `i` of the web container's log: every third is a kube-probe health check (dropped
/// by `exclude_lines`); odd lines go to stderr.
fn web(i: usize) -> (String, bool) {
    let stream = if i % 2 == 1 { "stderr" } else { "stdout" };
    match i % 3 {
        0 => (
            cri(i, stream, &format!("GET /healthz 200 kube-probe/1.29 {i}")),
            false,
        ),
        _ => (cri(i, stream, &format!("GET /api/orders/{i} 200")), true),
    }
}

#[test]
fn tap_shows_exactly_the_kept_records_with_the_topic_key_headers_and_value_kafka_gets() {
    let broker = Broker::start_memory();
    let (topic, other_topic) = (unique_topic("tap"), unique_topic("tap-other"));
    create_topic(&broker.address(), &topic, 1);
    create_topic(&broker.address(), &other_topic, 1);
    let ws = Workspace::new();
    let web_log = ws.path(&format!("web-1_shop_nginx-{ID}.log"));
    let other_log = ws.path("other.log");
    append_lines(&web_log, std::iter::empty());
    append_lines(&other_log, std::iter::empty());
    let logs = format!(
        "  - path: {}\n    topic: {topic}\n    format: cri\n    key: \"{{{{pod}}}}-{{{{stream}}}}\"\n    exclude_lines: ['kube-probe/']\n    fields: {{ team: shop }}\n    labels: {{ owner: payments }}\n  - path: {}\n    topic: {other_topic}\n",
        web_log.display(),
        other_log.display()
    );
    ws.write_config(&ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), "")));
    let agent = ws.start();
    wait_for("both tailers running", LONG, || {
        (all_acknowledged(agent.http_port)? == 2).then_some(())
    });

    let written: Vec<(String, bool)> = (0..60).map(web).collect();
    let kept: Vec<&String> = written.iter().filter(|(_, k)| *k).map(|(l, _)| l).collect();
    let limit = kept.len().to_string();
    let tap = start_tap(&agent, &["--topic", &topic, "--limit", &limit]);
    // Another tap for paths that match neither file, and one for the other file only.
    let unmatched = format!("{}/nothing-*.log", ws.dir.path().display());
    let elsewhere = start_tap(&agent, &["--path", &unmatched]);
    let other_glob = format!("{}/other*.log", ws.dir.path().display());
    let other_tap = start_tap(&agent, &["--path", &other_glob, "--limit", "5"]);
    wait_taps(&agent, 3);

    // Written in pieces, so that the records come in several batches.
    for chunk in written.chunks(7) {
        append_lines(&web_log, chunk.iter().map(|(line, _)| line.clone()));
        append_lines(&other_log, chunk.iter().map(|_| "other line".to_string()));
        std::thread::sleep(Duration::from_millis(30));
    }
    let tapped = tap_output(tap);

    // Exactly the kept records, with what Kafka got.
    let messages: Vec<String> = kept
        .iter()
        .map(|line| line.splitn(4, ' ').nth(3).unwrap().to_string())
        .collect();
    let values: Vec<&str> = tapped
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, messages, "exactly the kept records, in order");
    let shipped = consume_json_with_librdkafka(&broker.address(), &topic, kept.len());
    assert_eq!(shipped.len(), kept.len());
    let path = web_log.canonicalize().unwrap().display().to_string();
    for (tapped, shipped) in tapped.iter().zip(&shipped) {
        assert_eq!(tapped["topic"], topic.as_str());
        assert_eq!(tapped["path"], path.as_str());
        for part in ["key", "value", "headers"] {
            assert_eq!(
                tapped[part], shipped[part],
                "{part} as Kafka got it: {tapped}"
            );
        }
        let stream = tapped["headers"]["logcatch.stream"].as_str().unwrap();
        assert_eq!(tapped["key"], format!("web-1-{stream}"), "the key template");
        let headers = &tapped["headers"];
        assert_eq!(headers["team"], "shop");
        assert_eq!(headers["label.owner"], "payments");
        assert_eq!(headers["k8s.namespace"], "shop");
        assert_eq!(headers["k8s.pod"], "web-1");
        assert_eq!(headers["k8s.container"], "nginx");
        assert_eq!(headers["logcatch.node"], "test-node");
        assert_eq!(headers["logcatch.path"], path.as_str());
        assert_eq!(
            headers["logcatch.offset"],
            tapped["offset"].to_string(),
            "the offset the record starts at"
        );
    }
    let starts: Vec<u64> = tapped
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    let mut offset = 0;
    let mut want_starts = Vec::new();
    for (line, keep) in &written {
        if *keep {
            want_starts.push(offset);
        }
        offset += line.len() as u64 + 1;
    }
    assert_eq!(starts, want_starts);

    // The tap for the other file saw its records only; the tap for no file, nothing.
    let other = tap_output(other_tap);
    assert_eq!(other.len(), 5);
    for record in &other {
        assert_eq!(record["topic"], other_topic.as_str());
        assert_eq!(record["value"], "other line");
        assert_eq!(record["key"], Value::Null);
    }
    wait_for("every file acknowledged to its end", LONG, || {
        (all_acknowledged(agent.http_port)? == 2).then_some(())
    });
    let mut elsewhere = elsewhere;
    assert!(elsewhere.try_wait().unwrap().is_none(), "still tapping");
    let _ = elsewhere.kill();
    let output = elsewhere.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "",
        "no record of these paths"
    );
    wait_taps(&agent, 0);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn tap_shows_a_json_declarations_values_as_kafka_gets_them() {
    let broker = Broker::start_memory();
    let topic = unique_topic("tap-json");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let web_log = ws.path(&format!("web-1_shop_nginx-{ID}.log"));
    append_lines(&web_log, std::iter::empty());
    let logs = format!(
        "  - path: {}\n    topic: {topic}\n    format: cri\n    encoding: json\n    merge_json: log\n    fields: {{ team: shop }}\n",
        web_log.display(),
    );
    ws.write_config(&ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), "")));
    let agent = ws.start();
    wait_for("the tailer running", LONG, || {
        (all_acknowledged(agent.http_port)? == 1).then_some(())
    });
    let lines = [
        cri(0, "stdout", "plain \"text\""),
        cri(1, "stderr", r#"{"level": "warn", "n": 2}"#),
        cri(2, "stdout", "three"),
    ];
    let tap = start_tap(&agent, &["--topic", &topic, "--limit", "3"]);
    wait_taps(&agent, 1);
    append_lines(&web_log, lines.iter().cloned());
    let tapped = tap_output(tap);
    let shipped = consume_json_with_librdkafka(&broker.address(), &topic, 3);
    assert_eq!((tapped.len(), shipped.len()), (3, 3));
    let value = |record: &Value| -> Value {
        serde_json::from_str(record["value"].as_str().expect("a text value")).expect("JSON")
    };
    for (tapped, shipped) in tapped.iter().zip(&shipped) {
        // The value byte for byte as Kafka got it (a CRI record's time is the runtime's,
        // the same in both), and the headers.
        assert_eq!(tapped["value"], shipped["value"], "{tapped}");
        assert_eq!(tapped["headers"], shipped["headers"], "{tapped}");
    }
    let values: Vec<Value> = tapped.iter().map(value).collect();
    assert_eq!(values[0]["schema"], "logcatch.v1");
    assert_eq!(values[0]["message"], "plain \"text\"");
    assert_eq!(values[0]["pod"], "web-1");
    assert_eq!(values[0]["fields"]["team"], "shop");
    assert_eq!(
        values[1]["log"],
        serde_json::json!({"level": "warn", "n": 2})
    );
    assert_eq!(values[1]["stream"], "stderr");
    assert_eq!(values[2]["message"], "three");
    assert_eq!(
        values[2]["offset"].as_u64(),
        Some((lines[0].len() + lines[1].len() + 2) as u64)
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn tap_refuses_a_bad_glob_and_names_an_unreachable_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = common::logcatch(&["tap", "--path", "/var/log/[a.log"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("--path \"/var/log/[a.log\": invalid glob"),
        "{err}"
    );
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = common::logcatch(&["tap", "--addr", &addr], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("agent at {addr} is unreachable")),
        "{err}"
    );
    let (code, _, err) = common::logcatch(&["tap", "--limit", "0"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--limit"), "{err}");
}

#[test]
fn a_tap_that_never_reads_neither_stops_nor_loses_shipping_and_is_told_what_it_skipped() {
    let broker = Broker::start_memory();
    let topic = unique_topic("tap-stuck");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("busy.log");
    append_lines(&log, std::iter::empty());
    let logs = format!("  - path: {}\n    topic: {topic}\n", log.display());
    ws.write_config(&ws.config_with_sink(&logs, &kafka_sink_yaml(&broker.address(), "")));
    let agent = ws.start();
    wait_for("the tailer running", LONG, || {
        (all_acknowledged(agent.http_port)? == 1).then_some(())
    });
    // A tap that asks and then reads nothing, with a small receive buffer (else the
    // kernel would take tens of MB for it): its socket fills at once.
    let mut stuck = small_buffered_connection(agent.http_port);
    write!(
        stuck,
        "GET /tap HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    wait_taps(&agent, 1);

    // 22 MB of lines, ~70 MB as the tap renders them: far more than the ring (16 batches
    // of at most 512 KiB of lines) and the sockets hold.
    let lines = 200_000;
    let line = |i: usize| format!("{i:08} {}", "x".repeat(100));
    for chunk in (0..lines).collect::<Vec<_>>().chunks(10_000) {
        append_lines(&log, chunk.iter().map(|&i| line(i)));
    }
    wait_for("every line acknowledged", LONG, || {
        (all_acknowledged(agent.http_port)? == 1).then_some(())
    });
    let shipped = common::kafka::consume_with_librdkafka(&broker.address(), &topic, lines);
    assert_eq!(shipped.len(), lines, "everything shipped");
    let first_wrong = (0..lines).find(|&i| shipped[i] != line(i));
    assert_eq!(first_wrong, None, "everything in order");

    // Read now: the records it shows and those it was told it skipped add up to all.
    stuck
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stuck);
    let (mut shown, mut skipped) = (0u64, 0u64);
    let mut head_done = false;
    let mut text = String::new();
    while shown + skipped < lines as u64 {
        text.clear();
        assert!(
            reader.read_line(&mut text).unwrap() > 0,
            "the tap ended early"
        );
        if !head_done {
            head_done = text == "\r\n";
            continue;
        }
        // Chunked: size lines interleave with the JSON lines (a chunk is whole lines).
        let Ok(value) = serde_json::from_str::<Value>(text.trim()) else {
            continue;
        };
        if let Some(n) = value["skipped"].as_u64() {
            skipped += n;
        } else if value["topic"] == topic.as_str() {
            shown += 1;
        }
    }
    assert_eq!(shown + skipped, lines as u64);
    assert!(skipped > 0, "the tap fell behind: {shown} shown");
    let mut rest = [0u8; 1];
    reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = reader.read(&mut rest);
    assert_eq!(agent.terminate().code(), Some(0));
}

/// A TCP connection to 127.0.0.1:`port` whose receive buffer is 8 KiB.
fn small_buffered_connection(port: u16) -> std::net::TcpStream {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    socket::setsockopt(&fd, sockopt::RcvBuf, &8192).unwrap();
    socket::connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
    std::net::TcpStream::from(fd)
}
