//! Splits a byte stream into lines: newlines found 64 bytes at a time, `\n` / `\r\n` stripped,
//! a partial last line held until its newline, lines over the limit cut (never buffered
//! whole), bytes passed through unchanged (no UTF-8 assumption).

use super::newlines::for_each_newline;

/// A line as the framer emits it: its start offset in the file, its bytes, and whether
/// it was cut to the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub offset: u64,
    pub bytes: &'a [u8],
    pub truncated: bool,
}

#[derive(Debug)]
pub struct Framer {
    max_line: usize,
    /// Start offset of the line being assembled; also the offset every earlier line ends at.
    line_start: u64,
    /// Offset of the next byte to be pushed.
    position: u64,
    /// Bytes of the current line that arrived in earlier pushes, at most `max_line + 2`:
    /// enough to tell "longer than the limit" from "exactly the limit plus `\r`".
    partial: Vec<u8>,
    /// The current line was already emitted cut; drop its bytes until the newline.
    skipping: bool,
    /// Where the newlines are in the window of a chunk being pushed (kept to reuse its
    /// allocation).
    newlines: Vec<u32>,
}

impl Framer {
    pub fn new(offset: u64, max_line: usize) -> Self {
        Framer {
            max_line: max_line.max(1),
            line_start: offset,
            position: offset,
            partial: Vec::new(),
            skipping: false,
            newlines: Vec::new(),
        }
    }

    /// The offset just after the last complete line: where a restart must resume.
    pub fn committed(&self) -> u64 {
        self.line_start
    }

    /// The offset of the next byte to push.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether a partial line is being held.
    pub fn has_partial(&self) -> bool {
        self.position > self.line_start
    }

    /// Forgets everything and continues at `offset` (after truncation or a file switch).
    pub fn reset(&mut self, offset: u64) {
        self.line_start = offset;
        self.position = offset;
        super::clear_line_buffer(&mut self.partial);
        self.skipping = false;
    }

    /// Feeds the bytes found at `position()`, emitting every line they complete.
    pub fn push(&mut self, chunk: &[u8], emit: &mut impl FnMut(Line<'_>)) {
        let base = self.position;
        let mut start = 0;
        let mut newlines = std::mem::take(&mut self.newlines);
        // Newlines are found a window at a time, then the window's lines emitted in one
        // loop that the emitting code inlines into (called per newline from inside the
        // search, it was not inlined); the list of positions stays small.
        for window in (0..chunk.len()).step_by(NEWLINE_WINDOW) {
            let bytes = &chunk[window..chunk.len().min(window + NEWLINE_WINDOW)];
            newlines.clear();
            for_each_newline(bytes, |at| newlines.push(at as u32));
            let mut found = newlines.iter().map(|&at| window + at as usize);
            if start == 0 {
                // Only the chunk's first line can continue a held or skipped one.
                let Some(first) = found.next() else { continue };
                self.end_line(&chunk[..first], emit);
                start = first + 1;
            }
            for newline in found {
                let line = &chunk[start..newline];
                emit_whole(base + start as u64, line, self.max_line, emit);
                start = newline + 1;
            }
        }
        self.newlines = newlines;
        self.position = base + start as u64;
        if start > 0 {
            self.line_start = self.position;
        }
        let rest = &chunk[start..];
        if !rest.is_empty() {
            self.extend_partial(rest, emit);
            self.position += rest.len() as u64;
        }
    }

    /// Emits the held partial line as a complete one: the file it came from has ended.
    pub fn finish(&mut self, emit: &mut impl FnMut(Line<'_>)) {
        if !self.skipping && self.has_partial() {
            let cut = self.partial.len() > self.max_line;
            let bytes = &self.partial[..self.partial.len().min(self.max_line)];
            emit(Line {
                offset: self.line_start,
                bytes,
                truncated: cut,
            });
        }
        super::clear_line_buffer(&mut self.partial);
        self.skipping = false;
        self.line_start = self.position;
    }

    #[inline]
    fn end_line(&mut self, tail: &[u8], emit: &mut impl FnMut(Line<'_>)) {
        let offset = self.line_start;
        if self.skipping {
            self.skipping = false;
        } else if self.partial.is_empty() {
            emit_whole(offset, tail, self.max_line, emit);
        } else {
            let room = (self.max_line + 2).saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&tail[..tail.len().min(room)]);
            let line = strip_cr(&self.partial);
            let truncated = tail.len() > room || line.len() > self.max_line;
            let bytes = if truncated {
                &self.partial[..self.max_line]
            } else {
                line
            };
            emit(Line {
                offset,
                bytes,
                truncated,
            });
        }
        super::clear_line_buffer(&mut self.partial);
    }

    fn extend_partial(&mut self, bytes: &[u8], emit: &mut impl FnMut(Line<'_>)) {
        if self.skipping {
            return;
        }
        let room = (self.max_line + 2).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        if self.partial.len() >= self.max_line + 2 {
            // Longer than the limit whatever follows: emit the cut line now, so that
            // memory stays flat however long the line grows.
            emit(Line {
                offset: self.line_start,
                bytes: &self.partial[..self.max_line],
                truncated: true,
            });
            super::clear_line_buffer(&mut self.partial);
            self.skipping = true;
        }
    }
}

/// Bytes searched for newlines before their lines are emitted.
const NEWLINE_WINDOW: usize = 8 * 1024;

/// Emits a line that arrived whole in one chunk (`\n` already removed).
#[inline]
fn emit_whole(offset: u64, line: &[u8], max_line: usize, emit: &mut impl FnMut(Line<'_>)) {
    let line = strip_cr(line);
    let truncated = line.len() > max_line;
    emit(Line {
        offset,
        bytes: if truncated { &line[..max_line] } else { line },
        truncated,
    });
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Owned = (u64, Vec<u8>, bool);

    fn frame(chunks: &[&[u8]], max: usize) -> (Vec<Owned>, Framer) {
        let mut framer = Framer::new(0, max);
        let mut lines = Vec::new();
        for chunk in chunks {
            framer.push(chunk, &mut |l| {
                lines.push((l.offset, l.bytes.to_vec(), l.truncated))
            });
        }
        (lines, framer)
    }

    /// The reference: what every complete line of `input` should come out as.
    fn model(input: &[u8], max: usize) -> Vec<Owned> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        let mut rest = input;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let line = strip_cr(&rest[..i]);
            let cut = line.len() > max;
            out.push((offset, line[..line.len().min(max)].to_vec(), cut));
            offset += i as u64 + 1;
            rest = &rest[i + 1..];
        }
        // A partial line that already exceeds the limit whatever follows is emitted cut.
        if rest.len() >= max + 2 {
            out.push((offset, rest[..max].to_vec(), true));
        }
        out
    }

    #[test]
    fn push_should_strip_newlines_and_carriage_returns() {
        let (lines, framer) = frame(&[b"a\nbb\r\nccc"], 100);
        assert_eq!(
            lines,
            vec![(0, b"a".to_vec(), false), (2, b"bb".to_vec(), false)]
        );
        assert_eq!(framer.committed(), 6);
        assert_eq!(framer.position(), 9);
    }

    #[test]
    fn push_should_hold_a_partial_line_until_its_newline() {
        let (lines, framer) = frame(&[b"hel", b"lo", b"\nx"], 100);
        assert_eq!(lines, vec![(0, b"hello".to_vec(), false)]);
        assert!(framer.has_partial());
    }

    /// A long line read in pieces is held whole until its newline; its buffer was then
    /// kept at that size for good, in every tailer that ever read such a line.
    #[test]
    fn a_long_line_read_in_pieces_should_not_keep_its_memory() {
        let mut framer = Framer::new(0, 1 << 20);
        let mut lines = Vec::new();
        let piece = vec![b'x'; 16 * 1024];
        for _ in 0..3 {
            framer.push(&piece, &mut |l| lines.push(l.bytes.len()));
        }
        framer.push(b"\nnext", &mut |l| lines.push(l.bytes.len()));
        assert_eq!(lines, [3 * piece.len()]);
        assert!(
            framer.partial.capacity() <= crate::format::KEPT_CAPACITY,
            "{} bytes kept after the line was shipped",
            framer.partial.capacity()
        );
    }

    #[test]
    fn push_should_cut_long_lines_and_keep_memory_flat() {
        let mut framer = Framer::new(0, 4);
        let mut lines = Vec::new();
        let big = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            framer.push(&big, &mut |l| {
                lines.push((l.offset, l.bytes.to_vec(), l.truncated))
            });
            assert!(
                framer.partial.capacity() < 64,
                "partial buffer grew with the line"
            );
        }
        framer.push(b"\nok\n", &mut |l| {
            lines.push((l.offset, l.bytes.to_vec(), l.truncated))
        });
        assert_eq!(
            lines,
            vec![
                (0, b"xxxx".to_vec(), true),
                (8 << 20 | 1, b"ok".to_vec(), false)
            ]
        );
        assert_eq!(framer.committed(), (8 << 20) + 4);
    }

    #[test]
    fn finish_should_emit_the_partial_line_once() {
        let mut framer = Framer::new(10, 100);
        let mut lines = Vec::new();
        framer.push(b"tail without newline", &mut |l| {
            lines.push(l.bytes.to_vec())
        });
        framer.finish(&mut |l| lines.push(l.bytes.to_vec()));
        framer.finish(&mut |l| lines.push(l.bytes.to_vec()));
        assert_eq!(lines, vec![b"tail without newline".to_vec()]);
        assert_eq!(framer.committed(), 30);
    }

    #[test]
    fn push_should_pass_invalid_utf8_through() {
        let (lines, _) = frame(&[b"\xff\xfe\x00bin\n"], 100);
        assert_eq!(lines[0].1, b"\xff\xfe\x00bin".to_vec());
    }

    #[test]
    fn lines_across_newline_windows_should_come_out_as_from_one_scan() {
        // Lines of every length around the search window (8 KiB), a chunk whose first
        // window holds no newline, carriage returns and lines over the limit.
        let mut input = Vec::new();
        for (i, len) in [
            0, 1, 8191, 8190, 8192, 20_000, 3, 9000, 100, 8193, 0, 16_384,
        ]
        .into_iter()
        .enumerate()
        {
            input.extend((0..len).map(|j| b'a' + ((i + j) % 26) as u8));
            if i % 3 == 0 {
                input.push(b'\r');
            }
            input.push(b'\n');
        }
        input.extend_from_slice(b"held");
        for size in [input.len(), 8192, 8193, 10_000, 4097, 7] {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            let (lines, framer) = frame(&chunks, 12_000);
            assert_eq!(lines, model(&input, 12_000), "chunks of {size}");
            assert_eq!(framer.committed(), input.len() as u64 - 4);
        }
    }

    proptest! {
        #[test]
        fn any_split_of_the_input_yields_the_same_lines(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..12),
            max in 1usize..12,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for cut in cuts {
                chunks.push(&input[last..cut]);
                last = cut;
            }
            chunks.push(&input[last..]);
            let (lines, framer) = frame(&chunks, max);
            prop_assert_eq!(lines, model(&input, max));
            let committed = input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i as u64 + 1);
            prop_assert_eq!(framer.committed(), committed);
            prop_assert_eq!(framer.position(), input.len() as u64);
        }
    }
}
