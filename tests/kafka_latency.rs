//! The patched rskafka (vendor/rskafka) does not stall on Nagle + delayed ACK.
//!
//! Unpatched, rskafka wrote each request as a 4-byte length and then the body on a socket
//! without TCP_NODELAY: requests of some sizes (lz4, 1,000 records of 100 bytes) waited
//! ≈ 44 ms each for the broker's delayed ACK. That stall is a fixed kernel timer
//! (≥ 40 ms), so a median below 20 ms separates "stalls" from "does not" with a wide
//! margin even on a loaded machine.

mod common;

use common::servers::Broker;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn produce_requests_do_not_wait_for_delayed_acks() {
    let broker = Broker::start_memory();
    common::kafka::create_topic(&broker.address(), "latency", 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let client = ClientBuilder::new(vec![broker.address()])
            .build()
            .await
            .unwrap();
        let partition = client
            .partition_client("latency", 0, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let record = |i: usize| Record {
            key: None,
            value: Some(format!("{i:08} {}", "v".repeat(91)).into_bytes()),
            headers: BTreeMap::new(),
            timestamp: chrono::Utc::now(),
        };
        let mut latencies = Vec::new();
        for (round, compression) in [(0, Compression::Lz4), (1, Compression::NoCompression)]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
            .map(|(i, (_, c))| (i, c))
        {
            let records: Vec<Record> = (0..if round % 2 == 0 { 1_000 } else { 100 })
                .map(record)
                .collect();
            let started = Instant::now();
            partition.produce(records, compression).await.unwrap();
            latencies.push(started.elapsed());
        }
        latencies
    });
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    println!(
        "produce latency: median {median:?}, max {:?}",
        latencies.last().unwrap()
    );
    assert!(
        median < Duration::from_millis(20),
        "median produce latency {median:?}: stalled on delayed ACK"
    );
}
