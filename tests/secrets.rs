//! Secrets come from files and never show up in logs, `/status` or `check` output.

mod common;

use common::{append_lines, free_port, http_get, wait_for, Workspace};
use std::time::Duration;

const SECRET: &str = "s3cr3t-Pa55word-do-not-print";

#[test]
fn passwords_never_appear_in_logs_status_or_check_output() {
    let ws = Workspace::new();
    let (kafka, etcd) = (
        format!("127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    );
    write_config(&ws, (&kafka, "PLAIN", SECRET), (&etcd, SECRET));
    let printed = check(&ws);
    assert!(
        !printed.contains(SECRET),
        "check printed the secret:\n{printed}"
    );

    let agent = ws.start();
    // Let it fail to reach Kafka and etcd a few times (errors are logged).
    wait_for(
        "connection errors in the log",
        Duration::from_secs(30),
        || {
            let log = agent.log();
            (log.contains("kafka") && log.contains("etcd")).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let (_, status) = http_get(agent.http_port, "/status").unwrap();
    let (_, metrics) = http_get(agent.http_port, "/metrics").unwrap();
    // Kafka is unreachable, so the shutdown cannot flush and ends at shutdown_timeout
    // (exit 1); what matters here is what was printed.
    agent.terminate();
    let log = agent_log(&ws);
    for (what, text) in [
        ("/status", &status),
        ("/metrics", &metrics),
        ("the log", &log),
    ] {
        assert!(!text.contains(SECRET), "{what} contains the secret");
    }
    assert!(
        log.contains("shutdown took longer than shutdown_timeout") || log.contains("stopped"),
        "{log}"
    );
}

/// Writes the password files and a config using them: a Kafka sink on `broker` with SASL
/// `mechanism`, an etcd source on `endpoint` (key `/lc/k`) with auth, and one log.
fn write_config(ws: &Workspace, kafka: (&str, &str, &str), etcd: (&str, &str)) {
    let ((broker, mechanism, kafka_secret), (endpoint, etcd_secret)) = (kafka, etcd);
    std::fs::write(ws.path("kafka.pass"), format!("{kafka_secret}\n")).unwrap();
    std::fs::write(ws.path("etcd.pass"), format!("{etcd_secret}\n")).unwrap();
    let log = ws.path("a.log");
    append_lines(&log, (0..3).map(|i| format!("l {i}")));
    let sink = format!(
        "  kind: kafka\n  kafka:\n    brokers: [\"{broker}\"]\n    request_timeout: 5s\n    sasl: {{ mechanism: {mechanism}, username: shipper, password_file: {} }}",
        ws.path("kafka.pass").display()
    );
    let mut config = ws.config_with_sink(
        &format!("  - {{ path: {}, topic: t }}", log.display()),
        &sink,
    );
    config.push_str(&format!(
        "etcd: {{ endpoints: [\"{endpoint}\"], keys: [/lc/k], allowed_paths: ['/**'], username: shipper, password_file: {}, dial_timeout: 1s, request_timeout: 1s }}\n",
        ws.path("etcd.pass").display()
    ));
    ws.write_config(&config);
}

/// `logcatch check` on the workspace's config: it must pass; returns what it printed.
fn check(ws: &Workspace) -> String {
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .args(["check", "--config"])
        .arg(ws.config_path())
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{printed}");
    printed
}

/// Every agent log the workspace holds (the agent writes `agent-N.log` in its cwd).
fn agent_log(ws: &Workspace) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(ws.dir.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("agent-") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

/// The same against real servers that check the passwords: etcd with auth enabled and
/// tansu requiring SCRAM-SHA-256. Their refusals are logged and shown, the passwords not.
#[test]
fn passwords_refused_by_real_servers_never_appear_in_logs_status_metrics_or_check() {
    use common::servers::{Broker, Etcd};
    const ETCD_SECRET: &str = "etcd-Pa55word-never-print";
    const KAFKA_SECRET: &str = "kafka-Pa55word-never-print";
    let mut etcd = Etcd::start();
    etcd.enable_auth("root-Pa55", "shipper", "something-else", "/lc/");
    let mut broker = Broker::start_sqlite();
    broker.create_scram_user("shipper", "something-else", &["t"]);
    broker.stop();
    broker.authentication = true;
    broker.restart();

    let ws = Workspace::new();
    write_config(
        &ws,
        (&broker.address(), "SCRAM-SHA-256", KAFKA_SECRET),
        (&etcd.endpoint, ETCD_SECRET),
    );
    let check = check(&ws);

    let agent = ws.start();
    let status = wait_for("both refusals in /status", Duration::from_secs(60), || {
        let status = agent.status();
        let kafka = status["sink"]["error"].as_str()?.contains("invalid proof");
        let etcd = status["sources"]["watches"][0]["error"]
            .as_str()?
            .contains("authentication failed");
        (kafka && etcd).then_some(status.to_string())
    });
    let (_, metrics) = http_get(agent.http_port, "/metrics").unwrap();
    let (_, ready) = http_get(agent.http_port, "/readyz").unwrap();
    agent.terminate();
    let log = agent_log(&ws);
    assert!(log.contains("invalid proof") && log.contains("authentication failed"));
    for (what, text) in [
        ("/status", &status),
        ("/metrics", &metrics),
        ("/readyz", &ready),
        ("the log", &log),
        ("check", &check),
    ] {
        for secret in [ETCD_SECRET, KAFKA_SECRET] {
            assert!(!text.contains(secret), "{what} contains {secret}");
        }
    }
}
