//! The `logcatch` command line: parses arguments and calls into the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use logcatch::config::Config;
use logcatch::source::config_file::specs;
use logcatch::spec::{self, SourceId, TailerSettings};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, as Vector and Fluent Bit use: what a catch-up after a Kafka outage freed goes
/// back to the system within seconds ([`JEMALLOC_CONF`]). mimalloc, the allocator before
/// it, kept it for good — 70–100 MiB after 200 files caught up, the RSS step of the soak
/// — and glibc malloc kept 18 MiB and spent more CPU per line (BENCHMARKS.md "Memory after
/// a catch-up"; tests `catching_up_through_kafka_leaves_no_memory_behind`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them): one background thread returns freed pages to the system a second
/// after they were freed (`dirty_decay_ms`; `muzzy_decay_ms: 0`: not kept lazily freed),
/// even when nothing allocates — without it, the memory went back only as the agent
/// allocated again (200 files caught up: 19 → 74 MiB, with it 19 → 28 MiB). One arena
/// (`narenas: 1`) instead of four per core: at full throughput into 64 partitions the
/// threads' arenas each kept their own free pages, peak RSS 90–100 MiB against 69–75
/// with one, for the same CPU (BENCHMARKS.md "Memory").
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: &[u8] =
    b"background_thread:true,max_background_threads:1,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "logcatch",
    version,
    about = "Tails declared log files into Kafka"
)]
struct Cli {
    /// Log output format (the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[arg(long, short, env = "LOGCATCH_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config and print the desired tailers after glob expansion.
    Check {
        #[arg(long, short, env = "LOGCATCH_CONFIG")]
        config: PathBuf,
    },
    /// Print a running agent's tailers (exit 1 when unreachable or not ready).
    Status {
        /// The agent's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:9733")]
        addr: String,
        /// `table` (like kubectl get) or `json` (the raw /status).
        #[arg(long, short, value_enum, default_value_t = StatusOutput::Table)]
        output: StatusOutput,
    },
    /// Print the records a running agent ships, after filters and templates, one JSON
    /// object a line (topic, key, headers, value, path, offset), until Ctrl-C or --limit.
    Tap {
        /// Only this topic's records.
        #[arg(long)]
        topic: Option<String>,
        /// Only the records of files matching this path or glob.
        #[arg(long)]
        path: Option<String>,
        /// Stop after this many records.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// The agent's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:9733")]
        addr: String,
    },
    /// Read and write the log declarations in etcd.
    Etcd {
        #[command(flatten)]
        connection: EtcdConnection,
        #[command(subcommand)]
        command: EtcdCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusOutput {
    Table,
    Json,
}

#[derive(clap::Args)]
struct EtcdConnection {
    /// Take endpoints, auth and TLS from this config's `etcd:` section.
    #[arg(long, short, global = true, env = "LOGCATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Comma-separated endpoints (override the config's).
    #[arg(long, global = true, value_delimiter = ',')]
    endpoints: Vec<String>,
}

#[derive(Subcommand)]
enum EtcdCommand {
    /// Validate a JSON array of {path, topic} and write it (from --file, or stdin).
    Put {
        key: String,
        #[arg(long, short)]
        file: Option<PathBuf>,
    },
    /// Print a key's value.
    Get { key: String },
    /// Delete a key (its logs stop being tailed).
    Del { key: String },
    /// List keys under a prefix with their values (invalid ones flagged).
    List {
        #[arg(default_value = "/")]
        prefix: String,
    },
    /// Show what every node does with a key's declaration, from the status the agents
    /// write back (etcd.status); exit 1 when a node reports an error for it.
    Status {
        key: String,
        /// Only this node's status.
        #[arg(long)]
        node: Option<String>,
        /// Where the agents write their status (default: the config's etcd.status.prefix).
        #[arg(long)]
        status_prefix: Option<String>,
        /// `table` (like kubectl get) or `json`.
        #[arg(long, short, value_enum, default_value_t = StatusOutput::Table)]
        output: StatusOutput,
    },
}

fn main() -> ExitCode {
    // No transparent huge pages for this process: with them, khugepaged fills every 2 MiB
    // range the heap ever touched, however little of it is in use — after the catch-up
    // that follows a Kafka outage, RSS grew by 130 MiB over ten minutes with nothing to
    // ship (mimalloc, which asked for them, BENCHMARKS.md "Soak"; a kernel in THP mode
    // `always` does it to any allocator's heap). The flag covers the whole process,
    // mappings made before it included; an older kernel without it only keeps the default.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => check(config),
        Command::Status { addr, output } => status(&addr, output),
        Command::Tap {
            topic,
            path,
            limit,
            addr,
        } => tap(&addr, topic.as_deref(), path.as_deref(), limit),
        Command::Etcd {
            connection,
            command,
        } => etcd(connection, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: logcatch's own errors already name their
/// cause in their message, `context` messages do not.
fn describe(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1).map(|c| c.to_string()) {
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn status(addr: &str, output: StatusOutput) -> anyhow::Result<()> {
    use logcatch::telemetry::client::{self, StatusError};
    let (code, body) = client::get(addr, "/status")?;
    anyhow::ensure!(code == 200, "agent at {addr}: GET /status answered {code}");
    let status: serde_json::Value =
        serde_json::from_str(&body).context("agent sent invalid /status JSON")?;
    match output {
        StatusOutput::Json => println!("{body}"),
        StatusOutput::Table => print!("{}", client::table(&status)),
    }
    let (code, reason) = client::get(addr, "/readyz")?;
    if code != 200 {
        return Err(StatusError::NotReady {
            addr: addr.to_string(),
            reason: reason.trim().trim_start_matches("not ready: ").to_string(),
        }
        .into());
    }
    Ok(())
}

/// Prints the agent's `/tap` lines as they come; counts records (not the `skipped` and
/// `error` lines) against `limit`.
fn tap(
    addr: &str,
    topic: Option<&str>,
    path: Option<&str>,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    use logcatch::telemetry::client;
    use std::io::Write;
    // A bad glob is refused here, before the agent is asked ("--path \"[\": invalid glob").
    logcatch::sink::tap::Filter::new(topic, path).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let mut records = 0;
    let mut out = std::io::stdout().lock();
    client::get_lines(addr, &client::tap_path(topic, path), |line| {
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // Whoever reads stdout went away (`| head`): done.
            return false;
        }
        if line.starts_with("{\"topic\"") {
            records += 1;
        }
        limit.is_none_or(|limit| records < limit)
    })?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rskafka logs every connection attempt at info: keep its warnings only.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rskafka=warn"));
    // Logs go to stderr: stdout belongs to the stdout sink.
    // Colours only on a terminal: a container's log or a file gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(logcatch::agent::run(&config))?;
    Ok(())
}

fn check(config_path: PathBuf) -> anyhow::Result<()> {
    let loaded = Config::load(&config_path)?;
    for warning in &loaded.warnings {
        eprintln!("warning: config {}: {warning}", config_path.display());
    }
    let config = loaded.config;
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let source: SourceId = logcatch::source::CONFIG_SOURCE.into();
    let declared = specs(&config.logs);
    let settings = TailerSettings::of(&config);
    let (desired, errors) = spec::expand([(&source, &declared[..])], &settings, &cwd);
    println!(
        "config {}: ok ({} declared logs)",
        config_path.display(),
        config.logs.len()
    );
    for e in &errors {
        println!("warning: {}: {}", e.path, e.message);
    }
    let width = desired
        .keys()
        .map(|id| id.topic.len())
        .max()
        .unwrap_or(5)
        .max(5);
    // The key as far as it does not depend on the record (`{{stream}}` does).
    let keys: Vec<String> = desired
        .iter()
        .map(|(id, tailer)| {
            let Some(template) = &tailer.settings.key else {
                return sink_key(&config, id);
            };
            let pod = logcatch::record::PodMeta::from_path(&id.path);
            template.render_partial(&logcatch::template::Context {
                node: &tailer.settings.node,
                pod: pod.as_ref().map(|p| p.names()),
                stream: None,
                fields: &tailer.settings.fields,
            })
        })
        .collect();
    let key_width = keys.iter().map(String::len).max().unwrap_or(3).max(3);
    println!(
        "{:<width$}  {:<key_width$}  {:<8}  {:<16}  PATH",
        "TOPIC", "KEY", "FILE", "FORMAT"
    );
    for ((id, tailer), key) in desired.iter().zip(&keys) {
        let state = if id.path.exists() {
            "exists"
        } else {
            "waiting"
        };
        let parsing = &tailer.settings.parsing;
        let mut format = parsing.format.as_str().to_string();
        if parsing.multiline.is_some() {
            format.push_str("+multiline");
        }
        println!(
            "{:<width$}  {key:<key_width$}  {:<8}  {:<16}  {}",
            id.topic,
            state,
            format,
            id.path.display()
        );
        if let Some(why) = &tailer.settings.fallback {
            println!("  fallback: {why}");
        }
        if !tailer.settings.fields.is_empty() {
            let fields: Vec<String> = tailer
                .settings
                .fields
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            println!("  fields: {}", fields.join(" "));
        }
    }
    Ok(())
}

/// The record key `sink.kafka.key` gives a tailer's records (no key template): `-` for
/// none, and for the other sinks (they have no key).
fn sink_key(config: &Config, id: &spec::TailerId) -> String {
    use logcatch::config::kafka::RecordKey;
    use logcatch::config::SinkKind;
    if config.sink.kind != SinkKind::Kafka {
        return "-".to_string();
    }
    match config.sink.kafka.key {
        RecordKey::None => "-".to_string(),
        RecordKey::Path => id.path.display().to_string(),
        RecordKey::Node => config.node_name(),
    }
}

fn etcd(connection: EtcdConnection, command: EtcdCommand) -> anyhow::Result<()> {
    use logcatch::source::etcd::admin::Admin;
    let mut config = match &connection.config {
        Some(path) => Config::load(path)?.config.etcd,
        None => logcatch::config::EtcdConfig::default(),
    };
    if !connection.endpoints.is_empty() {
        config.endpoints = connection.endpoints;
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut admin = Admin::connect(&config).await?;
        match command {
            EtcdCommand::Put { key, file } => {
                let value = match &file {
                    Some(path) => std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                    None => {
                        let mut value = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin(), &mut value)
                            .context("cannot read stdin")?;
                        value
                    }
                };
                let revision = admin.put(&key, &value).await?;
                println!("put {key} (revision {revision})");
            }
            EtcdCommand::Get { key } => println!("{}", admin.get(&key).await?),
            EtcdCommand::Del { key } => {
                admin.delete(&key).await?;
                println!("deleted {key}");
            }
            EtcdCommand::Status {
                key,
                node,
                status_prefix,
                output,
            } => {
                let mut status = config.status.clone();
                if let Some(prefix) = status_prefix {
                    status.prefix = prefix;
                }
                let gathered = admin.status(&status, &key, node.as_deref()).await?;
                match output {
                    StatusOutput::Json => println!("{}", serde_json::to_string_pretty(&gathered)?),
                    StatusOutput::Table => print!("{}", gathered.table()),
                }
                let failing = gathered.failing();
                anyhow::ensure!(
                    failing == 0,
                    "{failing} of {} nodes report errors for etcd key {key}",
                    gathered.nodes.len()
                );
            }
            EtcdCommand::List { prefix } => {
                for row in admin.list(&prefix).await? {
                    println!("{} {}", row.key, row.value.trim_end());
                    if let Some(problem) = row.problem {
                        println!("  invalid: {problem}");
                    }
                }
            }
        }
        Ok(())
    })
}
