//! End-to-end tests of the core agent: the real binary, real files, the file sink.

mod common;

use common::accounting::Accounting;
use common::{append_lines, count_lines, wait_for, Workspace};
use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn lines(prefix: &str, range: std::ops::Range<usize>) -> impl Iterator<Item = String> + '_ {
    range.map(move |i| format!("{prefix} line {i:06} {}", "x".repeat(i % 50)))
}

fn log_entry(path: &std::path::Path, topic: &str) -> String {
    format!("  - {{ path: {}, topic: {topic} }}", path.display())
}

#[test]
fn ships_100k_lines_exactly_once_and_in_order() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("a", 0..60_000));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    append_lines(&log, lines("a", 60_000..100_000));
    ws.wait_records(100_000, LONG);
    std::thread::sleep(Duration::from_millis(300));
    let records = ws.records();
    assert_eq!(
        records.len(),
        100_000,
        "no record more than the lines written"
    );
    let expected: Vec<String> = lines("a", 0..100_000).collect();
    let got: Vec<&str> = records.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(got, expected, "every line once, in file order");
    let mut offset = 0;
    for record in &records {
        assert_eq!(record.offset, offset, "offset of {:?}", record.line);
        assert_eq!(
            (record.topic.as_str(), record.node.as_str()),
            ("app", "test-node")
        );
        offset += record.line.len() as u64 + 1;
    }
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn sigterm_then_restart_ships_only_the_new_lines() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("first", 0..2_000));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(2_000, LONG);
    let status = agent.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");

    append_lines(&log, lines("second", 0..500));
    let agent = ws.start();
    ws.wait_records(2_500, LONG);
    std::thread::sleep(Duration::from_millis(500));
    let records = ws.records();
    assert_eq!(
        records.len(),
        2_500,
        "nothing re-sent after a clean restart"
    );
    let counts = count_lines(&records);
    assert!(counts.values().all(|&n| n == 1));
    assert!(lines("second", 0..500).all(|l| counts.contains_key(l.as_str())));
    assert_eq!(agent.terminate().code(), Some(0));
}

/// `kill -9` between two writes of the sink's buffer leaves part of a record at the end of
/// its file: the next start cuts it off (its batch was not acknowledged, so the tailer
/// sends it again whole) instead of appending the next record to it.
#[test]
fn a_record_torn_by_kill9_is_cut_and_written_again_whole() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    std::fs::write(&log, "one\ntwo\nthree\n").unwrap();
    let torn = format!(
        "{{\"topic\":\"app\",\"path\":\"{}\",\"offset\":0,\"li",
        log.display()
    );
    std::fs::write(ws.out(), &torn).unwrap();
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    // Every whole line of the sink file must be a record (`read_records` fails otherwise).
    let records = ws.wait_records(3, LONG);
    let lines: Vec<&str> = records.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(lines, ["one", "two", "three"]);
    let text = std::fs::read_to_string(ws.out()).unwrap();
    assert!(!text.contains("\"li{"), "the torn record is gone: {text}");
    assert!(agent.log().contains("cut a record torn by a crash"));
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn kill9_during_a_write_stream_loses_no_line() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    std::fs::write(&log, "").unwrap();
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let total = 40_000;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            for (i, line) in lines("k", 0..total).enumerate() {
                writeln!(file, "{line}").unwrap();
                if i % 200 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let agent = ws.start();
    wait_for("some lines shipped", LONG, || {
        (ws.records().len() > 5_000).then_some(())
    });
    agent.kill9();
    let shipped_before_kill = ws.records();
    let checkpoint = checkpointed_offset(&ws);
    let agent = ws.start();
    writer.join().unwrap();
    wait_for("every line shipped", LONG, || {
        let counts = count_lines(&ws.records()).len();
        (counts == total).then_some(())
    });
    assert_eq!(agent.terminate().code(), Some(0));

    let records = ws.records();
    let counts = count_lines(&records);
    let expected: Vec<String> = lines("k", 0..total).collect();
    assert!(
        expected.iter().all(|l| counts.contains_key(l.as_str())),
        "a line was lost"
    );
    assert!(
        counts.values().all(|&n| n <= 2),
        "a line arrived more than twice"
    );
    // Exactly the lines shipped before the kill at or after the last written checkpoint
    // repeat: acknowledged but not yet checkpointed (checkpoints are written once a second).
    let duplicated: HashSet<&str> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(l, _)| *l)
        .collect();
    let since_checkpoint: HashSet<&str> = shipped_before_kill
        .iter()
        .filter(|r| r.offset >= checkpoint)
        .map(|r| r.line.as_str())
        .collect();
    assert_eq!(duplicated, since_checkpoint);
    let lines: Vec<&str> = records.iter().map(|r| r.line.as_str()).collect();
    Accounting::of(&expected, &lines).check(
        "kill -9 during a write stream",
        since_checkpoint.len(),
        "the lines shipped at or after the last checkpoint written before the kill",
    );
}

/// The offset in the agent's checkpoint file (the workspace tails a single file).
fn checkpointed_offset(ws: &Workspace) -> u64 {
    let text = std::fs::read_to_string(ws.path("state/checkpoints.json")).unwrap_or_default();
    let document: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    document["checkpoints"][0]["offset"].as_u64().unwrap_or(0)
}

/// The Kubernetes ConfigMap layout: `logcatch.yaml -> ..data/logcatch.yaml`,
/// `..data -> ..<timestamp>`, swapped by renaming a new `..data` symlink into place.
struct ConfigMapDir {
    dir: std::path::PathBuf,
    generation: usize,
}

impl ConfigMapDir {
    fn new(dir: &std::path::Path, text: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::symlink("..data/logcatch.yaml", dir.join("logcatch.yaml")).unwrap();
        let mut configmap = ConfigMapDir {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        configmap.update(text);
        configmap
    }

    fn update(&mut self, text: &str) {
        self.generation += 1;
        let version = format!("..v{}", self.generation);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("logcatch.yaml"), text).unwrap();
        std::os::unix::fs::symlink(&version, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.join("logcatch.yaml")
    }
}

#[test]
fn hot_reload_adds_and_removes_logs_through_a_configmap_swap() {
    let ws = Workspace::new();
    let (a, b) = (ws.path("a.log"), ws.path("b.log"));
    append_lines(&a, lines("a", 0..10));
    append_lines(&b, lines("b", 0..10));
    let mut configmap = ConfigMapDir::new(&ws.path("configmap"), &ws.config(&log_entry(&a, "app")));
    let agent = common::Agent::start(&configmap.config(), ws.dir.path(), ws.http_port);
    ws.wait_records(10, LONG);

    // Add b.
    configmap.update(&ws.config(&format!(
        "{}\n{}",
        log_entry(&a, "app"),
        log_entry(&b, "app")
    )));
    let records = ws.wait_records(20, LONG);
    assert_eq!(count_lines(&records).len(), 20);

    // Remove a: its tailer stops; later lines of a are not shipped, b's still are.
    configmap.update(&ws.config(&log_entry(&b, "app")));
    let a_path = a.display().to_string();
    wait_for("a's tailer to stop", LONG, || {
        agent
            .tailer_states()
            .iter()
            .all(|(path, _)| *path != a_path)
            .then_some(())
    });
    append_lines(&a, lines("a-after-removal", 0..5));
    append_lines(&b, lines("b-marker", 0..1));
    wait_for("b's marker", LONG, || {
        ws.records()
            .iter()
            .any(|r| r.line.starts_with("b-marker"))
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !ws.records()
            .iter()
            .any(|r| r.line.starts_with("a-after-removal")),
        "a removed log was still shipped"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn an_invalid_reload_keeps_the_running_tailers() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("before", 0..10));
    let good = ws.config(&log_entry(&log, "app"));
    ws.write_config(&good);
    let agent = ws.start();
    ws.wait_records(10, LONG);

    for bad in [
        good.replace("topic: app", "topic: 'not a topic'"),
        "logs: [\n".to_string(),
        String::new(),
    ] {
        ws.write_config(&bad);
        std::thread::sleep(Duration::from_millis(300));
    }
    std::fs::remove_file(ws.config_path()).unwrap();
    append_lines(&log, lines("after", 0..10));
    let records = ws.wait_records(20, LONG);
    assert_eq!(count_lines(&records).len(), 20, "the tailer kept running");
    assert_eq!(
        agent.tailer_states(),
        vec![(log.display().to_string(), "running".to_string())]
    );
    let log_text = agent.log();
    assert!(
        log_text.contains("logs[0].topic"),
        "the refused reload names the field:\n{log_text}"
    );
    assert!(log_text.contains("the file is empty"), "{log_text}");
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_glob_picks_up_a_file_created_later() {
    let ws = Workspace::new();
    let dir = ws.path("logs");
    std::fs::create_dir(&dir).unwrap();
    append_lines(&dir.join("one.log"), lines("one", 0..5));
    ws.write_config(&ws.config(&format!(
        "  - {{ path: '{}/*.log', topic: app }}",
        dir.display()
    )));
    let agent = ws.start();
    ws.wait_records(5, LONG);
    append_lines(&dir.join("two.log"), lines("two", 0..5));
    append_lines(&dir.join("ignored.txt"), lines("txt", 0..5));
    let records = ws.wait_records(10, LONG);
    std::thread::sleep(Duration::from_millis(500));
    let paths: HashSet<String> = ws.records().into_iter().map(|r| r.path).collect();
    assert_eq!(records.len(), 10);
    assert!(paths.contains(&dir.join("two.log").display().to_string()));
    assert!(!paths.contains(&dir.join("ignored.txt").display().to_string()));
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_file_that_does_not_exist_yet_is_waiting_then_followed() {
    let ws = Workspace::new();
    let log = ws.path("later.log");
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    wait_for("waiting state", LONG, || {
        (agent.tailer_states() == vec![(log.display().to_string(), "waiting".to_string())])
            .then_some(())
    });
    append_lines(&log, lines("late", 0..3));
    ws.wait_records(3, LONG);
    assert_eq!(agent.tailer_states()[0].1, "running");
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn the_same_file_on_two_topics_runs_two_tailers() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("x", 0..100));
    ws.write_config(&ws.config(&format!(
        "{}\n{}",
        log_entry(&log, "one"),
        log_entry(&log, "two")
    )));
    let agent = ws.start();
    let records = ws.wait_records(200, LONG);
    let one = records.iter().filter(|r| r.topic == "one").count();
    assert_eq!((one, records.len() - one), (100, 100));
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn rename_rotation_finishes_the_old_file_first() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("old", 0..1_000));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(1_000, LONG);
    // A burst just before the rename, and a partial last line.
    append_lines(&log, lines("old", 1_000..3_000));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"partial-last")
        .unwrap();
    std::fs::rename(&log, ws.path("app.log.1")).unwrap();
    append_lines(&log, lines("new", 0..1_000));
    let records = ws.wait_records(4_001, LONG);
    std::thread::sleep(Duration::from_millis(300));
    let got: Vec<&str> = records.iter().map(|r| r.line.as_str()).collect();
    // Every complete line of the old file first. Its partial last line is held while the
    // renamed file lingers for `tail.rotate_wait` (its writer may still finish it), then
    // shipped as it is.
    let mut expected: Vec<String> = lines("old", 0..3_000).collect();
    expected.extend(lines("new", 0..1_000));
    expected.push("partial-last".into());
    assert_eq!(got, expected);
    assert_eq!(ws.records().len(), 4_001);
    assert_eq!(agent.terminate().code(), Some(0));
}

/// A damaged `checkpoints.json` (a disk error, a bad edit) falls back to the generation
/// written before it: only the lines acknowledged since then are shipped again, not every
/// file from `start_at`.
#[test]
fn a_damaged_checkpoint_file_falls_back_to_the_previous_generation() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("a", 0..100));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    let first = std::fs::metadata(&log).unwrap().len();
    wait_for("the first lines checkpointed", LONG, || {
        (checkpointed_offset(&ws) == first).then_some(())
    });
    append_lines(&log, lines("b", 0..100));
    let second = std::fs::metadata(&log).unwrap().len();
    wait_for("every line checkpointed", LONG, || {
        (checkpointed_offset(&ws) == second).then_some(())
    });
    assert_eq!(agent.terminate().code(), Some(0));
    assert_eq!(ws.records().len(), 200);

    std::fs::write(ws.path("state/checkpoints.json"), b"\0\0\0 a damaged block").unwrap();
    let agent = ws.start();
    let port = agent.http_port;
    wait_for("the file acknowledged again", LONG, || {
        common::all_acknowledged(port).filter(|&running| running == 1)
    });
    let records = ws.records();
    let counts = count_lines(&records);
    assert!(
        lines("a", 0..100).all(|l| counts.get(l.as_str()) == Some(&1)),
        "lines checkpointed before the previous generation are not shipped again"
    );
    assert!(lines("b", 0..100).all(|l| counts.contains_key(l.as_str())));
    let status = agent.status();
    let recovered = status["checkpoints"]["recovered"]
        .as_str()
        .unwrap_or_default();
    assert!(
        recovered.contains("loaded the previous generation"),
        "{status}"
    );
    let metric = r#"logcatch_checkpoint_recoveries_total{loaded="previous"}"#;
    assert_eq!(common::metric_sum(port, metric), 1.0);
    assert!(agent.log().contains("moved aside"));
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Two agents sharing a `state_dir` would overwrite each other's checkpoints: the second
/// refuses to start, naming the directory and the first one's pid.
#[test]
fn a_second_agent_on_the_same_state_dir_refuses_to_start() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("a", 0..10));
    let config = ws.config(&log_entry(&log, "app"));
    ws.write_config(&config);
    let first = ws.start();
    let other_port = common::free_port();
    let second_config = ws.path("second.yaml");
    let text = config.replace(
        &format!("127.0.0.1:{}", ws.http_port),
        &format!("127.0.0.1:{other_port}"),
    );
    std::fs::write(&second_config, text).unwrap();
    let stderr_path = ws.path("second.log");
    /// Killed when the test ends, also when it fails while the agent still runs.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut second = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_logcatch"))
            .args(["run", "--config"])
            .arg(&second_config)
            .current_dir(ws.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("running a second logcatch"),
    );
    let exited = wait_for("the second agent to exit", Duration::from_secs(20), || {
        second.0.try_wait().unwrap()
    });
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(!exited.success(), "{stderr}");
    let state_dir = ws.path("state");
    assert!(
        stderr.contains(&format!(
            "state_dir {} is in use by another logcatch (pid {})",
            state_dir.display(),
            first.pid()
        )),
        "{stderr}"
    );
    assert_eq!(ws.wait_records(10, LONG).len(), 10, "the first goes on");
    assert_eq!(first.terminate().code(), Some(0));
}

/// `tail.start_at: end` skips what a file held when it was first seen, not the head of a
/// file that did not exist yet: a declared path created later is read from its beginning.
#[test]
fn start_at_end_reads_a_file_created_later_from_its_beginning() {
    let ws = Workspace::new();
    let old = ws.path("old.log");
    append_lines(&old, lines("old", 0..50));
    let later = ws.path("later.log");
    let logs = format!("{}\n{}", log_entry(&old, "app"), log_entry(&later, "app"));
    let config = ws.config(&logs).replace(
        "tail: { poll_interval: 20ms }",
        "tail: { poll_interval: 20ms, start_at: end }",
    );
    assert!(config.contains("start_at: end"), "{config}");
    ws.write_config(&config);
    let agent = ws.start();
    // Both tailers looked: the existing file was skipped to its end, the other is missing.
    wait_for("the missing file waited for", LONG, || {
        let status = agent.status();
        let tailers = status["tailers"].as_array()?.clone();
        let waiting = tailers.iter().any(|t| t["state"] == "waiting");
        let at_end = tailers.iter().any(|t| {
            t["state"] == "running"
                && t["offset"].as_u64() == std::fs::metadata(&old).ok().map(|m| m.len())
        });
        (waiting && at_end).then_some(())
    });
    append_lines(&later, lines("later", 0..20));
    append_lines(&old, lines("old", 50..60));
    let records = ws.wait_records(30, LONG);
    let counts = count_lines(&records);
    assert!(
        lines("later", 0..20).all(|l| counts.get(l.as_str()) == Some(&1)),
        "{records:?}"
    );
    assert!(lines("old", 50..60).all(|l| counts.get(l.as_str()) == Some(&1)));
    assert!(
        lines("old", 0..50).all(|l| !counts.contains_key(l.as_str())),
        "skipped by start_at: end"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Like Fluent Bit and Vector, `start_at: end` applies to the files a glob matched when
/// its declaration was first seen: a file it finds later (a new pod's log) is read from
/// its beginning, not from its end.
#[test]
fn start_at_end_reads_files_a_glob_finds_later_from_their_beginning() {
    let ws = Workspace::new();
    let pods = ws.path("pods");
    std::fs::create_dir(&pods).unwrap();
    let old = pods.join("old.log");
    append_lines(&old, lines("old", 0..50));
    let config = ws.config(&log_entry(&pods.join("*.log"), "app")).replace(
        "tail: { poll_interval: 20ms }",
        "tail: { poll_interval: 20ms, start_at: end }",
    );
    ws.write_config(&config);
    let agent = ws.start();
    wait_for("the existing file followed from its end", LONG, || {
        let status = agent.status();
        let tailers = status["tailers"].as_array()?.clone();
        tailers
            .iter()
            .any(|t| {
                t["state"] == "running"
                    && t["offset"].as_u64() == std::fs::metadata(&old).ok().map(|m| m.len())
            })
            .then_some(())
    });
    // A new pod's log, with lines already in it when the glob finds it.
    let new = pods.join("new.log");
    append_lines(&new, lines("new", 0..20));
    append_lines(&old, lines("old", 50..60));
    let records = ws.wait_records(30, LONG);
    let counts = count_lines(&records);
    assert!(
        lines("new", 0..20).all(|l| counts.get(l.as_str()) == Some(&1)),
        "the head of the new file: {records:?}"
    );
    assert!(lines("old", 50..60).all(|l| counts.get(l.as_str()) == Some(&1)));
    assert!(lines("old", 0..50).all(|l| !counts.contains_key(l.as_str())));
    assert_eq!(agent.terminate().code(), Some(0));
}

/// `tail.ignore_older`: on a first deploy onto a node with old logs, a file not modified
/// for longer when it is first found is not followed — listed in `/status` and counted —
/// until it is written again; then only what is new is shipped.
#[test]
fn ignore_older_skips_files_not_modified_for_longer_until_they_are_written() {
    let ws = Workspace::new();
    let dir = ws.path("logs");
    std::fs::create_dir(&dir).unwrap();
    let stale = dir.join("stale.log");
    append_lines(&stale, lines("stale", 0..50));
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let fresh = dir.join("fresh.log");
    append_lines(&fresh, lines("fresh", 0..10));
    let config = ws.config(&log_entry(&dir.join("*.log"), "app")).replace(
        "tail: { poll_interval: 20ms }",
        "tail: { poll_interval: 20ms, ignore_older: 1h }",
    );
    ws.write_config(&config);
    let agent = ws.start();
    let port = agent.http_port;
    ws.wait_records(10, LONG);
    let ignored = wait_for("the stale file listed as ignored", LONG, || {
        let status = agent.status();
        let refused: Vec<serde_json::Value> = status["sources"]["keys"]
            .as_array()?
            .iter()
            .flat_map(|k| k["refused"].as_array().cloned().unwrap_or_default())
            .collect();
        (!refused.is_empty()).then_some(refused)
    });
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert_eq!(ignored[0]["kind"], "ignore_older");
    assert_eq!(ignored[0]["path"], stale.display().to_string());
    let gauge = r#"logcatch_refused_tailers{kind="ignore_older"}"#;
    assert_eq!(common::metric_sum(port, gauge), 1.0);
    assert_eq!(
        agent.tailer_states().len(),
        1,
        "only the fresh file is followed"
    );

    append_lines(&stale, lines("stale", 50..55));
    let records = ws.wait_records(15, LONG);
    let counts = count_lines(&records);
    assert!(lines("stale", 50..55).all(|l| counts.get(l.as_str()) == Some(&1)));
    assert!(
        lines("stale", 0..50).all(|l| !counts.contains_key(l.as_str())),
        "what the file held when it was ignored is not shipped"
    );
    wait_for("no longer listed", LONG, || {
        (common::metric_sum(port, gauge) == 0.0).then_some(())
    });
    assert_eq!(agent.terminate().code(), Some(0));
}

/// A glob's directory is watched from the start, not only once a tailer follows a file
/// in it: the first pod's log is found at once, not at the next resync (an hour here).
#[test]
fn a_file_appearing_in_a_globs_empty_directory_is_followed_before_the_resync() {
    let ws = Workspace::new();
    let pods = ws.path("pods");
    std::fs::create_dir(&pods).unwrap();
    let config = ws
        .config(&log_entry(&pods.join("*.log"), "app"))
        .replace("resync_interval: 200ms", "resync_interval: 1h");
    assert!(config.contains("resync_interval: 1h"));
    ws.write_config(&config);
    let agent = ws.start();
    wait_for("the first pass", LONG, || {
        (common::metric_sum(agent.http_port, "logcatch_reconcile_total") >= 1.0).then_some(())
    });
    append_lines(&pods.join("first.log"), lines("first", 0..10));
    ws.wait_records(10, Duration::from_secs(15));
    assert_eq!(agent.terminate().code(), Some(0));
}

/// The agent runs with transparent huge pages off: mimalloc asks for them on its arena
/// (`madvise(MADV_HUGEPAGE)`), and khugepaged then fills every 2 MiB range the heap
/// touched, however little of it is in use — after the catch-up that follows a long Kafka
/// outage, RSS grew by 130 MiB over ten minutes with nothing to ship (the 30-minute soak
/// at f203554; BENCHMARKS.md "Soak"). The kernel's flag for the process is in
/// /proc/PID/status (`THP_enabled`).
#[test]
fn the_agent_runs_without_transparent_huge_pages() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("l", 0..10));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(10, LONG);
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(thp, Some("0"), "THP_enabled in /proc/PID/status");
    assert_eq!(agent.terminate().code(), Some(0));
}

/// A tailer holds no read buffer of its own: each tailer's buffer grew to 128 KiB on a
/// backlog and never shrank (400 files caught up: 41 → 89 MiB), part of the soak's RSS
/// step after its catch-up (issue #23, BENCHMARKS.md "Soak").
#[test]
fn catching_up_on_many_files_leaves_no_memory_behind() {
    common::assert_catching_up_leaves_no_memory_behind("  kind: null", "app", 400);
}

/// Every followed file costs the agent memory for as long as it is followed: at 10,000
/// files, each byte a file is a megabyte (issue #26 §4: RSS ≤ `max_in_flight_bytes` +
/// 32 MiB at 10,000 files). The RSS the agent grows by from a few files to 3,000, each
/// having shipped a line, per file, is bounded — by a figure the agent exceeded when each
/// tailer had a channel of its own to its watch task, the reconcile loop and the tailer a
/// copy of its settings each, and the checkpoints a set per path and per fingerprint
/// (9.2–9.3 KB per file then, 7.1–7.3 KB since, in this debug build; BENCHMARKS.md
/// "10,000 files: what each file still cost"), and when every tailer's future had room
/// for a read and for its stop, and its watch task's for a timer (7.2 KB; 5.9 KB since),
/// and every tailer room for a throttle and line filters (5.6 KB since).
#[test]
fn each_followed_file_costs_the_agent_little_memory() {
    const FEW: usize = 100;
    const MANY: usize = 3_000;
    const BOUND_BYTES: u64 = 6_000;
    let ws = Workspace::new();
    let dir = ws.path("pods");
    std::fs::create_dir(&dir).unwrap();
    let create = |range: std::ops::Range<usize>| {
        for i in range {
            append_lines(&dir.join(format!("p{i:05}.log")), [format!("line of {i}")]);
        }
    };
    create(0..FEW);
    let entry = format!(
        "  - {{ path: {}, topic: app }}",
        dir.join("*.log").display()
    );
    let config = ws
        .config_with_sink(&entry, "  kind: null")
        .replace(
            "tail: { poll_interval: 20ms }",
            "tail: { max_open_files: 4000 }",
        )
        .replace("resync_interval: 200ms", "resync_interval: 5s");
    ws.write_config(&config);
    let agent = ws.start();
    let port = agent.http_port;
    let shown = &agent;
    let followed = |n: usize| {
        move || {
            let states = shown.tailer_states();
            let running = states.iter().filter(|(_, s)| s == "running").count();
            let sent = common::metric_sum(port, "logcatch_records_sent_total");
            (running == n && sent == n as f64).then_some(())
        }
    };
    // The lowest of five samples a second apart: what the agent holds once what it freed
    // has gone back to the system.
    let settled = |what: &str| {
        let mut low = u64::MAX;
        for _ in 0..5 {
            std::thread::sleep(Duration::from_secs(1));
            low = low.min(common::rss_kib(agent.pid()));
        }
        eprintln!("{what}: RSS {low} KiB");
        low
    };
    wait_for("the first files followed", LONG, followed(FEW));
    wait_for("acknowledged", LONG, || common::all_acknowledged(port));
    let few = settled("few files");
    create(FEW..MANY);
    wait_for(
        "every file followed",
        Duration::from_secs(60),
        followed(MANY),
    );
    wait_for("acknowledged", LONG, || common::all_acknowledged(port));
    let many = settled("many files");
    let per_file = many.saturating_sub(few) * 1024 / (MANY - FEW) as u64;
    eprintln!("{per_file} bytes per followed file");
    assert!(
        per_file <= BOUND_BYTES,
        "{per_file} bytes of RSS per followed file, more than {BOUND_BYTES}"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}
