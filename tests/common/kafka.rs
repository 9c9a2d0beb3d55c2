//! Reading back what the agent shipped: with rskafka, and with an independent client
//! (librdkafka through PyPI's confluent-kafka, see tests/tools/consume.py).

use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// A record read back, with where it was.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

impl Consumed {
    pub fn value(&self) -> String {
        String::from_utf8_lossy(self.record.value.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn header(&self, name: &str) -> String {
        String::from_utf8_lossy(
            self.record
                .headers
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
        .into_owned()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Creates a topic through the Kafka protocol.
pub fn create_topic(broker: &str, topic: &str, partitions: i32) {
    runtime().block_on(async {
        let client = ClientBuilder::new(vec![broker.to_string()])
            .build()
            .await
            .unwrap();
        client
            .controller_client()
            .unwrap()
            .create_topic(topic, partitions, 1, 5_000)
            .await
            .unwrap();
    })
}

/// Reads every partition of `topic` from the start until at least `want` records were
/// read (or `timeout`), fetching from batch boundaries only (tansu returns nothing for a
/// fetch that starts inside a compressed batch).
pub fn consume(broker: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Consumed> {
    consume_with(
        ClientBuilder::new(vec![broker.to_string()]),
        topic,
        want,
        timeout,
    )
}

/// [`consume`] with a client of the caller's making (e.g. with TLS).
pub fn consume_with(
    builder: ClientBuilder,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    runtime().block_on(async {
        let client = builder.build().await.unwrap();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < want && Instant::now() < deadline {
            if next.is_empty() {
                // The topic may not exist yet (the agent creates it).
                let topics = client.list_topics().await.unwrap();
                if let Some(found) = topics.iter().find(|t| t.name == topic) {
                    next = found.partitions.iter().map(|&p| (p, 0)).collect();
                }
            }
            let mut progressed = false;
            for (&partition, offset) in next.iter_mut() {
                let pc = client
                    .partition_client(topic, partition, UnknownTopicHandling::Retry)
                    .await
                    .unwrap();
                let fetch = pc.fetch_records(*offset, 1..50_000_000, 200);
                let Ok(Ok((records, _high))) =
                    tokio::time::timeout(Duration::from_secs(10), fetch).await
                else {
                    continue;
                };
                for r in records {
                    *offset = r.offset + 1;
                    progressed = true;
                    out.push(Consumed {
                        partition,
                        offset: r.offset,
                        record: r.record,
                    });
                }
            }
            if !progressed {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        out
    })
}

/// The values of `topic` as librdkafka reads them (an independent client).
pub fn consume_with_librdkafka(broker: &str, topic: &str, want: usize) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/consume.py");
    let output = Command::new("python3")
        .args([script, broker, topic, &want.to_string(), "60"])
        .output()
        .expect("running python3 tests/tools/consume.py");
    assert!(
        output.status.success(),
        "librdkafka consumer failed (is confluent-kafka installed? run `make deps`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
