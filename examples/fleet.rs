//! The fleet benchmark of issue #24 §4 (`bench/fleet.sh` runs it against a fresh etcd per
//! row): AGENTS simulated agents in this process, each with its own node name, its own
//! etcd client (one connection, one login), the real etcd source (a watch per key, the
//! snapshot cache in its own state dir) and the real status writer (a lease kept alive,
//! `telemetry::declared::reports` written back at most once per `etcd.status.interval`).
//! What stands in for the reconcile loop applies every snapshot at once and starts no
//! tailer (the entries declare paths that match no file): this measures the control plane
//! — etcd's watch fan-out and the status write-back — not tailing.
//!
//! usage: fleet ENDPOINT AGENTS KEYS [CHANGES] [STEADY_S] [STATE_DIR]
//!
//! Every agent watches the same KEYS keys `/fleet/k000`…; `/fleet/k000` is the key shared
//! by all that the benchmark changes. Phases, each measured from etcd's own `/metrics`
//! (CPU seconds, RSS, puts, lease renewals, watchers, db size):
//!   start   all agents start at once; done when every (node, key) status is in etcd
//!   steady  STEADY_S seconds (default 30) with no change: status writes per second
//!   change  CHANGES times (default 5): one put on `/fleet/k000`; per agent, the time from
//!           the put to its source holding the new value (`source`) and to its status in
//!           etcd showing `observed_revision` ≥ the put's revision (`status`, seen through
//!           a watch on the status prefix)
//! Prints one line of `name=value` pairs (times in ms, sizes in MiB).

use etcd_client::{Client, EventType, WatchOptions};
use logcatch::agent::status_reports;
use logcatch::config::Config;
use logcatch::ports::declared::DeclarationReport;
use logcatch::source::etcd::publish::Publisher;
use logcatch::source::etcd::shared::ClientSlot;
use logcatch::source::etcd::EtcdSource;
use logcatch::source::Sources;
use logcatch::telemetry::status::StatusBoard;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;

const SHARED: &str = "/fleet/k000";
const STATUS_PREFIX: &str = "/logcatch/status/";
/// How long one phase may take before the benchmark gives up (and fails).
const PHASE_LIMIT: Duration = Duration::from_secs(600);

fn key(k: usize) -> String {
    format!("/fleet/k{k:03}")
}

/// The value of key `k` at change `change`: one entry, labelled with the change, whose path
/// matches no file.
fn value(k: usize, change: u32) -> String {
    serde_json::json!([{
        "path": format!("/var/log/fleet-bench/k{k:03}/*.log"),
        "topic": "fleet",
        "labels": {"change": change.to_string(), "owner": "bench"},
    }])
    .to_string()
}

/// When each agent's source first held each change of the shared key.
type Seen = Arc<Mutex<Vec<BTreeMap<u32, Instant>>>>;

/// One simulated agent: the real etcd source and status writer, and a stand-in for the
/// reconcile loop that applies each snapshot as it comes.
fn spawn_agent(
    index: usize,
    config: Config,
    seen: Seen,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let node = config.node_name();
    let state_dir = config.state_dir.clone();
    // The sender lives as long as the agent: the source and the status writer stop when
    // their config channel closes.
    let (config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(config));
    let sources = Arc::new(Sources::default());
    let board = Arc::new(StatusBoard::default());
    let slot = Arc::new(ClientSlot::default());
    let reports = status_reports(&Arc::from(node.as_str()), &board, &sources, Path::new("/"));
    let source = EtcdSource::new(config_rx.clone(), sources.clone(), &state_dir, slot.clone());
    let publisher = Publisher::new(config_rx, sources.clone(), &node, reports, slot);
    let shared_source = format!("etcd:{SHARED}");
    let reconcile = {
        let stop = stop.clone();
        async move {
            let _config = config_tx;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = sources.trigger().requested() => {}
                }
                let snapshot = sources.snapshot();
                let change = snapshot
                    .get(shared_source.as_str())
                    .and_then(|specs| specs.first()?.labels.get("change")?.parse().ok());
                if let Some(change) = change {
                    let mut seen = seen.lock().unwrap();
                    seen[index].entry(change).or_insert_with(Instant::now);
                }
                board.set_applied(snapshot);
            }
        }
    };
    vec![
        tokio::spawn(source.run(stop.clone())),
        tokio::spawn(publisher.run(stop)),
        tokio::spawn(reconcile),
    ]
}

fn agent_config(endpoint: &str, index: usize, keys: usize, state: &Path) -> Result<Config, Error> {
    let keys: Vec<String> = (0..keys).map(key).collect();
    let text = serde_json::json!({
        "node": format!("fleet-{index:05}"),
        "state_dir": state.join(format!("a{index:05}")),
        "sink": {"kind": "null"},
        "etcd": {
            "endpoints": [endpoint],
            "keys": keys,
            "allowed_paths": ["/var/log/fleet-bench/**"],
        },
    })
    .to_string();
    Ok(Config::parse(&text, "fleet", &|_| None)?.config)
}

/// What the status watch saw: per (node, key) the latest `observed_revision`, and for the
/// shared key every (node, revision, when) in arrival order.
#[derive(Default)]
struct StatusSeen {
    latest: HashMap<(String, String), i64>,
    shared: Vec<(String, i64, Instant)>,
    puts: u64,
    deletes: u64,
}

async fn watch_status(client: &mut Client, seen: Arc<Mutex<StatusSeen>>) -> Result<(), Error> {
    let options = WatchOptions::new().with_prefix();
    let mut stream = client.watch(STATUS_PREFIX, Some(options)).await?;
    tokio::spawn(async move {
        while let Ok(Some(response)) = stream.message().await {
            let now = Instant::now();
            let mut seen = seen.lock().unwrap();
            for event in response.events() {
                if event.event_type() == EventType::Delete {
                    seen.deletes += 1;
                    continue;
                }
                seen.puts += 1;
                let Some(kv) = event.kv() else { continue };
                let Ok(report) = serde_json::from_slice::<DeclarationReport>(kv.value()) else {
                    continue;
                };
                if report.key == SHARED {
                    let entry = (report.node.clone(), report.observed_revision, now);
                    seen.shared.push(entry);
                }
                seen.latest
                    .insert((report.node, report.key), report.observed_revision);
            }
        }
    });
    Ok(())
}

/// etcd's `/metrics` (plain HTTP on the client URL): name (with labels) → value.
fn scrape(endpoint: &str) -> Result<HashMap<String, f64>, Error> {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// The etcd figures a phase is judged by.
#[derive(Clone, Copy)]
struct Etcd {
    at: Instant,
    cpu_s: f64,
    rss_mib: f64,
    puts: f64,
    renewals: f64,
    watchers: f64,
    db_mib: f64,
}

fn etcd(endpoint: &str) -> Result<Etcd, Error> {
    let m = scrape(endpoint)?;
    let get = |name: &str| m.get(name).copied().unwrap_or(0.0);
    Ok(Etcd {
        at: Instant::now(),
        cpu_s: get("process_cpu_seconds_total"),
        rss_mib: get("process_resident_memory_bytes") / 1048576.0,
        puts: get("etcd_mvcc_put_total"),
        renewals: get("etcd_debugging_lease_renewed_total"),
        watchers: get("etcd_debugging_mvcc_watcher_total"),
        db_mib: get("etcd_mvcc_db_total_size_in_bytes") / 1048576.0,
    })
}

/// This process's CPU seconds and RSS (MiB), from /proc.
fn own_usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

/// Waits until `done` holds, polling every 50 ms; fails after PHASE_LIMIT.
async fn until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), Error> {
    let deadline = Instant::now() + PHASE_LIMIT;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not done within {PHASE_LIMIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The `q` quantile (0..=1) of `sorted`, in ms.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: Option<T>) -> Result<T, Error> {
    match args.get(i) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("argument {i}: cannot read {v:?}").into()),
        None => default.ok_or_else(|| {
            "usage: fleet ENDPOINT AGENTS KEYS [CHANGES] [STEADY_S] [STATE_DIR]".into()
        }),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // RUST_LOG=logcatch=debug shows what the simulated agents do (stderr).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint: String = arg(&args, 0, None)?;
    let agents: usize = arg(&args, 1, None)?;
    let keys: usize = arg(&args, 2, None)?;
    let changes: u32 = arg(&args, 3, Some(5))?;
    let steady_s: u64 = arg(&args, 4, Some(30))?;
    let state: PathBuf = arg(&args, 5, Some(std::env::temp_dir().join("logcatch-fleet")))?;
    let endpoint = if endpoint.contains("://") {
        endpoint
    } else {
        format!("http://{endpoint}")
    };

    let mut client = Client::connect([endpoint.as_str()], None).await?;
    for k in 0..keys {
        client.put(key(k), value(k, 0), None).await?;
    }
    let status = Arc::new(Mutex::new(StatusSeen::default()));
    watch_status(&mut client, status.clone()).await?;
    let seen: Seen = Arc::new(Mutex::new(vec![BTreeMap::new(); agents]));
    let stop = CancellationToken::new();

    // Start: every agent at once, as after a fleet-wide rollout.
    let before = etcd(&endpoint)?;
    let (cpu0, _) = own_usage();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..agents {
        std::fs::create_dir_all(state.join(format!("a{i:05}")))?;
        let config = agent_config(&endpoint, i, keys, &state)?;
        tasks.extend(spawn_agent(i, config, seen.clone(), stop.clone()));
    }
    let expected = agents * keys;
    until("start: every agent's status in etcd", || {
        status.lock().unwrap().latest.len() >= expected
    })
    .await
    .map_err(|e| {
        let seen = status.lock().unwrap().latest.len();
        format!("{e}: {seen} of {expected} (node, key) statuses seen")
    })?;
    let start_s = started.elapsed().as_secs_f64();
    let (cpu1, _) = own_usage();
    let after_start = etcd(&endpoint)?;

    // Steady: nothing changes; what etcd still does is the fleet's idle cost.
    let steady_puts0 = status.lock().unwrap().puts;
    tokio::time::sleep(Duration::from_secs(steady_s)).await;
    let steady = etcd(&endpoint)?;
    let (cpu2, _) = own_usage();
    let steady_secs = steady.at.duration_since(after_start.at).as_secs_f64();
    let steady_writes = (status.lock().unwrap().puts - steady_puts0) as f64 / steady_secs;

    // Changes of the shared key.
    let mut source_latency = Vec::new();
    let mut status_latency = Vec::new();
    let mut change_cpu = 0.0;
    let mut change_puts = 0.0;
    let mut change_secs = 0.0;
    for change in 1..=changes {
        let from = etcd(&endpoint)?;
        let put_at = Instant::now();
        let revision = client
            .put(SHARED, value(0, change), None)
            .await?
            .header()
            .map_or(0, |h| h.revision());
        until("change: every agent's source", || {
            seen.lock().unwrap().iter().all(|s| s.contains_key(&change))
        })
        .await?;
        until("change: every agent's status", || {
            let status = status.lock().unwrap();
            let shared = SHARED.to_string();
            status
                .latest
                .iter()
                .filter(|((_, key), rev)| *key == shared && **rev >= revision)
                .count()
                >= agents
        })
        .await?;
        let to = etcd(&endpoint)?;
        change_cpu += to.cpu_s - from.cpu_s;
        change_puts += to.puts - from.puts;
        change_secs += to.at.duration_since(from.at).as_secs_f64();
        source_latency.extend(
            seen.lock()
                .unwrap()
                .iter()
                .map(|s| s[&change].duration_since(put_at)),
        );
        {
            let status = status.lock().unwrap();
            let mut first: HashMap<&str, Instant> = HashMap::new();
            for (node, rev, at) in &status.shared {
                if *rev >= revision && *at >= put_at {
                    first.entry(node.as_str()).or_insert(*at);
                }
            }
            status_latency.extend(first.values().map(|at| at.duration_since(put_at)));
        }
        // Let the last status writes land before the next change.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let end = etcd(&endpoint)?;
    let (cpu3, rss) = own_usage();
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }

    source_latency.sort();
    status_latency.sort();
    let n = changes.max(1) as f64;
    let report = [
        ("agents", agents.to_string()),
        ("keys", keys.to_string()),
        ("start_s", format!("{start_s:.1}")),
        (
            "start_etcd_cpu_s",
            format!("{:.1}", after_start.cpu_s - before.cpu_s),
        ),
        ("steady_status_writes_per_s", format!("{steady_writes:.2}")),
        (
            "steady_lease_renewals_per_s",
            format!(
                "{:.1}",
                (steady.renewals - after_start.renewals) / steady_secs
            ),
        ),
        (
            "steady_etcd_cpu_pct",
            format!(
                "{:.1}",
                100.0 * (steady.cpu_s - after_start.cpu_s) / steady_secs
            ),
        ),
        (
            "source_p50_ms",
            format!("{:.0}", quantile(&source_latency, 0.5)),
        ),
        (
            "source_p99_ms",
            format!("{:.0}", quantile(&source_latency, 0.99)),
        ),
        (
            "source_max_ms",
            format!("{:.0}", quantile(&source_latency, 1.0)),
        ),
        (
            "status_p50_ms",
            format!("{:.0}", quantile(&status_latency, 0.5)),
        ),
        (
            "status_p99_ms",
            format!("{:.0}", quantile(&status_latency, 0.99)),
        ),
        (
            "status_max_ms",
            format!("{:.0}", quantile(&status_latency, 1.0)),
        ),
        ("change_puts", format!("{:.0}", change_puts / n)),
        ("change_etcd_cpu_s", format!("{:.2}", change_cpu / n)),
        ("change_s", format!("{:.1}", change_secs / n)),
        ("etcd_watchers", format!("{:.0}", end.watchers)),
        ("etcd_rss_mib", format!("{:.0}", end.rss_mib)),
        ("etcd_db_mib", format!("{:.1}", end.db_mib)),
        ("etcd_puts_total", format!("{:.0}", end.puts)),
        ("bench_cpu_start_s", format!("{:.1}", cpu1 - cpu0)),
        (
            "bench_cpu_steady_pct",
            format!("{:.1}", 100.0 * (cpu2 - cpu1) / steady_secs),
        ),
        ("bench_cpu_total_s", format!("{:.1}", cpu3 - cpu0)),
        ("bench_rss_mib", format!("{rss:.0}")),
    ];
    let line: Vec<String> = report.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
    Ok(())
}
