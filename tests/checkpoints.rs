//! The checkpoint store over a long life: the checkpoints of files that are gone expire,
//! and nothing a file still on disk needs is dropped (the real binary, real files).

mod common;

use common::{append_lines, count_lines, wait_for, Workspace};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn lines(prefix: &str, range: std::ops::Range<usize>) -> impl Iterator<Item = String> + '_ {
    range.map(move |i| format!("{prefix} line {i:04}"))
}

/// The paths of the checkpoints written to `state/checkpoints.json`.
fn checkpointed_paths(ws: &Workspace) -> BTreeSet<String> {
    let text = std::fs::read_to_string(ws.path("state/checkpoints.json")).unwrap_or_default();
    let document: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    document["checkpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["path"].as_str().map(str::to_string))
        .collect()
}

fn config(ws: &Workspace, logs: &str) -> String {
    ws.config(logs).replace(
        "tail: { poll_interval: 20ms }",
        "tail: { poll_interval: 20ms, checkpoint_expiry: 1s }",
    )
}

fn entry(path: &Path, topic: &str) -> String {
    format!("  - {{ path: '{}', topic: {topic} }}", path.display())
}

/// Pods come and go: every file a glob followed and that was deleted leaves no checkpoint
/// behind once `checkpoint_expiry` has passed, so the state is the size of what exists.
/// A file that still exists keeps its checkpoint however long nothing follows it: its
/// declaration removed and added back later, it resumes where it was, and a file renamed
/// away from its path (found by its checkpoint after a restart) is not forgotten either.
#[test]
fn checkpoints_of_deleted_files_expire_and_files_on_disk_keep_theirs() {
    let ws = Workspace::new();
    let pods = ws.path("pods");
    std::fs::create_dir(&pods).unwrap();
    for pod in 0..30 {
        append_lines(
            &pods.join(format!("pod-{pod:02}.log")),
            lines(&format!("pod {pod}"), 0..5),
        );
    }
    let kept = pods.join("kept.log");
    append_lines(&kept, lines("kept", 0..5));
    let idle = ws.path("idle.log");
    append_lines(&idle, lines("idle", 0..5));
    let both = format!(
        "{}\n{}",
        entry(&pods.join("*.log"), "app"),
        entry(&idle, "other")
    );
    ws.write_config(&config(&ws, &both));
    let agent = ws.start();
    let port = agent.http_port;
    ws.wait_records(32 * 5, LONG);
    wait_for("all 32 files checkpointed", LONG, || {
        (checkpointed_paths(&ws).len() == 32).then_some(())
    });

    // The idle file's declaration goes away; the pods are deleted by container GC.
    ws.write_config(&config(&ws, &entry(&pods.join("*.log"), "app")));
    for pod in 0..30 {
        std::fs::remove_file(pods.join(format!("pod-{pod:02}.log"))).unwrap();
    }
    let expected: BTreeSet<String> = [&kept, &idle]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    wait_for(
        "the checkpoints of the deleted files to expire",
        LONG,
        || (checkpointed_paths(&ws) == expected).then_some(()),
    );
    assert_eq!(
        common::metric(port, "logcatch_checkpoints_expired_total{}"),
        30.0
    );
    assert_eq!(common::metric(port, "logcatch_checkpoints{}"), 2.0);

    // Long after its expiry would have passed, the idle file resumes where it was.
    std::thread::sleep(Duration::from_secs(2));
    append_lines(&idle, lines("idle", 5..10));
    ws.write_config(&config(&ws, &both));
    ws.wait_records(32 * 5 + 5, LONG);
    assert_eq!(agent.terminate().code(), Some(0));

    // A rotation while the agent is down: the renamed file is found by its checkpoint.
    append_lines(&kept, lines("kept", 5..10));
    std::fs::rename(&kept, pods.join("kept.log.1")).unwrap();
    append_lines(&kept, lines("new kept", 0..5));
    let agent = ws.start();
    ws.wait_records(32 * 5 + 5 + 10, LONG);
    wait_for("every file acknowledged", LONG, || {
        common::all_acknowledged(agent.http_port)
    });
    let records = ws.records();
    let counts = count_lines(&records);
    for line in lines("idle", 0..10)
        .chain(lines("kept", 0..10))
        .chain(lines("new kept", 0..5))
    {
        assert_eq!(counts.get(line.as_str()), Some(&1), "{line}");
    }
    assert_eq!(records.len(), 32 * 5 + 5 + 10, "no line shipped twice");
    assert_eq!(agent.terminate().code(), Some(0));
}
