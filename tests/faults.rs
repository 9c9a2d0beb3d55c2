//! Faults (issue 8): each test breaks something for real — the agent, the broker, etcd,
//! the state dir, the config file — while lines are written, and ends with a
//! line-by-line accounting: `written N, delivered N, duplicates D, lost 0`. The
//! duplicate bounds are explained in docs/guarantees.md.

mod common;

use common::accounting::{eventually, metric, wait_delivered, Accounting, LogWriter};
use common::kafka::{
    consume, consume_in_fetches_of, create_topic, kafka_sink_yaml, settled_end, unique_topic,
};
use common::servers::{Broker, Etcd};
use common::{Agent, Workspace};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const DELIVERY: Duration = Duration::from_secs(150);

/// The Kafka tests run one at a time: each drives a broker and a busy agent, and the
/// machine has two cores.
static KAFKA: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kafka_serial() -> std::sync::MutexGuard<'static, ()> {
    KAFKA.lock().unwrap_or_else(|e| e.into_inner())
}

fn log_entry(path: &Path, topic: &str) -> String {
    format!("  - {{ path: \"{}\", topic: {topic} }}", path.display())
}

/// Random moments, reproducible: the seed is printed and `FAULT_SEED` sets it.
struct Moments(u64);

impl Moments {
    fn new() -> Self {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("random moments: FAULT_SEED={seed}");
        Moments(seed | 1)
    }

    /// A duration in `[min, max)` (xorshift64*).
    fn between(&mut self, min: Duration, max: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let span = (max - min).as_millis() as u64;
        min + Duration::from_millis(r % span.max(1))
    }
}

/// Files written in rounds by a background thread until stopped; returns every line.
struct Writers {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<String>, usize)>,
}

impl Writers {
    /// Each round appends `per_round` lines to every file, then sleeps 25 ms; every
    /// `rotate_every` rounds (0 = never) one file in turn is rotated.
    fn start(paths: Vec<PathBuf>, per_round: usize, rotate_every: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut files: Vec<LogWriter> = paths
                    .iter()
                    .map(|p| {
                        let name = p.file_name().unwrap().to_string_lossy().into_owned();
                        LogWriter::new(p, &name)
                    })
                    .collect();
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    for file in &mut files {
                        file.write(per_round);
                    }
                    round += 1;
                    if rotate_every > 0 && round % rotate_every == 0 {
                        let turn = (round / rotate_every) % files.len();
                        files[turn].rotate();
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                let rotations = files.iter().map(LogWriter::rotations).sum();
                let written = files.iter().flat_map(|f| f.written().to_vec()).collect();
                (written, rotations)
            })
        };
        Writers { stop, thread }
    }

    /// Stops writing; returns every line written and how many rotations were made.
    fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Every record of a single-partition topic, in partition order: (offset, value).
fn kafka_records(broker: &str, topic: &str, at_least: usize) -> Vec<(i64, String)> {
    let mut records: Vec<(i64, String)> = consume(broker, topic, at_least, Duration::from_secs(5))
        .iter()
        .map(|r| (r.offset, r.value()))
        .collect();
    records.sort();
    records
}

#[test]
fn twenty_kill9s_while_four_files_rotate_lose_no_line() {
    let _serial = kafka_serial();
    const KILLS: usize = 20;
    let broker = Broker::start_memory();
    let topic = unique_topic("kill9x20");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let dir = ws.path("logs");
    std::fs::create_dir(&dir).unwrap();
    // The glob covers the rotated names: a file rotated away before the agent (down at
    // that moment) ever read it has no checkpoint to be found by, only its name.
    ws.write_config(&ws.config_with_sink(
        &log_entry(&dir.join("*.log*"), &topic),
        &kafka_sink_yaml(&broker.address(), ""),
    ));
    let paths = (0..4).map(|i| dir.join(format!("f{i}.log"))).collect();
    // 4 files × 2 lines every 25 ms (~300 lines/s); one rotation every ~1.5 s.
    let writers = Writers::start(paths, 2, 60);
    let mut moments = Moments::new();
    // The partition's end offset after each kill: every copy of a line must be separated
    // from the previous copy by one of these (a repeat needs a crash).
    let mut crash_offsets = Vec::new();
    for _ in 0..KILLS {
        let agent = ws.start();
        std::thread::sleep(
            moments.between(Duration::from_millis(50), Duration::from_millis(2_500)),
        );
        agent.kill9();
        // Requests the killed agent sent may still be appended after its death.
        let from = crash_offsets.last().copied().unwrap_or(0);
        crash_offsets.push(settled_end(&broker.address(), &topic, 0, from));
    }
    let agent = ws.start();
    std::thread::sleep(Duration::from_millis(500));
    let (written, rotations) = writers.finish();
    let delivered = wait_delivered(&written, DELIVERY, Duration::from_secs(1), || {
        kafka_records(&broker.address(), &topic, written.len())
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    });
    let records = kafka_records(&broker.address(), &topic, delivered.len());
    let values: Vec<String> = records.iter().map(|(_, v)| v.clone()).collect();
    let accounting = Accounting::of(&written, &values);
    println!("{}", accounting.summary());

    let mut previous: std::collections::HashMap<&str, i64> = Default::default();
    let mut repeats_per_crash = vec![0usize; KILLS];
    for (offset, value) in &records {
        if let Some(before) = previous.insert(value, *offset) {
            let crash = crash_offsets
                .iter()
                .position(|&end| before < end && end <= *offset);
            let Some(crash) = crash else {
                let copies: Vec<String> = consume(
                    &broker.address(),
                    &topic,
                    records.len(),
                    Duration::from_secs(5),
                )
                .iter()
                .filter(|r| r.value() == *value)
                .map(|r| {
                    format!(
                        "kafka offset {} from {} at {}",
                        r.offset,
                        r.header("logcatch.path"),
                        r.header("logcatch.offset")
                    )
                })
                .collect();
                panic!("{value:?} at offsets {before} and {offset} with no crash in between (crashes at {crash_offsets:?}): {copies:?}");
            };
            repeats_per_crash[crash] += 1;
        }
    }
    println!("{rotations} rotations; lines repeated per crash: {repeats_per_crash:?}");

    assert!(rotations >= 10, "the files were rotated throughout");
    assert!(accounting.max_copies <= KILLS + 1);
    assert_eq!(agent.terminate().code(), Some(0));
    accounting.check(
        "kill -9 × 20",
        *crash_offsets.last().unwrap() as usize,
        "only lines delivered before a crash repeat, each once per later crash",
    );
}

#[test]
fn five_broker_restarts_during_the_stream_lose_no_line() {
    let _serial = kafka_serial();
    const OUTAGES: usize = 5;
    const MAX_IN_FLIGHT: usize = 256 * 1024;
    // sqlite keeps what was acknowledged across restarts (memory storage would not). It
    // answers fetches slowly, batch by batch, and stalls beyond ~60 MB stored: this test
    // stores a few hundred KB, in batches lingered to 50 ms, read in small fetches.
    let mut broker = Broker::start_sqlite();
    let topic = unique_topic("broker-restarts");
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let (a, b) = (ws.path("a.log"), ws.path("b.log"));
    let logs = format!("{}\n{}", log_entry(&a, &topic), log_entry(&b, &topic));
    let sink = kafka_sink_yaml(
        &broker.address(),
        &format!("    max_in_flight_bytes: {MAX_IN_FLIGHT}\n    max_batch_bytes: 64KiB\n"),
    )
    .replace("linger: 5ms", "linger: 50ms")
    // Outages longer than this surface as send errors (shorter ones rskafka rides out).
    .replace("request_timeout: 5s", "request_timeout: 1s");
    ws.write_config(&ws.config_with_sink(&logs, &sink));
    // 2 files × 2 lines every 25 ms (~160 lines/s).
    let writers = Writers::start(vec![a, b], 2, 0);
    let agent = ws.start();
    let mut moments = Moments::new();
    for outage in 0..OUTAGES {
        std::thread::sleep(
            moments.between(Duration::from_millis(500), Duration::from_millis(2_500)),
        );
        broker.stop();
        if outage == 0 {
            eventually("the outage in /status", || {
                (!agent.status()["sink"]["connected"].as_bool().unwrap()).then_some(())
            });
        }
        std::thread::sleep(
            moments.between(Duration::from_millis(500), Duration::from_millis(3_000)),
        );
        broker.restart();
    }
    std::thread::sleep(Duration::from_secs(1));
    let (written, _) = writers.finish();
    let read = |want, timeout| {
        consume_in_fetches_of(&broker.address(), &topic, want, timeout, 64 * 1024)
            .iter()
            .map(|r| r.value())
            .collect::<Vec<_>>()
    };
    let delivered = wait_delivered(&written, DELIVERY, Duration::from_secs(1), || {
        read(written.len(), Duration::from_secs(20))
    });
    // Everything, duplicates included: read until the timeout.
    let again = read(delivered.len() + 1, Duration::from_secs(4));
    let delivered = if again.len() > delivered.len() {
        again
    } else {
        delivered
    };
    let accounting = Accounting::of(&written, &delivered);
    println!("{}", accounting.summary());
    let send_errors = metric(agent.http_port, "logcatch_send_errors_total");
    assert!(send_errors >= 1.0, "the outages were seen: {send_errors}");
    assert!(agent.status()["sink"]["connected"].as_bool().unwrap());
    let log = agent.log();
    assert_eq!(agent.terminate().code(), Some(0), "{log}");
    // A batch the broker stored but never acknowledged (it died first, or answered after
    // request_timeout) is sent again: at most what was in flight, per outage.
    let shortest = written.iter().map(String::len).min().unwrap_or(1) + 1;
    accounting.check(
        "broker restarted × 5",
        OUTAGES * MAX_IN_FLIGHT / shortest,
        "per outage at most max_in_flight_bytes of unacknowledged lines",
    );
}

/// Every record of the topic once every written line is in it, or after `timeout` (the
/// accounting then shows what is missing).
fn delivered_within(
    broker: &Broker,
    topic: &str,
    written: &[String],
    timeout: Duration,
) -> Vec<String> {
    wait_delivered(written, timeout, Duration::from_secs(1), || {
        kafka_records(&broker.address(), topic, written.len())
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    })
}

/// [`follow_one_file`] with 128 KiB in flight, deleted files bounded at `bound` bytes
/// (and an hour), polled every 20 ms; the broker frozen before it returns.
fn follow_frozen_under_a_bound(
    name: &str,
    bound: u64,
) -> (Broker, String, Workspace, LogWriter, Agent) {
    // Every write read when it is made (`min_read_interval: 0s`): the tests count on a
    // batch a write.
    let tail = format!(
        "poll_interval: 20ms, min_read_interval: 0s, deleted_files_max_bytes: {bound}, deleted_files_max_age: 1h"
    );
    let followed = follow_one_file(name, 128 * 1024, &tail);
    followed.0.freeze();
    followed
}

/// A broker and an agent following `app.log` into it with `max_in_flight` bytes in flight
/// at most and `tail: { <tail> }`; returns once the first 100 lines were delivered.
fn follow_one_file(
    name: &str,
    max_in_flight: usize,
    tail: &str,
) -> (Broker, String, Workspace, LogWriter, Agent) {
    follow_with_neighbours(name, max_in_flight, tail, &[])
}

/// [`follow_one_file`], and `neighbours` (files in the workspace) on the same topic.
fn follow_with_neighbours(
    name: &str,
    max_in_flight: usize,
    tail: &str,
    neighbours: &[&str],
) -> (Broker, String, Workspace, LogWriter, Agent) {
    let broker = Broker::start_memory();
    let topic = unique_topic(name);
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let mut entries = log_entry(&log, &topic);
    for neighbour in neighbours {
        entries.push('\n');
        entries.push_str(&log_entry(&ws.path(neighbour), &topic));
    }
    let sink = kafka_sink_yaml(
        &broker.address(),
        &format!("    max_in_flight_bytes: {max_in_flight}\n    max_batch_bytes: 64KiB\n"),
    )
    .replace("request_timeout: 5s", "request_timeout: 1s");
    let config = ws.config_with_sink(&entries, &sink).replace(
        "tail: { poll_interval: 20ms }",
        &format!("tail: {{ {tail} }}"),
    );
    assert!(config.contains(tail), "{config}");
    ws.write_config(&config);
    let mut writer = LogWriter::new(&log, name);
    writer.write(100);
    let agent = ws.start();
    wait_delivered(
        writer.written(),
        DELIVERY,
        Duration::from_millis(200),
        || {
            kafka_records(&broker.address(), &topic, 100)
                .into_iter()
                .map(|(_, v)| v)
                .collect()
        },
    );
    (broker, topic, ws, writer, agent)
}

/// A file rotated faster than it is read — Kafka hangs, and the kubelet rotates a chatty
/// container every few hundred milliseconds — loses no file: more rotations than a
/// tailer reads at once (8), and rotations closer together than `poll_interval`, are all
/// read, each file once. The rotated file deleted before the tailer reached it was held
/// open by the watch task since it appeared: it is read too, nothing is skipped.
#[test]
fn rotations_faster_than_reading_while_kafka_hangs_lose_no_file() {
    let _serial = kafka_serial();
    const MAX_IN_FLIGHT: usize = 256 * 1024;
    let (broker, topic, ws, mut writer, agent) =
        follow_one_file("fast-rotations", MAX_IN_FLIGHT, "poll_interval: 200ms");
    broker.freeze();
    // More than max_in_flight_bytes: the tailer waits for the sink, busy.
    writer.write(20_000);
    // Each rotation seen by the watch task (a poll apart): more than a tailer holds.
    for _ in 0..12 {
        writer.write(200);
        writer.rotate();
        std::thread::sleep(Duration::from_millis(300));
    }
    // Deleted before the tailer reached it (it reads 8 files at once, this is the 11th).
    let deleted = ws.path("app.log.11");
    assert_eq!(
        std::fs::read_to_string(&deleted).unwrap().lines().count(),
        200
    );
    std::fs::remove_file(&deleted).unwrap();
    // Then four within one poll interval: seen by notification, or found by name
    // between two looks.
    for _ in 0..4 {
        writer.write(200);
        writer.rotate();
    }
    writer.write(100);
    std::thread::sleep(Duration::from_millis(500));
    broker.thaw();
    every_line_once_nothing_skipped(
        &broker,
        &topic,
        &writer,
        agent,
        MAX_IN_FLIGHT,
        "16 rotations while Kafka hangs",
    );
}

/// A container rotated faster than `poll_interval` while Kafka hangs, each rotated file
/// deleted at the next rotation (the kubelet gzips it): no tailer look falls between, so
/// each file is opened as it appears at the path (a notification, not the poll), held
/// while deleted, and shipped once the broker is back. Nothing is lost or skipped.
/// `backlog` lines written first keep the tailer waiting to submit (more than
/// `max_in_flight_bytes`); without, it waits for the acknowledgements of the first
/// rotated file it finishes (deleted while it lingered, looked at every poll).
fn rotations_between_two_polls_each_deleted_at_the_next(
    name: &str,
    backlog: usize,
    per_file: usize,
    kafka_hangs: bool,
) {
    let _serial = kafka_serial();
    const MAX_IN_FLIGHT: usize = 128 * 1024;
    let (broker, topic, _ws, mut writer, agent) =
        follow_one_file(name, MAX_IN_FLIGHT, "poll_interval: 1s");
    if kafka_hangs {
        broker.freeze();
    }
    writer.write(backlog);
    let mut previous: Option<PathBuf> = None;
    for _ in 0..30 {
        writer.write(per_file);
        let rotated = writer.rotate();
        std::thread::sleep(Duration::from_millis(150));
        if let Some(older) = previous.replace(rotated) {
            std::fs::remove_file(older).unwrap();
        }
    }
    writer.write(100);
    broker.thaw();
    every_line_once_nothing_skipped(
        &broker,
        &topic,
        &writer,
        agent,
        MAX_IN_FLIGHT,
        &format!("30 rotations 150 ms apart of {per_file} lines, each deleted at the next ({backlog} lines before, Kafka hangs: {kafka_hangs})"),
    );
}

#[test]
fn rotations_between_two_polls_deleted_at_the_next_rotation_are_all_read() {
    rotations_between_two_polls_each_deleted_at_the_next("unseen-rotations", 5_000, 100, true);
}

#[test]
fn rotations_while_the_tailer_waits_for_a_rotated_files_acks_are_all_read() {
    rotations_between_two_polls_each_deleted_at_the_next("unseen-while-finishing", 0, 100, true);
}

/// More rotations while Kafka hangs than the watch task holds open for the tailer
/// (`MAX_QUEUED`, 1024) and notes beyond (256), each rotated file deleted soon after (as
/// the kubelet's gzip does), and new files taking the inode numbers of the deleted ones: a file deleted before anyone read it is lost — but never silently.
/// Every file with a lost line is counted, skipped (never opened) or released (closed at
/// the deleted-file bounds); the file at the path at the end is read whole. The soak lost
/// ~760 such files uncounted: notes beyond 256 were dropped, a note was forgotten when
/// another file with the same inode number was queued, and one whose size at the look was
/// under a KiB was taken for read by the checkpoint of an earlier file with its inode.
#[test]
fn rotations_beyond_what_the_watch_task_holds_are_each_counted_when_lost() {
    let _serial = kafka_serial();
    const MAX_IN_FLIGHT: usize = 128 * 1024;
    const ROTATIONS: usize = 1_600;
    let (broker, topic, _ws, mut writer, agent) =
        follow_one_file("beyond-the-queue", MAX_IN_FLIGHT, "poll_interval: 200ms");
    let port = agent.http_port;
    broker.freeze();
    // More than max_in_flight_bytes: the tailer waits for the sink, busy (and its watch
    // task looks at the path: files rotated and deleted before it looks are counted by
    // the arrivals it was notified of).
    writer.write(5_000);
    std::thread::sleep(Duration::from_millis(500));
    // The lines of each file, by index in `written`: [start, end).
    let mut files: Vec<(usize, usize)> = Vec::new();
    // Rotated files on disk, deleted 8 rotations later (one rotated and deleted between
    // two looks of the watch task is counted from its notification: docs/guarantees.md).
    let mut rotated_files: std::collections::VecDeque<PathBuf> = Default::default();
    for _ in 0..ROTATIONS {
        let start = writer.written().len();
        // Over a KiB: not a copy that may still be written, looked at again each poll.
        writer.write(60);
        let rotated = writer.rotate();
        files.push((start, writer.written().len()));
        // Birth times tick every few milliseconds: keep the files apart.
        std::thread::sleep(Duration::from_millis(15));
        rotated_files.push_back(rotated);
        if rotated_files.len() > 8 {
            std::fs::remove_file(rotated_files.pop_front().unwrap()).unwrap();
        }
    }
    let start = writer.written().len();
    writer.write(100);
    files.push((start, writer.written().len()));
    broker.thaw();
    // Files are read in order: once the last line is delivered, all that can be is.
    let written = writer.written().to_vec();
    let (delivered, _) = delivered_and_lost(&broker, &topic, &written);
    let lost_files = files_with_a_lost_line(&files, &written, &delivered);
    let skipped = metric(port, "logcatch_files_skipped_total");
    let released = metric(port, "logcatch_deleted_files_released_total");
    println!(
        "{} of {} files lost a line; counted: {skipped} skipped, {released} released",
        lost_files.len(),
        files.len()
    );
    assert!(
        !lost_files.is_empty(),
        "more rotations than the watch task holds: some file is deleted before it is read"
    );
    assert!(
        !lost_files.contains(&(files.len() - 1)),
        "the file at the path at the end is read"
    );
    assert!(
        lost_files.len() as f64 <= skipped + released,
        "{} files lost a line but only {skipped} skipped and {released} released were counted",
        lost_files.len()
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Rotates `writer`'s file as the kubelet does a container's log: the rotated files not
/// compressed yet are gzipped (`<name>.gz` written through `<name>.tmp`, the original
/// removed: deleted for the agent, which skips compressed files), the oldest removed so
/// that `kept` rotated files stay, then the file is renamed to `<path>.<n>` and a new one
/// created at the path.
fn rotate_as_the_kubelet(
    writer: &mut LogWriter,
    rotated: &mut std::collections::VecDeque<PathBuf>,
    kept: usize,
) {
    for name in rotated.iter_mut() {
        if name.extension().is_some_and(|e| e == "gz") {
            continue;
        }
        let gz = PathBuf::from(format!("{}.gz", name.display()));
        let tmp = PathBuf::from(format!("{}.tmp", name.display()));
        // Not real gzip, but its magic number: the agent takes it for compressed.
        let mut bytes = vec![0x1f, 0x8b, 0x08, 0x00];
        bytes.extend(std::fs::read(&*name).unwrap());
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &gz).unwrap();
        std::fs::remove_file(&*name).unwrap();
        *name = gz;
    }
    while rotated.len() >= kept {
        std::fs::remove_file(rotated.pop_front().unwrap()).unwrap();
    }
    rotated.push_back(writer.rotate());
}

/// The files of a container rotated while Kafka hangs, and what the agent counted.
struct RotatedWhileHanging {
    /// The files (by rotation) with a line lost.
    lost_files: Vec<usize>,
    files: usize,
    /// Logged "deleted before it was read".
    skipped: usize,
    /// Released at the deleted-file bounds with lines lost.
    released: usize,
    /// Delivered records of the rotated file's that are no line written (e.g. a
    /// compressed copy shipped as lines).
    foreign: Vec<String>,
}

impl RotatedWhileHanging {
    /// Every file with a lost line was counted: skipped, or released with lines lost; and
    /// nothing of the file's was delivered that was not written.
    fn assert_every_lost_file_counted(&self) {
        let (lost, skipped, released) = (self.lost_files.len(), self.skipped, self.released);
        assert!(
            lost <= skipped + released,
            "{lost} files lost a line but only {skipped} skipped and {released} released \
             with lines lost were counted"
        );
        assert!(
            self.foreign.is_empty(),
            "delivered, never written: {:?}",
            self.foreign
        );
    }
}

/// Rotates `writer`'s file `rotations` times as the kubelet does (60 lines each, over a
/// KiB: not a copy that may still be written) while `broker` is frozen, writes 100 lines
/// to the last, thaws the broker and reads back what was delivered. `bursts`: every tenth
/// rotation is followed at once by two more (a kubelet behind).
fn rotate_as_the_kubelet_while_kafka_hangs(
    broker: &Broker,
    topic: &str,
    writer: &mut LogWriter,
    agent: &Agent,
    rotations: usize,
    bursts: bool,
) -> RotatedWhileHanging {
    std::thread::sleep(Duration::from_millis(500));
    let mut files: Vec<(usize, usize)> = Vec::new();
    let mut rotated = std::collections::VecDeque::new();
    for i in 0..rotations {
        let start = writer.written().len();
        writer.write(60);
        rotate_as_the_kubelet(writer, &mut rotated, 4);
        files.push((start, writer.written().len()));
        if !bursts || i % 10 >= 2 {
            std::thread::sleep(Duration::from_millis(8));
        }
    }
    let start = writer.written().len();
    writer.write(100);
    files.push((start, writer.written().len()));
    std::thread::sleep(Duration::from_millis(500));
    broker.thaw();
    let written = writer.written().to_vec();
    let lines: std::collections::HashSet<&String> = written.iter().collect();
    // Neighbours on the topic write lines of their own.
    let ours = written[0].split(' ').next().unwrap();
    let count = || {
        let (got, _) = delivered_and_lost(broker, topic, &written);
        let log = agent.log();
        let foreign = got
            .iter()
            .filter(|v| v.contains(ours) && !lines.contains(v));
        RotatedWhileHanging {
            foreign: foreign.cloned().collect(),
            files: files.len(),
            skipped: log.matches("was deleted before it was read").count(),
            released: log
                .lines()
                .filter(|l| l.contains("closed a deleted file") && !l.contains(" lost_bytes=0 "))
                .count(),
            lost_files: files_with_a_lost_line(&files, &written, &got),
        }
    };
    // The tailer counts a loss when it comes to the file, which on a loaded machine may
    // be after the last line was delivered: wait (bounded) for the counts to add up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut counted = count();
    while counted.skipped + counted.released < counted.lost_files.len()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
        counted = count();
    }
    println!(
        "{} of {} files lost a line; counted: {} skipped ({} never seen), {} released with lines lost",
        counted.lost_files.len(),
        counted.files,
        counted.skipped,
        agent.log().matches("never seen").count(),
        counted.released,
    );
    counted
}

/// The soak's chatty container while Kafka hangs (issue #23): the kubelet rotates it
/// every few milliseconds — at times several times within one write, as a kubelet that
/// fell behind does — gzipping each rotated file at the next rotation and keeping four.
/// More files than the watch task queues (1,024) and notes (256), the oldest of those
/// held closed at `tail.deleted_files_max_bytes`. Every file with a lost line is counted:
/// skipped (logged "deleted before it was read") or released with lines lost (logged
/// "closed a deleted file ..." with `lost_bytes` above 0). The soak lost 13 and 4 such
/// files uncounted.
#[test]
fn a_container_rotated_every_few_milliseconds_while_kafka_hangs_loses_no_file_uncounted() {
    let _serial = kafka_serial();
    const ROTATIONS: usize = 1_700;
    let (broker, topic, _ws, mut writer, agent) =
        follow_frozen_under_a_bound("kubelet-bursts", 2 * 1024 * 1024);
    // More than max_in_flight_bytes: the tailer waits for the sink.
    writer.write(5_000);
    let counted = rotate_as_the_kubelet_while_kafka_hangs(
        &broker,
        &topic,
        &mut writer,
        &agent,
        ROTATIONS,
        true,
    );
    assert!(
        !counted.lost_files.is_empty(),
        "more files than held: some are lost"
    );
    assert!(
        !counted.lost_files.contains(&(counted.files - 1)),
        "the file at the path at the end is read"
    );
    counted.assert_every_lost_file_counted();
    assert_eq!(agent.terminate().code(), Some(0));
}

/// The same while other files hold every permit to fill a batch (`tail::filling_permits`:
/// 2 with this budget), each waiting for room in flight: a tailer waiting for a permit is
/// busy, so its watch task looks at the path for it. It was taken for idle, nobody looked,
/// and the QUICK soak lost 118 files of 42 containers uncounted.
#[test]
fn a_container_rotated_while_other_files_hold_every_permit_to_fill_loses_no_file_uncounted() {
    let _serial = kafka_serial();
    const ROTATIONS: usize = 300;
    let tail = "poll_interval: 20ms, deleted_files_max_bytes: 1GiB, deleted_files_max_age: 1h";
    let neighbours = ["busy-1.log", "busy-2.log", "busy-3.log"];
    let (broker, topic, ws, mut writer, agent) =
        follow_with_neighbours("permits", 128 * 1024, tail, &neighbours);
    broker.freeze();
    // More than max_in_flight_bytes each: their tailers fill a batch and wait for room.
    for neighbour in neighbours {
        let mut busy = LogWriter::new(&ws.path(neighbour), neighbour);
        busy.write(5_000);
    }
    let counted = rotate_as_the_kubelet_while_kafka_hangs(
        &broker,
        &topic,
        &mut writer,
        &agent,
        ROTATIONS,
        false,
    );
    counted.assert_every_lost_file_counted();
    assert_eq!(agent.terminate().code(), Some(0));
}

/// A new file shorter than a KiB at the path might be a copytruncate copy being written:
/// the tailer looks at it again each poll. It holds it open meanwhile, so that a file
/// rotated away and deleted before it is decided is still read.
#[test]
fn small_new_files_rotated_and_deleted_before_they_are_decided_are_all_read() {
    rotations_between_two_polls_each_deleted_at_the_next("small-new-files", 0, 5, false);
}

/// After the broker thawed: every line written is delivered, none lost, no file skipped;
/// only the requests hanging when the broker froze (at most `max_in_flight` bytes) may
/// be sent twice, as they time out and are sent again.
fn every_line_once_nothing_skipped(
    broker: &Broker,
    topic: &str,
    writer: &LogWriter,
    agent: Agent,
    max_in_flight: usize,
    what: &str,
) {
    let written = writer.written().to_vec();
    let delivered = delivered_within(broker, topic, &written, Duration::from_secs(60));
    let accounting = Accounting::of(&written, &delivered);
    println!("{}", accounting.summary());
    let skipped = common::metric_sum(agent.http_port, "logcatch_files_skipped_total");
    assert_eq!(skipped, 0.0, "nothing skipped");
    assert_eq!(agent.terminate().code(), Some(0));
    let shortest = written.iter().map(String::len).min().unwrap_or(1) + 1;
    accounting.check(
        what,
        max_in_flight / shortest * 2,
        "at most what was in flight when the broker froze, sent again",
    );
}

/// The bytes of the deleted files the process holds open (from `/proc/PID/fd`).
fn deleted_bytes_held(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().ends_with(" (deleted)"))
        })
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

/// While Kafka hangs, rotated files the kubelet deletes stay open until shipped and pin
/// the node's disk. Their bytes show (`/status`, metrics), and beyond
/// `tail.deleted_files_max_bytes` the oldest are closed: their unshipped bytes are the
/// one deliberate loss, counted exactly; every other line is delivered.
#[test]
fn deleted_files_held_while_kafka_hangs_are_shown_and_bounded() {
    let _serial = kafka_serial();
    const BOUND: u64 = 600 * 1024;
    let (broker, topic, _ws, mut writer, agent) =
        follow_frozen_under_a_bound("deleted-bound", BOUND);
    let (port, pid) = (agent.http_port, agent.pid());
    // Five rotations of ~250 KiB each, every rotated file deleted at once (as the
    // kubelet does beyond containerLogMaxFiles): ~1.2 MiB deleted, the bound is 600 KiB.
    for _ in 0..5 {
        writer.write(6_000);
        let rotated = writer.rotate();
        std::thread::sleep(Duration::from_millis(300));
        std::fs::remove_file(rotated).unwrap();
    }
    writer.write(100);
    let status = eventually("the deleted files released down to the bound", || {
        let status = agent.status();
        let held = status["deleted_files"]["bytes"].as_u64()?;
        let released = metric(port, "logcatch_deleted_bytes_released_total");
        (released > 0.0 && held <= BOUND && deleted_bytes_held(pid) <= BOUND).then_some(status)
    });
    assert!(
        status["deleted_files"]["files"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(metric(port, "logcatch_deleted_file_bytes") > 0.0);
    let released = metric(port, "logcatch_deleted_bytes_released_total") as usize;
    broker.thaw();

    let written = writer.written().to_vec();
    let delivered = delivered_within(&broker, &topic, &written, Duration::from_secs(20));
    let accounting = Accounting::of(&written, &delivered);
    println!("{}; released {released} bytes", accounting.summary());
    assert!(accounting.unexpected.is_empty());
    let lost: std::collections::HashSet<&str> = {
        let got: std::collections::HashSet<&str> = delivered.iter().map(String::as_str).collect();
        written
            .iter()
            .map(String::as_str)
            .filter(|l| !got.contains(l))
            .collect()
    };
    let lost_bytes: usize = lost.iter().map(|l| l.len() + 1).sum();
    assert_eq!(lost_bytes, released, "exactly the released bytes are lost");
    assert!(!lost.is_empty(), "the bound released something");
    assert_eq!(agent.terminate().code(), Some(0));
}

/// A tailer waiting for room in flight (16 batches unacknowledged while Kafka hangs)
/// holds a batch it has read but not handed to the sink. When its file, rotated and
/// deleted, is closed at `tail.deleted_files_max_bytes`, that batch is either shipped and
/// not counted lost, or counted and not shipped — never both: the lost bytes are exactly
/// the released bytes. The soak counted 304,603 bytes released that were delivered after
/// all (the release counted from the end of what was handed over, and the held batch was
/// handed over once the broker was back).
#[test]
fn a_batch_held_for_room_in_flight_when_its_file_is_released_is_shipped_or_counted_never_both() {
    let _serial = kafka_serial();
    let (broker, topic, _ws, mut writer, agent) =
        follow_frozen_under_a_bound("held-batch", 4 * 1024);
    let port = agent.http_port;
    // Each write read in a turn of its own, a batch each: past 16 the tailer holds one
    // and waits for an acknowledgement (well within max_in_flight_bytes).
    for _ in 0..24 {
        writer.write(20);
        std::thread::sleep(Duration::from_millis(150));
    }
    let rotated = writer.rotate();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_file(rotated).unwrap();
    writer.write(100);
    eventually("the rotated file closed at the bound", || {
        (metric(port, "logcatch_deleted_files_released_total") >= 1.0).then_some(())
    });
    let released = metric(port, "logcatch_deleted_bytes_released_total") as usize;
    broker.thaw();

    let written = writer.written().to_vec();
    let (_, lost) = delivered_and_lost(&broker, &topic, &written);
    let lost_bytes: usize = lost.iter().map(|l| l.len() + 1).sum();
    println!(
        "written {}, lost {} lines ({lost_bytes} bytes), released {released} bytes",
        written.len(),
        lost.len()
    );
    assert!(
        released > 0,
        "the bound released the rotated file's unshipped lines"
    );
    assert_eq!(
        lost_bytes, released,
        "the lost bytes are exactly the released bytes (more released than lost: a batch counted and shipped)"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// The same while the tailer goes on: it holds the file closed at the bound (it waits
/// for the sink, reading it), and a newer file at its path takes that file's inode
/// number. The newer file is not the closed one: it is read — even when it is rotated
/// away and deleted before the tailer gets to it — and what was lost is exactly what
/// was counted. The soak lost such files uncounted: they were taken for the closed file
/// the tailer held (same device and inode number) and let go.
#[test]
fn a_file_taking_the_inode_number_of_one_closed_under_its_tailer_is_read_too() {
    let _serial = kafka_serial();
    with_a_reused_inode(file_taking_the_inode_number_of_one_closed_under_its_tailer);
}

fn file_taking_the_inode_number_of_one_closed_under_its_tailer() -> bool {
    use std::os::unix::fs::MetadataExt;
    let (broker, topic, ws, mut writer, agent) =
        follow_frozen_under_a_bound("reused-inode-held", 64 * 1024);
    let port = agent.http_port;
    // More than max_in_flight_bytes and the bound: the tailer waits for the sink.
    writer.write(20_000);
    std::thread::sleep(Duration::from_millis(500));
    let ino = std::fs::metadata(&writer.path).unwrap().ino();
    let rotated = writer.rotate();
    std::fs::remove_file(&writer.path).unwrap();
    std::fs::remove_file(rotated).unwrap();
    eventually("the deleted file closed at the bound", || {
        (metric(port, "logcatch_deleted_files_released_total") >= 1.0).then_some(())
    });
    // The next file at the path takes its inode number; rotated away and deleted while
    // the tailer still waits (held open by its watch task meanwhile).
    if !create_with_inode(&writer.path, ino) {
        broker.thaw();
        agent.kill9();
        return false;
    }
    writer.write(100);
    std::thread::sleep(Duration::from_millis(500));
    let second = ws.path("app.log.second");
    std::fs::rename(&writer.path, &second).unwrap();
    std::fs::write(&writer.path, "").unwrap();
    std::fs::remove_file(second).unwrap();
    writer.write(100);
    std::thread::sleep(Duration::from_millis(500));
    let released = metric(port, "logcatch_deleted_bytes_released_total") as usize;
    broker.thaw();

    let written = writer.written().to_vec();
    let (got, lost) = delivered_and_lost(&broker, &topic, &written);
    let lost_bytes: usize = lost.iter().map(|l| l.len() + 1).sum();
    let skipped = metric(port, "logcatch_files_skipped_total");
    println!(
        "written {}, lost {} lines ({lost_bytes} bytes), released {released} bytes, {skipped} files skipped",
        written.len(),
        lost.len()
    );
    // The 100 lines before the freeze and 20,000 into the closed file, then the newer
    // files' 200.
    let tail_lost: Vec<&String> = written[20_100..]
        .iter()
        .filter(|l| !got.contains(l.as_str()))
        .collect();
    assert!(
        tail_lost.is_empty(),
        "the files after the closed one are read whole: lost {} lines of theirs, e.g. {:?}",
        tail_lost.len(),
        tail_lost.first()
    );
    assert_eq!(
        lost_bytes, released,
        "the lost bytes are exactly the released bytes"
    );
    assert_eq!(agent.terminate().code(), Some(0));
    true
}

/// Waits until the last line of `written` is in `topic`, then returns the lines
/// delivered (each once: batches a request carried when the broker froze may come twice)
/// and those of `written` that were not.
fn delivered_and_lost<'a>(
    broker: &Broker,
    topic: &str,
    written: &'a [String],
) -> (std::collections::HashSet<String>, Vec<&'a String>) {
    let last = written.last().expect("lines written");
    let delivered = eventually("the last line delivered", || {
        let delivered: Vec<String> = kafka_records(&broker.address(), topic, written.len())
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        delivered.contains(last).then_some(delivered)
    });
    let got: std::collections::HashSet<String> = delivered.into_iter().collect();
    let lost = written
        .iter()
        .filter(|l| !got.contains(l.as_str()))
        .collect();
    (got, lost)
}

/// The files (by index in `files`, each the range of its lines in `written`) with a line
/// not in `delivered`.
fn files_with_a_lost_line(
    files: &[(usize, usize)],
    written: &[String],
    delivered: &std::collections::HashSet<String>,
) -> Vec<usize> {
    (0..files.len())
        .filter(|&i| (files[i].0..files[i].1).any(|l| !delivered.contains(&written[l])))
        .collect()
}

/// A broker and an agent following `pods/*.log` into it with `tail: { <tail> }`, with
/// `pods/a.log` written to; returns once its first 100 lines were delivered.
fn follow_a_pod(name: &str, tail: &str) -> (Broker, String, Workspace, LogWriter, Agent) {
    let broker = Broker::start_memory();
    let topic = unique_topic(name);
    create_topic(&broker.address(), &topic, 1);
    let ws = Workspace::new();
    let pods = ws.path("pods");
    std::fs::create_dir(&pods).unwrap();
    let sink = kafka_sink_yaml(
        &broker.address(),
        "    max_in_flight_bytes: 128KiB\n    max_batch_bytes: 64KiB\n",
    )
    .replace("request_timeout: 5s", "request_timeout: 1s");
    let config = ws
        .config_with_sink(&log_entry(&pods.join("*.log"), &topic), &sink)
        .replace(
            "tail: { poll_interval: 20ms }",
            &format!("tail: {{ {tail} }}"),
        );
    assert!(config.contains(tail), "{config}");
    ws.write_config(&config);
    let mut writer = LogWriter::new(&pods.join("a.log"), "pod");
    writer.write(100);
    let agent = ws.start();
    delivered_within(&broker, &topic, writer.written(), DELIVERY);
    (broker, topic, ws, writer, agent)
}

/// Once the pod's files are deleted while the broker is frozen: its tailer stops (the
/// resync, 200 ms, finds the glob empty), the broker thaws, and every line written is
/// delivered all the same.
fn removed_pod_is_shipped(broker: &Broker, topic: &str, writer: &LogWriter, agent: Agent) {
    eventually("the tailer stopped", || {
        agent.status()["tailers"]
            .as_array()?
            .iter()
            .all(|t| t["state"] == "stopping")
            .then_some(())
    });
    broker.thaw();
    let written = writer.written().to_vec();
    let delivered = delivered_within(broker, topic, &written, Duration::from_secs(60));
    let accounting = Accounting::of(&written, &delivered);
    println!("{}", accounting.summary());
    assert_eq!(agent.terminate().code(), Some(0));
    accounting.check(
        "a pod's logs deleted and its tailer stopped while Kafka hangs",
        written.len(),
        "requests that timed out while the broker was frozen are sent again",
    );
}

/// A pod's log deleted while Kafka hangs stops matching its glob, and its tailer is
/// stopped: what the file still held is read and shipped all the same (a deleted file is
/// never found again), not left behind.
#[test]
fn a_deleted_file_whose_glob_no_longer_matches_is_read_to_its_end() {
    let _serial = kafka_serial();
    let (broker, topic, ws, mut writer, agent) =
        follow_a_pod("deleted-glob", "poll_interval: 20ms");
    broker.freeze();
    // More than a tailer reads in one turn (4 MiB).
    writer.write(150_000);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(ws.path("pods/a.log")).unwrap();
    removed_pod_is_shipped(&broker, &topic, &writer, agent);
}

/// A pod removed while Kafka hangs after its log rotated twice: the tailer stopped for it
/// reads to their end all the deleted files it holds, the newer ones its watch task
/// opened at the path included, not only the one it was reading.
#[test]
fn a_removed_pods_rotated_files_held_while_kafka_hangs_are_all_read() {
    let _serial = kafka_serial();
    let (broker, topic, ws, mut writer, agent) =
        follow_a_pod("removed-rotated", "poll_interval: 20ms");
    broker.freeze();
    // More than max_in_flight_bytes: the tailer waits for the sink, busy.
    writer.write(20_000);
    let mut deleted = Vec::new();
    for _ in 0..2 {
        deleted.push(writer.rotate());
        writer.write(1_000);
        std::thread::sleep(Duration::from_millis(500));
    }
    deleted.push(ws.path("pods/a.log"));
    for file in deleted {
        std::fs::remove_file(file).unwrap();
    }
    removed_pod_is_shipped(&broker, &topic, &writer, agent);
}

/// Creates a file at `path` that takes the inode number `ino` (freed when a deleted file
/// was closed): files are created beside it (`<path>.<n>.tmp`, which the glob does not
/// match) until one gets that number — ext4 gives the lowest free number in the group,
/// so the ones below it are taken first — which is renamed into place; the others are
/// removed. False when none did: another process on the machine took the number first.
fn create_with_inode(path: &Path, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut others = Vec::new();
    let mut found = false;
    for n in 0..2_000 {
        let tmp = path.with_extension(format!("{n}.tmp"));
        std::fs::write(&tmp, "").unwrap();
        if std::fs::metadata(&tmp).unwrap().ino() == ino {
            std::fs::rename(&tmp, path).unwrap();
            found = true;
            break;
        }
        others.push(tmp);
    }
    for tmp in others {
        std::fs::remove_file(tmp).unwrap();
    }
    if !found {
        println!("no new file took the freed inode number {ino} (taken by another process?)");
    }
    found
}

/// Runs `attempt` until it could give a new file the inode number it needs (it returns
/// false when another process took the number first), three times at most: the test
/// needs a filesystem that reuses freed inode numbers at once, as ext4 does.
fn with_a_reused_inode(mut attempt: impl FnMut() -> bool) {
    for _ in 0..3 {
        if attempt() {
            return;
        }
    }
    panic!("no attempt got a freed inode number for a new file: this test needs a filesystem that reuses them at once (ext4 does)");
}

/// While Kafka hangs, a tailer that lost its file at the deleted-file bound waits for
/// acknowledgements that do not come, and the inode number of that closed file is the
/// next new file's (a new pod's log). The new file must be followed at once — not once
/// the broker is back — and its lines shipped even when it is deleted before then (a pod
/// that lived during the outage). The soak found new pods' files first opened up to 95 s
/// late, and files that lived and went during the freeze never opened nor counted: the
/// released file's claim (by device and inode number) outlived its descriptor.
#[test]
fn a_new_file_taking_a_released_files_inode_is_followed_at_once_while_kafka_hangs() {
    let _serial = kafka_serial();
    with_a_reused_inode(new_file_taking_a_released_files_inode);
}

fn new_file_taking_a_released_files_inode() -> bool {
    use std::os::unix::fs::MetadataExt;
    let tail = "poll_interval: 20ms, deleted_files_max_bytes: 64KiB, deleted_files_max_age: 1h";
    let (broker, topic, ws, mut old, agent) = follow_a_pod("reused-inode", tail);
    let pods = ws.path("pods");
    let port = agent.http_port;

    broker.freeze();
    // More than max_in_flight_bytes and the bound: its tailer waits for the sink.
    old.write(20_000);
    std::thread::sleep(Duration::from_millis(500));
    let ino = std::fs::metadata(&old.path).unwrap().ino();
    // The pod removed: its tailer is stopped, waiting for acknowledgements.
    std::fs::remove_file(&old.path).unwrap();
    eventually("the deleted file closed at the bound", || {
        (metric(port, "logcatch_deleted_files_released_total") >= 1.0).then_some(())
    });

    let new_path = pods.join("b.log");
    if !create_with_inode(&new_path, ino) {
        broker.thaw();
        agent.kill9();
        return false;
    }
    let mut new = LogWriter::new(&new_path, "new");
    // Over a KiB: not a copy that may still be written.
    new.write(100);
    let new_name = new_path.display().to_string();
    // Found by the next pass (a notification, at most a second apart) and opened.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let tailer = loop {
        let status = agent.status();
        let tailers = status["tailers"].as_array().unwrap();
        let tailer = tailers.iter().find(|t| t["path"] == new_name.as_str());
        match tailer {
            Some(t) if t["state"] == "running" => break t.clone(),
            _ if std::time::Instant::now() > deadline => {
                panic!("the new file is not followed 5 s after it appeared: {tailer:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    println!("followed while Kafka hangs: {tailer}");
    // The pod lives and goes during the outage.
    new.write(100);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&new_path).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    broker.thaw();

    let written = new.written().to_vec();
    let delivered: Vec<String> =
        delivered_within(&broker, &topic, &written, Duration::from_secs(60))
            .into_iter()
            .filter(|line| line.starts_with("new "))
            .collect();
    let accounting = Accounting::of(&written, &delivered);
    println!("the new file: {}", accounting.summary());
    assert_eq!(agent.terminate().code(), Some(0));
    accounting.check(
        "a new file with a released file's inode number, deleted while Kafka hangs",
        written.len(),
        "requests that timed out while the broker was frozen are sent again",
    );
    true
}

/// The workspace dir with symlinks resolved (the allow-list compares resolved paths).
fn root(ws: &Workspace) -> PathBuf {
    ws.dir.path().canonicalize().unwrap()
}

fn etcd_put(etcd: &Etcd, key: &str, paths: &[&Path]) {
    let value: Vec<serde_json::Value> = paths
        .iter()
        .map(|p| serde_json::json!({"path": p, "topic": "app"}))
        .collect();
    etcd.etcdctl(&["put", key, &serde_json::Value::Array(value).to_string()])
        .unwrap();
}

fn lines_of(records: &[common::Record], path: &Path) -> Vec<String> {
    let path = path.display().to_string();
    records
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.line.clone())
        .collect()
}

fn write_all(files: &mut [LogWriter], n: usize) {
    files.iter_mut().for_each(|f| f.write(n));
}

fn tailer_paths(agent: &Agent) -> Vec<String> {
    let mut paths: Vec<String> = agent.tailer_states().into_iter().map(|(p, _)| p).collect();
    paths.sort();
    paths
}

#[test]
fn declarations_changed_while_etcd_is_down_apply_when_it_returns() {
    let mut etcd = Etcd::start();
    let ws = Workspace::new();
    let logs = root(&ws).join("logs");
    std::fs::create_dir(&logs).unwrap();
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| logs.join(format!("{n}.log")));
    let mut files: Vec<LogWriter> = [&a, &b, &c, &d]
        .iter()
        .map(|p| LogWriter::new(p, &p.file_name().unwrap().to_string_lossy()))
        .collect();
    etcd_put(&etcd, "/lc/faults/a", &[&a]);
    etcd_put(&etcd, "/lc/faults/b", &[&b]);
    ws.write_config(&format!(
        "{}etcd:\n  endpoints: [\"{}\"]\n  prefixes: [\"/lc/faults/\"]\n  allowed_paths: [\"{}/**\"]\n  dial_timeout: 1s\n  request_timeout: 2s\n",
        ws.config("  []"),
        etcd.endpoint,
        logs.display(),
    ));
    let agent = ws.start();
    write_all(&mut files, 200);
    eventually("a and b shipped", || {
        let records = ws.records();
        (lines_of(&records, &a).len() == 200 && lines_of(&records, &b).len() == 200).then_some(())
    });

    // For the agent, etcd is down from here until `restart`: b's key is deleted, c's
    // added, a's now declares d too, and the history is compacted.
    etcd.change_while_unreachable(|etcd| {
        etcd.etcdctl(&["del", "/lc/faults/b"]).unwrap();
        etcd_put(etcd, "/lc/faults/c", &[&c]);
        etcd_put(etcd, "/lc/faults/a", &[&a, &d]);
        let status = etcd.etcdctl(&["endpoint", "status", "-w", "json"]).unwrap();
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let revision = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
        etcd.etcdctl(&["compact", &revision.to_string()]).unwrap();
    });
    write_all(&mut files, 200);
    // Last known good while etcd is unreachable: a and b go on, nothing else starts.
    eventually("a and b shipped during the outage", || {
        let records = ws.records();
        (lines_of(&records, &a).len() == 400 && lines_of(&records, &b).len() == 400).then_some(())
    });
    eventually("the outage in metrics", || {
        (metric(agent.http_port, "logcatch_etcd_connected") == 0.0).then_some(())
    });
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());
    assert_eq!(tailer_paths(&agent), vec![a_s.clone(), b_s.clone()]);

    etcd.restart();
    let (c_s, d_s) = (c.display().to_string(), d.display().to_string());
    eventually("b stopped, c and d started", || {
        (tailer_paths(&agent) == vec![a_s.clone(), c_s.clone(), d_s.clone()]).then_some(())
    });
    eventually("etcd synced again", || {
        (metric(agent.http_port, "logcatch_etcd_connected") == 1.0).then_some(())
    });
    let b_before_delete = files[1].written().to_vec();
    write_all(&mut files, 200);
    // a was declared throughout, c and d from their start: all of them; b until its key
    // was deleted, and nothing after.
    let expected: Vec<String> = [0, 2, 3]
        .iter()
        .flat_map(|&i| files[i].written().to_vec())
        .chain(b_before_delete)
        .collect();
    let delivered = wait_delivered(&expected, DELIVERY, Duration::from_millis(500), || {
        ws.records().into_iter().map(|r| r.line).collect()
    });
    let accounting = Accounting::of(&expected, &delivered);
    assert_eq!(agent.terminate().code(), Some(0));
    accounting.check(
        "etcd down while declarations change",
        0,
        "no tailer of a declared file restarts",
    );
}

/// Makes checkpoint writes fail and lets them work again: a small tmpfs filled up where
/// the test may mount one (root), else a read-only state dir (as root, the agent then
/// runs without the capability that overrides file permissions).
struct StateDirFault {
    dir: PathBuf,
    tmpfs: bool,
}

impl StateDirFault {
    fn new(dir: &Path) -> StateDirFault {
        std::fs::create_dir_all(dir).unwrap();
        // STATE_DIR_FAULT=readonly tries the fallback where a tmpfs could be mounted.
        let forced = std::env::var("STATE_DIR_FAULT").is_ok_and(|v| v == "readonly");
        let tmpfs = !forced
            && std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=256k", "logcatch-faults"])
                .arg(dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        println!(
            "state dir fault: {}",
            if tmpfs { "full tmpfs" } else { "read-only dir" }
        );
        StateDirFault {
            dir: dir.to_path_buf(),
            tmpfs,
        }
    }

    fn start(&self, ws: &Workspace) -> Agent {
        if self.tmpfs {
            ws.start()
        } else {
            ws.start_unprivileged()
        }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    fn break_it(&self) {
        if self.tmpfs {
            let mut file = std::fs::File::create(self.filler()).unwrap();
            let block = vec![0u8; 4096];
            while std::io::Write::write_all(&mut file, &block).is_ok() {}
        } else {
            self.set_mode(0o555);
        }
    }

    fn repair(&self) {
        if self.tmpfs {
            std::fs::remove_file(self.filler()).unwrap();
        } else {
            self.set_mode(0o755);
        }
    }

    fn set_mode(&self, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

impl Drop for StateDirFault {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// The offset of the only checkpoint in the state dir.
fn checkpointed_offset(ws: &Workspace) -> u64 {
    let text = std::fs::read_to_string(ws.path("state/checkpoints.json")).unwrap_or_default();
    let document: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    document["checkpoints"][0]["offset"].as_u64().unwrap_or(0)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn a_full_state_dir_keeps_shipping_reports_and_recovers() {
    let ws = Workspace::new();
    let fault = StateDirFault::new(&ws.path("state"));
    let log = ws.path("app.log");
    let mut file = LogWriter::new(&log, "app");
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = fault.start(&ws);
    file.write(1_000);
    eventually("the first checkpoint", || {
        (checkpointed_offset(&ws) == file_len(&log)).then_some(())
    });
    let good_checkpoint = checkpointed_offset(&ws);

    fault.break_it();
    file.write(1_000);
    let written_while_broken = 1_000;
    let status = eventually("the failure in /status", || {
        let status = agent.status();
        status["checkpoints"]["error"].is_string().then_some(status)
    });
    let error = status["checkpoints"]["error"].as_str().unwrap();
    assert!(
        error.contains("checkpoints.json") && error.contains("cannot write"),
        "{error}"
    );
    assert!(status["checkpoints"]["failing_since_ms"].is_u64());
    eventually("the lines shipped while checkpoints fail", || {
        (ws.records().len() >= 2_000).then_some(())
    });
    assert_eq!(
        metric(agent.http_port, "logcatch_checkpoint_last_write_successful"),
        0.0
    );
    assert!(
        metric(
            agent.http_port,
            "logcatch_checkpoint_writes_total{result=\"error\"}"
        ) >= 1.0
    );
    assert_eq!(
        checkpointed_offset(&ws),
        good_checkpoint,
        "the file on disk lags"
    );
    let log_text = agent.log();
    assert_eq!(
        log_text.matches("shipping goes on").count(),
        1,
        "one log line for the failure, not one per second:\n{log_text}"
    );

    // A crash while checkpoints fail repeats the lines since the last good one, no more.
    agent.kill9();
    let agent = fault.start(&ws);
    file.write(500);
    eventually("shipping after the crash", || {
        (ws.records().len() >= 2_500 + written_while_broken).then_some(())
    });

    eventually("the failure reported by the restarted agent", || {
        agent.status()["checkpoints"]["error"]
            .is_string()
            .then_some(())
    });

    fault.repair();
    eventually("checkpoints written again", || {
        let status = agent.status();
        (status["checkpoints"]["error"].is_null() && checkpointed_offset(&ws) == file_len(&log))
            .then_some(())
    });
    assert_eq!(
        metric(agent.http_port, "logcatch_checkpoint_last_write_successful"),
        1.0
    );
    eventually("the recovery logged", || {
        agent
            .log()
            .contains("checkpoints are written again")
            .then_some(())
    });
    // And a crash now repeats nothing.
    agent.kill9();
    let agent = fault.start(&ws);
    file.write(500);
    let delivered = wait_delivered(file.written(), DELIVERY, Duration::from_millis(500), || {
        ws.records().into_iter().map(|r| r.line).collect()
    });
    let accounting = Accounting::of(file.written(), &delivered);
    assert_eq!(agent.terminate().code(), Some(0));
    drop(fault);
    accounting.check(
        "state dir full",
        written_while_broken,
        "a crash while checkpoints fail repeats the lines shipped since the last good write",
    );
}

#[test]
fn garbage_empty_and_deleted_configs_keep_the_last_good_one() {
    let ws = Workspace::new();
    let (a, b, c) = (ws.path("a.log"), ws.path("b.log"), ws.path("c.log"));
    let two = format!("{}\n{}", log_entry(&a, "app"), log_entry(&b, "app"));
    ws.write_config(&ws.config(&two));
    let writers = Writers::start(vec![a.clone(), b.clone(), c.clone()], 5, 0);
    let agent = ws.start();
    let path = ws.config_path().display().to_string();

    let refused = |agent: &Agent, what: &str, reason: &str| {
        let error = eventually(&format!("the {what} config refused"), || {
            let error = agent.status()["config"]["error"].as_str()?.to_string();
            error.contains(reason).then_some(error)
        });
        assert!(error.contains(&path), "{error}");
        assert!(error.contains("keeping the running config"), "{error}");
        assert_eq!(
            metric(agent.http_port, "logcatch_config_last_reload_successful"),
            0.0
        );
        assert!(
            agent.log().contains(&error),
            "the refusal is logged: {error}"
        );
    };
    let applied = |agent: &Agent| {
        eventually("the config applied", || {
            agent.status()["config"]["error"].is_null().then_some(())
        });
        assert_eq!(
            metric(agent.http_port, "logcatch_config_last_reload_successful"),
            1.0
        );
    };

    ws.write_config("logs: [ {path: \x00\x01 }\n\u{1b}[31m garbage ::: {{");
    refused(&agent, "garbage", "logcatch.yaml");
    std::fs::write(ws.config_path(), b"\xff\xfe\x00binary").unwrap();
    refused(&agent, "binary", "not UTF-8");
    ws.write_config("");
    refused(&agent, "empty", "the file is empty");
    ws.write_config(&ws.config(&two));
    applied(&agent);
    std::fs::remove_file(ws.config_path()).unwrap();
    refused(&agent, "deleted", "cannot read");
    // The same good config again: applied (the error clears), nothing restarts.
    ws.write_config(&ws.config(&two));
    applied(&agent);
    // The next good config adds c.
    ws.write_config(&ws.config(&format!("{two}\n{}", log_entry(&c, "app"))));
    applied(&agent);
    let c_path = c.display().to_string();
    eventually("c tailed", || {
        agent
            .tailer_states()
            .iter()
            .any(|(p, s)| *p == c_path && s == "running")
            .then_some(())
    });
    assert!(
        metric(
            agent.http_port,
            "logcatch_config_reloads_total{result=\"error\"}"
        ) >= 4.0
    );

    std::thread::sleep(Duration::from_millis(500));
    let (written, _) = writers.finish();
    let delivered = wait_delivered(&written, DELIVERY, Duration::from_millis(500), || {
        ws.records().into_iter().map(|r| r.line).collect()
    });
    let accounting = Accounting::of(&written, &delivered);
    let status = agent.status();
    for tailer in status["tailers"].as_array().unwrap() {
        assert_eq!(tailer["restarts"], 0, "no tailer disturbed: {tailer}");
        assert_eq!(tailer["state"], "running", "{tailer}");
    }
    assert_eq!(agent.terminate().code(), Some(0));
    accounting.check(
        "config garbage, empty, deleted",
        0,
        "no tailer restarts, so nothing is read twice",
    );
}

/// Files that arrive at the path and are rotated away and deleted before anyone looks
/// (five rotations in microseconds, each rotated file unlinked at once) while the tailer
/// keeps up with its file: nobody can read them, and each is counted, although the tailer
/// takes the newest file itself (the watch task counts files never seen only at a look
/// that finds a file the tailer does not hold). The soak lost 9 and 10 files uncounted
/// after a broker outage, with the CPU starved: not so.
#[test]
fn files_never_seen_while_the_tailer_keeps_up_are_counted() {
    let _serial = kafka_serial();
    const MAX_IN_FLIGHT: usize = 128 * 1024;
    let (broker, topic, _ws, mut writer, agent) =
        follow_one_file("unseen-keeping-up", MAX_IN_FLIGHT, "poll_interval: 200ms");
    let port = agent.http_port;
    let mut files: Vec<(usize, usize)> = Vec::new();
    for _ in 0..5 {
        let start = writer.written().len();
        writer.write(60);
        let rotated = writer.rotate();
        files.push((start, writer.written().len()));
        std::fs::remove_file(rotated).unwrap();
    }
    let start = writer.written().len();
    writer.write(100);
    files.push((start, writer.written().len()));
    // A while with the tailer keeping up: more writes, a rotation a second, kept on disk.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1000));
        let start = writer.written().len();
        writer.write(50);
        writer.rotate();
        files.push((start, writer.written().len()));
    }
    writer.write(10);
    let written = writer.written().to_vec();
    let (delivered, _) = delivered_and_lost(&broker, &topic, &written);
    let lost_files = files_with_a_lost_line(&files, &written, &delivered).len();
    // Counted at the watch task's next complete look, a poll interval or so later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (skipped, released) = loop {
        let skipped = metric(port, "logcatch_files_skipped_total");
        let released = metric(port, "logcatch_deleted_files_released_total");
        if skipped + released >= lost_files as f64 || std::time::Instant::now() > deadline {
            break (skipped, released);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "{lost_files} of {} files lost a line; counted: {skipped} skipped, {released} released",
        files.len()
    );
    assert!(
        lost_files > 0,
        "files rotated and deleted in microseconds are lost"
    );
    assert!(
        lost_files as f64 <= skipped + released,
        "{lost_files} files lost a line but only {skipped} skipped and {released} released were counted"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}
