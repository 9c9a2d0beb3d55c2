//! File following end to end (issue 3): real renames, truncations and unlinks against
//! the real binary; the shipped records must equal the written lines, exactly once and in
//! order per file.

mod common;

use common::{append_lines, count_lines, http_get, wait_for, Agent, Record, Workspace};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix} line {i:06} {}", "y".repeat(i % 40)))
        .collect()
}

fn log_entry(path: &Path, topic: &str) -> String {
    format!("  - {{ path: \"{}\", topic: {topic} }}", path.display())
}

/// Waits until `expected.len()` records arrived, lets stragglers (duplicates) land, and
/// returns the shipped lines.
fn shipped(ws: &Workspace, expected: usize) -> Vec<String> {
    ws.wait_records(expected, LONG);
    std::thread::sleep(Duration::from_millis(600));
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

#[test]
fn several_rotations_in_a_row_while_busy_lose_and_repeat_nothing() {
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
        std::thread::sleep(Duration::from_millis(150));
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
        // Longer than the resync interval: the glob finds each rotated file.
        std::thread::sleep(Duration::from_millis(500));
    }
    let total = files.iter().map(|(_, w)| w.len()).sum();
    shipped(&ws, total);
    std::thread::sleep(Duration::from_millis(600)); // a few resyncs more
    let got: Vec<String> = ws.records().into_iter().map(|r| r.line).collect();
    assert_once_in_order(&got, &files);
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
    std::thread::sleep(Duration::from_millis(200));
    append_lines(&log, lines("after", 0..300));
    let got = shipped(&ws, 1_300);
    assert_once_in_order(
        &got,
        &[
            ("before ", lines("before", 0..1_000)),
            ("after ", lines("after", 0..300)),
        ],
    );
    wait_for("the truncation counted", LONG, || {
        (metric(agent.http_port, "logcatch_file_truncations_total") == 1.0).then_some(())
    });
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
    wait_for("the deleted file's descriptor closed", LONG, || {
        let held = open_files(&agent)
            .iter()
            .any(|p| p.to_string_lossy().contains("app.log"));
        (!held).then_some(())
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
/// `app.log` to `app.log.1`, writes `fresh` to the new `app.log`, starts again.
fn rotate_while_down(ws: &Workspace, declared: &Path) -> Vec<String> {
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
    std::thread::sleep(Duration::from_millis(500)); // resyncs would start duplicates
    assert_eq!(agent.terminate().code(), Some(0));
    let got_again: Vec<String> = ws.records().into_iter().map(|r: Record| r.line).collect();
    assert_eq!(got, got_again[..got.len()]);
    got_again
}

#[test]
fn rotation_while_down_finishes_the_renamed_file_when_only_the_path_is_declared() {
    let ws = Workspace::new();
    let got = rotate_while_down(&ws, &ws.path("app.log"));
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
    let got = rotate_while_down(&ws, &ws.path("app.log*"));
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
