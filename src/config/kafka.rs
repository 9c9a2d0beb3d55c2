//! The `sink.kafka` section.

use crate::units;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// A stable hash of node + path: one partition per file keeps each file's order.
    File,
    RoundRobin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKey {
    None,
    Path,
    Node,
}

/// The least `max_message_bytes` may be when set: below it a record's headers alone may
/// not fit.
pub const MIN_MESSAGE_BYTES: u64 = 1024;

/// The default `producer_idle_timeout`. Long against `linger` and the gaps of any file
/// still written to, so a partition in use keeps its producer (a new one costs a task, a
/// partition client and a metadata look-up); short enough that the producers of a burst
/// over many partitions, or of a topic no longer written, are gone within a minute.
pub const PRODUCER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: Vec<String>,
    pub client_id: String,
    pub compression: Compression,
    #[serde(deserialize_with = "units::duration")]
    pub linger: Duration,
    #[serde(deserialize_with = "units::size")]
    pub max_batch_bytes: u64,
    #[serde(deserialize_with = "units::size")]
    pub max_in_flight_bytes: u64,
    /// The most bytes a record batch may take on the broker, overriding what the broker
    /// says (the topic's `max.message.bytes`); 0 asks the broker.
    #[serde(deserialize_with = "units::size")]
    pub max_message_bytes: u64,
    pub partitioning: Partitioning,
    pub key: RecordKey,
    /// `logcatch.path`, `logcatch.node`, `logcatch.offset` headers on every record.
    pub headers: bool,
    pub create_topics: bool,
    /// Partitions and replication factor of topics created by `create_topics`.
    pub topic_partitions: u32,
    pub topic_replication_factor: u16,
    #[serde(deserialize_with = "units::duration")]
    pub request_timeout: Duration,
    /// How long a partition's producer task waits for a batch before it ends, freeing
    /// what it holds; the partition's next batch starts a new one.
    #[serde(deserialize_with = "units::duration")]
    pub producer_idle_timeout: Duration,
    pub tls: TlsConfig,
    pub sasl: SaslConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.ca_file.as_os_str().is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// `""` (off), `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password_file: PathBuf,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            client_id: "logcatch".into(),
            compression: Compression::Lz4,
            linger: Duration::from_millis(5),
            max_batch_bytes: 1024 * 1024,
            max_in_flight_bytes: 64 * 1024 * 1024,
            max_message_bytes: 0,
            partitioning: Partitioning::File,
            key: RecordKey::None,
            headers: true,
            create_topics: false,
            topic_partitions: 1,
            topic_replication_factor: 1,
            request_timeout: Duration::from_secs(30),
            producer_idle_timeout: PRODUCER_IDLE_TIMEOUT,
            tls: TlsConfig::default(),
            sasl: SaslConfig::default(),
        }
    }
}

impl KafkaConfig {
    /// Checks what serde cannot; `(field below sink.kafka, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.brokers.is_empty() {
            return Err((
                "brokers".into(),
                "at least one broker address is needed".into(),
            ));
        }
        for (index, broker) in self.brokers.iter().enumerate() {
            let valid = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err((
                    format!("brokers[{index}]"),
                    format!("{broker:?} is not a host:port address"),
                ));
            }
        }
        if self.max_batch_bytes == 0 {
            return Err(("max_batch_bytes".into(), "must be at least 1".into()));
        }
        if self.max_message_bytes != 0 && self.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err((
                "max_message_bytes".into(),
                format!(
                    "must be 0 (ask the broker) or at least {MIN_MESSAGE_BYTES} bytes, \
                     room for a record's headers"
                ),
            ));
        }
        if self.max_in_flight_bytes < self.max_batch_bytes {
            return Err((
                "max_in_flight_bytes".into(),
                "must be at least max_batch_bytes".into(),
            ));
        }
        // The budget's permits are taken up to 32 bits at a time (a flush takes them all).
        if self.max_in_flight_bytes > u64::from(u32::MAX) {
            return Err((
                "max_in_flight_bytes".into(),
                "must be less than 4GiB".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(("request_timeout".into(), "must be greater than 0".into()));
        }
        if self.producer_idle_timeout.is_zero() {
            return Err((
                "producer_idle_timeout".into(),
                "must be greater than 0".into(),
            ));
        }
        if self.topic_partitions == 0 || self.topic_replication_factor == 0 {
            return Err((
                "topic_partitions".into(),
                "partitions and replication factor must be at least 1".into(),
            ));
        }
        let tls = &self.tls;
        if tls.cert_file.as_os_str().is_empty() != tls.key_file.as_os_str().is_empty() {
            return Err((
                "tls.key_file".into(),
                "cert_file and key_file go together".into(),
            ));
        }
        if !tls.cert_file.as_os_str().is_empty() && !tls.enabled() {
            return Err((
                "tls.ca_file".into(),
                "a client certificate needs ca_file (TLS)".into(),
            ));
        }
        match self.sasl.mechanism.as_str() {
            "" => {}
            "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => {
                if self.sasl.username.is_empty() || self.sasl.password_file.as_os_str().is_empty() {
                    return Err((
                        "sasl".into(),
                        "username and password_file are needed with a mechanism".into(),
                    ));
                }
            }
            other => {
                return Err((
                    "sasl.mechanism".into(),
                    format!("{other:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
                ))
            }
        }
        Ok(())
    }
}
