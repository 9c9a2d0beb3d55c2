//! Joins continuation lines into one record: a line matching `start_pattern` starts a
//! record, any other line is appended (with `\n`) to the pending one. Records never
//! exceed `max_lines` / `max_bytes`: the line that would is the start of the next record
//! (nothing is dropped but the rest of a single line longer than `max_bytes`), and each
//! cut is counted. A pending record is shipped when the next one starts, after `timeout`
//! without a new line, on rotation and at shutdown. Stdout and stderr are joined
//! separately: they interleave in one container log file.

use super::out::Out;
use super::Multiline;
use crate::record::RecordMeta;
use regex::bytes::Regex;
use std::time::Duration;
use tokio::time::Instant;

/// The record being joined on one stream; its bytes are in `Aggregator::bufs`.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// File offset of its first line: the checkpoint may not pass it while pending.
    start: u64,
    /// File offset of its last line.
    last: u64,
    lines: usize,
    meta: RecordMeta,
    deadline: Instant,
}

#[derive(Debug)]
pub struct Aggregator {
    start: Regex,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
    pending: [Option<Pending>; 2],
    /// Reused record buffers, one per stream.
    bufs: [Vec<u8>; 2],
    /// Records cut at a limit since the last `take_cut`.
    cut: u64,
}

impl Aggregator {
    pub fn new(spec: &Multiline, start: Regex) -> Self {
        Aggregator {
            start,
            max_lines: spec.max_lines.max(1),
            max_bytes: (spec.max_bytes as usize).max(1),
            timeout: spec.timeout,
            pending: [None, None],
            bufs: [Vec::new(), Vec::new()],
            cut: 0,
        }
    }

    /// Takes one message (a whole line, partials already joined) on stream `slot`: its
    /// first and last line's offsets, its bytes. Shipped records' line spans go to
    /// `shipped`.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        slot: usize,
        (offset, last): (u64, u64),
        bytes: &[u8],
        meta: RecordMeta,
        now: Instant,
        out: &mut Out<'_>,
    ) {
        let starts = self.start.is_match(bytes);
        if let Some(pending) = &mut self.pending[slot] {
            let buf = &mut self.bufs[slot];
            if !starts {
                let fits =
                    pending.lines < self.max_lines && buf.len() + 1 + bytes.len() <= self.max_bytes;
                if fits {
                    buf.push(b'\n');
                    buf.extend_from_slice(bytes);
                    pending.lines += 1;
                    pending.last = last;
                    pending.deadline = now + self.timeout;
                    return;
                }
                self.cut += 1;
            }
            self.flush_slot(slot, out);
        }
        let buf = &mut self.bufs[slot];
        super::clear_line_buffer(buf);
        if bytes.len() > self.max_bytes {
            self.cut += 1;
        }
        buf.extend_from_slice(&bytes[..bytes.len().min(self.max_bytes)]);
        self.pending[slot] = Some(Pending {
            start: offset,
            last,
            lines: 1,
            meta,
            deadline: now + self.timeout,
        });
    }

    /// The first line of the oldest pending record.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|p| p.start).min()
    }

    /// When the next pending record times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.iter().flatten().map(|p| p.deadline).min()
    }

    /// Ships the records whose timeout passed.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Out<'_>) {
        for slot in self.order() {
            if self.pending[slot].is_some_and(|p| p.deadline <= now) {
                self.flush_slot(slot, out);
            }
        }
    }

    /// Ships every pending record, oldest first.
    pub fn flush(&mut self, out: &mut Out<'_>) {
        for slot in self.order() {
            self.flush_slot(slot, out);
        }
    }

    pub fn reset(&mut self) {
        self.pending = [None, None];
        self.bufs.iter_mut().for_each(Vec::clear);
    }

    pub fn take_cut(&mut self) -> u64 {
        std::mem::take(&mut self.cut)
    }

    /// Slots by the start of their pending record.
    fn order(&self) -> [usize; 2] {
        match (&self.pending[0], &self.pending[1]) {
            (Some(a), Some(b)) if b.start < a.start => [1, 0],
            _ => [0, 1],
        }
    }

    fn flush_slot(&mut self, slot: usize, out: &mut Out<'_>) {
        if let Some(pending) = self.pending[slot].take() {
            out.ship(
                (pending.start, pending.last),
                &self.bufs[slot],
                pending.meta,
            );
            super::clear_line_buffer(&mut self.bufs[slot]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Batch;
    use std::path::Path;

    fn aggregator(max_lines: usize, max_bytes: u64) -> Aggregator {
        let spec = Multiline {
            start_pattern: r"^\d{4}-\d{2}-\d{2}".into(),
            max_lines,
            max_bytes,
            timeout: Duration::from_secs(1),
        };
        let regex = spec.regex().unwrap();
        Aggregator::new(&spec, regex)
    }

    fn batch() -> Batch {
        Batch::new("t".into(), Path::new("/x").into())
    }

    fn push(
        agg: &mut Aggregator,
        slot: usize,
        offset: u64,
        line: &[u8],
        now: Instant,
        batch: &mut Batch,
    ) {
        let mut spans = Vec::new();
        let mut out = Out {
            batch,
            spans: &mut spans,
        };
        agg.push(
            slot,
            (offset, offset),
            line,
            RecordMeta::default(),
            now,
            &mut out,
        );
    }

    fn flush(agg: &mut Aggregator, batch: &mut Batch) {
        agg.flush(&mut Out {
            batch,
            spans: &mut Vec::new(),
        });
    }

    fn records(batch: &Batch) -> Vec<(u64, String)> {
        batch
            .lines()
            .map(|(o, l)| (o, String::from_utf8_lossy(l).into_owned()))
            .collect()
    }

    /// Feeds lines with their offsets (each line + `\n`), returns the aggregator.
    fn feed(agg: &mut Aggregator, lines: &[&str], out: &mut Batch) -> u64 {
        let now = Instant::now();
        let mut offset = 0;
        for line in lines {
            push(agg, 0, offset, line.as_bytes(), now, out);
            offset += line.len() as u64 + 1;
        }
        offset
    }

    /// A long stack trace once joined: its buffer was kept at that size for good.
    #[test]
    fn a_long_record_should_not_keep_its_memory_once_shipped() {
        let mut agg = aggregator(10_000, 1 << 20);
        let mut out = batch();
        let frame = format!("\tat {}", "x".repeat(200));
        let mut lines = vec!["2024-05-01 10:00:00 ERROR boom".to_string()];
        lines.extend(std::iter::repeat_n(frame, 200));
        lines.push("2024-05-01 10:00:01 INFO next".into());
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        feed(&mut agg, &lines, &mut out);
        assert_eq!(
            records(&out).len(),
            1,
            "the trace shipped, the next line pending"
        );
        flush(&mut agg, &mut out);
        for buf in &agg.bufs {
            assert!(
                buf.capacity() <= crate::format::KEPT_CAPACITY,
                "{} bytes kept after the record was shipped",
                buf.capacity()
            );
        }
    }

    #[test]
    fn push_should_join_a_stack_trace_to_its_first_line() {
        let mut agg = aggregator(500, 1 << 20);
        let mut out = batch();
        let lines = [
            "2024-05-01 10:00:00 ERROR boom",
            "java.lang.IllegalStateException: bad",
            "\tat com.example.A.run(A.java:10)",
            "\tat com.example.Main.main(Main.java:5)",
            "2024-05-01 10:00:01 INFO next",
        ];
        feed(&mut agg, &lines, &mut out);
        assert_eq!(records(&out), vec![(0, lines[..4].join("\n"))]);
        let next = (lines[..4].iter().map(|l| l.len() + 1).sum::<usize>()) as u64;
        assert_eq!(agg.pending_start(), Some(next));
        flush(&mut agg, &mut out);
        assert_eq!(records(&out)[1], (next, lines[4].to_string()));
        assert_eq!(agg.pending_start(), None);
    }

    #[test]
    fn push_should_cut_at_max_lines_and_max_bytes_and_count() {
        let mut agg = aggregator(3, 1 << 20);
        let mut out = batch();
        feed(&mut agg, &["2024-01-01 a", "1", "2", "3", "4"], &mut out);
        flush(&mut agg, &mut out);
        let got: Vec<String> = records(&out).into_iter().map(|r| r.1).collect();
        assert_eq!(got, ["2024-01-01 a\n1\n2", "3\n4"]);
        assert_eq!(agg.take_cut(), 1);

        let mut agg = aggregator(100, 10);
        let mut out = batch();
        feed(
            &mut agg,
            &["2024-01-01 long line", "abc", "defgh", "ij"],
            &mut out,
        );
        flush(&mut agg, &mut out);
        let got: Vec<String> = records(&out).into_iter().map(|r| r.1).collect();
        assert_eq!(got, ["2024-01-01", "abc\ndefgh", "ij"]);
        assert_eq!(agg.take_cut(), 3, "the long line and two full records");
        assert!(got.iter().all(|r| r.len() <= 10));
    }

    #[test]
    fn flush_expired_should_ship_only_records_past_their_timeout() {
        let mut agg = aggregator(500, 1 << 20);
        let mut out = batch();
        let t0 = Instant::now();
        push(&mut agg, 0, 0, b"2024-01-01 out", t0, &mut out);
        push(
            &mut agg,
            1,
            15,
            b"2024-01-01 err",
            t0 + Duration::from_millis(600),
            &mut out,
        );
        assert_eq!(agg.deadline(), Some(t0 + Duration::from_secs(1)));
        let mut spans = Vec::new();
        let mut o = Out {
            batch: &mut out,
            spans: &mut spans,
        };
        agg.flush_expired(t0 + Duration::from_millis(1000), &mut o);
        assert_eq!(records(&out), vec![(0, "2024-01-01 out".to_string())]);
        assert_eq!(agg.pending_start(), Some(15));
        let mut o = Out {
            batch: &mut out,
            spans: &mut spans,
        };
        agg.flush_expired(t0 + Duration::from_millis(1600), &mut o);
        assert_eq!(out.len(), 2);
        assert_eq!(agg.deadline(), None);
    }
}
