//! The record model every stage shares: a file's lines in a [`Batch`] (one buffer, no
//! allocation per line), each record's [`RecordMeta`] (stream, time, parse error) and a
//! container log's [`PodMeta`]. It imports nothing of the crate but the templates a
//! batch's key is rendered from and its JSON value settings: the format stage fills batches, the tailer submits them,
//! sinks encode them.

use crate::encoding::JsonValue;
use crate::template::{self, Template};
use std::path::Path;
use std::sync::Arc;

/// A declaration's labels (owner, ticket, ...): listed in `/status` and sent with every
/// record as Kafka headers `label.<name>`.
pub type Labels = std::collections::BTreeMap<String, String>;

/// Static fields (`cluster: prod-eu`, ...): the config's global `fields` merged with a
/// declaration's, sent with every record as Kafka headers named exactly as the fields.
pub type Fields = std::collections::BTreeMap<String, String>;

/// Where a container log line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// Only in the `/var/log/containers` name.
    pub container_id: Option<String>,
    /// Only in the `/var/log/pods` path.
    pub pod_uid: Option<String>,
}

impl PodMeta {
    /// The names templates use (`{{namespace}}`, `{{pod}}`, `{{container}}`).
    pub fn names(&self) -> template::Pod<'_> {
        template::Pod {
            namespace: &self.namespace,
            pod: &self.pod,
            container: &self.container,
        }
    }
}

/// The output stream a container line was written to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Stream {
    #[default]
    Unknown,
    Stdout,
    Stderr,
}

impl Stream {
    pub fn parse(text: &[u8]) -> Option<Stream> {
        match text {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Stream::Unknown => None,
            Stream::Stdout => Some("stdout"),
            Stream::Stderr => Some("stderr"),
        }
    }

    /// Index of the per-stream join state: stdout and stderr interleave in one file.
    pub(crate) fn index(self) -> usize {
        match self {
            Stream::Unknown | Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Why a line could not be parsed; it is shipped raw with this reason as the
/// `logcatch.parse_error` header / `parse_error` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseError {
    CriFields,
    CriTime,
    CriStream,
    CriTag,
    DockerJson,
    DockerTime,
    /// A fragment (CRI `P`, a Docker line without its newline) whose rest never came
    /// within `format::decoder::UNFINISHED_AFTER`: shipped as it is.
    Unfinished,
}

impl ParseError {
    pub const ALL: [ParseError; 7] = [
        ParseError::CriFields,
        ParseError::CriTime,
        ParseError::CriStream,
        ParseError::CriTag,
        ParseError::DockerJson,
        ParseError::DockerTime,
        ParseError::Unfinished,
    ];

    /// At least the length of every [`reason`](Self::reason) (a unit test checks), for
    /// sizing.
    pub const MAX_REASON_LEN: usize = 64;

    pub fn reason(self) -> &'static str {
        match self {
            ParseError::CriFields => "cri: expected `<time> <stdout|stderr> <P|F> <message>`",
            ParseError::CriTime => "cri: the time is not RFC 3339",
            ParseError::CriStream => "cri: the stream is not stdout or stderr",
            ParseError::CriTag => "cri: the tag is not P or F",
            ParseError::DockerJson => "docker: not a JSON object with a string \"log\" field",
            ParseError::DockerTime => "docker: the time is not RFC 3339",
            ParseError::Unfinished => "unfinished: the rest of the line did not come within 4 s",
        }
    }
}

/// What a record carries besides its bytes: the runtime's stream and time, or why the
/// line was shipped raw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordMeta {
    pub stream: Stream,
    /// Nanoseconds since the Unix epoch, as the container runtime wrote it.
    pub time: Option<i64>,
    pub error: Option<ParseError>,
    /// The record was cut by a sink to this many bytes (its whole length), to fit the
    /// most a record may take there (Kafka's `max.message.bytes`).
    pub truncated_from: Option<u32>,
}

impl RecordMeta {
    /// A record without metadata (a raw file's), to lend by reference: records hand out
    /// their metadata by reference because a `RecordMeta` copied (or made by `default()`)
    /// a record cost as much as the rest of writing a JSON value (BENCHMARKS.md, "JSON
    /// record values").
    pub const NONE: RecordMeta = RecordMeta {
        stream: Stream::Unknown,
        time: None,
        error: None,
        truncated_from: None,
    };

    pub fn is_empty(&self) -> bool {
        *self == RecordMeta::default()
    }
}

/// What [`Batch::fit`] changed: the records it cut and those it dropped, each as
/// `(offset, length before)`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fitted {
    pub cut: Vec<(u64, usize)>,
    pub dropped: Vec<(u64, usize)>,
}

/// Where a line sits in its batch's buffer, and where it started in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef {
    pub offset: u64,
    start: u32,
    end: u32,
}

/// Records of one file on one topic, stored back to back in one buffer (no allocation per
/// line on the hot path).
#[derive(Debug, Clone)]
pub struct Batch {
    pub topic: Arc<str>,
    pub path: Arc<Path>,
    /// The pod a container log file belongs to (the same for every record).
    pub pod: Option<Arc<PodMeta>>,
    /// The declaration's labels (the same for every record); `None` without any.
    pub labels: Option<Arc<Labels>>,
    /// The static fields (the same for every record); `None` without any.
    pub fields: Option<Arc<Fields>>,
    /// The declaration's record key template; `None`: the sink's own key setting.
    pub key: Option<Arc<Template>>,
    /// The declaration's JSON value settings; `None`: the value is the record's bytes.
    pub json: Option<Arc<JsonValue>>,
    /// The records' bytes are JSON values already (`sink/json_value.rs`): a cut must
    /// keep them valid JSON ([`fit_with`](Self::fit_with)).
    pub json_values: bool,
    data: Vec<u8>,
    lines: Vec<LineRef>,
    /// Per-record stream, time and parse error, parallel to `lines`; stays empty (and
    /// costs nothing) while no record has any, as with raw files.
    meta: Vec<RecordMeta>,
}

impl Batch {
    pub fn new(topic: Arc<str>, path: Arc<Path>) -> Self {
        Batch {
            topic,
            path,
            pod: None,
            labels: None,
            fields: None,
            key: None,
            json: None,
            json_values: false,
            data: Vec::new(),
            lines: Vec::new(),
            meta: Vec::new(),
        }
    }

    /// A record: its first byte's offset in the file and its bytes.
    #[inline]
    pub fn push(&mut self, offset: u64, line: &[u8]) {
        self.push_bytes(offset, line);
        if !self.meta.is_empty() {
            self.meta.push(RecordMeta::default());
        }
    }

    /// A record with its stream, time or parse error.
    pub fn push_with(&mut self, offset: u64, line: &[u8], meta: RecordMeta) {
        if meta.is_empty() && self.meta.is_empty() {
            return self.push_bytes(offset, line);
        }
        self.meta.resize(self.lines.len(), RecordMeta::default());
        self.push_bytes(offset, line);
        self.meta.push(meta);
    }

    #[inline]
    fn push_bytes(&mut self, offset: u64, line: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(line);
        self.lines.push(LineRef {
            offset,
            start,
            end: self.data.len() as u32,
        });
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes of line content held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Makes room for about `bytes` of lines averaging `line_bytes` each (and their
    /// stream, time or parse error when `meta`: a decoded file's), so that a batch is
    /// allocated once instead of doubling (and copying) its way up.
    pub fn reserve(&mut self, bytes: usize, line_bytes: usize, meta: bool) {
        self.data.reserve(bytes.saturating_sub(self.data.len()));
        let lines = bytes.div_ceil(line_bytes.max(1));
        self.lines.reserve(lines.saturating_sub(self.lines.len()));
        if meta {
            self.meta.reserve(lines.saturating_sub(self.meta.len()));
        }
    }

    /// Whether any record carries a stream, time or parse error.
    pub fn has_meta(&self) -> bool {
        !self.meta.is_empty()
    }

    /// Splits into batches of at most `max_bytes` (at least one line each), counting each
    /// line's bytes plus `per_line` (what a sink adds to every line). The first part keeps
    /// this batch's buffers; each other part copies its lines' bytes in one piece.
    pub fn split(mut self, max_bytes: usize, per_line: usize) -> Vec<Batch> {
        let cost = |bytes: usize, lines: usize| bytes + lines * per_line;
        if cost(self.data.len(), self.lines.len()) <= max_bytes {
            self.shrink_to_fit();
            return vec![self];
        }
        // The index of the first line of every part but the first.
        let mut starts = Vec::new();
        let (mut bytes, mut lines) = (0, 0);
        for (i, line) in self.lines.iter().enumerate() {
            let len = (line.end - line.start) as usize;
            if lines > 0 && cost(bytes + len, lines + 1) > max_bytes {
                starts.push(i);
                (bytes, lines) = (0, 0);
            }
            bytes += len;
            lines += 1;
        }
        // From the last part to the first, each cut off the end of this batch.
        let mut parts = Vec::with_capacity(starts.len() + 1);
        for &first in starts.iter().rev() {
            let mut lines = self.lines.split_off(first);
            let base = lines[0].start;
            let data = self.data[base as usize..].to_vec();
            self.data.truncate(base as usize);
            for line in &mut lines {
                line.start -= base;
                line.end -= base;
            }
            let meta = if self.meta.is_empty() {
                Vec::new()
            } else {
                self.meta.split_off(first)
            };
            parts.push(Batch {
                topic: self.topic.clone(),
                path: self.path.clone(),
                pod: self.pod.clone(),
                labels: self.labels.clone(),
                fields: self.fields.clone(),
                key: self.key.clone(),
                json: self.json.clone(),
                json_values: self.json_values,
                data,
                lines,
                meta,
            });
        }
        self.shrink_to_fit();
        parts.push(self);
        parts.reverse();
        parts
    }

    /// Gives back what the buffers hold beyond the records, where that is much: a batch
    /// is sized for a full read (`reader.rs`) and the first part of a split keeps the whole
    /// buffer, while the sink's budget counts the records' bytes (peak RSS catching up
    /// on 400 files with a 64 MiB budget: 113 MiB before, 78–81 after). In place for
    /// jemalloc's large sizes; small batches are left alone (a copy for a few bytes).
    fn shrink_to_fit(&mut self) {
        const SLACK: usize = 16 * 1024;
        if self.data.capacity() - self.data.len() > SLACK {
            self.data.shrink_to_fit();
        }
        let line = std::mem::size_of::<LineRef>();
        if (self.lines.capacity() - self.lines.len()) * line > SLACK {
            self.lines.shrink_to_fit();
        }
    }

    /// Makes every record at most `fits` bytes long: a longer one is cut to `cut_to`
    /// bytes (what remains of the room once the cut is marked) and marked with its length
    /// (`RecordMeta::truncated_from`); where that leaves no byte (`cut_to` 0), it is
    /// dropped from the batch. Batches whose records all fit (nearly all) are left as
    /// they are after one comparison; a cut leaves the bytes it removed unused in the
    /// buffer (a sink's sizing by [`bytes`](Self::bytes) stays an upper bound).
    pub fn fit(&mut self, fits: usize, cut_to: usize) -> Fitted {
        let mut fitted = Fitted::default();
        let too_long = |line: &LineRef| (line.end - line.start) as usize > fits;
        if self.data.len() <= fits || !self.lines.iter().any(too_long) {
            return fitted;
        }
        let cut_to = cut_to.min(fits) as u32;
        self.meta.resize(self.lines.len(), RecordMeta::default());
        let (mut lines, mut meta) = (Vec::with_capacity(self.lines.len()), Vec::new());
        for (mut line, mut record) in self.lines.drain(..).zip(self.meta.drain(..)) {
            let len = line.end - line.start;
            if len as usize <= fits {
            } else if cut_to == 0 {
                fitted.dropped.push((line.offset, len as usize));
                continue;
            } else {
                fitted.cut.push((line.offset, len as usize));
                line.end = line.start + cut_to;
                record.truncated_from = Some(record.truncated_from.unwrap_or(len));
            }
            lines.push(line);
            meta.push(record);
        }
        self.lines = lines;
        self.meta = meta;
        fitted
    }

    /// [`fit`](Self::fit) for records that cannot simply be cut short (JSON values): a
    /// record longer than `fits` bytes is given to `cut` with the room left once it is
    /// marked (`cut_to`), which returns its replacement (at most `cut_to` bytes) and the
    /// length to mark it with, or `None` when it cannot fit (dropped). A replacement is
    /// appended to the buffer (the bytes it replaces stay unused there).
    pub fn fit_with(
        &mut self,
        fits: usize,
        cut_to: usize,
        mut cut: impl FnMut(&[u8], usize) -> Option<(Vec<u8>, u32)>,
    ) -> Fitted {
        let mut fitted = Fitted::default();
        let too_long = |line: &LineRef| (line.end - line.start) as usize > fits;
        if self.data.len() <= fits || !self.lines.iter().any(too_long) {
            return fitted;
        }
        let cut_to = cut_to.min(fits);
        self.meta.resize(self.lines.len(), RecordMeta::default());
        let (mut lines, mut meta) = (Vec::with_capacity(self.lines.len()), Vec::new());
        let old: Vec<(LineRef, RecordMeta)> =
            self.lines.drain(..).zip(self.meta.drain(..)).collect();
        for (mut line, mut record) in old {
            let len = (line.end - line.start) as usize;
            if len > fits {
                let bytes = &self.data[line.start as usize..line.end as usize];
                match cut(bytes, cut_to).filter(|(value, _)| value.len() <= cut_to) {
                    None => {
                        fitted.dropped.push((line.offset, len));
                        continue;
                    }
                    Some((value, from)) => {
                        fitted.cut.push((line.offset, len));
                        let start = self.data.len() as u32;
                        self.data.extend_from_slice(&value);
                        (line.start, line.end) = (start, self.data.len() as u32);
                        record.truncated_from = Some(record.truncated_from.unwrap_or(from));
                    }
                }
            }
            lines.push(line);
            meta.push(record);
        }
        self.lines = lines;
        self.meta = meta;
        fitted
    }

    /// Replaces every record's bytes with what `write` appends for it to a new buffer of
    /// `capacity` bytes (a sink's encoding of the record, such as a JSON value), keeping
    /// its offset and metadata: one buffer a batch, nothing allocated a record.
    pub fn rewrite(
        &mut self,
        capacity: usize,
        mut write: impl FnMut(u64, &[u8], &RecordMeta, &mut Vec<u8>),
    ) {
        let mut data = Vec::with_capacity(capacity);
        for (i, line) in self.lines.iter_mut().enumerate() {
            let meta = self.meta.get(i).unwrap_or(&RecordMeta::NONE);
            let start = data.len() as u32;
            let bytes = &self.data[line.start as usize..line.end as usize];
            write(line.offset, bytes, meta, &mut data);
            (line.start, line.end) = (start, data.len() as u32);
        }
        self.data = data;
    }

    /// `(file offset of the line start, line bytes)` for every line, in file order.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.lines
            .iter()
            .map(|l| (l.offset, &self.data[l.start as usize..l.end as usize]))
    }

    /// Keeps only the records for whose bytes `keep` is true, in order, with their
    /// metadata; the buffer is compacted in place (no allocation). Returns how many it
    /// removed.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) -> usize {
        let before = self.lines.len();
        let (mut kept, mut at) = (0, 0u32);
        for read in 0..self.lines.len() {
            let line = self.lines[read];
            if !keep(&self.data[line.start as usize..line.end as usize]) {
                continue;
            }
            // Records lie in the buffer in order, so `at` never passes `line.start`.
            let len = line.end - line.start;
            if line.start != at {
                self.data
                    .copy_within(line.start as usize..line.end as usize, at as usize);
            }
            self.lines[kept] = LineRef {
                offset: line.offset,
                start: at,
                end: at + len,
            };
            if !self.meta.is_empty() {
                self.meta[kept] = self.meta[read];
            }
            kept += 1;
            at += len;
        }
        self.lines.truncate(kept);
        self.data.truncate(at as usize);
        if !self.meta.is_empty() {
            self.meta.truncate(kept);
        }
        before - kept
    }

    /// `(offset, bytes, metadata)` for every record, in order.
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8], &RecordMeta)> + '_ {
        self.lines().enumerate().map(|(i, (offset, line))| {
            (offset, line, self.meta.get(i).unwrap_or(&RecordMeta::NONE))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of `batch`, their metadata copied.
    fn owned(batch: &Batch) -> Vec<(u64, &[u8], RecordMeta)> {
        batch.records().map(|(o, l, m)| (o, l, *m)).collect()
    }

    #[test]
    fn retain_should_keep_the_accepted_records_with_their_metadata_in_order() {
        let mut batch = Batch::new("t".into(), Path::new("/a").into());
        batch.push(0, b"keep 1");
        let meta = RecordMeta {
            stream: Stream::Stderr,
            ..RecordMeta::default()
        };
        batch.push_with(7, b"drop 2", meta);
        batch.push_with(14, b"keep 3", meta);
        assert_eq!(batch.retain(|line| line.starts_with(b"keep")), 1);
        let kept: Vec<(u64, &[u8], Stream)> =
            batch.records().map(|(o, l, m)| (o, l, m.stream)).collect();
        assert_eq!(
            kept,
            [
                (0, &b"keep 1"[..], Stream::Unknown),
                (14, &b"keep 3"[..], Stream::Stderr)
            ]
        );
    }

    #[test]
    fn every_parse_error_reason_should_fit_the_size_the_kafka_sink_reserves() {
        for error in ParseError::ALL {
            assert!(
                error.reason().len() <= ParseError::MAX_REASON_LEN,
                "{error:?}"
            );
        }
    }

    #[test]
    fn records_should_keep_each_records_metadata_through_a_split() {
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        let out = RecordMeta {
            stream: Stream::Stdout,
            time: Some(7),
            error: None,
            truncated_from: None,
        };
        let bad = RecordMeta {
            error: Some(ParseError::CriFields),
            ..RecordMeta::default()
        };
        batch.push(0, b"plain");
        batch.push_with(6, b"out", out);
        batch.push_with(10, b"bad", bad);
        batch.push(14, b"plain again");
        batch.push_with(26, b"out again", out);
        let want = [
            (0, &b"plain"[..], RecordMeta::default()),
            (6, b"out", out),
            (10, b"bad", bad),
            (14, b"plain again", RecordMeta::default()),
            (26, b"out again", out),
        ];
        assert_eq!(owned(&batch), want);
        let parts = batch.split(6, 0);
        let joined: Vec<_> = parts.iter().flat_map(owned).collect();
        assert_eq!(joined, want);
        assert!(parts.len() > 1);
    }

    #[test]
    fn retain_should_keep_the_chosen_records_with_their_metadata_in_order() {
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        let err = RecordMeta {
            stream: Stream::Stderr,
            ..RecordMeta::default()
        };
        batch.push(0, b"drop first");
        batch.push(11, b"keep a");
        batch.push_with(18, b"drop err", err);
        batch.push_with(27, b"keep err", err);
        batch.push(36, b"keep b");
        batch.push(43, b"drop last");
        batch.retain(|line| line.starts_with(b"keep"));
        let want = [
            (11, &b"keep a"[..], RecordMeta::default()),
            (27, b"keep err", err),
            (36, b"keep b", RecordMeta::default()),
        ];
        assert_eq!(owned(&batch), want);
        assert_eq!(batch.bytes(), "keep akeep errkeep b".len(), "compacted");
        // Still a batch like any other: it splits and takes more records.
        batch.push(50, b"after");
        assert_eq!(
            batch
                .clone()
                .split(10, 0)
                .iter()
                .map(Batch::len)
                .sum::<usize>(),
            4
        );
        batch.retain(|_| false);
        assert!(batch.is_empty());
        assert_eq!(batch.bytes(), 0);
    }

    #[test]
    fn fit_should_cut_longer_records_mark_them_and_drop_what_cannot_fit() {
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        batch.push(0, b"short");
        batch.push(6, &[b'a'; 40]);
        batch.push_with(
            47,
            b"out",
            RecordMeta {
                stream: Stream::Stdout,
                ..RecordMeta::default()
            },
        );
        batch.push(51, &[b'b'; 11]);
        // Everything fits: nothing changes, and a raw batch gains no metadata.
        let before = batch.clone();
        assert_eq!(batch.fit(40, 30), Fitted::default());
        assert_eq!(owned(&batch), owned(&before));

        let fitted = batch.fit(10, 8);
        assert_eq!(fitted.cut, vec![(6, 40), (51, 11)]);
        assert!(fitted.dropped.is_empty());
        let records = owned(&batch);
        let cut = |bytes| RecordMeta {
            truncated_from: Some(bytes),
            ..RecordMeta::default()
        };
        let out = RecordMeta {
            stream: Stream::Stdout,
            ..RecordMeta::default()
        };
        assert_eq!(
            records,
            vec![
                (0, &b"short"[..], RecordMeta::default()),
                (6, &[b'a'; 8][..], cut(40)),
                (47, b"out", out),
                (51, &[b'b'; 8][..], cut(11)),
            ]
        );
        // Cut again (a lower limit later): the mark keeps the first length.
        assert_eq!(batch.fit(6, 4).cut, vec![(6, 8), (51, 8)]);
        assert_eq!(
            owned(&batch).get(1).copied(),
            Some((6, &b"aaaa"[..], cut(40)))
        );
        // No room left after the mark: the long records are dropped, the rest stays.
        let fitted = batch.fit(3, 0);
        assert_eq!(fitted.dropped, vec![(0, 5), (6, 4), (51, 4)]);
        assert_eq!(owned(&batch), vec![(47, &b"out"[..], out)]);
        // Splitting afterwards keeps each record with its metadata.
        let parts = batch.split(1, 0);
        assert_eq!(parts.len(), 1);
    }

    #[test]
    fn split_should_count_what_the_sink_adds_to_each_line() {
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        for i in 0..100u64 {
            batch.push(i * 11, b"0123456789");
        }
        // 10 bytes a line plus 30 added: 25 lines fit in 1,000 bytes, not 100.
        let parts = batch.clone().split(1000, 30);
        assert_eq!(parts.iter().map(Batch::len).collect::<Vec<_>>(), [25; 4]);
        assert_eq!(batch.clone().split(1000, 0).len(), 1);
        // A line bigger than the limit on its own still goes, alone.
        let parts = batch.split(35, 30);
        assert_eq!(parts.len(), 100);
        assert!(parts.iter().all(|p| p.len() == 1));
    }

    #[test]
    fn a_batch_reserved_for_a_read_should_take_its_records_without_growing() {
        // A read of five 99-byte lines and their newlines, of a decoded file: what the
        // reader reserves before framing it (`Reader::read_chunk`).
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        batch.reserve(500, 99, true);
        let held = |b: &Batch| (b.data.as_ptr(), b.lines.as_ptr(), b.meta.as_ptr());
        let before = held(&batch);
        let meta = RecordMeta {
            stream: Stream::Stdout,
            ..RecordMeta::default()
        };
        for i in 0..5u64 {
            batch.push_with(i * 100, &[b'y'; 99], meta);
        }
        assert_eq!(batch.len(), 5);
        assert_eq!(held(&batch), before, "a buffer was reallocated");
    }

    #[test]
    fn split_parts_should_hold_no_more_memory_than_their_records() {
        // A busy file's batch is sized for a whole read; the sink charges its budget by
        // the records' bytes, so what a part holds beyond them would escape the budget.
        let busy = || {
            let mut batch = Batch::new("t".into(), Path::new("/x").into());
            batch.reserve(640 * 1024, 64, false);
            for i in 0..4_000u64 {
                batch.push(i * 100, &[b'y'; 99]);
            }
            batch
        };
        let slack = |part: &Batch| part.data.capacity() - part.data.len();
        let parts = busy().split(128 * 1024, 0);
        assert_eq!(parts.len(), 4);
        assert!(
            parts.iter().all(|p| slack(p) <= 16 * 1024),
            "first part keeps the buffer"
        );
        let whole = busy().split(1 << 20, 0);
        assert_eq!(whole.len(), 1);
        assert!(
            slack(&whole[0]) <= 16 * 1024,
            "a whole batch keeps its reserve"
        );
    }

    #[test]
    fn raw_lines_should_carry_no_per_record_metadata() {
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        for i in 0..1000u64 {
            batch.push(i * 2, b"x");
            batch.push_with(i * 2 + 1, b"y", RecordMeta::default());
        }
        assert_eq!(
            batch.meta.capacity(),
            0,
            "nothing allocated for raw records"
        );
        assert!(batch.records().all(|(_, _, meta)| meta.is_empty()));
    }
}
