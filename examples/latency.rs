//! Append → consumable latency for `make bench`: writes timestamped lines at a fixed rate
//! and reads them back from Kafka, reporting percentiles of (time read back − time
//! written). Every line must arrive exactly once, or it fails.
//!
//! usage: latency file   BROKER TOPIC RATE SECONDS FILE   lines appended to FILE (logcatch
//!                                                       ships them to TOPIC)
//!        latency direct BROKER TOPIC RATE SECONDS        the baseline: the same lines
//!                                                       produced straight to TOPIC by rskafka
//!                                                       (lz4, 5 ms linger like logcatch's
//!                                                       default, one request in flight)
//!
//! Prints `p50_ms=… p99_ms=… max_ms=… lines=…`. The writer wakes every millisecond and
//! writes the lines due by then in one `write`; each line carries its sequence number
//! and the wall-clock time (ns) taken just before that write.

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Calls `emit` once per tick with the lines due by then (`seq wall_ns padding\n`),
/// paced to `rate` lines per second for `seconds`.
fn write_paced(rate: u64, seconds: u64, mut emit: impl FnMut(Vec<u8>)) -> u64 {
    let total = rate * seconds;
    let started = Instant::now();
    let mut seq = 0u64;
    while seq < total {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        if due > seq {
            let stamp = now_ns();
            let mut chunk = Vec::with_capacity((due - seq) as usize * 100);
            for s in seq..due {
                // About 100 bytes per line, like the throughput benchmarks.
                writeln!(chunk, "{s:010} {stamp:020} {}", "x".repeat(67)).expect("vec write");
            }
            emit(chunk);
            seq = due;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    total
}

/// Reads TOPIC partition 0 from offset 0 until `total` lines arrived; returns latencies
/// (ns) in sequence order. Fails on a duplicate, a gap, or a timeout.
async fn consume(
    partition: Arc<PartitionClient>,
    total: u64,
    deadline: Instant,
) -> Result<Vec<u64>, Error> {
    let mut latencies = vec![u64::MAX; total as usize];
    let mut seen = 0u64;
    let mut fetches = 0u64;
    let mut offset = 0i64;
    // How long the broker may hold a fetch open waiting for data (LATENCY_FETCH_WAIT_MS).
    let max_wait: i32 = std::env::var("LATENCY_FETCH_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    while seen < total {
        if Instant::now() > deadline {
            return Err(format!("timed out: {seen} of {total} lines arrived").into());
        }
        let (records, _high) = partition
            .fetch_records(offset, 1..50_000_000, max_wait)
            .await?;
        let arrived = now_ns();
        if records.is_empty() {
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        for r in records {
            offset = r.offset + 1;
            let value = r.record.value.unwrap_or_default();
            let text = std::str::from_utf8(&value)?;
            let mut fields = text.split(' ');
            let seq: usize = fields.next().ok_or("empty record")?.parse()?;
            let stamp: u64 = fields.next().ok_or("no timestamp")?.parse()?;
            let slot = latencies
                .get_mut(seq)
                .ok_or_else(|| format!("unexpected line {seq}"))?;
            if *slot != u64::MAX {
                return Err(format!("line {seq} arrived twice").into());
            }
            *slot = arrived.saturating_sub(stamp);
            seen += 1;
        }
        fetches += 1;
    }
    eprintln!("{fetches} fetches returned records");
    Ok(latencies)
}

async fn partition(broker: &str, topic: &str, create: bool) -> Result<PartitionClient, Error> {
    let client = ClientBuilder::new(vec![broker.to_string()]).build().await?;
    if create {
        let created = client
            .controller_client()?
            .create_topic(topic, 1, 1, 5_000)
            .await;
        match created {
            // The agent (`create_topics: true`) may have made it first: it asks for its
            // topics as its tailers start.
            Err(rskafka::client::error::Error::ServerError {
                protocol_error: rskafka::client::error::ProtocolError::TopicAlreadyExists,
                ..
            }) => {}
            other => other?,
        }
    }
    Ok(client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: latency file|direct BROKER TOPIC RATE SECONDS [FILE]";
    let (mode, broker, topic) = match &args[..] {
        [_, mode, broker, topic, _, _, ..] => (mode.as_str(), broker.clone(), topic.clone()),
        _ => return Err(usage.into()),
    };
    let rate: u64 = args[4].parse()?;
    let seconds: u64 = args[5].parse()?;
    let total = rate * seconds;
    let reader = Arc::new(partition(&broker, &topic, true).await?);
    let deadline = Instant::now() + Duration::from_secs(seconds + 120);
    let consumer = tokio::spawn(consume(reader, total, deadline));
    match mode {
        "file" => {
            let path = args.get(6).ok_or(usage)?.clone();
            tokio::task::spawn_blocking(move || {
                let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
                write_paced(rate, seconds, |chunk| {
                    file.write_all(&chunk).expect("append to the log file")
                });
                Ok::<_, std::io::Error>(())
            })
            .await??;
        }
        "direct" => {
            let producer = partition(&broker, &topic, false).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
            let sender = tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    // Linger like logcatch's default (`linger: 5ms`): one record per
                    // request would make a baseline no shipper uses.
                    let mut chunks = vec![first];
                    let until = tokio::time::Instant::now() + Duration::from_millis(5);
                    while let Ok(Some(more)) = tokio::time::timeout_at(until, rx.recv()).await {
                        chunks.push(more);
                    }
                    let now = chrono::Utc::now();
                    let records = chunks
                        .iter()
                        .flat_map(|c| c.split(|&b| b == b'\n').filter(|l| !l.is_empty()))
                        .map(|line| Record {
                            key: None,
                            value: Some(line.to_vec()),
                            headers: BTreeMap::new(),
                            timestamp: now,
                        })
                        .collect();
                    producer.produce(records, Compression::Lz4).await?;
                }
                Ok::<_, rskafka::client::error::Error>(())
            });
            tokio::task::spawn_blocking(move || {
                write_paced(rate, seconds, |chunk| tx.send(chunk).expect("sender alive"))
            })
            .await?;
            sender.await??;
        }
        _ => return Err(usage.into()),
    }
    let mut latencies = consumer.await??;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1e6;
    println!(
        "p50_ms={:.2} p99_ms={:.2} max_ms={:.2} lines={}",
        at(0.5),
        at(0.99),
        at(1.0),
        latencies.len()
    );
    Ok(())
}
