//! The Kafka sink against a real Kafka-protocol broker (tansu): every line arrives
//! exactly once, in order per file, with headers; each compression; outages; crashes.

mod common;

use common::accounting::Accounting;
use common::kafka::{
    consume, consume_in_fetches_of, consume_with, consume_with_librdkafka, create_topic,
    create_topic_with_configs, kafka_sink_yaml, settled_end, KafkaProxy,
};
use common::servers::Broker;
use common::tls::{TestPki, TlsProxy};
use common::{all_acknowledged, append_lines, metric, rss_kib, wait_for, Workspace};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix} line {i:06} {}", "y".repeat(i % 40)))
        .collect()
}

fn log_entry(path: &Path, topic: &str) -> String {
    format!("  - {{ path: {}, topic: {topic} }}", path.display())
}

fn kafka_sink(broker: &Broker, extra: &str) -> String {
    format!(
        "  kind: kafka\n  kafka:\n    brokers: [\"{}\"]\n    linger: 5ms\n    request_timeout: 5s\n{extra}",
        broker.address()
    )
}

/// A topic name unique to this test run.
fn topic(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn every_line_of_100k_arrives_once_in_order_with_headers() {
    let broker = Broker::start_memory();
    let topic = topic("hundredk");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let written = lines("k", 0..100_000);
    append_lines(&log, written[..50_000].iter().cloned());
    ws.write_config(&ws.config_with_sink(
        &log_entry(&log, &topic),
        &kafka_sink(&broker, "    compression: lz4\n"),
    ));
    let agent = ws.start();
    append_lines(&log, written[50_000..].iter().cloned());

    let records = consume(&broker.address(), &topic, 100_000, LONG);
    let values: Vec<String> = records.iter().map(|r| r.value()).collect();
    assert_eq!(values, written, "every line once, in file order");
    let mut offset = 0u64;
    for (record, line) in records.iter().zip(&written) {
        assert_eq!(record.header("logcatch.path"), log.display().to_string());
        assert_eq!(record.header("logcatch.node"), "test-node");
        assert_eq!(record.header("logcatch.offset"), offset.to_string());
        offset += line.len() as u64 + 1;
    }
    assert_eq!(agent.terminate().code(), Some(0));
    assert!(
        consume(&broker.address(), &topic, 100_001, Duration::from_secs(2)).len() == 100_000,
        "no extra records"
    );

    // An independent client (librdkafka) reads the same.
    let independent = consume_with_librdkafka(&broker.address(), &topic, 100_000);
    assert_eq!(independent, written);
}

#[test]
fn each_compression_delivers_every_line() {
    let broker = Broker::start_memory();
    for compression in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = topic(&format!("compression-{compression}"));
        create_topic(&broker.address(), &topic, 1);
        let ws = Workspace::new();
        let log = ws.path("app.log");
        let written = lines(compression, 0..3_000);
        append_lines(&log, written.iter().cloned());
        let sink = kafka_sink(&broker, &format!("    compression: {compression}\n"));
        ws.write_config(&ws.config_with_sink(&log_entry(&log, &topic), &sink));
        let agent = ws.start();
        let values: Vec<String> = consume(&broker.address(), &topic, 3_000, LONG)
            .iter()
            .map(|r| r.value())
            .collect();
        assert_eq!(values, written, "compression {compression}");
        assert_eq!(agent.terminate().code(), Some(0));
    }
}

#[test]
fn two_files_on_two_topics_keep_their_order_per_partition() {
    let broker = Broker::start_memory();
    let (one, two) = (topic("files-one"), topic("files-two"));
    create_topic(&broker.address(), &one, 4);
    create_topic(&broker.address(), &two, 4);
    let ws = Workspace::new();
    let (a, b, c) = (ws.path("a.log"), ws.path("b.log"), ws.path("c.log"));
    for (path, prefix) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        append_lines(path, lines(prefix, 0..5_000));
    }
    let logs = [
        log_entry(&a, &one),
        log_entry(&b, &one),
        log_entry(&c, &two),
    ]
    .join("\n");
    ws.write_config(&ws.config_with_sink(
        &logs,
        &kafka_sink(&broker, "    partitioning: file\n    key: path\n"),
    ));
    let agent = ws.start();
    let got_one = consume(&broker.address(), &one, 10_000, LONG);
    let got_two = consume(&broker.address(), &two, 5_000, LONG);
    assert_eq!((got_one.len(), got_two.len()), (10_000, 5_000));
    for (records, files) in [
        (&got_one, vec![(&a, "a"), (&b, "b")]),
        (&got_two, vec![(&c, "c")]),
    ] {
        for (path, prefix) in files {
            let path = path.display().to_string();
            let of_file: Vec<_> = records
                .iter()
                .filter(|r| r.header("logcatch.path") == path)
                .collect();
            let partitions: std::collections::HashSet<i32> =
                of_file.iter().map(|r| r.partition).collect();
            assert_eq!(partitions.len(), 1, "one file, one partition");
            let values: Vec<String> = of_file.iter().map(|r| r.value()).collect();
            assert_eq!(values, lines(prefix, 0..5_000), "{path} in order");
            assert!(
                of_file
                    .iter()
                    .all(|r| r.record.key.as_deref() == Some(path.as_bytes())),
                "key: path"
            );
        }
    }
    assert_eq!(agent.terminate().code(), Some(0));
}

/// What the Kafka sink freed goes back to the system: after 200 files caught up through
/// it, mimalloc (the allocator until then) kept 70–100 MiB of freed batches and buffers
/// for good, while glibc malloc kept 18 MiB — the rest of the soak's RSS step after its
/// broker freeze (issue #23, BENCHMARKS.md "Soak").
#[test]
fn catching_up_through_kafka_leaves_no_memory_behind() {
    let broker = Broker::start_memory();
    let topic = topic("catch-up");
    create_topic(&broker.address(), &topic, 4);
    let sink = kafka_sink(&broker, "    compression: lz4\n");
    common::assert_catching_up_leaves_no_memory_behind(&sink, &topic, 400);
}

/// Catching up on many files stays within `max_in_flight_bytes` at its peak: 200 files
/// with 1 MB of backlog each raise the agent's RSS above what it was with them idle by at
/// most the budget and 24 MiB (the encoding buffers, the batches being filled; issue #26
/// §4 aims at `max_in_flight_bytes` + 32 MiB in all, `make bench` measures that on the
/// release build). Every tailer used to fill a batch (up to 640 KiB) and then wait for
/// room in flight holding it: 410 tailers held 260 MB beside the 64 MiB in flight at the
/// soak's resume after its broker freeze (peak RSS 328 MiB); here 162 MiB above idle.
#[test]
fn catching_up_on_many_files_through_kafka_stays_within_the_in_flight_budget() {
    const FILES: usize = 200;
    const LINES: usize = 10_000; // 100 B each: 1 MB per file, two batches
    const BUDGET_MIB: u64 = 32;
    let broker = Broker::start_memory();
    let topic = topic("peak");
    create_topic(&broker.address(), &topic, 4);
    let ws = Workspace::new();
    let (paths, entry) = common::empty_files_under_one_glob(&ws, FILES, &topic);
    let sink = kafka_sink(
        &broker,
        &format!("    compression: lz4\n    max_in_flight_bytes: {BUDGET_MIB}MiB\n"),
    );
    ws.write_config(&ws.config_with_sink(&entry, &sink));
    let agent = ws.start();
    let port = agent.http_port;
    wait_for("every file followed", Duration::from_secs(60), || {
        (agent.tailer_states().len() == FILES).then_some(())
    });
    let idle_mib = rss_kib(agent.pid()) / 1024;

    let line = "y".repeat(99);
    for path in &paths {
        append_lines(path, std::iter::repeat_n(line.clone(), LINES));
    }
    let total = (FILES * LINES) as f64;
    wait_for("every line shipped", Duration::from_secs(300), || {
        (common::metric_sum(port, "logcatch_records_sent_total") >= total).then_some(())
    });
    assert_eq!(
        common::metric_sum(port, "logcatch_records_sent_total"),
        total
    );
    let peak_mib = common::status_kib(agent.pid(), "VmHWM") / 1024;
    eprintln!(
        "RSS idle {idle_mib} MiB, peak {peak_mib} MiB (max_in_flight_bytes {BUDGET_MIB} MiB)"
    );
    assert!(
        peak_mib <= idle_mib + BUDGET_MIB + 24,
        "peak RSS {peak_mib} MiB while catching up on {FILES} files: more than idle \
         ({idle_mib} MiB) + max_in_flight_bytes ({BUDGET_MIB} MiB) + 24 MiB"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_broker_outage_of_30s_loses_nothing_and_memory_stays_bounded() {
    // Memory storage: tansu 0.6's sqlite storage stops answering fetches once it holds
    // this much data (both rskafka and librdkafka time out), so the outage test restarts
    // an in-memory broker and re-creates the topic; what matters is what the agent
    // delivers after the broker returns. `delivery_resumes_after_a_broker_restart` covers
    // durable storage. The agent reaches the broker through a proxy, closed until the
    // topic is back: tansu takes records for a topic it does not have while CreateTopics
    // runs, then starts the partition over at offset 0 (the first records acknowledged
    // after the restart were overwritten, one run in a few dozen).
    let (mut broker, proxy) = KafkaProxy::with_memory_broker(usize::MAX);
    let topic = topic("outage");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("before", 0..1_000));
    let sink = kafka_sink_yaml(
        &proxy.address(),
        "    compression: none\n    max_in_flight_bytes: 2MiB\n    max_batch_bytes: 256KiB\n",
    );
    ws.write_config(&ws.config_with_sink(&log_entry(&log, &topic), &sink));
    let agent = ws.start();
    assert_eq!(consume(&broker.address(), &topic, 1_000, LONG).len(), 1_000);
    let baseline_rss = rss_kib(agent.pid());

    proxy.close();
    broker.stop();
    // ~60 MB written while the broker is down: far more than the 2 MiB in flight.
    let big = "z".repeat(1_000);
    let mut written = lines("before", 0..1_000);
    let mut peak_rss = 0;
    for chunk in 0..std::env::var("OUTAGE_S").map_or(30, |v| v.parse().unwrap()) {
        let batch: Vec<String> = (0..2_000)
            .map(|i| format!("outage {chunk:02}-{i:05} {big}"))
            .collect();
        append_lines(&log, batch.iter().cloned());
        written.extend(batch);
        std::thread::sleep(Duration::from_secs(1));
        peak_rss = peak_rss.max(rss_kib(agent.pid()));
    }
    let lag: u64 = agent.status()["tailers"][0]["lag_bytes"].as_u64().unwrap();
    assert!(
        lag > 10_000_000,
        "lag is visible in /status while the broker is down: {lag}"
    );
    let log = agent.log();
    let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
    assert!(
        !agent.status()["sink"]["connected"].as_bool().unwrap(),
        "sink reported disconnected; log:\n{tail}"
    );
    broker.restart();
    broker.create_topic(&topic, 1).unwrap(); // on the broker's own port
    proxy.open();
    let catch_up = std::time::Instant::now();
    wait_for(
        "the agent to catch up (lag 0)",
        Duration::from_secs(180),
        || (agent.status()["tailers"][0]["lag_bytes"].as_u64() == Some(0)).then_some(()),
    );
    println!(
        "caught up {:?} after the broker returned",
        catch_up.elapsed()
    );

    // In fetches of 8 MiB, each well within consume's 10 s per fetch on a loaded machine.
    let read = |want| consume_in_fetches_of(&broker.address(), &topic, want, LONG, 8 << 20);
    let mut records = read(written.len() - 1_000);
    // A request that outlived request_timeout was sent again: with duplicates, the first
    // `written` records stop short of the last lines. Read on to the partition's end.
    let read_to = records.iter().map(|r| r.offset + 1).max().unwrap_or(0);
    let end = settled_end(&broker.address(), &topic, 0, read_to);
    if end > read_to {
        records = read(end as usize);
    }
    let values: Vec<String> = records.iter().map(|r| r.value()).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for v in &values {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    // The 1,000 lines before the outage were checked above and died with the broker.
    let missing: Vec<&String> = written[1_000..]
        .iter()
        .filter(|l| !counts.contains_key(l.as_str()))
        .collect();
    let short = |line: Option<&&String>| line.map(|l| l[..l.len().min(20)].to_string());
    let (first_missing, last_missing) = (short(missing.first()), short(missing.last()));
    let missing = missing.len();
    let log = agent.log();
    let tail: String = log.lines().rev().take(12).collect::<Vec<_>>().join("\n");
    let broker_log: String = broker
        .log()
        .lines()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        missing,
        0,
        "lines missing after the outage ({} delivered, {} distinct, the partition's end {end}; \
         missing from {first_missing:?} to {last_missing:?}); status {}; log:\n{tail}\nbroker:\n{broker_log}",
        values.len(),
        counts.len(),
        agent.status()
    );
    assert_eq!(agent.terminate().code(), Some(0));
    println!(
        "outage: written {}, delivered {} ({} distinct), rss baseline {} KiB, peak {} KiB",
        written.len(),
        values.len(),
        counts.len(),
        baseline_rss,
        peak_rss
    );
    // 60 MB were written during the outage; memory must not follow them.
    assert!(
        peak_rss < baseline_rss + 24 * 1024,
        "RSS grew from {baseline_rss} KiB to {peak_rss} KiB while the broker was down"
    );
}

#[test]
fn kill9_mid_stream_then_restart_loses_no_line() {
    let broker = Broker::start_memory();
    let topic = topic("kill9");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("app.log");
    std::fs::write(&log, "").unwrap();
    ws.write_config(&ws.config_with_sink(&log_entry(&log, &topic), &kafka_sink(&broker, "")));
    let written = lines("kill", 0..30_000);
    let writer = {
        let (log, written) = (log.clone(), written.clone());
        std::thread::spawn(move || {
            for chunk in written.chunks(300) {
                append_lines(&log, chunk.iter().cloned());
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let agent = ws.start();
    wait_for("some records", LONG, || {
        (consume(&broker.address(), &topic, 3_000, Duration::from_secs(1)).len() >= 3_000)
            .then_some(())
    });
    agent.kill9();
    let agent = ws.start();
    writer.join().unwrap();
    let records = wait_for("every line", LONG, || {
        let records = consume(
            &broker.address(),
            &topic,
            usize::MAX,
            Duration::from_secs(2),
        );
        let distinct: std::collections::HashSet<String> =
            records.iter().map(|r| r.value()).collect();
        (distinct.len() == written.len()).then_some(records)
    });
    let values: Vec<String> = records.iter().map(|r| r.value()).collect();
    // What was shipped before the kill (at most everything) may repeat, once.
    let accounting = Accounting::of(&written, &values);
    assert!(accounting.max_copies <= 2);
    accounting.check(
        "kafka kill -9",
        written.len(),
        "a line repeats at most once across one crash",
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn an_unknown_topic_is_reported_in_status_and_other_tailers_go_on() {
    let broker = Broker::start_memory();
    let good = topic("known");
    create_topic(&broker.address(), &good, 1);
    let ws = Workspace::new();
    let (a, b) = (ws.path("a.log"), ws.path("b.log"));
    append_lines(&a, lines("a", 0..100));
    append_lines(&b, lines("b", 0..100));
    let logs = format!(
        "{}\n{}",
        log_entry(&a, &good),
        log_entry(&b, "no-such-topic")
    );
    ws.write_config(
        &ws.config_with_sink(&logs, &kafka_sink(&broker, "    create_topics: false\n")),
    );
    let agent = ws.start();
    assert_eq!(consume(&broker.address(), &good, 100, LONG).len(), 100);
    let b_path = b.display().to_string();
    let reason = wait_for("the unknown topic in /status", LONG, || {
        let status = agent.status();
        let tailer = status["tailers"]
            .as_array()?
            .iter()
            .find(|t| t["path"] == b_path.as_str())?
            .clone();
        let reason = tailer["reason"].as_str()?.to_string();
        (tailer["state"] == "backoff").then_some(reason)
    });
    assert!(reason.contains("no-such-topic does not exist"), "{reason}");
    assert_eq!(agent.terminate().code(), Some(0));
}

/// `n` printable bytes that lz4 cannot shrink (xorshift from `seed`), so that compression
/// does not bring an oversized record under the limit by luck.
fn noise(seed: u64, n: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 94) as u8)
        })
        .collect()
}

/// Issue #23.2: a record larger than the topic's `max.message.bytes` (which the sink
/// learns from the broker, DescribeConfigs) is cut to fit and marked; a record whose
/// headers alone exceed it is dropped, counted and logged with its path and offset; the
/// checkpoint moves past both and the file goes on. tansu stores a topic's configs but
/// does not enforce `max.message.bytes`: before the fix the oversized record arrived
/// whole here (a real Kafka refuses it, and the tailer re-sent it forever).
#[test]
fn a_record_over_the_topics_max_message_bytes_is_cut_or_dropped_and_the_file_goes_on() {
    let broker = Broker::start_memory();
    let (cut, dropped) = (topic("too-large-cut"), topic("too-large-drop"));
    create_topic_with_configs(&broker.address(), &cut, 1, &[("max.message.bytes", "4096")]);
    create_topic_with_configs(
        &broker.address(),
        &dropped,
        1,
        &[("max.message.bytes", "100")],
    );
    let ws = Workspace::new();
    let (a, b) = (ws.path("a.log"), ws.path("b.log"));
    let huge = noise(0, 20_000);
    let mut written = lines("before", 0..10);
    written.push(huge.clone());
    written.extend(lines("after", 0..10));
    append_lines(&a, written.iter().cloned());
    append_lines(&b, lines("b", 0..3));
    let logs = format!("{}\n{}", log_entry(&a, &cut), log_entry(&b, &dropped));
    ws.write_config(&ws.config_with_sink(&logs, &kafka_sink(&broker, "")));
    let agent = ws.start();

    let bound = Duration::from_secs(30);
    let records = consume(&broker.address(), &cut, 21, bound);
    let values: Vec<String> = records.iter().map(|r| r.value()).collect();
    assert_eq!(
        values.len(),
        21,
        "agent log:\n{}\nbroker log:\n{}",
        agent.log(),
        broker.log()
    );
    assert_eq!(
        values[..10],
        written[..10],
        "the lines before, once, in order"
    );
    assert_eq!(
        values[11..],
        written[11..],
        "the lines after, once, in order"
    );
    let big = &records[10];
    let value = big.value();
    assert!(
        huge.starts_with(&value) && value.len() < huge.len(),
        "the big line is cut: {} of {} bytes",
        value.len(),
        huge.len()
    );
    assert!(
        value.len() > 3_000,
        "cut to fit, not gutted: {}",
        value.len()
    );
    assert_eq!(
        big.header("logcatch.truncated"),
        "20000",
        "marked with its size"
    );
    let offset: usize = written[..10].iter().map(|l| l.len() + 1).sum();
    assert_eq!(big.header("logcatch.offset"), offset.to_string());
    // What the record batch carries stays within the limit (61 bytes of batch header).
    let headers: usize = big
        .record
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(
        value.len() + headers <= 4096 - 61,
        "{} + {headers}",
        value.len()
    );

    // Both files acknowledged to their ends: the checkpoints moved past the cut and the
    // dropped records.
    wait_for("both files acknowledged", bound, || {
        (all_acknowledged(ws.http_port) == Some(2)).then_some(())
    });
    let port = ws.http_port;
    let cut_total = format!("logcatch_records_cut_total{{topic=\"{cut}\"}}");
    assert_eq!(metric(port, &cut_total), 1.0);
    let dropped_total =
        format!("logcatch_records_dropped_total{{reason=\"too_large\",topic=\"{dropped}\"}}");
    assert_eq!(metric(port, &dropped_total), 3.0);
    let log = agent.log();
    // The limit came from the broker (DescribeConfigs), as one log line per topic.
    let learned = format!("topic {cut} are kept within 4096 bytes (the topic's max.message.bytes)");
    assert_eq!(log.matches(&learned).count(), 1, "{log}");
    let b_path = b.display().to_string();
    for offset in [0, 15, 31] {
        let named = log
            .lines()
            .filter(|l| l.contains("dropped") && l.contains(&b_path))
            .filter(|l| l.contains(&format!("offset {offset}:")))
            .count();
        assert_eq!(named, 1, "one log line for the record at {offset}:\n{log}");
    }
    assert!(
        consume(&broker.address(), &dropped, 1, Duration::from_secs(2)).is_empty(),
        "nothing of the dropped records shipped"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Issue #23.2 with a broker that enforces a limit lower than the sink knows (tansu
/// behind a proxy answering MESSAGE_TOO_LARGE to produce requests over 8 KiB, as Kafka
/// does once a topic's max.message.bytes is lowered): before the fix the batches were
/// rejected for good and the tailer re-sent the same request after every backoff, forever;
/// now the limit is lowered and the same batches go as smaller requests, in order.
#[test]
fn a_broker_refusing_requests_as_too_large_gets_smaller_ones_and_every_line_once() {
    let (broker, proxy) = KafkaProxy::with_memory_broker(8 * 1024);
    let topic = topic("refused");
    // No max.message.bytes on the topic, and tansu names no message.max.bytes: the sink
    // starts from 1 MiB.
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let huge = noise(0, 20_000);
    let mut written: Vec<String> = (1..=200)
        .map(|i| format!("{i:03} {}", noise(i, 500)))
        .collect();
    written.push(huge.clone());
    written.extend(lines("after", 0..10));
    append_lines(&log, written.iter().cloned());
    let sink = format!(
        "  kind: kafka\n  kafka:\n    brokers: [\"{}\"]\n    linger: 5ms\n    request_timeout: 5s\n",
        proxy.address()
    );
    ws.write_config(&ws.config_with_sink(&log_entry(&log, &topic), &sink));
    let agent = ws.start();

    let bound = Duration::from_secs(30);
    let records = consume(&broker.address(), &topic, written.len(), bound);
    let values: Vec<String> = records.iter().map(|r| r.value()).collect();
    assert_eq!(values.len(), written.len(), "agent log:\n{}", agent.log());
    assert_eq!(values[..200], written[..200], "every line once, in order");
    assert_eq!(values[201..], written[201..], "every line once, in order");
    let value = &values[200];
    assert!(
        huge.starts_with(value.as_str()) && (1_000..8_192).contains(&value.len()),
        "the big line cut to the lowered limit: {} bytes",
        value.len()
    );
    assert_eq!(records[200].header("logcatch.truncated"), "20000");
    assert!(proxy.refused.load(std::sync::atomic::Ordering::Relaxed) > 0);
    wait_for("the file acknowledged", bound, || {
        (all_acknowledged(ws.http_port) == Some(1)).then_some(())
    });
    assert!(
        agent.log().contains("half a refused request"),
        "the lowered limit is logged"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Issue #26: the sink asks a topic's metadata once, however many tailers submit their
/// first batch at once. Before, each batch that found nothing cached asked again (a
/// Metadata and two DescribeConfigs requests each): 10,000 files starting at once sent
/// 30,000 requests, and their first lines reached Kafka 9–13 s after the start.
#[test]
fn files_starting_at_once_ask_the_topics_metadata_once() {
    let (broker, proxy) = KafkaProxy::with_memory_broker(usize::MAX);
    let topic = topic("asked-once");
    create_topic(&broker.address(), &topic, 2);
    let ws = Workspace::new();
    let files = 200;
    std::fs::create_dir(ws.path("logs")).unwrap();
    for i in 0..files {
        let name = format!("f{i:03}");
        append_lines(&ws.path(&format!("logs/{name}.log")), lines(&name, 0..3));
    }
    let glob = ws.path("logs/*.log");
    let sink = format!(
        "  kind: kafka\n  kafka:\n    brokers: [\"{}\"]\n    linger: 5ms\n    request_timeout: 5s\n",
        proxy.address()
    );
    ws.write_config(&ws.config_with_sink(&log_entry(&glob, &topic), &sink));
    let agent = ws.start();

    let records = consume(&broker.address(), &topic, 3 * files, LONG);
    assert_eq!(records.len(), 3 * files, "agent log:\n{}", agent.log());
    let mut values: Vec<String> = records.iter().map(|r| r.value()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 3 * files, "every line once");
    // DescribeConfigs (32) is asked only for a topic's limit: the topic's configs, then
    // the broker's when the topic names none.
    let described = proxy.requests(32);
    assert!(
        (1..=2).contains(&described),
        "the topic's limit asked once: {described} DescribeConfigs requests"
    );
    // Besides the sink's one: rskafka's own (bootstrap, controller, partition clients).
    assert!(
        proxy.requests(3) < files / 10,
        "{} Metadata requests for {files} files",
        proxy.requests(3)
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn files_waiting_for_their_topics_limit_hold_little_memory() {
    // Every file starts at once and waits for the topic's limit (DescribeConfigs, held 3 s
    // by the proxy): each waiting batch held the whole ask's state (rskafka's requests in
    // it, 3.9 KB in a debug build and again as much for its submission), 37 MiB at
    // 10,000 files for as long as the ask took.
    const FILES: usize = 3_000;
    const BOUND_BYTES: u64 = 2_000;
    let (broker, proxy) = KafkaProxy::with_memory_broker(usize::MAX);
    let topic = topic("waiting");
    create_topic(&broker.address(), &topic, 2);
    proxy.delay(32, Duration::from_secs(3));
    let ws = Workspace::new();
    let dir = ws.path("logs");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..FILES {
        append_lines(&dir.join(format!("f{i:05}.log")), [format!("line of {i}")]);
    }
    let config = ws
        .config_with_sink(
            &log_entry(&dir.join("*.log"), &topic),
            &kafka_sink_yaml(&proxy.address(), ""),
        )
        .replace(
            "tail: { poll_interval: 20ms }",
            "tail: { max_open_files: 4000 }",
        );
    ws.write_config(&config);
    let agent = ws.start();
    let records = consume(&broker.address(), &topic, FILES, LONG);
    assert_eq!(records.len(), FILES, "agent log:\n{}", agent.log());
    wait_for("acknowledged", LONG, || all_acknowledged(agent.http_port));
    let peak = common::status_kib(agent.pid(), "VmHWM");
    // The lowest of five samples a second apart: what the agent holds once what it freed
    // has gone back to the system.
    let mut settled = u64::MAX;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        settled = settled.min(rss_kib(agent.pid()));
    }
    let per_file = peak.saturating_sub(settled) * 1024 / FILES as u64;
    println!("peak {peak} KiB, settled {settled} KiB: {per_file} bytes per file above");
    assert!(
        per_file <= BOUND_BYTES,
        "the start peaked {per_file} bytes per file above what the agent holds after it \
         ({peak} KiB, settled {settled} KiB)"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn create_topics_makes_a_missing_topic() {
    let broker = Broker::start_memory();
    let topic = topic("created");
    let ws = Workspace::new();
    let log = ws.path("a.log");
    append_lines(&log, lines("c", 0..50));
    let sink = kafka_sink(
        &broker,
        "    create_topics: true\n    topic_partitions: 2\n",
    );
    ws.write_config(&ws.config_with_sink(&log_entry(&log, &topic), &sink));
    let agent = ws.start();
    let records = consume(&broker.address(), &topic, 50, LONG);
    assert_eq!(records.len(), 50, "agent log:\n{}", agent.log());
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn delivery_resumes_after_a_broker_restart() {
    let mut broker = Broker::start_sqlite();
    let topic = topic("restart");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("before", 0..100));
    ws.write_config(&ws.config_with_sink(&log_entry(&log, &topic), &kafka_sink(&broker, "")));
    let agent = ws.start();
    assert_eq!(consume(&broker.address(), &topic, 100, LONG).len(), 100);
    broker.stop();
    append_lines(&log, lines("during", 0..100));
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    append_lines(&log, lines("after", 0..100));
    let records = consume(&broker.address(), &topic, 300, LONG);
    let log_text = agent.log();
    let tail: String = log_text
        .lines()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(records.len(), 300, "log:\n{tail}");
    assert_eq!(agent.terminate().code(), Some(0));
}

/// tansu 0.6 takes `--cert`/`--key` but never uses them (its TLS acceptor is built and
/// dropped), so TLS is tested through a TLS-terminating proxy that tansu advertises as
/// its listener: every connection the agent makes, bootstrap and partition leader, is TLS.
#[test]
fn kafka_over_tls_delivers_every_line_and_a_wrong_ca_loses_nothing() {
    let ws = Workspace::new();
    let pki = TestPki::new(ws.dir.path(), "kafka");
    let other = TestPki::new(ws.dir.path(), "other");
    let proxy_port = common::free_port();
    let broker = Broker::start_memory_behind(proxy_port);
    let proxy = TlsProxy::start(&pki, proxy_port, broker.address().parse().unwrap());
    let topic = topic("tls");
    broker.create_topic(&topic, 1).unwrap();
    let log = ws.path("app.log");
    let written = lines("tls", 0..2_000);
    append_lines(&log, written[..1_000].iter().cloned());
    let config = |ca: &Path| {
        let sink = format!(
            "  kind: kafka\n  kafka:\n    brokers: [\"{}\"]\n    request_timeout: 2s\n    tls: {{ ca_file: {} }}\n",
            proxy.address(),
            ca.display()
        );
        ws.config_with_sink(&log_entry(&log, &topic), &sink)
    };

    // A CA that did not sign the broker's certificate: a clear error, nothing acknowledged.
    ws.write_config(&config(&other.ca));
    let agent = ws.start();
    wait_for("the TLS error in /status", LONG, || {
        let error = agent.status()["sink"]["error"].as_str()?.to_string();
        (error.contains(&proxy.address()) && error.contains("UnknownIssuer")).then_some(())
    });
    assert!(
        proxy
            .failed_handshakes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(agent.log().contains("UnknownIssuer"));
    let (_, ready) = common::http_get(agent.http_port, "/readyz").unwrap();
    assert!(ready.contains("the sink is not connected: "), "{ready}");
    let offset = agent.status()["tailers"][0]["offset"].as_u64();
    assert_eq!(
        offset,
        Some(0),
        "no checkpoint moves without an acknowledgement"
    );
    agent.terminate();

    // The right CA (a sink change needs a restart): every line arrives exactly once.
    ws.write_config(&config(&pki.ca));
    let agent = ws.start();
    append_lines(&log, written[1_000..].iter().cloned());
    let tls = rskafka::client::ClientBuilder::new(vec![proxy.address()])
        .tls_config(std::sync::Arc::new(pki.client_config()));
    let records = consume_with(tls, &topic, written.len(), LONG, 50_000_000);
    let values: Vec<String> = records.iter().map(|r| r.value()).collect();
    assert_eq!(values, written, "every line once, in order");
    assert_eq!(agent.status()["sink"]["error"], serde_json::Value::Null);
    assert_eq!(agent.terminate().code(), Some(0));
}

/// tansu 0.6 offers SCRAM-SHA-256/512 (checked against users in its storage) but no
/// PLAIN, and only an authenticated client may create a user: the user and topic are
/// made while authentication is off, then the broker restarts with `--authentication`.
#[test]
fn kafka_with_sasl_scram_delivers_every_line_and_a_wrong_password_is_retried_until_fixed() {
    let mut broker = Broker::start_sqlite();
    let topic = topic("sasl");
    broker.create_scram_user("shipper", "right-Pa55", &[&topic]);
    broker.stop();
    broker.authentication = true;
    broker.restart();

    let ws = Workspace::new();
    let log = ws.path("app.log");
    let written = lines("sasl", 0..2_000);
    append_lines(&log, written[..1_000].iter().cloned());
    let password_file = ws.path("kafka.pass");
    std::fs::write(&password_file, "wrong-Pa55\n").unwrap();
    let sasl = format!(
        "    sasl: {{ mechanism: SCRAM-SHA-256, username: shipper, password_file: {} }}\n",
        password_file.display()
    );
    ws.write_config(&ws.config_with_sink(&log_entry(&log, &topic), &kafka_sink(&broker, &sasl)));
    let agent = ws.start();

    // A wrong password: a clear error, retried; nothing acknowledged, nothing lost.
    // (Under load an attempt may first end in the bare connect timeout; the SASL
    // refusal is what must show up.)
    wait_for("the SASL error in /status", LONG, || {
        let error = agent.status()["sink"]["error"].as_str()?.to_string();
        (error.contains("Sasl handshake failed") && error.contains("invalid proof")).then_some(())
    });
    let offset = agent.status()["tailers"][0]["offset"].as_u64();
    assert_eq!(
        offset,
        Some(0),
        "no checkpoint moves without an acknowledgement"
    );

    // The password file fixed: the next connection attempt reads it; every line once.
    std::fs::write(&password_file, "right-Pa55\n").unwrap();
    append_lines(&log, written[1_000..].iter().cloned());
    let credentials = rskafka::client::Credentials::new("shipper".into(), "right-Pa55".into());
    let client = rskafka::client::ClientBuilder::new(vec![broker.address()])
        .sasl_config(rskafka::client::SaslConfig::ScramSha256(credentials));
    let records = consume_with(client, &topic, written.len(), LONG, 50_000_000);
    let values: Vec<String> = records.iter().map(|r| r.value()).collect();
    assert_eq!(values, written, "every line once, in order");
    assert_eq!(agent.status()["sink"]["error"], serde_json::Value::Null);
    let (log, status) = (agent.log(), agent.status().to_string());
    assert_eq!(agent.terminate().code(), Some(0));
    for secret in ["wrong-Pa55", "right-Pa55"] {
        assert!(
            !log.contains(secret) && !status.contains(secret),
            "{secret} printed"
        );
    }
}

/// Issue #23.10: the producers' buffers are bounded by the budget whatever the partition
/// count, and a producer idle for `producer_idle_timeout` is dropped; batches that race
/// with its retirement are neither lost nor reordered. 256 files (spread by their path's
/// hash) write to a topic of 64 partitions, lz4; before the fix each partition's producer
/// kept its largest encoding buffer (here about 640 KB each, 40 MB in all) and never
/// ended.
/// Without compression a request's records are the group's encoding buffer itself: once
/// the request is acknowledged the buffer is kept for the next group
/// (`logcatch_kafka_buffer_bytes`, within `max_in_flight_bytes / 8`) instead of freed, so
/// that a busy partition does not fault in fresh pages for every request (issue #26 §4:
/// each freed request's pages were zeroed again for the next one).
#[test]
fn uncompressed_requests_give_their_buffers_back_for_reuse() {
    let broker = Broker::start_memory();
    let topic = topic("reuse-none");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let written = lines("app", 0..50_000);
    append_lines(&log, written.iter().cloned());
    let sink = kafka_sink(
        &broker,
        "    compression: none\n    max_in_flight_bytes: 16MiB\n",
    );
    let entry = format!("  - {{ path: '{}', topic: {topic} }}", log.display());
    ws.write_config(&ws.config_with_sink(&entry, &sink));
    let agent = ws.start();
    let port = ws.http_port;
    let records = consume(&broker.address(), &topic, written.len(), LONG);
    wait_for("every line acknowledged", LONG, || all_acknowledged(port));
    let got: Vec<String> = records.iter().map(|r| r.value()).collect();
    assert_eq!(got, written, "every line once, in order");
    let kept = metric(port, "logcatch_kafka_buffer_bytes{}");
    assert!(
        kept > 0.0 && kept <= (2 << 20) as f64,
        "the acknowledged requests' buffers kept for reuse, within 2 MiB: {kept} bytes"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn producer_buffers_stay_bounded_whatever_the_partitions_and_idle_producers_end() {
    let broker = Broker::start_memory();
    let topic = topic("partitions-64");
    create_topic(&broker.address(), &topic, 64);
    let ws = Workspace::new();
    let dir = ws.path("logs");
    std::fs::create_dir(&dir).unwrap();
    let files: Vec<std::path::PathBuf> = (0..256)
        .map(|i| dir.join(format!("app-{i:03}.log")))
        .collect();
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    fn write(written: &mut HashMap<String, Vec<String>>, file: &Path, range: Range<usize>) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let new = lines(&name, range);
        append_lines(file, new.iter().cloned());
        written
            .entry(file.display().to_string())
            .or_default()
            .extend(new);
    }
    for file in &files {
        write(&mut written, file, 0..1_000);
    }
    // An eighth of the budget is kept for reuse: 2 MiB.
    let sink = kafka_sink(
        &broker,
        "    compression: lz4\n    max_in_flight_bytes: 16MiB\n    producer_idle_timeout: 1s\n",
    );
    let glob = format!("  - {{ path: '{}/*.log', topic: {topic} }}", dir.display());
    ws.write_config(&ws.config_with_sink(&glob, &sink));
    let agent = ws.start();
    let port = ws.http_port;
    // The most producers running at once, sampled during the burst.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if common::http_get(port, "/metrics").is_some() {
                    most = most.max(metric(port, "logcatch_kafka_producers{}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };
    let total =
        |written: &HashMap<String, Vec<String>>| -> usize { written.values().map(Vec::len).sum() };
    consume(&broker.address(), &topic, total(&written), LONG);
    wait_for("every file acknowledged", LONG, || all_acknowledged(port));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().unwrap();

    let buffers = metric(port, "logcatch_kafka_buffer_bytes{}");
    eprintln!(
        "burst: at most {most} producers; after it {buffers} buffer bytes, RSS {} KiB",
        rss_kib(agent.pid())
    );
    assert!(most >= 48.0, "the files spread over the partitions: {most}");
    assert!(
        buffers <= (2 << 20) as f64,
        "buffers kept after the burst within max_in_flight_bytes / 8: {buffers} bytes"
    );

    // Idle producers end, and hold nothing.
    wait_for("idle producers to end", Duration::from_secs(20), || {
        (metric(port, "logcatch_kafka_producers{}") == 0.0).then_some(())
    });
    assert!(metric(port, "logcatch_kafka_buffer_bytes{}") <= (2 << 20) as f64);
    eprintln!("after idle: RSS {} KiB", rss_kib(agent.pid()));

    // Batches racing with the retirement of their partition's producer (written about
    // when it goes idle) arrive once each, in order.
    for round in 0..8u64 {
        std::thread::sleep(Duration::from_millis(850 + 50 * round));
        for file in files.iter().step_by(16) {
            let from = 1_000 + round as usize * 100;
            write(&mut written, file, from..from + 100);
        }
    }
    let records = consume(&broker.address(), &topic, total(&written), LONG);
    wait_for("every file acknowledged", LONG, || all_acknowledged(port));
    let mut got: HashMap<String, Vec<String>> = HashMap::new();
    for record in &records {
        got.entry(record.header("logcatch.path"))
            .or_default()
            .push(record.value());
    }
    assert_eq!(got.len(), written.len());
    for (path, lines) in &written {
        assert!(
            got.get(path) == Some(lines),
            "{path}: every line once, in order"
        );
    }
    assert_eq!(
        metric(
            port,
            "logcatch_task_restarts_total{task=\"kafka-producer\"}"
        ),
        0.0,
        "an idle producer that ended is no restart"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}
