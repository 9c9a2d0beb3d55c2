//! The integration-test harness: runs the real `logcatch` binary, and real etcd and
//! Kafka-protocol (tansu) servers on free loopback ports, stopped on drop. A missing
//! tool is a failure that says how to install it, never a skip.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod accounting;
pub mod kafka;
pub mod servers;
pub mod tls;

use serde::Deserialize;
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released), below Linux's ephemeral range
/// (32768–60999 by default): a port the kernel handed out for `bind(0)` is handed out
/// again as the local port of some outgoing connection (to etcd, to the broker), and the
/// server then meant to listen on it fails with "Address already in use". Each test
/// process walks its own stretch of 10000–32767 (by pid), one port after the other.
pub fn free_port() -> u16 {
    const FIRST: usize = 10_000;
    const PORTS: usize = 32_768 - FIRST;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = (std::process::id() as usize * 997) % PORTS;
    for _ in 0..PORTS {
        let port = (FIRST + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % PORTS) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {FIRST}–32767");
}

/// Polls `check` until it returns `Some` or `timeout` passes (then panics with `what`).
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One record as the file sink writes it (container logs add the optional fields).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub path: String,
    pub offset: u64,
    pub line: String,
    pub node: String,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub parse_error: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub container_id: Option<String>,
}

/// Every record in a JSON-lines sink file. A last line without its newline is being
/// written and is left for the next look; any whole line that is not a record fails the
/// test (the sink must never leave a torn record behind).
pub fn read_records(path: &Path) -> Vec<Record> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(_) => return Vec::new(),
    };
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a whole record ({e}): {line}", path.display()))
        })
        .collect()
}

/// Counts how often each line occurs.
pub fn count_lines(records: &[Record]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for record in records {
        *counts.entry(record.line.as_str()).or_insert(0) += 1;
    }
    counts
}

/// A scratch directory with a config, a log dir and a sink file for one agent.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
            http_port: free_port(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn out(&self) -> PathBuf {
        self.path("out.jsonl")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("logcatch.yaml")
    }

    /// A config with the file sink into `out()`, fast polling and the given `logs:` YAML.
    pub fn config(&self, logs_yaml: &str) -> String {
        let sink = format!("  kind: file\n  file: {{ path: {} }}", self.out().display());
        self.config_with_sink(logs_yaml, &sink)
    }

    /// A config with the given `sink:` body (indented YAML).
    pub fn config_with_sink(&self, logs_yaml: &str, sink_yaml: &str) -> String {
        format!(
            "node: test-node\nstate_dir: {state}\nlogs:\n{logs_yaml}\nsink:\n{sink_yaml}\n\
             tail: {{ poll_interval: 20ms }}\nreconcile: {{ resync_interval: 200ms, backoff: {{ initial: 100ms, max: 1s, reset_after: 5s }} }}\n\
             http: {{ listen: \"127.0.0.1:{port}\" }}\nshutdown_timeout: 10s\n",
            state = self.path("state").display(),
            port = self.http_port,
        )
    }

    /// Writes the config atomically (temp + rename), as editors and ConfigMaps do.
    pub fn write_config(&self, text: &str) {
        let tmp = self.path("logcatch.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    pub fn start(&self) -> Agent {
        Agent::start(&self.config_path(), self.dir.path(), self.http_port)
    }

    /// Starts the agent without the powers over files it does not own that root has: as
    /// root, through `setpriv` with DAC overrides and `CAP_FOWNER` dropped.
    pub fn start_unprivileged(&self) -> Agent {
        let wrapper: &[&str] = if nix::unistd::geteuid().is_root() {
            &[
                "setpriv",
                "--bounding-set=-dac_override,-dac_read_search,-fowner",
            ]
        } else {
            &[]
        };
        Agent::start_via(
            wrapper,
            &self.config_path(),
            self.dir.path(),
            self.http_port,
        )
    }

    /// Records in the sink file.
    pub fn records(&self) -> Vec<Record> {
        read_records(&self.out())
    }

    /// Waits until the sink file holds at least `n` records.
    pub fn wait_records(&self, n: usize, timeout: Duration) -> Vec<Record> {
        wait_for(&format!("{n} records"), timeout, || {
            let records = self.records();
            (records.len() >= n).then_some(records)
        })
    }
}

/// A running `logcatch run`, killed on drop.
pub struct Agent {
    child: Option<Child>,
    pub http_port: u16,
    log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path, cwd: &Path, http_port: u16) -> Agent {
        Self::start_via(&[], config, cwd, http_port)
    }

    /// Starts `logcatch run` as the argument of `wrapper` (a command prefix), if any.
    pub fn start_via(wrapper: &[&str], config: &Path, cwd: &Path, http_port: u16) -> Agent {
        Self::launch(wrapper, &[], config, cwd, http_port)
    }

    /// Starts `logcatch run` with more environment variables.
    pub fn start_with_env(
        env: &[(&str, &str)],
        config: &Path,
        cwd: &Path,
        http_port: u16,
    ) -> Agent {
        Self::launch(&[], env, config, cwd, http_port)
    }

    fn launch(
        wrapper: &[&str],
        env: &[(&str, &str)],
        config: &Path,
        cwd: &Path,
        http_port: u16,
    ) -> Agent {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let log = cwd.join(format!(
            "agent-{}.log",
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let stderr = std::fs::File::create(&log).unwrap();
        let binary = env!("CARGO_BIN_EXE_logcatch");
        let mut command = match wrapper {
            [] => Command::new(binary),
            [program, args @ ..] => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
        };
        let child = command
            .args(["run", "--config"])
            .arg(config)
            .current_dir(cwd)
            .env("RUST_LOG", "info,rskafka=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting logcatch");
        let agent = Agent {
            child: Some(child),
            http_port,
            log,
        };
        agent.wait_healthy();
        agent
    }

    fn wait_healthy(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if http_get(self.http_port, "/healthz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("logcatch did not become healthy; its log:\n{}", self.log());
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.http_port, "/status").expect("GET /status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Paths of the tailers in `/status` with their state.
    pub fn tailer_states(&self) -> Vec<(String, String)> {
        let status = self.status();
        status["tailers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["path"].as_str().unwrap().to_string(),
                    t["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(5));
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_for("the agent to exit", timeout, || child.try_wait().unwrap())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the `logcatch` binary (not `run`) in `cwd`: exit code, stdout, stderr.
pub fn logcatch(args: &[&str], cwd: &Path) -> (i32, String, String) {
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

/// GET on 127.0.0.1 with the agent's own client: `(status, body)`, `None` when refused.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    logcatch::telemetry::client::get(&format!("http://127.0.0.1:{port}"), path).ok()
}

/// The sum of the `/metrics` samples whose line starts with `prefix` (a name, or a name
/// with its labels, e.g. `logcatch_parse_errors_total{format="cri"`).
pub fn metric_sum(port: u16, prefix: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics").expect("GET /metrics");
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The number of running tailers in `/status` once each has acknowledged its whole file
/// (its offset is the size of the regular file at its path), else `None`. Lines read
/// again — a duplicate — would have reached the sink by then. Tailers waiting (no file,
/// a claimed one) or backing off (unreadable, not a regular file) read nothing and are
/// not counted.
pub fn all_acknowledged(port: u16) -> Option<usize> {
    let (code, body) = http_get(port, "/status")?;
    let status: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    let running: Vec<&serde_json::Value> = status["tailers"]
        .as_array()?
        .iter()
        .filter(|t| t["state"] == "running")
        .collect();
    let done = running.iter().all(|t| {
        let file = t["path"].as_str().and_then(|p| std::fs::metadata(p).ok());
        match file {
            Some(meta) if meta.is_file() => t["offset"].as_u64() == Some(meta.len()),
            _ => true,
        }
    });
    done.then_some(running.len())
}

/// Appends `bytes` to `path` exactly as given (one `write`): part of a line, several.
pub fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

/// Every sample of the exposition as `name{label="value",...}` → value.
pub fn scrape(port: u16) -> HashMap<String, f64> {
    let (code, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

/// One sample of [`scrape`]; 0 when absent.
pub fn metric(port: u16, name: &str) -> f64 {
    scrape(port).get(name).copied().unwrap_or(0.0)
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`); 0 once the process is gone.
pub fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The resident memory of process `pid` in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// `files` empty files in the workspace's `pods` directory, and the declaration of them
/// all (one glob) on `topic`.
pub fn empty_files_under_one_glob(
    ws: &Workspace,
    files: usize,
    topic: &str,
) -> (Vec<PathBuf>, String) {
    let dir = ws.path("pods");
    std::fs::create_dir(&dir).unwrap();
    let paths: Vec<_> = (0..files)
        .map(|i| dir.join(format!("p{i:03}.log")))
        .collect();
    for path in &paths {
        std::fs::File::create(path).unwrap();
    }
    let entry = format!(
        "  - {{ path: {}, topic: {topic} }}",
        dir.join("*.log").display()
    );
    (paths, entry)
}

/// Catching up leaves no memory behind: `files` files each read a backlog of 256 KiB
/// (after a Kafka outage every file has one) through `sink_yaml`, and the agent's RSS
/// comes back within 16 MiB of what it was with the files idle. `topic` names the
/// declaration's topic.
pub fn assert_catching_up_leaves_no_memory_behind(sink_yaml: &str, topic: &str, files: usize) {
    const LINES: usize = 2_600; // 100 B each
    let ws = Workspace::new();
    let (paths, entry) = empty_files_under_one_glob(&ws, files, topic);
    ws.write_config(&ws.config_with_sink(&entry, sink_yaml));
    let agent = ws.start();
    let port = agent.http_port;
    wait_for("every file followed", Duration::from_secs(60), || {
        (agent.tailer_states().len() == files).then_some(())
    });
    // The lowest of five samples a second apart: what the agent holds once what it freed
    // has gone back to the system.
    let settled = |what: &str| {
        let mut low = u64::MAX;
        for _ in 0..5 {
            std::thread::sleep(Duration::from_secs(1));
            low = low.min(rss_kib(agent.pid()));
        }
        eprintln!(
            "{what}: RSS {} MiB, peak {} MiB",
            low / 1024,
            status_kib(agent.pid(), "VmHWM") / 1024
        );
        low
    };
    let idle = settled("idle");

    let line = "y".repeat(99);
    for path in &paths {
        append_lines(path, std::iter::repeat_n(line.clone(), LINES));
    }
    let total = (files * LINES) as f64;
    wait_for("every line shipped", Duration::from_secs(120), || {
        (metric_sum(port, "logcatch_records_sent_total") >= total).then_some(())
    });
    assert_eq!(metric_sum(port, "logcatch_records_sent_total"), total);
    wait_for("every file acknowledged", Duration::from_secs(60), || {
        all_acknowledged(port)
    });
    let grown = 16 * 1024;
    wait_for(
        "memory back to within 16 MiB of the idle agent's",
        Duration::from_secs(60),
        || (settled("after the catch-up") <= idle + grown).then_some(()),
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Appends `lines` to `path` (one `write` per call, like a logging app flushing).
pub fn append_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for line in lines {
        buf.push_str(&line);
        buf.push('\n');
    }
    file.write_all(buf.as_bytes()).unwrap();
}

/// How many TCP connections process `pid` has established to `port` (any address): its
/// sockets (the `socket:[inode]` links in /proc/PID/fd) matched against the kernel's
/// table of TCP sockets (/proc/PID/net/tcp and tcp6, state 01 = ESTABLISHED).
pub fn established_connections(pid: i32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    Some(
                        link.strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let port = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9
                && fields[2].ends_with(&port)
                && fields[3] == "01"
                && inodes.contains(fields[9])
        })
        .count()
}
