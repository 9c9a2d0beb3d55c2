//! The JSON record value (`encoding: json`, docs/json-value.md): a batch's records
//! rewritten as one JSON object each — the members every record of the batch shares
//! written once, each record's after them into the batch's one new buffer, its message
//! escaped by `json_string` — and a value cut to fit a size limit while it stays a JSON
//! object.

use super::json_string;
use crate::encoding::{MEMBERS, SCHEMA};
use crate::record::{Batch, ParseError, RecordMeta};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;

/// Writes what serde_json writes for `value`: to a `Vec`, which cannot fail.
fn put(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(&mut *out, value).expect("serializing strings and maps to a Vec");
}

/// `,"name":` (the name needs no escaping: one of the agent's own members).
fn member(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Rewrites the records of `batch` (when its declaration asks for `encoding: json` and
/// they are not JSON values yet) as JSON values in one new buffer; `now` (ns since the
/// epoch) is the time of records without one of their own (raw files). The Kafka
/// encoder writes a batch's values straight into the request instead
/// ([`Values`]); this is for a value that must be cut, and for `logcatch tap`.
pub fn encode(batch: &mut Batch, node: &str, now: i64) {
    let Some(mut values) = Values::pending(batch, node, now) else {
        return;
    };
    // Escaping rarely adds much: room for the members and a little more.
    let capacity = batch.bytes() + batch.len() * (values.fixed + 96);
    batch.rewrite(capacity, |offset, line, meta, out| {
        let value = values.measure(offset, line, meta);
        values.write(out, offset, line, meta, value);
    });
    batch.json_values = true;
}

/// Whether the records of `batch` (to be JSON values, not yet written), each
/// `per_line` bytes more than its value (framing, key, headers and the value's members,
/// as `encode::record_overhead` counts them), fit `request` bytes. Counted from the
/// most a line's escapes can add where that is enough, else value by value.
pub fn fits(batch: &Batch, node: &str, request: usize, per_line: usize) -> bool {
    // A byte escaped is 6 at most (`\u001b`; U+FFFD for an invalid one is 3); a record's
    // own members, `parse_error` and `truncated`, are not among the members counted.
    const ESCAPED: usize = 6;
    const OWN: usize = r#","parse_error":"","truncated":"#.len() + ParseError::MAX_REASON_LEN + 10;
    if batch.bytes() * ESCAPED + batch.len() * (per_line + OWN) <= request {
        return true;
    }
    let Some(mut values) = Values::pending(batch, node, 0) else {
        return batch.bytes() + batch.len() * per_line <= request;
    };
    let framing = per_line.saturating_sub(record_overhead(batch, node));
    let mut bytes = 0;
    for (offset, line, meta) in batch.records() {
        bytes += values.measure(offset, line, meta).len + framing;
        if bytes > request {
            return false;
        }
    }
    true
}

/// Whether `batch`'s records are to be JSON values and are not yet.
pub fn pending(batch: &Batch) -> bool {
    batch.json.is_some() && !batch.json_values
}

/// The JSON values of one batch's records, written one at a time: the members every
/// record shares serialized once, and the members before a record's offset kept while
/// the time stays the same (a raw file's batch has one). Each value's length is known
/// before it is written ([`measure`](Self::measure)), so that the Kafka encoder writes
/// it straight into the request's record.
pub struct Values {
    /// `{"schema":"…","time":"`.
    lead: String,
    /// `,"node":…,"path":…` and the pod's, labels' and fields' members.
    head: Vec<u8>,
    tail: Vec<u8>,
    /// `,"NAME":` for `merge_json`.
    merge: Option<Vec<u8>>,
    /// What a record writes before its offset, for the time `prefix_time`.
    prefix: Vec<u8>,
    prefix_time: Option<i64>,
    clock: Clock,
    numbers: itoa::Buffer,
    /// The message `measure` escaped, for `write`.
    escaped: Vec<u8>,
    /// The offset `measure` was given, in digits, for `write`.
    offset: [u8; 20],
    offset_len: usize,
    /// The time of records without one of their own.
    now: i64,
    /// What a record writes besides its offset, stream, own members and message, and a
    /// little more.
    fixed: usize,
}

/// A record's value as [`Values::measure`] found it: its length, and whether its line is
/// merged as an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value {
    pub len: usize,
    line: Line,
}

/// How a record's line goes into its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// As the `message` string, copied as it is (`json_string::is_plain`).
    Plain,
    /// As the `message` string, escaped (by `measure`, into `Values::escaped`).
    Escaped,
    /// As an object under `merge_json`'s name.
    Merged,
}

impl Values {
    /// The values of `batch`'s records, when they are to be JSON and are not yet.
    pub fn pending(batch: &Batch, node: &str, now: i64) -> Option<Self> {
        if !pending(batch) {
            return None;
        }
        let json = batch.json.as_deref()?;
        let (head, tail) = shared_members(batch, node);
        let lead = format!("{{\"schema\":\"{SCHEMA}\",\"time\":\"");
        let merge = json.merge_json.as_deref().map(|name| {
            let mut member = b",".to_vec();
            put(&mut member, name);
            member.push(b':');
            member
        });
        let fixed = lead.len() + Clock::LEN + head.len() + tail.len() + 64;
        Some(Values {
            prefix: Vec::with_capacity(lead.len() + Clock::LEN + head.len() + 12),
            lead,
            head,
            tail,
            merge,
            prefix_time: None,
            clock: Clock::default(),
            numbers: itoa::Buffer::new(),
            escaped: Vec::new(),
            offset: [0; 20],
            offset_len: 0,
            now,
            fixed,
        })
    }

    /// The value of the record at `offset`: how long it is, exactly, and how its line goes
    /// in. [`write`](Self::write) it next (the members before the offset are made here).
    pub fn measure(&mut self, offset: u64, line: &[u8], meta: &RecordMeta) -> Value {
        let mut digits = itoa::Buffer::new();
        self.measure_digits(digits.format(offset).as_bytes(), line, meta)
    }

    /// [`measure`](Self::measure), the offset given in digits (as the caller wrote them
    /// for its header).
    #[inline]
    pub fn measure_digits(&mut self, digits: &[u8], line: &[u8], meta: &RecordMeta) -> Value {
        let time = meta.time.unwrap_or(self.now);
        if self.prefix_time != Some(time) {
            self.clock
                .prefix(time, &self.lead, &self.head, &mut self.prefix);
            self.prefix_time = Some(time);
        }
        self.offset[..digits.len()].copy_from_slice(digits);
        self.offset_len = digits.len();
        let mut len = self.prefix.len() + digits.len() + self.tail.len();
        if let Some(stream) = meta.stream.as_str() {
            len += r#","stream":"""#.len() + stream.len();
        }
        if let Some(error) = meta.error {
            len += r#","parse_error":"#.len() + json_string::len(error.reason().as_bytes());
        }
        if let Some(bytes) = meta.truncated_from {
            len += r#","truncated":"#.len() + self.numbers.format(bytes).len();
        }
        let (line, line_len) = match &self.merge {
            Some(member) if merges(line) => (Line::Merged, member.len() + line.trim_ascii().len()),
            _ if json_string::is_plain(line) => (Line::Plain, line.len() + 2),
            _ => {
                // Escaped once, here, and copied by `write` from a buffer still in cache:
                // cheaper than counting the escapes and escaping again.
                self.escaped.clear();
                json_string::put(&mut self.escaped, line);
                (Line::Escaped, self.escaped.len())
            }
        };
        len += match line {
            Line::Merged => line_len,
            Line::Plain | Line::Escaped => r#","message":"#.len() + line_len,
        };
        Value { len: len + 1, line }
    }

    /// Appends the value of the record at `offset`, as `measure` measured it just before.
    #[inline]
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        offset: u64,
        line: &[u8],
        meta: &RecordMeta,
        value: Value,
    ) {
        let start = out.len();
        // One reservation for what the record writes unless escaped (a message's
        // escapes and the rare members reserve for themselves).
        out.reserve(self.fixed + line.len());
        out.extend_from_slice(&self.prefix);
        debug_assert_eq!(
            &self.offset[..self.offset_len],
            self.numbers.format(offset).as_bytes()
        );
        out.extend_from_slice(&self.offset[..self.offset_len]);
        if let Some(stream) = meta.stream.as_str() {
            out.extend_from_slice(b",\"stream\":\"");
            out.extend_from_slice(stream.as_bytes());
            out.push(b'"');
        }
        if !self.tail.is_empty() {
            out.extend_from_slice(&self.tail);
        }
        record_members(out, meta, &mut self.numbers);
        match (value.line, &self.merge) {
            (Line::Merged, Some(member)) => {
                out.extend_from_slice(member);
                out.extend_from_slice(line.trim_ascii());
            }
            (Line::Plain, _) => {
                out.extend_from_slice(b",\"message\":");
                json_string::put_plain(out, line);
            }
            _ => {
                out.extend_from_slice(b",\"message\":");
                out.extend_from_slice(&self.escaped);
            }
        }
        out.push(b'}');
        debug_assert_eq!(out.len() - start, value.len, "a value as long as measured");
    }
}

/// What `encode` adds to each record of `batch` at least: the members besides the
/// message's text (a `stream` and the `message` name and quotes counted; an offset of 20
/// digits). A message's escapes add to it.
pub fn record_overhead(batch: &Batch, node: &str) -> usize {
    let (head, tail) = shared_members(batch, node);
    let schema = r#"{"schema":"","time":"","offset":,"stream":"stdout","message":""}"#;
    schema.len() + SCHEMA.len() + Clock::LEN + head.len() + 20 + tail.len()
}

/// The members every record of `batch` carries alike, serialized once: `node` and `path`
/// (after `time`), and the pod's, `labels` and `fields` (after `stream`).
fn shared_members(batch: &Batch, node: &str) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(64 + batch.path.as_os_str().len());
    member(&mut head, "node");
    put(&mut head, node);
    member(&mut head, "path");
    let path = batch.path.as_os_str().as_bytes();
    put(&mut head, &*String::from_utf8_lossy(path));
    let mut tail = Vec::new();
    if let Some(pod) = batch.pod.as_deref() {
        for (name, value) in [
            ("namespace", Some(&pod.namespace)),
            ("pod", Some(&pod.pod)),
            ("pod_uid", pod.pod_uid.as_ref()),
            ("container", Some(&pod.container)),
            ("container_id", pod.container_id.as_ref()),
        ] {
            if let Some(value) = value {
                member(&mut tail, name);
                put(&mut tail, value);
            }
        }
    }
    if let Some(labels) = batch.labels.as_deref().filter(|l| !l.is_empty()) {
        member(&mut tail, "labels");
        put(&mut tail, labels);
    }
    if let Some(fields) = batch.fields.as_deref().filter(|f| !f.is_empty()) {
        member(&mut tail, "fields");
        put(&mut tail, fields);
    }
    (head, tail)
}

/// `parse_error` and `truncated`, when the record has them.
fn record_members(out: &mut Vec<u8>, meta: &RecordMeta, numbers: &mut itoa::Buffer) {
    if let Some(error) = meta.error {
        member(out, "parse_error");
        put(out, error.reason());
    }
    if let Some(bytes) = meta.truncated_from {
        member(out, "truncated");
        out.extend_from_slice(numbers.format(bytes).as_bytes());
    }
}

/// Whether `line` goes in as a JSON object under `merge_json`'s name: it is, whole
/// (after blanks), one JSON object in UTF-8; else it is the `message` string (invalid
/// UTF-8 replaced by U+FFFD).
fn merges(line: &[u8]) -> bool {
    let object = line.trim_ascii();
    object.first() == Some(&b'{') && std::str::from_utf8(object).is_ok_and(is_json)
}

/// Whether `text` is one JSON value (checked without building it).
fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// RFC 3339 times with nanoseconds, as `format::format_time` writes them, without an
/// allocation a record: the date and time of day are formatted once a second (a time
/// like the one before is not written again at all: `encode` keeps the members before the
/// offset while the time stays the same).
#[derive(Default)]
struct Clock {
    second: Option<i64>,
    /// `2026-12-04T12:29:21.` for `second`.
    prefix: Vec<u8>,
}

impl Clock {
    const NANOS: i64 = 1_000_000_000;
    /// `2026-12-04T12:29:21.000000000Z`: the length of every time from year 0 to 9999.
    const LEN: usize = 30;

    /// Replaces `prefix` by `lead`, the time `nanos`, its closing quote, `head` and
    /// `,"offset":`.
    fn prefix(&mut self, nanos: i64, lead: &str, head: &[u8], prefix: &mut Vec<u8>) {
        prefix.clear();
        prefix.extend_from_slice(lead.as_bytes());
        self.write(nanos, prefix);
        prefix.push(b'"');
        prefix.extend_from_slice(head);
        member(prefix, "offset");
    }

    fn write(&mut self, nanos: i64, out: &mut Vec<u8>) {
        let (second, fraction) = (nanos.div_euclid(Self::NANOS), nanos.rem_euclid(Self::NANOS));
        if self.second != Some(second) {
            let whole = crate::format::format_time(second.saturating_mul(Self::NANOS));
            // `.000000000Z` follows the seconds.
            self.prefix.clear();
            self.prefix
                .extend_from_slice(&whole.as_bytes()[..whole.len() - 10]);
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        let mut digits = [b'0'; 9];
        let mut rest = fraction;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

/// A JSON value (as `encode` wrote it) cut to at most `room` bytes: its message cut, at a
/// character, as the `message` string (a merged object becomes its text there), with
/// `truncated`, the message's length in bytes before the first cut; the other members as
/// they were. Returns it and that length; `None` when not even an empty message fits.
pub fn cut(value: &[u8], room: usize, merge: Option<&str>) -> Option<(Vec<u8>, u32)> {
    let mut members: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(value).ok()?;
    let raw = merge
        .and_then(|name| members.remove(name))
        .or_else(|| members.remove("message"));
    // A string's text, or the merged object's as it was written.
    let text = match raw {
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(text) => text,
            Err(_) => raw.get().to_string(),
        },
        None => String::new(),
    };
    let before = match members.remove("truncated") {
        Some(raw) => serde_json::from_str::<u32>(raw.get()).ok()?,
        None => u32::try_from(text.len()).unwrap_or(u32::MAX),
    };
    // The members in the order `encode` writes them, the message last.
    let mut out = Vec::with_capacity(room);
    out.push(b'{');
    let mut numbers = itoa::Buffer::new();
    let names = MEMBERS.iter().copied().chain(
        members
            .keys()
            .map(String::as_str)
            .filter(|name| !MEMBERS.contains(name)),
    );
    for name in names {
        if name == "truncated" {
            out.extend_from_slice(b",\"truncated\":");
            out.extend_from_slice(numbers.format(before).as_bytes());
            continue;
        }
        if let Some(value) = members.get(name) {
            if out.len() > 1 {
                out.push(b',');
            }
            put(&mut out, name);
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    out.extend_from_slice(b",\"message\":\"");
    // What the message may take, its quotes and the closing brace written.
    let left = room.checked_sub(out.len() + 2)?;
    let (mut used, mut end) = (0, 0);
    for (at, c) in text.char_indices() {
        let escaped = escaped_len(c);
        if used + escaped > left {
            break;
        }
        used += escaped;
        end = at + c.len_utf8();
    }
    out.pop();
    put(&mut out, &text[..end]);
    out.push(b'}');
    Some((out, before))
}

/// The bytes serde_json writes for `c` in a string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        '\0'..='\u{1f}' => 6,
        _ => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::JsonValue;
    use crate::record::{Fields, Labels, ParseError, PodMeta, Stream};
    use std::path::Path;
    use std::sync::Arc;

    const NOW: i64 = 1_764_851_361_000_000_007;

    fn batch(merge: Option<&str>) -> Batch {
        let mut batch = Batch::new("t".into(), Path::new("/var/log/app.log").into());
        batch.json = Some(Arc::new(JsonValue {
            merge_json: merge.map(Box::from),
        }));
        batch
    }

    fn values(batch: &Batch) -> Vec<serde_json::Value> {
        batch
            .lines()
            .map(|(_, value)| serde_json::from_slice(value).expect("a JSON value"))
            .collect()
    }

    fn encoded(merge: Option<&str>, lines: &[&[u8]]) -> Vec<serde_json::Value> {
        let mut batch = batch(merge);
        for (i, line) in lines.iter().enumerate() {
            batch.push(i as u64 * 100, line);
        }
        encode(&mut batch, "node-1", NOW);
        assert!(batch.json_values);
        values(&batch)
    }

    #[test]
    fn a_raw_files_record_should_carry_the_read_time_node_path_and_offset() {
        let mut batch = batch(None);
        batch.push(1 << 40, b"GET /index.html 200");
        encode(&mut batch, "node-1", NOW);
        let (_, value) = batch.lines().next().unwrap();
        assert_eq!(
            std::str::from_utf8(value).unwrap(),
            r#"{"schema":"logcatch.v1","time":"2025-12-04T12:29:21.000000007Z","node":"node-1","path":"/var/log/app.log","offset":1099511627776,"message":"GET /index.html 200"}"#
        );
        // Encoded once: a second call leaves the values as they are.
        let before = batch.clone();
        encode(&mut batch, "node-2", 0);
        assert_eq!(
            batch.lines().collect::<Vec<_>>(),
            before.lines().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_container_logs_record_should_carry_its_pod_stream_time_labels_and_fields() {
        let mut batch = batch(None);
        batch.pod = Some(Arc::new(PodMeta {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "nginx".into(),
            container_id: None,
            pod_uid: Some("0b6e-11ef".into()),
        }));
        batch.labels = Some(Arc::new(Labels::from([("owner".into(), "team-a".into())])));
        batch.fields = Some(Arc::new(Fields::from([(
            "cluster".into(),
            "prod \"eu\"".into(),
        )])));
        let meta = RecordMeta {
            stream: Stream::Stderr,
            time: Some(1_764_000_000_123_456_789),
            error: None,
            truncated_from: None,
        };
        batch.push_with(7, b"boom", meta);
        let bad = RecordMeta {
            error: Some(ParseError::CriTime),
            ..RecordMeta::default()
        };
        batch.push_with(20, b"garbage", bad);
        encode(&mut batch, "node-1", NOW);
        let values = values(&batch);
        assert_eq!(
            values[0],
            serde_json::json!({
                "schema": "logcatch.v1",
                "time": "2025-11-24T16:00:00.123456789Z",
                "node": "node-1",
                "path": "/var/log/app.log",
                "offset": 7,
                "stream": "stderr",
                "namespace": "shop",
                "pod": "web-0",
                "pod_uid": "0b6e-11ef",
                "container": "nginx",
                "labels": {"owner": "team-a"},
                "fields": {"cluster": "prod \"eu\""},
                "message": "boom",
            })
        );
        assert_eq!(values[1]["parse_error"], ParseError::CriTime.reason());
        assert_eq!(values[1]["time"], "2025-12-04T12:29:21.000000007Z");
        assert!(values[1].get("stream").is_none());
    }

    #[test]
    fn messages_should_be_escaped_and_invalid_utf8_replaced() {
        let lines: [&[u8]; 5] = [
            b"quote \" backslash \\ tab \t nul \0 esc \x1b",
            "caf\u{e9} \u{1F600} \u{2028}".as_bytes(),
            b"bad \xff\xfe bytes",
            b"",
            b"{\"not\": \"merged without merge_json\"}",
        ];
        let values = encoded(None, &lines);
        let messages: Vec<_> = values.iter().map(|v| v["message"].clone()).collect();
        assert_eq!(
            messages,
            [
                "quote \" backslash \\ tab \t nul \0 esc \x1b",
                "caf\u{e9} \u{1F600} \u{2028}",
                "bad \u{FFFD}\u{FFFD} bytes",
                "",
                "{\"not\": \"merged without merge_json\"}",
            ]
        );
    }

    #[test]
    fn record_overhead_should_bound_what_a_plain_message_gains() {
        let mut batch = batch(None);
        batch.pod = Some(Arc::new(PodMeta {
            namespace: "payments".into(),
            pod: "api-0".into(),
            container: "server".into(),
            container_id: Some("0123".repeat(16)),
            pod_uid: Some("0b6e-11ef".into()),
        }));
        batch.fields = Some(Arc::new(Fields::from([("team".into(), "pay".into())])));
        let lines: [&[u8]; 3] = [b"", b"GET /index.html 200", &[b'x'; 300]];
        for (i, line) in lines.iter().enumerate() {
            let meta = RecordMeta {
                stream: Stream::Stderr,
                time: Some(NOW),
                ..RecordMeta::default()
            };
            batch.push_with(u64::MAX - i as u64, line, meta);
        }
        let overhead = record_overhead(&batch, "node-1");
        let before: Vec<usize> = batch.lines().map(|(_, l)| l.len()).collect();
        encode(&mut batch, "node-1", NOW);
        for ((_, value), len) in batch.lines().zip(before) {
            let added = value.len() - len;
            assert!(added <= overhead, "{added} > {overhead}");
            assert!(added + 8 >= overhead, "{added} far below {overhead}");
        }
    }

    #[test]
    fn merge_json_should_put_an_object_under_its_name_and_leave_anything_else_a_string() {
        let lines: [&[u8]; 7] = [
            br#"  {"level": "info", "n": 1.50, "nested": {"a": [1, null]}}  "#,
            br#"{"level": "info""#,
            b"[1, 2]",
            b"42",
            br#"{"a": 1} {"b": 2}"#,
            b"{\"bad utf8\": \"\xff\"}",
            b"plain text",
        ];
        let values = encoded(Some("log"), &lines);
        assert_eq!(
            values[0]["log"],
            serde_json::json!({"level": "info", "n": 1.50, "nested": {"a": [1, null]}})
        );
        assert!(values[0].get("message").is_none());
        for (value, line) in values.iter().zip(lines).skip(1) {
            assert!(value.get("log").is_none(), "{value}");
            let text = String::from_utf8_lossy(line);
            assert_eq!(value["message"], *text, "a string as it is");
        }
        // Merged under `message` itself: an object there, or a string.
        let values = encoded(Some("message"), &[br#"{"k": "v"}"#, b"text"]);
        assert_eq!(values[0]["message"], serde_json::json!({"k": "v"}));
        assert_eq!(values[1]["message"], "text");
    }

    #[test]
    fn a_merged_object_keeps_its_numbers_as_written() {
        let mut batch = batch(Some("log"));
        batch.push(0, br#"{"big": 123456789012345678901234567890, "f": 1.0e3}"#);
        encode(&mut batch, "n", NOW);
        let (_, value) = batch.lines().next().unwrap();
        let text = std::str::from_utf8(value).unwrap();
        assert!(
            text.ends_with(r#","log":{"big": 123456789012345678901234567890, "f": 1.0e3}}"#),
            "{text}"
        );
    }

    proptest::proptest! {
        #[test]
        fn a_value_should_be_as_long_as_measured(
            line in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'"'),
                    proptest::strategy::Just(b'{'),
                    proptest::strategy::Just(b'}'),
                    0u8..0x20,
                    proptest::arbitrary::any::<u8>(),
                    b'a'..=b'z',
                ],
                0..120,
            ),
            object in r#"\{("[a-z]{1,5}": ?(1|"x\\"y"|null|\[\])(, )?){0,3}\}"#,
            time in proptest::option::of(proptest::arbitrary::any::<i64>()),
            offset in proptest::arbitrary::any::<u64>(),
            cut in proptest::option::of(proptest::arbitrary::any::<u32>()),
            merge in proptest::option::of("[a-z\"\\\\]{1,8}"),
        ) {
            let mut batch = batch(merge.as_deref());
            batch.fields = Some(Arc::new(Fields::from([("k".into(), "v\"".into())])));
            let meta = RecordMeta {
                stream: Stream::Stderr,
                time,
                error: Some(ParseError::CriTime),
                truncated_from: cut,
            };
            let mut values = Values::pending(&batch, "node", NOW).expect("pending");
            for line in [&line[..], object.as_bytes()] {
                let value = values.measure(offset, line, &meta);
                let mut out = b"before".to_vec();
                values.write(&mut out, offset, line, &meta, value);
                proptest::prop_assert_eq!(out.len() - 6, value.len);
                let parsed: serde_json::Value = serde_json::from_slice(&out[6..]).expect("JSON");
                proptest::prop_assert_eq!(&parsed["offset"], &serde_json::json!(offset));
            }
        }
    }

    #[test]
    fn the_clock_should_write_what_format_time_writes() {
        let mut clock = Clock::default();
        for nanos in [
            0,
            1,
            999_999_999,
            NOW,
            NOW,
            NOW + 1,
            NOW + 1,
            NOW + 1_000_000_000,
            -1,
            -1_000_000_001,
            1_764_000_000_123_456_789,
        ] {
            let mut out = Vec::new();
            clock.write(nanos, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                crate::format::format_time(nanos),
                "{nanos}"
            );
        }
    }

    #[test]
    fn cut_should_keep_a_valid_object_within_the_room_with_the_length_before() {
        let long = "é\"\n".repeat(1000);
        let mut batch = batch(Some("log"));
        batch.labels = Some(Arc::new(Labels::from([("owner".into(), "a".into())])));
        batch.push(5, long.as_bytes());
        let object = format!(r#"{{"msg": "{}"}}"#, "x".repeat(500));
        batch.push(9, object.as_bytes());
        encode(&mut batch, "node-1", NOW);
        let values: Vec<Vec<u8>> = batch.lines().map(|(_, v)| v.to_vec()).collect();
        for (value, before) in values.iter().zip([long.len(), object.len()]) {
            for room in [value.len() - 1, 400, 250] {
                let (value_cut, from) = cut(value, room, Some("log")).expect("fits");
                assert!(value_cut.len() <= room, "{} > {room}", value_cut.len());
                assert_eq!(from as usize, before);
                let parsed: serde_json::Value = serde_json::from_slice(&value_cut).expect("JSON");
                assert_eq!(parsed["truncated"], before);
                assert_eq!(
                    parsed["offset"],
                    serde_json::from_slice::<serde_json::Value>(value).unwrap()["offset"]
                );
                assert_eq!(parsed["labels"]["owner"], "a");
                assert!(parsed.get("log").is_none());
                let message = parsed["message"].as_str().expect("a string");
                assert!(!message.is_empty() && message.len() < before);
                // Nearly all the room is used (a character is at most 6 bytes escaped).
                assert!(value_cut.len() + 6 >= room, "{} of {room}", value_cut.len());
                // Written in the order `encode` writes them, the message last.
                let text = String::from_utf8(value_cut.clone()).unwrap();
                assert!(
                    text.starts_with(r#"{"schema":"logcatch.v1","time":"#),
                    "{text}"
                );
                // Cut again, smaller: the first length stays.
                let (again, from) = cut(&value_cut, room - 50, Some("log")).expect("fits");
                assert_eq!(from as usize, before);
                assert!(again.len() <= room - 50);
            }
            // Not even the members fit: no cut.
            assert_eq!(cut(value, 100, Some("log")), None);
        }
    }
}
