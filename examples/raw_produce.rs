//! The Kafka baselines of `make bench`: a raw rskafka producer sending the lines of a file
//! as pre-built batches of 5,000 records to one partition, one request at a time (what
//! logcatch does per partition), with the same patched rskafka. Prints seconds taken.
//!
//! With `--headers NODE`, each record carries the headers logcatch adds to a raw file's
//! lines by default (`logcatch.node`, `logcatch.offset`, `logcatch.path`): the same
//! records as logcatch sends. By default the batches are `Record`s that rskafka's
//! `produce` encodes (and compresses) while the clock runs; with `--encoded` they are
//! encoded and compressed before the clock starts (`EncodedRecords`, as logcatch builds
//! them), so that only the broker and the wire are timed: the broker's limit for these
//! records, the baseline of every file → Kafka row (`--headers bench --encoded`;
//! BENCHMARKS.md, "How it is measured"). Without them: the former "ceiling".
//!
//! usage: raw_produce BROKER TOPIC FILE none|lz4|zstd|gzip|snappy [--headers NODE] [--encoded]

use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::{EncodedRecords, Record};
use std::collections::BTreeMap;
use std::time::Instant;

// The same allocator as logcatch (src/main.rs), so that the baseline is allocated alike.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "usage: raw_produce BROKER TOPIC FILE COMPRESSION [--headers NODE] [--encoded]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, broker, topic, file, compression, options @ ..] = &args[..] else {
        return Err(USAGE.into());
    };
    let (mut node, mut encoded) = (None, false);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        match option.as_str() {
            "--headers" => node = Some(options.next().ok_or(USAGE)?.as_str()),
            "--encoded" => encoded = true,
            other => return Err(format!("unknown option {other}; {USAGE}").into()),
        }
    }
    let compression = match compression.as_str() {
        "none" => Compression::NoCompression,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        other => return Err(format!("unknown compression {other}").into()),
    };
    let data = std::fs::read(file)?;
    let now = chrono::Utc::now();
    // `(offset, line)` of every line, in batches of 5,000.
    let mut offset = 0;
    let lines: Vec<(usize, &[u8])> = data
        .split(|&b| b == b'\n')
        .map(|line| {
            let start = offset;
            offset += line.len() + 1;
            (start, line)
        })
        .filter(|(_, line)| !line.is_empty())
        .collect();
    let batches = lines.chunks(5_000);

    let client = ClientBuilder::new(vec![broker.clone()]).build().await?;
    client
        .controller_client()?
        .create_topic(topic, 1, 1, 5_000)
        .await?;
    let partition = client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await?;

    // Pre-built: the batches exist before the clock starts.
    let elapsed = if encoded {
        let mut frozen = Vec::new();
        for batch in batches {
            let mut records = EncodedRecords::default();
            for &(offset, line) in batch {
                let offset = offset.to_string();
                let headers = node.map(|node| {
                    [
                        ("logcatch.node", node.as_bytes()),
                        ("logcatch.offset", offset.as_bytes()),
                        ("logcatch.path", file.as_bytes()),
                    ]
                });
                records.push(now, None, Some(line), headers.iter().flatten().copied())?;
            }
            frozen.push(records.freeze(compression)?);
        }
        let started = Instant::now();
        for batch in frozen {
            partition.produce_encoded(batch).await?;
        }
        started.elapsed()
    } else {
        let headers = |offset: usize| match node {
            None => BTreeMap::new(),
            Some(node) => BTreeMap::from([
                ("logcatch.node".to_owned(), node.as_bytes().to_vec()),
                (
                    "logcatch.offset".to_owned(),
                    offset.to_string().into_bytes(),
                ),
                ("logcatch.path".to_owned(), file.as_bytes().to_vec()),
            ]),
        };
        let built: Vec<Vec<Record>> = batches
            .map(|batch| {
                batch
                    .iter()
                    .map(|&(offset, line)| Record {
                        key: None,
                        value: Some(line.to_vec()),
                        headers: headers(offset),
                        timestamp: now,
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        for batch in built {
            partition.produce(batch, compression).await?;
        }
        started.elapsed()
    };
    println!("{:.3}", elapsed.as_secs_f64());
    Ok(())
}
