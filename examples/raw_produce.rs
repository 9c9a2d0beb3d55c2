//! The Kafka ceiling for `make bench`: a raw rskafka producer sending the lines of a file
//! as pre-built batches of 5,000 records to one partition, one request at a time (what
//! logcatch does per partition), with the same patched rskafka. Prints seconds taken.
//! With NODE, each record carries the headers logcatch adds to a raw file's lines by
//! default (`logcatch.node`, `logcatch.offset`, `logcatch.path`): the same records
//! through rskafka's `Record` API, whose per-record header encoding bounds it rather
//! than the broker (BENCHMARKS.md, "Reading the recorded run").
//!
//! usage: raw_produce BROKER TOPIC FILE none|lz4|zstd|gzip|snappy [NODE]

use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use std::collections::BTreeMap;
use std::time::Instant;

// The same allocator as logcatch, so that the ceiling is not held back by glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (broker, topic, file, compression, node) = match &args[..] {
        [_, broker, topic, file, compression] => (broker, topic, file, compression, None),
        [_, broker, topic, file, compression, node] => {
            (broker, topic, file, compression, Some(node))
        }
        _ => return Err("usage: raw_produce BROKER TOPIC FILE COMPRESSION [NODE]".into()),
    };
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
    // Pre-built: the records exist before the clock starts.
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
    let mut offset = 0;
    let batches: Vec<Vec<Record>> = data
        .split(|&b| b == b'\n')
        .map(|line| {
            let start = offset;
            offset += line.len() + 1;
            (start, line)
        })
        .filter(|(_, line)| !line.is_empty())
        .map(|(start, line)| Record {
            key: None,
            value: Some(line.to_vec()),
            headers: headers(start),
            timestamp: now,
        })
        .collect::<Vec<_>>()
        .chunks(5_000)
        .map(<[Record]>::to_vec)
        .collect();
    let client = ClientBuilder::new(vec![broker.clone()]).build().await?;
    client
        .controller_client()?
        .create_topic(topic, 1, 1, 5_000)
        .await?;
    let partition = client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await?;
    let started = Instant::now();
    for batch in batches {
        partition.produce(batch, compression).await?;
    }
    println!("{:.3}", started.elapsed().as_secs_f64());
    Ok(())
}
