//! `logcatch check` and argument handling.

use std::process::Command;

fn logcatch(args: &[&str], cwd: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(args)
        .current_dir(cwd)
        .env_remove("LOGCATCH_CONFIG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_desired_tailers_after_glob_expansion() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    for name in ["a.log", "b.log"] {
        std::fs::write(dir.path().join("logs").join(name), "x\n").unwrap();
    }
    std::fs::write(
        dir.path().join("c.yaml"),
        "logs:\n  - { path: 'logs/*.log', topic: app }\n  - { path: /nonexistent/x.log, topic: other, format: cri, multiline: { start_pattern: '^\\S' } }\n",
    )
    .unwrap();
    let (code, out, err) = logcatch(&["check", "--config", "c.yaml"], dir.path());
    assert_eq!(code, 0, "{err}");
    let root = dir.path().canonicalize().unwrap();
    assert!(
        out.contains(&format!(
            "app    exists    raw               {}/logs/a.log",
            root.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "app    exists    raw               {}/logs/b.log",
            root.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("other  waiting   cri+multiline     /nonexistent/x.log"),
        "{out}"
    );
}

#[test]
fn check_fails_with_the_file_and_field_of_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "logs:\n  - { path: /a, topic: ok }\n  - { path: /b, topic: 'bad topic' }\n",
    )
    .unwrap();
    let (code, _, err) = logcatch(&["check", "--config", "c.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("config c.yaml: logs[1].topic: topic \"bad topic\""),
        "{err}"
    );
}

#[test]
fn check_reads_the_config_path_from_the_environment_and_warns_on_legacy_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("legacy.yaml"),
        "collectlogs:\n  - { logpath: /var/log/a.log, logtopic: a }\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .arg("check")
        .env("LOGCATCH_CONFIG", dir.path().join("legacy.yaml"))
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("legacy key `collectlogs` is deprecated"),
        "{err}"
    );
    assert!(out.contains("/var/log/a.log"), "{out}");
}

#[test]
fn unknown_arguments_and_missing_config_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = logcatch(&["run", "--confg", "x"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--confg"), "{err}");
    let (code, _, err) = logcatch(&["run", "--config", "missing.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("config missing.yaml: cannot read"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let (code, out, _) = logcatch(&["--version"], dir.path());
    assert_eq!(code, 0);
    assert!(out.starts_with("logcatch "), "{out}");
}
