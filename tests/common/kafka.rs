//! Reading back what the agent shipped: with rskafka, and with an independent client
//! (librdkafka through PyPI's confluent-kafka, see tests/tools/consume.py).

use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use std::collections::BTreeMap;
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
    create_topic_with_configs(broker, topic, partitions, &[]);
}

/// Creates a topic with topic configs (`(name, value)`, e.g. `max.message.bytes`).
pub fn create_topic_with_configs(
    broker: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    runtime().block_on(async {
        let client = ClientBuilder::new(vec![broker.to_string()])
            .build()
            .await
            .unwrap();
        client
            .controller_client()
            .unwrap()
            .create_topic_with_configs(topic, partitions, 1, configs, 5_000)
            .await
            .unwrap();
    })
}

/// Reads every partition of `topic` from the start until at least `want` records were
/// read (or `timeout`), fetching from batch boundaries only (tansu returns nothing for a
/// fetch that starts inside a compressed batch).
pub fn consume(broker: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Consumed> {
    consume_in_fetches_of(broker, topic, want, timeout, 50_000_000)
}

/// `consume` with at most about `fetch_bytes` per fetch: tansu's sqlite storage answers a
/// fetch batch by batch, slowly, and a fetch of thousands of small batches outlasts the
/// 10 s fetch timeout.
pub fn consume_in_fetches_of(
    broker: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
    fetch_bytes: i32,
) -> Vec<Consumed> {
    let builder = ClientBuilder::new(vec![broker.to_string()]);
    consume_with(builder, topic, want, timeout, fetch_bytes)
}

/// [`consume_in_fetches_of`] with a client of the caller's making (e.g. with TLS).
pub fn consume_with(
    builder: ClientBuilder,
    topic: &str,
    want: usize,
    timeout: Duration,
    fetch_bytes: i32,
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
                let fetch = pc.fetch_records(*offset, 1..fetch_bytes, 200);
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
    super::servers::python_tool("consume.py", &[broker, topic, &want.to_string(), "60"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The records of `topic` as librdkafka reads them, each `{"key": ..., "value": ...,
/// "headers": {name: value}}` (an independent client; a repeated header name keeps its last value).
pub fn consume_json_with_librdkafka(
    broker: &str,
    topic: &str,
    want: usize,
) -> Vec<serde_json::Value> {
    let args = ["--json", broker, topic, &want.to_string(), "60"];
    super::servers::python_tool("consume.py", &args)
        .lines()
        .map(|line| serde_json::from_str(line).expect("consume.py --json prints JSON lines"))
        .collect()
}

/// The `sink:` body of a config shipping to `broker` with fast batching; `extra` adds
/// indented `kafka:` keys.
pub fn kafka_sink_yaml(broker: &str, extra: &str) -> String {
    format!(
        "  kind: kafka\n  kafka:\n    brokers: [\"{broker}\"]\n    linger: 5ms\n    request_timeout: 5s\n{extra}"
    )
}

/// A topic name unique to this test process.
pub fn unique_topic(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// The offset after the last record of `topic`/`partition` once nothing new arrived for
/// three fetches in a row, reading on from `from` (a batch boundary, e.g. 0 or an earlier
/// answer). Read, not asked: tansu's ListOffsets can lag behind what a fetch returns.
pub fn settled_end(broker: &str, topic: &str, partition: i32, from: i64) -> i64 {
    runtime().block_on(async {
        let client = ClientBuilder::new(vec![broker.to_string()])
            .build()
            .await
            .unwrap();
        let pc = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let (mut next, mut quiet) = (from, 0);
        while quiet < 3 {
            let fetch = pc.fetch_records(next, 1..1_000_000, 300);
            match tokio::time::timeout(Duration::from_secs(10), fetch).await {
                Ok(Ok((records, _))) if !records.is_empty() => {
                    next = records.last().unwrap().offset + 1;
                    quiet = 0;
                }
                _ => quiet += 1,
            }
        }
        next
    })
}

/// A Kafka-protocol proxy in front of a broker that enforces a record size limit as a
/// real Kafka does (tansu does not): a produce request over `max_request_bytes` (its whole
/// frame) is answered `MESSAGE_TOO_LARGE` (10) and not forwarded; everything else passes.
/// Produce versions 3 to 7 (rskafka's). Counts the requests by API key; `delay` holds the
/// requests of one API key (a slow broker). `close` cuts every connection and drops new
/// ones until `open`: the broker is out of the clients' reach while the test still
/// reaches it on its own port. Stopped with its connections on drop.
pub struct KafkaProxy {
    _runtime: tokio::runtime::Runtime,
    pub port: u16,
    /// Produce requests refused as too large.
    pub refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Requests passed on, by API key (3 Metadata, 32 DescribeConfigs, …).
    pub requests: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<i16, usize>>>,
    open: tokio::sync::watch::Sender<bool>,
    /// Requests held this long before they are passed on, by API key.
    delays: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<i16, Duration>>>,
}

impl KafkaProxy {
    pub fn start(port: u16, upstream: std::net::SocketAddr, max_request_bytes: usize) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        let requests = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let by_key = requests.clone();
        let (open, gate) = tokio::sync::watch::channel(true);
        let delays = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let delay_of = delays.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*gate.borrow() {
                    continue; // closed: the connection is dropped at once
                }
                let counter = counter.clone();
                let by_key = by_key.clone();
                let delay_of = delay_of.clone();
                let mut gate = gate.clone();
                tokio::spawn(async move {
                    let Ok(broker) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), broker.set_nodelay(true));
                    let (mut from_client, to_client) = client.into_split();
                    let (mut from_broker, mut to_broker) = broker.into_split();
                    let to_client = tokio::sync::Mutex::new(to_client);
                    // Broker → client, frame by frame (so that refusals never interleave).
                    let answers = async {
                        while let Some(frame) = read_frame(&mut from_broker).await {
                            if to_client.lock().await.write_all(&frame).await.is_err() {
                                return;
                            }
                        }
                    };
                    let requests = async {
                        while let Some(frame) = read_frame(&mut from_client).await {
                            let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                            *by_key.lock().unwrap().entry(api_key).or_insert(0) += 1;
                            let delay = delay_of.lock().unwrap().get(&api_key).copied();
                            if let Some(delay) = delay {
                                tokio::time::sleep(delay).await;
                            }
                            if api_key == 0 && frame.len() > max_request_bytes {
                                counter.fetch_add(1, Ordering::Relaxed);
                                let answer = too_large_answer(&frame);
                                if to_client.lock().await.write_all(&answer).await.is_err() {
                                    return;
                                }
                            } else if to_broker.write_all(&frame).await.is_err() {
                                return;
                            }
                        }
                    };
                    // Either side ending, or the gate closing, drops both connections.
                    tokio::select! {
                        () = answers => {}
                        () = requests => {}
                        _ = gate.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        async fn read_frame(from: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
            let mut length = [0u8; 4];
            from.read_exact(&mut length).await.ok()?;
            let mut frame = length.to_vec();
            frame.resize(4 + u32::from_be_bytes(length) as usize, 0);
            from.read_exact(&mut frame[4..]).await.ok()?;
            Some(frame)
        }
        KafkaProxy {
            _runtime: runtime,
            port,
            refused,
            requests,
            open,
            delays,
        }
    }

    /// A fresh in-memory broker (`Broker::start_memory_behind`) and this proxy in front
    /// of it, which the broker's metadata names: clients bootstrapped at either one come
    /// back through the proxy.
    pub fn with_memory_broker(max_request_bytes: usize) -> (super::servers::Broker, Self) {
        let port = super::free_port();
        let broker = super::servers::Broker::start_memory_behind(port);
        let upstream = broker.address().parse().unwrap();
        (broker, KafkaProxy::start(port, upstream, max_request_bytes))
    }

    /// Holds every later request with API key `api_key` for `delay` (a slow broker).
    pub fn delay(&self, api_key: i16, delay: Duration) {
        self.delays.lock().unwrap().insert(api_key, delay);
    }

    /// Cuts every connection through the proxy and drops new ones until [`open`](Self::open).
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Requests with API key `api_key` passed on so far.
    pub fn requests(&self, api_key: i16) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(&api_key)
            .copied()
            .unwrap_or(0)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The produce answer (versions 3 to 7) refusing the first partition of `request` (a
/// whole frame) with `MESSAGE_TOO_LARGE`.
fn too_large_answer(request: &[u8]) -> Vec<u8> {
    let mut at = 4;
    let mut take = |n: usize| {
        let bytes = &request[at..at + n];
        at += n;
        bytes
    };
    let i16_of = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
    let _api_key = take(2);
    let version = i16_of(take(2));
    let correlation_id = take(4).to_vec();
    let client_id = i16_of(take(2)).max(0) as usize;
    take(client_id);
    let transactional_id = i16_of(take(2)).max(0) as usize;
    take(transactional_id);
    take(2 + 4 + 4); // acks, timeout, topic count
    let name_len = i16_of(take(2)) as usize;
    let name = take(name_len).to_vec();
    take(4); // partition count
    let partition = take(4).to_vec();
    assert!((3..=7).contains(&version), "produce version {version}");

    let mut body = correlation_id;
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(name_len as i16).to_be_bytes());
    body.extend_from_slice(&name);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition);
    body.extend_from_slice(&10i16.to_be_bytes()); // MESSAGE_TOO_LARGE
    body.extend_from_slice(&(-1i64).to_be_bytes()); // base offset
    body.extend_from_slice(&(-1i64).to_be_bytes()); // log append time
    if version >= 5 {
        body.extend_from_slice(&(-1i64).to_be_bytes()); // log start offset
    }
    body.extend_from_slice(&0i32.to_be_bytes()); // throttle time
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}
