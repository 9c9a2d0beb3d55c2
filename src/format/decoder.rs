//! The per-file decoding stage between the framer and the sink batch: parses each line
//! in the file's format, joins CRI `P`/`F` and Docker partial fragments (per stream),
//! hands whole messages to the optional multiline aggregator, and ships malformed lines
//! raw with their parse error.
//!
//! Checkpoints stay exact: while a record is pending (fragments or multiline), the
//! tailer's checkpoint may not pass the offset of its first line (`pending_start`), so a
//! restart there re-reads the pending record whole: it is neither lost nor split. As
//! stdout and stderr interleave, a record of one stream may be shipped while the other
//! has one pending, its lines straddling that offset; the checkpoint then also stays
//! before such a record's first line (it may repeat after a restart, never split).

use super::framer::Line;
use super::multiline::Aggregator;
use super::out::Out;
use super::{cri, docker, Format, Parsing};
use crate::record::{Batch, ParseError, RecordMeta, Stream};
use std::time::Duration;
use tokio::time::Instant;

/// What a file turned out to hold (`auto` decides on its first line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Cri,
    Docker,
}

/// How long fragments of a line wait for their rest (a container that died mid-line
/// never writes it): then they are shipped as they are, marked
/// [`ParseError::Unfinished`], so that they neither wait forever nor hold the checkpoint
/// (Fluent Bit flushes after 4 s too).
pub const UNFINISHED_AFTER: Duration = Duration::from_secs(4);

/// Fragments of one line being joined on one stream.
#[derive(Debug, Default)]
struct Join {
    /// File offset of the first fragment.
    start: Option<u64>,
    /// When the first fragment was read.
    since: Option<Instant>,
    /// File offset of the latest fragment.
    last: u64,
    buf: Vec<u8>,
    time: Option<i64>,
    stream: Stream,
    /// Fragments beyond `max_message` were dropped.
    cut: bool,
}

/// What the decoder counted since the last `take_counts`, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecoderCounts {
    pub cri_errors: u64,
    pub docker_errors: u64,
    /// Multiline records cut at `max_lines` / `max_bytes`.
    pub multiline_cut: u64,
    /// Joined fragments cut at `tail.max_line_bytes`.
    pub truncated: u64,
    /// Fragments shipped unfinished after `UNFINISHED_AFTER`.
    pub unfinished: u64,
}

#[derive(Debug)]
pub struct Decoder {
    format: Format,
    kind: Option<Kind>,
    max_message: usize,
    joins: [Join; 2],
    multiline: Option<Aggregator>,
    /// Line spans of records shipped while another was pending (a checkpoint inside
    /// one would split it); cleared whenever nothing is pending.
    spans: Vec<(u64, u64)>,
    counts: DecoderCounts,
}

impl Decoder {
    /// `max_message` bounds a message joined from fragments (`tail.max_line_bytes`).
    /// `start` is the compiled `multiline.start_pattern`, when multiline is on.
    pub fn new(parsing: &Parsing, start: Option<regex::bytes::Regex>, max_message: usize) -> Self {
        let multiline = match (&parsing.multiline, start) {
            (Some(spec), Some(regex)) => Some(Aggregator::new(spec, regex)),
            _ => None,
        };
        Decoder {
            format: parsing.format,
            kind: match parsing.format {
                Format::Raw => Some(Kind::Raw),
                Format::Cri => Some(Kind::Cri),
                Format::Docker => Some(Kind::Docker),
                Format::Auto => None,
            },
            max_message: max_message.max(1),
            joins: Default::default(),
            multiline,
            spans: Vec::new(),
            counts: DecoderCounts::default(),
        }
    }

    /// Takes one framed line; complete records go to `out`.
    pub fn line(&mut self, line: Line<'_>, now: Instant, batch: &mut Batch) {
        let kind = *self.kind.get_or_insert_with(|| detect(line.bytes));
        let mut spans = std::mem::take(&mut self.spans);
        let out = &mut Out {
            batch,
            spans: &mut spans,
        };
        let at = line.offset;
        match kind {
            Kind::Raw => self.message((at, at), line.bytes, RecordMeta::default(), now, out),
            Kind::Cri => match cri::parse(line.bytes) {
                Ok(c) => {
                    self.fragment(at, c.message, (c.stream, Some(c.time)), c.partial, now, out)
                }
                Err(e) => self.malformed(line, e, out),
            },
            Kind::Docker => match docker::parse(line.bytes) {
                Ok(d) => {
                    let message = d.message.as_bytes();
                    self.fragment(at, message, (d.stream, d.time), d.partial, now, out)
                }
                Err(e) => self.malformed(line, e, out),
            },
        }
        self.spans = spans;
        if !self.spans.is_empty() && self.oldest_pending().is_none() {
            self.spans.clear();
        }
    }

    /// Where a restart must resume for every pending record to be re-read whole and no
    /// shipped one to be split: at most the first line of the oldest pending record, and
    /// never inside a shipped record's lines. `None` when nothing is pending.
    pub fn pending_start(&mut self) -> Option<u64> {
        let mut at = self.oldest_pending()?;
        while let Some(&(start, _)) = self.spans.iter().find(|&&(s, l)| s < at && at <= l) {
            at = start;
        }
        // The resume point only moves forward: spans before it cannot matter again.
        self.spans.retain(|&(_, last)| last >= at);
        Some(at)
    }

    fn oldest_pending(&self) -> Option<u64> {
        let joins = self.joins.iter().filter_map(|j| j.start);
        let multiline = self.multiline.as_ref().and_then(Aggregator::pending_start);
        joins.chain(multiline).min()
    }

    /// When held fragments or a pending multiline record time out.
    pub fn deadline(&self) -> Option<Instant> {
        let unfinished = self.joins.iter().filter_map(|j| j.since).min();
        let unfinished = unfinished.map(|since| since + UNFINISHED_AFTER);
        let multiline = self.multiline.as_ref().and_then(Aggregator::deadline);
        unfinished.into_iter().chain(multiline).min()
    }

    /// Ships fragments that waited `UNFINISHED_AFTER` for their rest, and multiline
    /// records whose timeout passed.
    pub fn flush_expired(&mut self, now: Instant, batch: &mut Batch) {
        let expired = |join: &Join| {
            join.since
                .is_some_and(|since| now >= since + UNFINISHED_AFTER)
        };
        let unfinished = Some(ParseError::Unfinished);
        self.counts.unfinished += self.complete_joins(expired, unfinished, now, batch);
        if let Some(multiline) = &mut self.multiline {
            multiline.flush_expired(
                now,
                &mut Out {
                    batch,
                    spans: &mut self.spans,
                },
            );
        }
    }

    /// The file ended (rotated away or deleted): ships held fragments as they are and
    /// every pending record.
    pub fn finish(&mut self, now: Instant, batch: &mut Batch) {
        self.complete_joins(|_| true, None, now, batch);
        self.flush_multiline(batch);
        self.spans.clear();
    }

    /// Shutdown: ships pending multiline records. Fragments of a line the runtime has not
    /// finished stay unshipped; the checkpoint before them makes the restart join them.
    pub fn flush_multiline(&mut self, batch: &mut Batch) {
        if let Some(multiline) = &mut self.multiline {
            multiline.flush(&mut Out {
                batch,
                spans: &mut self.spans,
            });
        }
    }

    /// Forgets everything held (the file was truncated) and detects `auto` again.
    pub fn reset(&mut self) {
        for join in &mut self.joins {
            *join = Join::default();
        }
        if let Some(multiline) = &mut self.multiline {
            multiline.reset();
        }
        self.spans.clear();
        if self.format == Format::Auto {
            self.kind = None;
        }
    }

    pub fn take_counts(&mut self) -> DecoderCounts {
        if let Some(multiline) = &mut self.multiline {
            self.counts.multiline_cut += multiline.take_cut();
        }
        std::mem::take(&mut self.counts)
    }

    fn fragment(
        &mut self,
        offset: u64,
        message: &[u8],
        (stream, time): (Stream, Option<i64>),
        partial: bool,
        now: Instant,
        out: &mut Out<'_>,
    ) {
        let slot = stream.index();
        let join = &mut self.joins[slot];
        if join.start.is_none() && !partial {
            // A whole line: no copy.
            let meta = RecordMeta {
                stream,
                time,
                error: None,
                truncated_from: None,
            };
            return self.message((offset, offset), message, meta, now, out);
        }
        if join.start.is_none() {
            join.start = Some(offset);
            join.since = Some(now);
            join.time = time;
            join.stream = stream;
        }
        let room = self.max_message.saturating_sub(join.buf.len());
        join.cut |= message.len() > room;
        join.buf
            .extend_from_slice(&message[..message.len().min(room)]);
        join.last = offset;
        if !partial {
            self.complete(slot, None, now, out);
        }
    }

    /// Ships the fragments held on each stream that `due` picks, the earlier line first
    /// (`error`: why they are shipped unjoined); returns how many records that made.
    fn complete_joins(
        &mut self,
        due: impl Fn(&Join) -> bool,
        error: Option<ParseError>,
        now: Instant,
        batch: &mut Batch,
    ) -> u64 {
        let mut slots = [0, 1];
        slots.sort_by_key(|&s| self.joins[s].start.unwrap_or(u64::MAX));
        let mut spans = std::mem::take(&mut self.spans);
        let mut shipped = 0;
        for slot in slots {
            let join = &self.joins[slot];
            if join.start.is_some() && due(join) {
                shipped += 1;
                let out = &mut Out {
                    batch,
                    spans: &mut spans,
                };
                self.complete(slot, error, now, out);
            }
        }
        self.spans = spans;
        shipped
    }

    /// Ships the fragments joined on `slot` (`error`: why they are shipped unjoined).
    fn complete(
        &mut self,
        slot: usize,
        error: Option<ParseError>,
        now: Instant,
        out: &mut Out<'_>,
    ) {
        let join = &mut self.joins[slot];
        let Some(start) = join.start.take() else {
            return;
        };
        join.since = None;
        let buf = std::mem::take(&mut join.buf);
        let meta = RecordMeta {
            stream: join.stream,
            time: join.time,
            error,
            truncated_from: None,
        };
        self.counts.truncated += std::mem::take(&mut join.cut) as u64;
        let last = join.last;
        self.message((start, last), &buf, meta, now, out);
        // The buffer's capacity for the next joined line, unless this one was long.
        let join = &mut self.joins[slot];
        join.buf = buf;
        super::clear_line_buffer(&mut join.buf);
    }

    /// A whole message, `lines` = (first, last) line offsets.
    fn message(
        &mut self,
        lines: (u64, u64),
        bytes: &[u8],
        meta: RecordMeta,
        now: Instant,
        out: &mut Out<'_>,
    ) {
        match &mut self.multiline {
            Some(multiline) => multiline.push(meta.stream.index(), lines, bytes, meta, now, out),
            None => out.ship(lines, bytes, meta),
        }
    }

    /// A line the format cannot parse: shipped raw with the reason, never dropped.
    fn malformed(&mut self, line: Line<'_>, error: ParseError, out: &mut Out<'_>) {
        match error {
            ParseError::DockerJson | ParseError::DockerTime => self.counts.docker_errors += 1,
            _ => self.counts.cri_errors += 1,
        }
        let meta = RecordMeta {
            error: Some(error),
            truncated_from: None,
            ..RecordMeta::default()
        };
        out.ship((line.offset, line.offset), line.bytes, meta);
    }
}

/// `auto`: Docker json-file if the line is one, else CRI if it parses, else raw.
fn detect(line: &[u8]) -> Kind {
    if docker::looks_like(line) && docker::parse(line).is_ok() {
        Kind::Docker
    } else if cri::looks_like(line) {
        Kind::Cri
    } else {
        Kind::Raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::framer::Framer;
    use crate::format::Multiline;
    use proptest::prelude::*;
    use std::path::Path;

    const T: &str = "2024-05-01T10:20:30.123456789Z";

    fn parsing(format: Format, multiline: Option<&str>) -> (Parsing, Option<regex::bytes::Regex>) {
        let multiline = multiline.map(|p| Multiline {
            start_pattern: p.into(),
            max_lines: 500,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
        });
        let regex = multiline.as_ref().map(|m| m.regex().unwrap());
        (Parsing { format, multiline }, regex)
    }

    /// Frames and decodes `input` pushed in `chunks`; returns the records and the
    /// checkpoint the tailer would write (framer committed, held back by pending).
    fn decode(decoder: &mut Decoder, chunks: &[&[u8]]) -> (Vec<(u64, String, RecordMeta)>, u64) {
        let mut framer = Framer::new(0, 1 << 20);
        let mut out = Batch::new("t".into(), Path::new("/x").into());
        let now = Instant::now();
        for chunk in chunks {
            framer.push(chunk, &mut |line| decoder.line(line, now, &mut out));
        }
        let records = out
            .records()
            .map(|(o, l, m)| (o, String::from_utf8_lossy(l).into_owned(), *m))
            .collect();
        let checkpoint = decoder
            .pending_start()
            .unwrap_or(framer.committed())
            .min(framer.committed());
        (records, checkpoint)
    }

    fn cri(stream: &str, tag: &str, message: &str) -> String {
        format!("{T} {stream} {tag} {message}\n")
    }

    #[test]
    fn cri_fragments_should_join_per_stream_and_hold_the_checkpoint() {
        let (p, r) = parsing(Format::Cri, None);
        let mut decoder = Decoder::new(&p, r, 1 << 20);
        let input = [
            cri("stdout", "P", "hel"),
            cri("stderr", "F", "an error"),
            cri("stdout", "P", "lo "),
        ]
        .concat();
        let (records, checkpoint) = decode(&mut decoder, &[input.as_bytes()]);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1, "an error");
        assert_eq!(records[0].2.stream, Stream::Stderr);
        assert_eq!(checkpoint, 0, "the stdout line is pending from offset 0");
        let rest = cri("stdout", "F", "world");
        let (records, _) = decode(&mut decoder, &[rest.as_bytes()]);
        assert_eq!(records[0].0, 0);
        assert_eq!(records[0].1, "hello world");
        assert_eq!(records[0].2.stream, Stream::Stdout);
        assert_eq!(records[0].2.time, crate::format::parse_time(T.as_bytes()));
        assert_eq!(decoder.pending_start(), None);
    }

    /// A container writes a long line now and then, split by the runtime into 16 KiB
    /// fragments. The buffer that joined it was kept at its size for the next one: 40 KB
    /// for good in every tailer that ever joined such a line (the soak's 400 containers
    /// held ≈ 20 MiB so, a third of the agent's memory).
    #[test]
    fn joining_a_long_line_should_not_keep_its_memory() {
        let (p, r) = parsing(Format::Cri, None);
        let mut decoder = Decoder::new(&p, r, 1 << 20);
        let fragment = "x".repeat(16 * 1024);
        let input = [
            cri("stdout", "P", &fragment),
            cri("stdout", "P", &fragment),
            cri("stdout", "F", "end"),
        ]
        .concat();
        let (records, _) = decode(&mut decoder, &[input.as_bytes()]);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1.len(), 2 * fragment.len() + 3);
        for join in &decoder.joins {
            assert!(
                join.buf.capacity() <= crate::format::KEPT_CAPACITY,
                "{} bytes kept after the line was shipped",
                join.buf.capacity()
            );
        }
    }

    #[test]
    fn a_fragment_whose_rest_never_comes_should_ship_unfinished_after_the_timeout() {
        let (p, r) = parsing(Format::Cri, None);
        let mut decoder = Decoder::new(&p, r, 1 << 20);
        let input = [
            cri("stdout", "F", "whole"),
            cri("stdout", "P", "the container died"),
        ]
        .concat();
        let mut framer = Framer::new(0, 1 << 20);
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        let read_at = Instant::now();
        framer.push(input.as_bytes(), &mut |line| {
            decoder.line(line, read_at, &mut batch)
        });
        assert_eq!(batch.len(), 1, "only the whole line");
        let fragment_at = cri("stdout", "F", "whole").len() as u64;
        assert_eq!(decoder.pending_start(), Some(fragment_at));
        assert_eq!(decoder.deadline(), Some(read_at + UNFINISHED_AFTER));

        decoder.flush_expired(read_at + UNFINISHED_AFTER / 2, &mut batch);
        assert_eq!(batch.len(), 1, "still waiting for its rest");
        decoder.flush_expired(read_at + UNFINISHED_AFTER, &mut batch);
        let records: Vec<_> = batch.records().collect();
        assert_eq!(records.len(), 2);
        let (offset, line, meta) = records[1];
        assert_eq!((offset, line), (fragment_at, &b"the container died"[..]));
        assert_eq!(meta.error, Some(ParseError::Unfinished));
        assert_eq!(meta.stream, Stream::Stdout);
        assert_eq!(decoder.pending_start(), None, "the checkpoint may pass it");
        assert_eq!(decoder.deadline(), None);
        assert_eq!(decoder.take_counts().unfinished, 1);
    }

    #[test]
    fn malformed_lines_should_ship_raw_with_the_reason_and_be_counted() {
        let (p, r) = parsing(Format::Cri, None);
        let mut decoder = Decoder::new(&p, r, 1 << 20);
        let input = format!("not a cri line\n{}", cri("stdout", "F", "ok"));
        let (records, checkpoint) = decode(&mut decoder, &[input.as_bytes()]);
        assert_eq!(records[0].1, "not a cri line");
        assert_eq!(records[0].2.error, Some(ParseError::CriStream));
        assert_eq!(records[1].1, "ok");
        assert_eq!(checkpoint, input.len() as u64);
        assert_eq!(decoder.take_counts().cri_errors, 1);

        let (p, r) = parsing(Format::Docker, None);
        let mut decoder = Decoder::new(&p, r, 1 << 20);
        let (records, _) = decode(&mut decoder, &[b"{\"log\": broken\n"]);
        assert_eq!(records[0].2.error, Some(ParseError::DockerJson));
        assert_eq!(decoder.take_counts().docker_errors, 1);
    }

    #[test]
    fn docker_partials_should_join_until_the_newline() {
        let (p, r) = parsing(Format::Docker, None);
        let mut decoder = Decoder::new(&p, r, 1 << 20);
        let input = concat!(
            r#"{"log":"first ","stream":"stdout","time":"2024-05-01T10:20:30Z"}"#,
            "\n",
            r#"{"log":"second\n","stream":"stdout","time":"2024-05-01T10:20:31Z"}"#,
            "\n",
            r#"{"log":"whole\n","stream":"stderr","time":"2024-05-01T10:20:32Z"}"#,
            "\n",
        );
        let (records, checkpoint) = decode(&mut decoder, &[input.as_bytes()]);
        assert_eq!(records[0].1, "first second");
        assert_eq!(
            records[0].2.time,
            crate::format::parse_time(b"2024-05-01T10:20:30Z")
        );
        assert_eq!(records[1].1, "whole");
        assert_eq!(checkpoint, input.len() as u64);
    }

    #[test]
    fn joined_fragments_should_be_cut_at_the_line_limit_and_counted() {
        let (p, r) = parsing(Format::Cri, None);
        let mut decoder = Decoder::new(&p, r, 8);
        let input = [cri("stdout", "P", "abcdef"), cri("stdout", "F", "ghijkl")].concat();
        let (records, _) = decode(&mut decoder, &[input.as_bytes()]);
        assert_eq!(records[0].1, "abcdefgh");
        assert_eq!(decoder.take_counts().truncated, 1);
    }

    #[test]
    fn auto_should_detect_each_format_on_the_first_line() {
        for (first, kind) in [
            (cri("stdout", "F", "x"), Kind::Cri),
            (
                r#"{"log":"x\n","stream":"stdout"}"#.to_string() + "\n",
                Kind::Docker,
            ),
            ("{\"level\":\"info\"}\n".to_string(), Kind::Raw),
            ("plain\n".to_string(), Kind::Raw),
        ] {
            let (p, r) = parsing(Format::Auto, None);
            let mut decoder = Decoder::new(&p, r, 1 << 20);
            let (records, _) = decode(&mut decoder, &[first.as_bytes()]);
            assert_eq!(decoder.kind, Some(kind), "{first}");
            assert!(records[0].2.error.is_none());
        }
    }

    #[test]
    fn multiline_should_join_after_cri_reassembly_and_flush_at_finish() {
        let (p, r) = parsing(Format::Cri, Some(r"^\d{4}-"));
        let mut decoder = Decoder::new(&p, r, 1 << 20);
        let input = [
            cri("stdout", "F", "2024-05-01 ERROR boom"),
            cri("stdout", "P", "java.lang.Runtime"),
            cri("stdout", "F", "Exception: x"),
            cri("stdout", "F", "\tat A.b(A.java:1)"),
        ]
        .concat();
        let (records, checkpoint) = decode(&mut decoder, &[input.as_bytes()]);
        assert!(records.is_empty());
        assert_eq!(checkpoint, 0);
        let mut out = Batch::new("t".into(), Path::new("/x").into());
        decoder.finish(Instant::now(), &mut out);
        let (offset, text) = out.lines().next().map(|(o, l)| (o, l.to_vec())).unwrap();
        assert_eq!(offset, 0);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2024-05-01 ERROR boom\njava.lang.RuntimeException: x\n\tat A.b(A.java:1)"
        );
        assert_eq!(decoder.pending_start(), None);
    }

    /// Generated CRI streams: messages split into fragments, stdout and stderr
    /// interleaved, fed in random chunks. Every message comes out once and whole; a
    /// restart at any checkpoint the decoder allowed loses none and splits none (a
    /// message of the other stream shipped past the checkpoint may repeat).
    fn streams() -> impl Strategy<Value = (Vec<Vec<String>>, Vec<Vec<String>>, Vec<bool>)> {
        let stream =
            || proptest::collection::vec(proptest::collection::vec("[a-z ]{0,6}", 1..4), 0..6);
        (
            stream(),
            stream(),
            proptest::collection::vec(any::<bool>(), 0..40),
        )
    }

    proptest! {
        #[test]
        fn cri_reassembly_survives_any_read_boundary_and_restart(
            (out_msgs, err_msgs, picks) in streams(),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
            restart_at in 0usize..2000,
            multiline: bool,
        ) {
            let lines = |stream: &str, msgs: &[Vec<String>]| -> Vec<String> {
                msgs.iter()
                    .flat_map(|fragments| {
                        let n = fragments.len();
                        fragments.iter().enumerate().map(move |(i, f)| (i + 1 == n, f))
                    })
                    .map(|(last, f)| cri(stream, if last { "F" } else { "P" }, f))
                    .collect()
            };
            let (mut out_lines, mut err_lines) = (lines("stdout", &out_msgs), lines("stderr", &err_msgs));
            out_lines.reverse();
            err_lines.reverse();
            let mut file = String::new();
            let mut picks = picks.into_iter();
            while !out_lines.is_empty() || !err_lines.is_empty() {
                let from_err = picks.next().unwrap_or(false) && !err_lines.is_empty() || out_lines.is_empty();
                file.push_str(&if from_err { err_lines.pop() } else { out_lines.pop() }.unwrap());
            }
            // With multiline, messages starting with a space continue the previous one.
            let (p, r) = parsing(Format::Cri, multiline.then_some("^[^ ]"));
            let expected = if multiline {
                let mut whole = Decoder::new(&p, r.clone(), 1 << 20);
                let (records, _) = decode(&mut whole, &[file.as_bytes()]);
                let mut out = Batch::new("t".into(), Path::new("/x").into());
                whole.finish(Instant::now(), &mut out);
                let mut all: Vec<String> = records.into_iter().map(|r| r.1).collect();
                all.extend(out.lines().map(|(_, l)| String::from_utf8_lossy(l).into_owned()));
                all
            } else {
                out_msgs.iter().chain(&err_msgs).map(|m| m.concat()).collect()
            };
            let mut expected = expected;
            expected.sort();

            let bytes = file.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&bytes[last..c]); last = c; }
            chunks.push(&bytes[last..]);

            let finish = |decoder: &mut Decoder, records: &mut Vec<(u64, String, RecordMeta)>| {
                let mut out = Batch::new("t".into(), Path::new("/x").into());
                decoder.finish(Instant::now(), &mut out);
                records.extend(out.records().map(|(o, l, m)| (o, String::from_utf8_lossy(l).into_owned(), *m)));
            };
            let mut decoder = Decoder::new(&p, r.clone(), 1 << 20);
            let (mut records, end) = decode(&mut decoder, &chunks);
            if !multiline {
                prop_assert_eq!(end, bytes.len() as u64);
            }
            finish(&mut decoder, &mut records);
            let mut got: Vec<String> = records.iter().map(|r| r.1.clone()).collect();
            got.sort();
            prop_assert_eq!(&got, &expected);

            // Restart: read a prefix, take its checkpoint, decode the rest from there.
            let prefix = restart_at.min(bytes.len());
            let mut first = Decoder::new(&p, r.clone(), 1 << 20);
            let (before, checkpoint) = decode(&mut first, &[&bytes[..prefix]]);
            let mut second = Decoder::new(&p, r.clone(), 1 << 20);
            let (mut after, _) = decode(&mut second, &[&bytes[checkpoint as usize..]]);
            finish(&mut second, &mut after);
            // Shipped before the checkpoint: not read again. At or after it: read again.
            let mut all: Vec<String> = before.iter().filter(|r| r.0 < checkpoint).map(|r| r.1.clone()).collect();
            let repeated: Vec<String> = before.iter().filter(|r| r.0 >= checkpoint).map(|r| r.1.clone()).collect();
            all.extend(after.iter().map(|r| r.1.clone()));
            all.sort();
            prop_assert_eq!(&all, &expected, "restart at {} (checkpoint {})", prefix, checkpoint);
            for message in repeated {
                prop_assert!(after.iter().any(|r| r.1 == message), "{:?} re-read whole", message);
            }
        }
    }
}
