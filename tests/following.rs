//! File following end to end (issue 3): real renames, truncations and unlinks against
//! the real binary; the shipped records must equal the written lines, exactly once and in
//! order per file.

mod common;

use common::{
    all_acknowledged, append_lines, count_lines, http_get, wait_for, Agent, Record, Workspace,
};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Tests that measure timing or flood the machine run one at a time: a 300 MB flood next
/// to a busy-rotation test on two shared cores starves both.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix} line {i:06} {}", "y".repeat(i % 40)))
        .collect()
}

fn log_entry(path: &Path, topic: &str) -> String {
    format!("  - {{ path: \"{}\", topic: {topic} }}", path.display())
}

/// Waits until `expected` records arrived and every tailer acknowledged its whole file
/// (a duplicate would have arrived by then), and returns the shipped lines.
fn shipped(ws: &Workspace, expected: usize) -> Vec<String> {
    ws.wait_records(expected, LONG);
    wait_for("every tailer acknowledged its file", LONG, || {
        all_acknowledged(ws.http_port)
    });
    ws.records().into_iter().map(|r| r.line).collect()
}

/// The lines of `records` whose text starts with `prefix`, in shipping order.
fn with_prefix<'a>(records: &'a [String], prefix: &str) -> Vec<&'a str> {
    records
        .iter()
        .filter(|l| l.starts_with(prefix))
        .map(String::as_str)
        .collect()
}

fn assert_once_in_order<P: AsRef<str>>(got: &[String], files: &[(P, Vec<String>)]) {
    let counts = count_lines_of(got);
    let dupes: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).take(3).collect();
    assert!(dupes.is_empty(), "repeated lines: {dupes:?}");
    for (prefix, written) in files {
        let prefix = prefix.as_ref();
        let per_file = with_prefix(got, prefix);
        assert_eq!(per_file.len(), written.len(), "lines of {prefix:?}");
        assert!(per_file == *written, "lines of {prefix:?} out of order");
    }
    let total: usize = files.iter().map(|(_, w)| w.len()).sum();
    assert_eq!(got.len(), total, "no record but the lines written");
}

fn count_lines_of(lines: &[String]) -> std::collections::HashMap<&str, usize> {
    let mut counts = std::collections::HashMap::new();
    for line in lines {
        *counts.entry(line.as_str()).or_insert(0) += 1;
    }
    counts
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics").expect("GET /metrics");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The targets of the agent's open descriptors.
fn open_files(agent: &Agent) -> Vec<PathBuf> {
    let dir = format!("/proc/{}/fd", agent.pid());
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the agent holds no descriptor whose target `held` matches.
fn wait_released(agent: &Agent, what: &str, held: impl Fn(&str) -> bool) {
    wait_for(what, LONG, || {
        let files = open_files(agent);
        (!files.iter().any(|p| held(&p.to_string_lossy()))).then_some(())
    });
}

#[test]
fn several_rotations_in_a_row_while_busy_lose_and_repeat_nothing() {
    let _serial = heavy();
    let ws = Workspace::new();
    let log = ws.path("app.log");
    // A backlog keeps the tailer busy while the rotations happen.
    let backlog = lines("r0", 0..60_000);
    append_lines(&log, backlog.clone());
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    let mut files = vec![("r0 ".to_string(), backlog)];
    for r in 1..=4 {
        // A burst just before each rename, then the new file.
        let burst = lines(&format!("r{}", r - 1), 60_000..62_000);
        append_lines(&log, burst.clone());
        files[r - 1].1.extend(burst);
        std::fs::rename(&log, ws.path(&format!("app.log.{r}"))).unwrap();
        let fresh = lines(&format!("r{r}"), 0..3_000);
        append_lines(&log, fresh.clone());
        files.push((format!("r{r} "), fresh));
        // The agent holds the new file (the old one is app.log.{r} now) before the next.
        wait_for("the new file opened", LONG, || {
            open_files(&agent).contains(&log).then_some(())
        });
    }
    let total: usize = files.iter().map(|(_, w)| w.len()).sum();
    let got = shipped(&ws, total);
    assert_once_in_order(&got, &files);
    let expected: Vec<String> = files.iter().flat_map(|(_, w)| w.clone()).collect();
    assert!(got == expected, "each old file finished before the next");
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn rotation_under_a_glob_ships_the_renamed_file_once() {
    // `app.log*` also matches `app.log.1`: while the app.log tailer finishes the old
    // file, the app.log.1 tailer must not read it too, and afterwards it resumes at the end.
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let glob = ws.path("app.log*");
    ws.write_config(&ws.config(&log_entry(&glob, "app")));
    append_lines(&log, lines("g0", 0..20_000));
    let agent = ws.start();
    let mut files = vec![("g0 ".to_string(), lines("g0", 0..20_000))];
    for r in 1..=3 {
        let burst = lines(&format!("g{}", r - 1), 20_000..21_000);
        append_lines(&log, burst.clone());
        files[r - 1].1.extend(burst);
        std::fs::rename(&log, ws.path(&format!("app.log.{r}"))).unwrap();
        let fresh = lines(&format!("g{r}"), 0..20_000);
        append_lines(&log, fresh.clone());
        files.push((format!("g{r} "), fresh));
        // The glob found the rotated file: a tailer of its own follows it.
        wait_for("a tailer for the rotated file", LONG, || {
            let status = agent.status();
            let tailers = status["tailers"].as_array()?.len();
            (tailers == r + 1).then_some(())
        });
    }
    let total = files.iter().map(|(_, w)| w.len()).sum();
    // Every renamed file is followed by a tailer of its own that acknowledged its end.
    ws.wait_records(total, LONG);
    wait_for(
        "app.log and its three renamed files acknowledged",
        LONG,
        || (all_acknowledged(ws.http_port) == Some(4)).then_some(()),
    );
    let got: Vec<String> = ws.records().into_iter().map(|r| r.line).collect();
    assert_once_in_order(&got, &files);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn lines_appended_to_the_renamed_file_after_the_switch_are_shipped() {
    // logrotate renames the file and creates the new one before the application is told
    // to reopen its log; until then the application appends to the old file under its new
    // name, after the tailer has already moved on to the new file.
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let mut app = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let old = lines("o", 0..400);
    for line in &old[..100] {
        writeln!(app, "{line}").unwrap();
    }
    ws.write_config(&ws.config(&log_entry(&log, "app"))); // rotate_wait: 5s (default)
    let agent = ws.start();
    ws.wait_records(100, LONG);
    std::fs::rename(&log, ws.path("app.log.1")).unwrap();
    let new = lines("n", 0..50);
    append_lines(&log, new.clone());
    ws.wait_records(150, LONG); // the tailer follows the new file
    for line in &old[100..200] {
        writeln!(app, "{line}").unwrap();
    }
    // Quiet for less than rotate_wait, then more, with a partial line completed later.
    std::thread::sleep(Duration::from_secs(2));
    for line in &old[200..399] {
        writeln!(app, "{line}").unwrap();
    }
    write!(app, "{}", &old[399][..5]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    writeln!(app, "{}", &old[399][5..]).unwrap();
    let got = shipped(&ws, 450);
    assert_once_in_order(&got, &[("o ", old), ("n ", new.clone())]);
    // /status shows the followed file, not the renamed one (its last acknowledgement
    // taken within 2 s: tail/idle.rs).
    let size = std::fs::metadata(&log).unwrap().len();
    wait_for("the followed file's offset in /status", LONG, || {
        (agent.status()["tailers"][0]["offset"].as_u64() == Some(size)).then_some(())
    });
    // Quiet for rotate_wait: closed, its claim released.
    wait_released(&agent, "the renamed file's descriptor closed", |p| {
        p.ends_with("app.log.1")
    });
    drop(app);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_file_moved_away_and_back_is_followed_on_without_repeating() {
    // While it is away it lingers as a renamed file; back at the path, the same reader
    // follows it on (a second one from the checkpoint would repeat lines).
    let ws = Workspace::new();
    let log = ws.path("app.log");
    let away = ws.path("away.log");
    append_lines(&log, lines("m", 0..100));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(100, LONG);
    std::fs::rename(&log, &away).unwrap();
    append_lines(&away, lines("m", 100..200));
    // The tailer saw it renamed away (it lingers) and read what came meanwhile.
    wait_for("the rename seen", LONG, || {
        (metric(agent.http_port, "logcatch_file_rotations_total") == 1.0).then_some(())
    });
    ws.wait_records(200, LONG);
    std::fs::rename(&away, &log).unwrap();
    append_lines(&log, lines("m", 200..300));
    ws.wait_records(300, LONG);
    // Past rotate_wait: still one reader.
    std::thread::sleep(Duration::from_secs(6));
    append_lines(&log, lines("m", 300..400));
    let got = shipped(&ws, 400);
    assert_once_in_order(&got, &[("m ", lines("m", 0..400))]);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_tailer_stopped_while_its_renamed_file_lingers_ships_the_partial_last_line() {
    // The declaration is removed while the renamed file still lingers: nothing starts
    // the tailer again, so what the file holds is shipped at the stop.
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("s", 0..100));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(100, LONG);
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(b"partial-last").unwrap();
    std::fs::rename(&log, ws.path("app.log.1")).unwrap();
    wait_for("the rename seen", LONG, || {
        (metric(agent.http_port, "logcatch_file_rotations_total") == 1.0).then_some(())
    });
    ws.write_config(&ws.config("  []"));
    let got = shipped(&ws, 101);
    let mut expected = lines("s", 0..100);
    expected.push("partial-last".into());
    assert_eq!(got, expected);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn copytruncate_starts_again_at_zero_without_resending() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("before", 0..1_000));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(1_000, LONG);
    assert_eq!(
        metric(agent.http_port, "logcatch_file_truncations_total"),
        0.0
    );
    // logrotate copytruncate: copy away, truncate in place, the app keeps appending.
    std::fs::copy(&log, ws.path("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    // The truncation seen before the file grows past the old position again (else the
    // documented loss: it could not be seen).
    wait_for("the truncation seen", LONG, || {
        (metric(agent.http_port, "logcatch_file_truncations_total") == 1.0).then_some(())
    });
    append_lines(&log, lines("after", 0..300));
    let got = shipped(&ws, 1_300);
    assert_once_in_order(
        &got,
        &[
            ("before ", lines("before", 0..1_000)),
            ("after ", lines("after", 0..300)),
        ],
    );
    assert_eq!(
        metric(agent.http_port, "logcatch_file_truncations_total"),
        1.0
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_deleted_file_is_read_to_its_end_then_its_descriptor_released() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("d", 0..500));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(500, LONG);
    assert!(
        open_files(&agent).contains(&log),
        "the agent holds the file open while following it"
    );
    // Written just before the unlink: must still be shipped from the open descriptor.
    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for line in lines("d", 500..3_000) {
        writeln!(writer, "{line}").unwrap();
    }
    std::fs::remove_file(&log).unwrap();
    let got = shipped(&ws, 3_000);
    assert_once_in_order(&got, &[("d ", lines("d", 0..3_000))]);
    wait_released(&agent, "the deleted file's descriptor closed", |p| {
        p.contains("app.log")
    });
    drop(writer);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_new_file_on_a_checkpointed_inode_is_read_from_zero() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    append_lines(&log, lines("old", 0..200));
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(200, LONG);
    assert_eq!(agent.terminate().code(), Some(0));
    let old_ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());
    // Another file on the same inode, longer than the old offset: a stale checkpoint
    // would resume in the middle of it. Rewriting in place gives the same inode for sure
    // (unlink + create only usually does).
    std::fs::write(&log, lines("new", 0..400).join("\n") + "\n").unwrap();
    let new_ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());
    assert_eq!(old_ino, new_ino);
    let agent = ws.start();
    let got = shipped(&ws, 600);
    assert_once_in_order(
        &got,
        &[
            ("old ", lines("old", 0..200)),
            ("new ", lines("new", 0..400)),
        ],
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_file_shorter_than_the_fingerprint_is_still_recognised_as_it_grows() {
    let ws = Workspace::new();
    let log = ws.path("app.log");
    std::fs::write(&log, "tiny\n").unwrap();
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    ws.wait_records(1, LONG);
    assert_eq!(agent.terminate().code(), Some(0));
    // Grows past the 1 KiB fingerprint while the agent is down.
    append_lines(&log, lines("more", 0..100));
    let agent = ws.start();
    let got = shipped(&ws, 101);
    assert_once_in_order(
        &got,
        &[
            ("tiny", vec!["tiny".into()]),
            ("more ", lines("more", 0..100)),
        ],
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Stops the agent after `before` lines were shipped, appends `unshipped`, rotates
/// `app.log` to `app.log.1`, writes `fresh` to the new `app.log`, starts again, and waits
/// until `tailers` tailers (one per file the declaration matches) acknowledged their file.
fn rotate_while_down(ws: &Workspace, declared: &Path, tailers: usize) -> Vec<String> {
    let log = ws.path("app.log");
    append_lines(&log, lines("a", 0..1_000));
    ws.write_config(&ws.config(&log_entry(declared, "app")));
    let agent = ws.start();
    ws.wait_records(1_000, LONG);
    assert_eq!(agent.terminate().code(), Some(0));
    append_lines(&log, lines("a", 1_000..1_500));
    std::fs::rename(&log, ws.path("app.log.1")).unwrap();
    append_lines(&log, lines("b", 0..700));
    let agent = ws.start();
    let got = shipped(ws, 2_200);
    wait_for(
        "every matching file followed and acknowledged",
        LONG,
        || (all_acknowledged(ws.http_port) == Some(tailers)).then_some(()),
    );
    assert_eq!(agent.terminate().code(), Some(0));
    let got_again: Vec<String> = ws.records().into_iter().map(|r: Record| r.line).collect();
    assert_eq!(got, got_again[..got.len()]);
    got_again
}

#[test]
fn rotation_while_down_finishes_the_renamed_file_when_only_the_path_is_declared() {
    let ws = Workspace::new();
    let got = rotate_while_down(&ws, &ws.path("app.log"), 1);
    assert_once_in_order(
        &got,
        &[("a ", lines("a", 0..1_500)), ("b ", lines("b", 0..700))],
    );
    let expected: Vec<String> = lines("a", 0..1_500)
        .into_iter()
        .chain(lines("b", 0..700))
        .collect();
    assert!(
        got == expected,
        "the rest of app.log.1 first, then app.log from 0"
    );
}

#[test]
fn rotation_while_down_under_a_glob_ships_the_renamed_file_once() {
    let ws = Workspace::new();
    let got = rotate_while_down(&ws, &ws.path("app.log*"), 2);
    assert_once_in_order(
        &got,
        &[("a ", lines("a", 0..1_500)), ("b ", lines("b", 0..700))],
    );
    assert!(count_lines(&ws.records()).values().all(|&n| n == 1));
}

#[test]
fn a_glob_skips_compressed_rotations_and_excluded_files() {
    let ws = Workspace::new();
    let dir = ws.path("logs");
    std::fs::create_dir(&dir).unwrap();
    append_lines(&dir.join("app.log"), lines("live", 0..100));
    append_lines(&dir.join("app.log.1"), lines("rotated", 0..100));
    // gzip by extension, zstd by magic bytes only, and a file the operator excludes.
    std::fs::write(dir.join("app.log.2.gz"), [0x1f, 0x8b, 8, 0, 0, 0, b'\n']).unwrap();
    std::fs::write(dir.join("app.log.3"), [0x28, 0xb5, 0x2f, 0xfd, 0, b'\n']).unwrap();
    append_lines(&dir.join("app.log.old"), lines("excluded", 0..10));
    ws.write_config(&ws.config(&format!(
        "  - {{ path: \"{}/app.log*\", topic: app, exclude: [\"{}/*.old\"] }}",
        dir.display(),
        dir.display()
    )));
    let agent = ws.start();
    let got = shipped(&ws, 200);
    assert_once_in_order(
        &got,
        &[
            ("live ", lines("live", 0..100)),
            ("rotated ", lines("rotated", 0..100)),
        ],
    );
    let mut paths: Vec<String> = agent.tailer_states().into_iter().map(|(p, _)| p).collect();
    paths.sort();
    assert_eq!(
        paths,
        [dir.join("app.log"), dir.join("app.log.1")].map(|p| p.display().to_string())
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// The agent's peak resident memory (`VmHWM`) in KiB.
fn peak_rss_kib(agent: &Agent) -> u64 {
    common::status_kib(agent.pid(), "VmHWM")
}

#[test]
fn a_100_mib_line_is_cut_and_counted_with_flat_memory_and_binary_passes() {
    let _serial = heavy();
    let ws = Workspace::new();
    let log = ws.path("app.log");
    std::fs::write(&log, "").unwrap();
    ws.write_config(&ws.config(&log_entry(&log, "app")));
    let agent = ws.start();
    let baseline = peak_rss_kib(&agent);
    {
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"before\n").unwrap();
        let chunk = vec![b'z'; 1024 * 1024];
        for _ in 0..100 {
            file.write_all(&chunk).unwrap();
        }
        // Binary bytes (invalid UTF-8, NUL, escape) inside a line.
        file.write_all(b"\nbin \xff\xfe\x00\x1b end\nafter\n")
            .unwrap();
    }
    let records = ws.wait_records(4, LONG);
    wait_for("the file acknowledged to its end", LONG, || {
        all_acknowledged(ws.http_port)
    });
    assert_eq!(ws.records().len(), 4);
    assert_eq!(records[0].line, "before");
    // The default max_line_bytes is 1 MiB: the 100 MiB line is cut to that.
    assert_eq!(records[1].line.len(), 1024 * 1024);
    assert!(records[1].line.bytes().all(|b| b == b'z'));
    assert!(records[2].line.starts_with("bin ") && records[2].line.ends_with(" end"));
    assert_ne!(records[2].line, "bin  end", "the binary bytes are carried");
    assert_eq!(records[3].line, "after");
    assert_eq!(
        metric(agent.http_port, "logcatch_lines_truncated_total"),
        1.0
    );
    let peak = peak_rss_kib(&agent);
    assert!(
        peak < baseline + 48 * 1024,
        "memory stays flat: peak {peak} KiB vs {baseline} KiB at start for a 100 MiB line"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

fn fast_lag(agent: &Agent) -> u64 {
    let status = agent.status();
    let rows = status["tailers"].as_array().unwrap();
    let row = rows.iter().find(|t| t["topic"] == "fast");
    row.and_then(|r| r["lag_bytes"].as_u64()).unwrap_or(0)
}

#[test]
fn a_flooded_file_does_not_starve_a_slow_one() {
    let _serial = heavy();
    let ws = Workspace::new();
    let fast = ws.path("fast.log");
    let slow = ws.path("slow.log");
    // A writer at full speed (capped at 300 MB) keeps the fast tailer busy throughout.
    std::fs::write(&fast, "").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (fast, stop) = (fast.clone(), stop.clone());
        std::thread::spawn(move || {
            let chunk: String = lines("fast", 0..20_000).join("\n") + "\n";
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&fast)
                .unwrap();
            let mut written = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && written < 300_000_000 {
                file.write_all(chunk.as_bytes()).unwrap();
                written += chunk.len();
            }
        })
    };
    std::fs::write(&slow, "").unwrap();
    ws.write_config(&ws.config(&format!(
        "{}\n{}",
        log_entry(&fast, "fast"),
        log_entry(&slow, "slow")
    )));
    let agent = ws.start();
    let out = ws.out();
    let mut scanned = 0u64;
    let mut worst = Duration::ZERO;
    wait_for("a backlog on the fast file", LONG, || {
        (fast_lag(&agent) > 0).then_some(())
    });
    let mut fast_lag_at_arrival = Vec::new();
    for i in 0..5 {
        let marker = format!("slow line {i}");
        append_lines(&slow, [marker.clone()]);
        let written = std::time::Instant::now();
        // Scan only what the sink appended since the last look: it grows fast.
        wait_for(&marker, LONG, || {
            let mut file = std::fs::File::open(&out).ok()?;
            file.seek(std::io::SeekFrom::Start(scanned)).ok()?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).ok()?;
            let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
            scanned += bytes.len().saturating_sub(marker.len()) as u64;
            found.then_some(())
        });
        worst = worst.max(written.elapsed());
        fast_lag_at_arrival.push(fast_lag(&agent));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    assert!(
        fast_lag_at_arrival.iter().all(|&lag| lag > 0),
        "each slow line arrived while the fast file still had a backlog: {fast_lag_at_arrival:?}"
    );
    // The proof of fairness is the backlog check above. The latency is bounded by the
    // shared sink's FIFO queue: up to 16 batches of 512 KiB of the fast file may be ahead
    // of a slow line; seen 2.5 to 6 s in a debug build on two cores shared with the
    // flooding writer and other builds. The generous bound only catches starvation.
    assert!(
        worst < Duration::from_secs(15),
        "a slow line waited {worst:?}"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_fifo_device_or_directory_is_reported_and_retried_without_disturbing_others() {
    let ws = Workspace::new();
    let fifo = ws.path("pipe.log");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let dir = ws.path("dir.log");
    std::fs::create_dir(&dir).unwrap();
    let good = ws.path("good.log");
    append_lines(&good, lines("good", 0..100));
    // Character devices: /dev/zero would feed NULs forever, /dev/null never ends a read.
    let (zero, null) = (PathBuf::from("/dev/zero"), PathBuf::from("/dev/null"));
    ws.write_config(&ws.config(&format!(
        "{}\n{}\n{}\n{}\n{}",
        log_entry(&fifo, "app"),
        log_entry(&dir, "app"),
        log_entry(&zero, "app"),
        log_entry(&null, "app"),
        log_entry(&good, "app")
    )));
    let agent = ws.start();
    let got = shipped(&ws, 100);
    assert_once_in_order(&got, &[("good ", lines("good", 0..100))]);
    for bad in [&fifo, &dir, &zero, &null] {
        let row = retried_failure(&agent, bad);
        let reason = row["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("not a regular file"), "{row}");
    }
    // Nothing is held open on them (stdout is /dev/null itself, so only the others).
    let open = open_files(&agent);
    assert!(
        !open.iter().any(|p| *p == fifo || *p == zero),
        "no descriptor on the FIFO or /dev/zero: {open:?}"
    );
    // A good file appended meanwhile still flows.
    append_lines(&good, lines("good", 100..150));
    let got = shipped(&ws, 150);
    assert_once_in_order(&got, &[("good ", lines("good", 0..150))]);
    assert_eq!(agent.terminate().code(), Some(0));
}

/// The `/status` row of the tailer of `path` once it has failed and been retried twice.
fn retried_failure(agent: &Agent, path: &Path) -> serde_json::Value {
    wait_for("a retried failure", LONG, || {
        let status = agent.status();
        let row = status["tailers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["path"] == path.display().to_string())
            .cloned()
            .unwrap();
        (row["restarts"].as_u64().unwrap() >= 2).then_some(row)
    })
}

#[test]
fn an_unreadable_file_is_reported_retried_and_shipped_once_readable() {
    let ws = Workspace::new();
    let denied = ws.path("denied.log");
    append_lines(&denied, lines("denied", 0..50));
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    mode(&denied, 0o000);
    let good = ws.path("good.log");
    append_lines(&good, lines("good", 0..100));
    ws.write_config(&ws.config(&format!(
        "{}\n{}",
        log_entry(&denied, "app"),
        log_entry(&good, "app")
    )));
    let agent = ws.start_unprivileged();
    let got = shipped(&ws, 100);
    assert_once_in_order(&got, &[("good ", lines("good", 0..100))]);
    let row = retried_failure(&agent, &denied);
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Permission denied"), "{row}");
    // Readable again: the next retry ships it, and nothing else was disturbed.
    mode(&denied, 0o644);
    append_lines(&good, lines("good", 100..150));
    let got = shipped(&ws, 200);
    assert_once_in_order(
        &got,
        &[
            ("good ", lines("good", 0..150)),
            ("denied ", lines("denied", 0..50)),
        ],
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Files are opened with `O_NOATIME`, which only their owner (or `CAP_FOWNER`) may ask
/// for: an agent without it reads another user's file without it rather than not at all.
#[test]
fn a_file_of_another_user_is_read_without_the_power_to_leave_its_access_time() {
    let ws = Workspace::new();
    let theirs = ws.path("theirs.log");
    append_lines(&theirs, lines("theirs", 0..20));
    if nix::unistd::geteuid().is_root() {
        // nobody's; as another user than root the file is the test's own, and the agent
        // (the same user) may keep its access time.
        let nobody = Some(nix::unistd::Uid::from_raw(65_534));
        nix::unistd::chown(&theirs, nobody, None).unwrap();
    }
    ws.write_config(&ws.config(&log_entry(&theirs, "app")));
    let agent = ws.start_unprivileged();
    let got = shipped(&ws, 20);
    assert_once_in_order(&got, &[("theirs ", lines("theirs", 0..20))]);
    assert_eq!(agent.terminate().code(), Some(0));
}

/// An agent following the glob `logs/*.log` with `resync_interval: 1h` (only
/// notifications find new files), its first file `a.log` shipped.
fn glob_without_resync() -> (Workspace, PathBuf, Agent) {
    let ws = Workspace::new();
    let dir = ws.path("logs");
    std::fs::create_dir(&dir).unwrap();
    append_lines(&dir.join("a.log"), lines("a", 0..10));
    let config = ws.config(&log_entry(&dir.join("*.log"), "app"));
    let hour = config.replace("resync_interval: 200ms", "resync_interval: 1h");
    assert_ne!(config, hour);
    ws.write_config(&hour);
    let agent = ws.start();
    shipped(&ws, 10);
    (ws, dir, agent)
}

/// The ten lines of each of `a`, `b` and `c`, once and in order.
fn assert_abc_once(got: &[String]) {
    let files = ["a", "b", "c"].map(|f| (format!("{f} "), lines(f, 0..10)));
    assert_once_in_order(got, &files);
}

#[test]
fn a_new_file_matching_a_glob_is_picked_up_without_waiting_for_the_resync() {
    let (ws, dir, agent) = glob_without_resync();
    // Created, and renamed into the directory: both are seen by the directory watch.
    append_lines(&dir.join("b.log"), lines("b", 0..10));
    append_lines(&ws.path("c.tmp"), lines("c", 0..10));
    std::fs::rename(ws.path("c.tmp"), dir.join("c.log")).unwrap();
    let got = shipped(&ws, 30);
    assert_abc_once(&got);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn a_glob_directory_renamed_away_or_removed_and_made_again_is_watched_without_waiting_for_the_resync(
) {
    let (ws, dir, agent) = glob_without_resync();
    let soon = Duration::from_secs(10);
    // The directory rotated (`mv logs logs.1; mkdir logs`): a file in the new one.
    std::fs::rename(&dir, ws.path("logs.1")).unwrap();
    std::fs::create_dir(&dir).unwrap();
    append_lines(&dir.join("b.log"), lines("b", 0..10));
    ws.wait_records(20, soon);
    // Removed, and made again only once the agent has taken the removal in (a pass
    // after it): the directory is watched for from its parent meanwhile.
    let passes = metric(agent.http_port, "logcatch_reconcile_total");
    std::fs::remove_dir_all(&dir).unwrap();
    wait_for("a reconcile pass after the removal", soon, || {
        (metric(agent.http_port, "logcatch_reconcile_total") > passes).then_some(())
    });
    std::fs::create_dir(&dir).unwrap();
    append_lines(&dir.join("c.log"), lines("c", 0..10));
    ws.wait_records(30, soon);
    let got = shipped(&ws, 30);
    assert_abc_once(&got);
    assert_eq!(agent.terminate().code(), Some(0));
}

/// How many descriptors the agent holds on files under `dir`.
fn fds_under(agent: &Agent, dir: &Path) -> usize {
    open_files(agent)
        .iter()
        .filter(|p| p.starts_with(dir))
        .count()
}

#[test]
fn thousands_of_files_run_within_max_open_files_and_lose_nothing() {
    let _serial = heavy();
    let ws = Workspace::new();
    let dir = ws.path("many");
    std::fs::create_dir(&dir).unwrap();
    let files = 3_000;
    for i in 0..files {
        append_lines(
            &dir.join(format!("f{i:05}.log")),
            [format!("f{i:05} first")],
        );
    }
    let config = ws.config(&format!(
        "  - {{ path: \"{}/*.log\", topic: app }}",
        dir.display()
    ));
    ws.write_config(&config.replace(
        "tail: { poll_interval: 20ms }",
        "tail: { poll_interval: 20ms, max_open_files: 40 }",
    ));
    let agent = ws.start();
    let mut peak = 0;
    wait_for("every first line", LONG, || {
        peak = peak.max(fds_under(&agent, &dir));
        (ws.records().len() >= files).then_some(())
    });
    // Closed idle files are reopened by identity when they grow.
    for i in 0..files {
        append_lines(
            &dir.join(format!("f{i:05}.log")),
            [format!("f{i:05} second")],
        );
    }
    wait_for("every second line", LONG, || {
        peak = peak.max(fds_under(&agent, &dir));
        (ws.records().len() >= 2 * files).then_some(())
    });
    wait_for("every file acknowledged to its end", LONG, || {
        all_acknowledged(ws.http_port)
    });
    let records = ws.records();
    assert_eq!(records.len(), 2 * files, "each line once");
    for i in (0..files).step_by(97) {
        let mine: Vec<&str> = records
            .iter()
            .filter(|r| r.line.starts_with(&format!("f{i:05} ")))
            .map(|r| r.line.as_str())
            .collect();
        let (first, second) = (format!("f{i:05} first"), format!("f{i:05} second"));
        assert_eq!(mine, [first.as_str(), second.as_str()]);
    }
    // 40 slots, plus transient opens outside them (the glob walk's compression check,
    // every 200 ms here) and the listing of /proc/<pid>/fd not being atomic while files
    // are swapped (seen: 51 to 65 under load); what matters is far below 3,000.
    assert!(
        peak <= 40 + 32,
        "about max_open_files descriptors, not {files}: {peak}"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}
