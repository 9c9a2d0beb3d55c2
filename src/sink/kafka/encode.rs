//! A batch's Kafka records: value = the line, key and headers as configured, encoded
//! straight from the batch into rskafka's wire format; and the most bytes that adds.

use super::error::Error;
use crate::config::kafka::{KafkaConfig, RecordKey};
use crate::format;
use crate::record::{Batch, Fields, ParseError, Stream};
use crate::sink::json_value;
use crate::template::{Context, Template};
use chrono::Utc;
use rskafka::client::error::Error as ClientError;
use rskafka::record::EncodedRecords;
use std::cell::RefCell;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// Every header of the agent's own a record can carry, in name order: the order a record
/// carries them in, after the static fields (headers named as the fields, in name order;
/// no field name starts like these). The `k8s.*` headers come with a container log, the `label.*` ones with a declaration's
/// labels (in name order, between the `k8s.*` and `logcatch.*` ones), the node, offset and path with
/// `sink.kafka.headers`, the parse error, stream and time with a parsed format, the
/// length before a cut with a record cut to fit the topic's limit.
mod header {
    pub const CONTAINER: &str = "k8s.container";
    pub const CONTAINER_ID: &str = "k8s.container_id";
    pub const NAMESPACE: &str = "k8s.namespace";
    pub const POD: &str = "k8s.pod";
    /// Followed by the label's name.
    pub const LABEL: &str = "label.";
    pub const NODE: &str = "logcatch.node";
    pub const OFFSET: &str = "logcatch.offset";
    pub const PARSE_ERROR: &str = "logcatch.parse_error";
    pub const PATH: &str = "logcatch.path";
    pub const STREAM: &str = "logcatch.stream";
    pub const TIME: &str = "logcatch.time";
    pub const TRUNCATED: &str = "logcatch.truncated";
}

/// The most bytes encoding adds to a line of `batch` (what `encode` writes besides the
/// line): Kafka's record framing, the key, every header a record of the batch can carry
/// and, when its records are to be JSON values, the members every value has (not a
/// record's own `parse_error` and `truncated`, nor the escapes a line needs:
/// `producer::prepare` counts those). Splitting by it keeps a request's
/// records within `max_batch_bytes`.
pub fn record_overhead(config: &KafkaConfig, node: &str, batch: &Batch) -> usize {
    overhead(config, node, batch, batch.has_meta())
}

/// [`record_overhead`] once a record of `batch` is cut and marked (`logcatch.truncated`):
/// with room for every per-record header.
pub fn marked_record_overhead(config: &KafkaConfig, node: &str, batch: &Batch) -> usize {
    overhead(config, node, batch, true)
}

/// The most digits of an offset and of a length before a cut.
const U64_DIGITS: usize = u64::MAX.ilog10() as usize + 1;
const U32_DIGITS: usize = u32::MAX.ilog10() as usize + 1;

fn overhead(config: &KafkaConfig, node: &str, batch: &Batch, meta: bool) -> usize {
    // Length, value length, offset delta (5 bytes at most), timestamp delta (10),
    // attributes and header count (1).
    const FRAMING: usize = 5 + 5 + 5 + 10 + 1 + 1;
    // Kafka's lengths are zig-zag varints: 7 bits a byte.
    let varint = |n: usize| (usize::BITS - (2 * n).leading_zeros()).div_ceil(7).max(1) as usize;
    let path = batch.path.as_os_str().len();
    let key = match (&batch.key, config.key) {
        (Some(template), _) => rendered_keys(template, node, batch)
            .iter()
            .map(|k| k.as_ref().map_or(0, Vec::len))
            .max()
            .unwrap_or(0),
        (None, RecordKey::None) => 0,
        (None, RecordKey::Path) => path,
        (None, RecordKey::Node) => node.len(),
    };
    let mut bytes = FRAMING + varint(key) + key;
    if json_value::pending(batch) {
        bytes += json_value::record_overhead(batch, node);
    }
    // A header's name and value lengths (no name is built for it: a label's is the prefix
    // and its name).
    let mut header =
        |name: usize, value: usize| bytes += varint(name) + name + varint(value) + value;
    for (name, value) in batch.fields.iter().flat_map(|fields| fields.iter()) {
        header(name.len(), value.len());
    }
    if let Some(pod) = batch.pod.as_deref() {
        header(header::CONTAINER.len(), pod.container.len());
        header(
            header::CONTAINER_ID.len(),
            pod.container_id.as_ref().map_or(0, |id| id.len()),
        );
        header(header::NAMESPACE.len(), pod.namespace.len());
        header(header::POD.len(), pod.pod.len());
    }
    for (name, value) in batch.labels.iter().flat_map(|labels| labels.iter()) {
        header(header::LABEL.len() + name.len(), value.len());
    }
    if config.headers {
        header(header::NODE.len(), node.len());
        header(header::OFFSET.len(), U64_DIGITS);
        header(header::PATH.len(), path);
    }
    if meta {
        header(header::PARSE_ERROR.len(), ParseError::MAX_REASON_LEN);
        header(header::STREAM.len(), "stderr".len());
        header(header::TIME.len(), "1970-01-01T00:00:00.000000000Z".len());
        header(header::TRUNCATED.len(), U32_DIGITS);
    }
    bytes
}

/// A batch's key template rendered for a record without stream, one of stdout and one of
/// stderr (the only part of a key that varies within a file); `None` (no key) where a
/// variable has no value.
fn rendered_keys(template: &Template, node: &str, batch: &Batch) -> [Option<Vec<u8>>; 3] {
    let none = Fields::new();
    let fields = batch.fields.as_deref().unwrap_or(&none);
    [None, Some("stdout"), Some("stderr")].map(|stream| {
        let context = Context {
            node,
            pod: batch.pod.as_deref().map(|p| p.names()),
            stream,
            fields,
        };
        template.render(&context).ok().map(String::into_bytes)
    })
}

fn key_slot(stream: Stream) -> usize {
    match stream {
        Stream::Unknown => 0,
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

/// Appends the Kafka records of a batch to `out`: value = the line (a container log's
/// message), or with `encoding: json` its JSON value, written straight into `out`; key
/// and headers as configured. Container logs add the stream, the runtime's time (also
/// the record timestamp) and the pod; a line that could not be parsed says why. Records
/// are encoded straight from the batch, headers in name order; the headers every record
/// of the batch shares (the pod's, the node, the path) are encoded once.
pub fn encode(
    config: &KafkaConfig,
    node: &str,
    batch: &Batch,
    out: &mut EncodedRecords,
) -> Result<(), Error> {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.iter_mut().for_each(Headers::clear);
        encode_with(config, node, batch, out, scratch)
    })
}

thread_local! {
    /// The headers [`encode`] assembles, kept from batch to batch: grown from nothing for
    /// every batch they were a dozen reallocations of a batch of a few lines.
    static SCRATCH: RefCell<[Headers; 4]> = RefCell::default();
}

fn encode_with(
    config: &KafkaConfig,
    node: &str,
    batch: &Batch,
    out: &mut EncodedRecords,
    [before_offset, path_header, before_path, after_path]: &mut [Headers; 4],
) -> Result<(), Error> {
    let now = Utc::now();
    let path = batch.path.as_os_str().as_bytes();
    let templated = batch.key.as_deref().map(|t| rendered_keys(t, node, batch));
    let node_name = node;
    let node = node.as_bytes();
    let key = match config.key {
        RecordKey::None => None,
        RecordKey::Path => Some(path),
        RecordKey::Node => Some(node),
    };
    let with_headers = config.headers;
    let rejected = |offset: u64, e: ClientError| Error::Encode {
        path: batch.path.clone(),
        offset,
        source: Arc::new(e),
    };
    let first_offset = batch.lines().next().map_or(0, |(offset, _)| offset);
    // The shared headers that sort before the offset, and the path (which sorts after
    // the parse error).
    let mut shared_headers = || {
        for (name, value) in batch.fields.iter().flat_map(|fields| fields.iter()) {
            before_offset.put(name, value.as_bytes())?;
        }
        if let Some(pod) = batch.pod.as_deref() {
            before_offset.put(header::CONTAINER, pod.container.as_bytes())?;
            if let Some(id) = &pod.container_id {
                before_offset.put(header::CONTAINER_ID, id.as_bytes())?;
            }
            before_offset.put(header::NAMESPACE, pod.namespace.as_bytes())?;
            before_offset.put(header::POD, pod.pod.as_bytes())?;
        }
        for (name, value) in batch.labels.iter().flat_map(|labels| labels.iter()) {
            let name = format!("{}{name}", header::LABEL);
            before_offset.put(&name, value.as_bytes())?;
        }
        if with_headers {
            before_offset.put(header::NODE, node)?;
            path_header.put(header::PATH, path)?;
        }
        Ok(())
    };
    shared_headers().map_err(|e| rejected(first_offset, e))?;
    let (mut offset_text, mut numbers) = (itoa::Buffer::new(), itoa::Buffer::new());
    // A raw file's records are as old as their encoding, in the value as in the record.
    let nanos = now.timestamp_nanos_opt().unwrap_or(0);
    let mut values = json_value::Values::pending(batch, node_name, nanos);
    for (offset, line, meta) in batch.records() {
        before_path.clear();
        after_path.clear();
        // The offset's digits, for its header and its JSON value.
        let digits: &[u8] = if with_headers || values.is_some() {
            offset_text.format(offset).as_bytes()
        } else {
            b""
        };
        let mut record_headers = || {
            if with_headers {
                before_path.put(header::OFFSET, digits)?;
            }
            if let Some(error) = meta.error {
                before_path.put(header::PARSE_ERROR, error.reason().as_bytes())?;
            }
            if let Some(stream) = meta.stream.as_str() {
                after_path.put(header::STREAM, stream.as_bytes())?;
            }
            if let Some(time) = meta.time {
                after_path.put(header::TIME, format::format_time(time).as_bytes())?;
            }
            if let Some(bytes) = meta.truncated_from {
                after_path.put(header::TRUNCATED, numbers.format(bytes).as_bytes())?;
            }
            let parts = [&*before_offset, &*before_path, &*path_header, &*after_path];
            let count = parts.iter().map(|part| part.count).sum();
            let bytes = parts.map(|part| part.bytes.as_slice());
            let timestamp = meta
                .time
                .map_or(now, chrono::DateTime::from_timestamp_nanos);
            let key = match &templated {
                Some(keys) => keys[key_slot(meta.stream)].as_deref(),
                None => key,
            };
            match &mut values {
                Some(values) => {
                    let value = values.measure_digits(digits, line, meta);
                    let write = |out: &mut Vec<u8>| values.write(out, offset, line, meta, value);
                    out.push_written_value(timestamp, key, value.len, write, count, &bytes)
                }
                None => out.push_encoded_headers(timestamp, key, Some(line), count, &bytes),
            }
        };
        record_headers().map_err(|e| rejected(offset, e))?;
    }
    Ok(())
}

/// Record headers encoded one after the other, and how many.
#[derive(Default)]
struct Headers {
    bytes: Vec<u8>,
    count: usize,
}

impl Headers {
    fn put(&mut self, name: &str, value: &[u8]) -> Result<(), ClientError> {
        EncodedRecords::encode_header_bytes(&mut self.bytes, name.as_bytes())?;
        EncodedRecords::encode_header_bytes(&mut self.bytes, value)?;
        self.count += 1;
        Ok(())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{PodMeta, RecordMeta, Stream};
    use std::path::Path;

    #[test]
    fn record_overhead_should_bound_what_encoding_adds_to_every_line() {
        let config = KafkaConfig {
            key: RecordKey::Path,
            ..KafkaConfig::default()
        };
        let node = "node-with-a-long-name-1";
        let path = "/var/log/containers/web-7d9f_shop_nginx-0123456789abcdef.log";
        let mut batch = Batch::new("t".into(), Path::new(path).into());
        batch.pod = Some(Arc::new(PodMeta {
            namespace: "shop".into(),
            pod: "web-7d9f".into(),
            container: "nginx".into(),
            container_id: Some("0123456789abcdef".repeat(4)),
            pod_uid: None,
        }));
        let label = |i: usize| (format!("name-{i}"), "v".repeat(i * 10));
        batch.labels = Some(Arc::new((0..5).map(label).collect()));
        let field = |i: usize| (format!("field-{i}"), "f".repeat(i * 100));
        batch.fields = Some(Arc::new((0..4).map(field).collect()));
        // The most every part can take: the widest offset and time, the longest reason.
        for error in ParseError::ALL.into_iter().map(Some).chain([None]) {
            let meta = RecordMeta {
                stream: Stream::Stderr,
                time: Some(i64::MIN),
                error,
                truncated_from: Some(u32::MAX),
            };
            batch.push_with(u64::MAX, &[b'x'; 300], meta);
        }
        assert_bounded(&config, node, &batch, 128);
        // A raw file's lines: the bound is close (so requests stay near the limit).
        let mut raw = Batch::new("t".into(), Path::new(path).into());
        for offset in [0, 1 << 20, 1 << 40, u64::MAX] {
            raw.push(offset, &[b'x'; 100]);
        }
        assert_bounded(&config, node, &raw, 32);
    }

    #[test]
    fn json_values_should_be_written_into_the_records_as_json_value_writes_them() {
        let config = KafkaConfig::default();
        for merge in [None, Some("log")] {
            let mut batch = Batch::new("t".into(), Path::new("/var/log/a.log").into());
            batch.json = Some(Arc::new(crate::encoding::JsonValue {
                merge_json: merge.map(Box::from),
            }));
            let lines: [&[u8]; 6] = [
                b"GET /index.html 200 plain text, long enough for a block",
                b"quote \" backslash \\ tab \t nul \0 esc \x1b",
                b"bad \xff\xfe bytes",
                br#"  {"level": "info", "n": [1, 2]}  "#,
                b"",
                "caf\u{e9} \u{1F600}".as_bytes(),
            ];
            for (i, line) in lines.iter().enumerate() {
                let meta = RecordMeta {
                    stream: [Stream::Stdout, Stream::Unknown][i % 2],
                    time: Some(1_764_000_000_123_456_789 + i as i64),
                    error: (i == 2).then_some(ParseError::CriTime),
                    truncated_from: (i == 4).then_some(77),
                };
                batch.push_with(i as u64 * 1000, line, meta);
            }
            let mut records = EncodedRecords::default();
            encode(&config, "node-1", &batch, &mut records).unwrap();
            let values: Vec<Vec<u8>> = records
                .decode()
                .unwrap()
                .into_iter()
                .map(|r| r.value.unwrap())
                .collect();
            let mut written = batch.clone();
            json_value::encode(&mut written, "node-1", 0);
            let want: Vec<Vec<u8>> = written.lines().map(|(_, v)| v.to_vec()).collect();
            assert_eq!(values, want, "merge_json: {merge:?}");
            // Written values are not written again.
            let mut again = EncodedRecords::default();
            encode(&config, "node-1", &written, &mut again).unwrap();
            assert_eq!(again.decode().unwrap(), records.decode().unwrap());
        }
    }

    #[test]
    fn a_raw_files_records_should_encode_as_with_their_headers_one_by_one() {
        for key in [RecordKey::None, RecordKey::Path] {
            let config = KafkaConfig {
                key,
                ..KafkaConfig::default()
            };
            let path = "/var/log/app/web.log";
            let mut batch = Batch::new("t".into(), Path::new(path).into());
            let lines: [(u64, &[u8]); 4] = [
                (0, b"first"),
                (6, b""),
                (7, &[0xff; 300]),
                (u64::MAX - 9, b"last"),
            ];
            for (offset, line) in lines {
                batch.push(offset, line);
            }
            // A batch with every kind of header encoded first on this thread: the header
            // buffers `encode` keeps from batch to batch carry none of it over.
            let mut other = EncodedRecords::default();
            encode(&config, "node-1", &container_batch(), &mut other).expect("encodes");
            let before = Utc::now().timestamp_millis();
            let mut fast = EncodedRecords::default();
            encode(&config, "node-1", &batch, &mut fast).expect("encodes");
            let after = Utc::now().timestamp_millis();
            // The reference: each record with its three headers given as name and value,
            // stamped `now` (raw lines have no time of their own).
            let reference = |now: i64| {
                let now = chrono::DateTime::from_timestamp_millis(now).expect("a time");
                let mut want = EncodedRecords::default();
                for (offset, line) in lines {
                    let offset = offset.to_string();
                    let headers = [
                        ("logcatch.node", &b"node-1"[..]),
                        ("logcatch.offset", offset.as_bytes()),
                        ("logcatch.path", path.as_bytes()),
                    ];
                    let key = matches!(key, RecordKey::Path).then_some(path.as_bytes());
                    want.push(now, key, Some(line), headers.into_iter())
                        .expect("encodes");
                }
                want
            };
            // `encode` read the clock between `before` and `after`: the reference stamped
            // with that millisecond (Kafka's resolution), if any is equal.
            let want = (before..=after)
                .map(reference)
                .find(|want| *want == fast)
                .unwrap_or_else(|| reference(before));
            assert_eq!(fast.len(), 4);
            // Equal sets: the same encoded bytes, count and timestamps.
            assert_eq!(fast, want, "key {key:?}");
        }
    }

    const CONTAINER_LOG: &str = "/var/log/containers/web_shop_nginx-0123.log";

    /// A container log's batch with every kind of header: fields, pod, labels, stream,
    /// time, a parse error.
    fn container_batch() -> Batch {
        let path = CONTAINER_LOG;
        let mut batch = Batch::new("t".into(), Path::new(path).into());
        let labels = [("owner", "payments"), ("ticket", "PAY-1")];
        let labels = labels.map(|(k, v)| (k.to_string(), v.to_string()));
        batch.labels = Some(Arc::new(labels.into_iter().collect()));
        let fields = [("cluster", "prod-eu"), ("Team Name", "shop")];
        let fields = fields.map(|(k, v)| (k.to_string(), v.to_string()));
        batch.fields = Some(Arc::new(fields.into_iter().collect()));
        let pod = PodMeta {
            namespace: "shop".into(),
            pod: "web".into(),
            container: "nginx".into(),
            container_id: Some("0123".into()),
            pod_uid: None,
        };
        batch.pod = Some(Arc::new(pod));
        // Every record with its own time: the record timestamps then do not depend on
        // when each side encoded (records without one are the raw test's).
        let time = Some(1_764_000_000_123_456_789);
        let metas = [
            RecordMeta {
                time,
                ..RecordMeta::default()
            },
            RecordMeta {
                stream: Stream::Stderr,
                time,
                error: None,
                truncated_from: None,
            },
            RecordMeta {
                stream: Stream::Unknown,
                time,
                error: Some(ParseError::CriTime),
                truncated_from: None,
            },
        ];
        for (i, meta) in metas.into_iter().enumerate() {
            batch.push_with(i as u64 * 10, b"message", meta);
        }
        batch
    }

    #[test]
    fn a_container_logs_records_should_encode_as_with_their_headers_one_by_one() {
        let (path, batch) = (CONTAINER_LOG, container_batch());
        let mut encoded = EncodedRecords::default();
        encode(&KafkaConfig::default(), "node-1", &batch, &mut encoded).expect("encodes");
        // The reference: each record's headers given as names and values, in name order.
        let mut want = EncodedRecords::default();
        for (offset, line, meta) in batch.records() {
            let (offset, time) = (offset.to_string(), meta.time.map(format::format_time));
            let mut headers = vec![
                ("Team Name", &b"shop"[..]),
                ("cluster", b"prod-eu"),
                ("k8s.container", b"nginx"),
                ("k8s.container_id", b"0123"),
                ("k8s.namespace", b"shop"),
                ("k8s.pod", b"web"),
                ("label.owner", b"payments"),
                ("label.ticket", b"PAY-1"),
                ("logcatch.node", b"node-1"),
                ("logcatch.offset", offset.as_bytes()),
            ];
            if let Some(error) = meta.error {
                headers.push(("logcatch.parse_error", error.reason().as_bytes()));
            }
            headers.push(("logcatch.path", path.as_bytes()));
            if let Some(stream) = meta.stream.as_str() {
                headers.push(("logcatch.stream", stream.as_bytes()));
            }
            if let Some(time) = &time {
                headers.push(("logcatch.time", time.as_bytes()));
            }
            let timestamp = chrono::DateTime::from_timestamp_nanos(meta.time.expect("a time"));
            want.push(timestamp, None, Some(line), headers.into_iter())
                .expect("encodes");
        }
        assert_eq!(encoded.len(), 3);
        assert_eq!(
            encoded, want,
            "the same encoded bytes, count and timestamps"
        );
    }

    /// Encoding `batch` takes at most `record_overhead` a line, and at most `slack` less.
    fn assert_bounded(config: &KafkaConfig, node: &str, batch: &Batch, slack: usize) {
        let overhead = record_overhead(config, node, batch);
        let mut records = EncodedRecords::default();
        encode(config, node, batch, &mut records).expect("encodes");
        let bound = batch.bytes() + batch.len() * overhead;
        assert!(
            records.encoded_len() <= bound,
            "{} > {bound}",
            records.encoded_len()
        );
        let unused = (bound - records.encoded_len()) / batch.len();
        assert!(unused <= slack, "{unused} bytes a record unused");
    }
}
