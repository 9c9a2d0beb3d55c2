//! Debian's real logrotate against the real binary (issue 21): `copytruncate` copies the
//! log to `ct.log.1` and truncates it in place. After a clean restart nothing may repeat,
//! and a glob that matches the copies must not ship their content a second time.

mod common;

use common::accounting::{eventually, metric, Accounting, LogWriter};
use common::{all_acknowledged, Agent, Workspace};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Debian's logrotate lives in /usr/sbin, which a user's PATH may lack.
fn logrotate_bin() -> PathBuf {
    let on_path = Command::new("logrotate").arg("--version").output().is_ok();
    let bin = if on_path {
        PathBuf::from("logrotate")
    } else {
        PathBuf::from("/usr/sbin/logrotate")
    };
    assert!(
        on_path || bin.exists(),
        "logrotate not found: install the test tools with `make deps` (Debian package logrotate)"
    );
    bin
}

/// Rotates `log` now with `copytruncate` and `rotate 3`, as a daily cron job would.
fn copytruncate(ws: &Workspace, log: &Path) {
    let conf = ws.path("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  copytruncate\n  rotate 3\n  nocompress\n  missingok\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    let output = Command::new(logrotate_bin())
        .arg("--force")
        .arg("--state")
        .arg(ws.path("logrotate.state"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn delivered(ws: &Workspace) -> Vec<String> {
    ws.records().into_iter().map(|r| r.line).collect()
}

/// Waits until every written line was delivered and every tailer in `/status` has
/// acknowledged its whole file: a copy read again from 0 would be delivered by then.
fn settled(ws: &Workspace, agent: &Agent, written: &[String], tailers: usize) -> Vec<String> {
    eventually("every line delivered and every file acknowledged", || {
        let got = delivered(ws);
        let acknowledged = all_acknowledged(agent.http_port) == Some(tailers);
        (got.len() >= written.len() && acknowledged).then_some(got)
    })
}

fn config(ws: &Workspace, path: &Path) -> String {
    ws.config(&format!(
        "  - {{ path: \"{}\", topic: app }}",
        path.display()
    ))
}

#[test]
fn a_clean_restart_after_copytruncate_repeats_nothing() {
    let ws = Workspace::new();
    let mut log = LogWriter::new(&ws.path("ct.log"), "ct");
    log.write(5_000);
    ws.write_config(&config(&ws, &log.path));
    let agent = ws.start();
    ws.wait_records(5_000, Duration::from_secs(60));
    copytruncate(&ws, &log.path);
    eventually("the truncation seen", || {
        (metric(agent.http_port, "logcatch_file_truncations_total") == 1.0).then_some(())
    });
    log.write(500);
    settled(&ws, &agent, log.written(), 1);
    let agent = restart_repeats_nothing(
        &ws,
        agent,
        &mut log,
        1,
        "a_clean_restart_after_copytruncate",
    );
    assert!(
        agent.log().contains("resumed=true"),
        "the truncated file is recognised after the restart: {}",
        agent.log()
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn copytruncate_under_a_glob_that_matches_the_copies_ships_each_line_once() {
    let ws = Workspace::new();
    let mut log = LogWriter::new(&ws.path("ct.log"), "ct");
    ws.write_config(&config(&ws, &ws.path("ct.log*")));
    let agent = ws.start();
    for round in 1..=4 {
        log.write(2_000);
        settled(&ws, &agent, log.written(), round);
        copytruncate(&ws, &log.path);
        eventually("the truncation seen", || {
            let seen = metric(agent.http_port, "logcatch_file_truncations_total");
            (seen == round as f64).then_some(())
        });
    }
    log.write(100);
    // ct.log and its three copies (the fourth rotation deleted the oldest).
    let got = settled(&ws, &agent, log.written(), 4);
    Accounting::of(log.written(), &got).check(
        "copytruncate_under_a_glob",
        0,
        "the copies hold lines already shipped from ct.log",
    );
    let agent = restart_repeats_nothing(&ws, agent, &mut log, 4, "copytruncate_under_a_glob");
    assert_eq!(agent.terminate().code(), Some(0));
}

/// A clean stop, a start and ten more lines: still every line exactly once.
fn restart_repeats_nothing(
    ws: &Workspace,
    agent: Agent,
    log: &mut LogWriter,
    tailers: usize,
    test: &str,
) -> Agent {
    assert_eq!(agent.terminate().code(), Some(0));
    let agent = ws.start();
    log.write(10);
    let got = settled(ws, &agent, log.written(), tailers);
    let test = format!("{test}, after a restart");
    Accounting::of(log.written(), &got).check(&test, 0, "a clean stop");
    agent
}
