//! The CRI log format of containerd and CRI-O:
//! `<RFC3339Nano time> <stdout|stderr> <P|F>[:<more tags>] <message>`. `P` marks a
//! fragment of a long line (the runtime splits at its buffer size), `F` its last part.

use super::parse_time;
use crate::record::{ParseError, Stream};
use memchr::memchr;

/// One parsed CRI line; `message` borrows from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub time: i64,
    pub stream: Stream,
    /// `P`: more fragments of this line follow.
    pub partial: bool,
    pub message: &'a [u8],
}

/// Parses one line (without its newline).
pub fn parse(line: &[u8]) -> Result<CriLine<'_>, ParseError> {
    let (time, rest) = field(line).ok_or(ParseError::CriFields)?;
    let (stream, rest) = field(rest).ok_or(ParseError::CriFields)?;
    // The tag may end the line (an empty message without its separating space).
    let (tag, message) = match memchr(b' ', rest) {
        Some(space) => (&rest[..space], &rest[space + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let stream = Stream::parse(stream).ok_or(ParseError::CriStream)?;
    // Tags are `:`-separated; the first says partial (P) or full (F).
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(ParseError::CriTag),
    };
    let time = parse_time(time).ok_or(ParseError::CriTime)?;
    Ok(CriLine {
        time,
        stream,
        partial,
        message,
    })
}

/// Whether a line looks like CRI (for `format: auto`).
pub fn looks_like(line: &[u8]) -> bool {
    parse(line).is_ok()
}

/// The bytes up to the next space (non-empty) and what follows the space.
fn field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = memchr(b' ', bytes)?;
    (space > 0).then(|| (&bytes[..space], &bytes[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: &str = "2024-05-01T10:20:30.123456789Z";

    #[test]
    fn parse_should_split_time_stream_tag_and_message() {
        let line = format!("{T} stdout F hello world  with spaces");
        let parsed = parse(line.as_bytes()).unwrap();
        assert_eq!(parsed.stream, Stream::Stdout);
        assert!(!parsed.partial);
        assert_eq!(parsed.message, b"hello world  with spaces");
        assert_eq!(super::super::format_time(parsed.time), T);

        let parsed = parse(format!("{T} stderr P part").as_bytes())
            .unwrap()
            .partial;
        assert!(parsed);
        for line in [format!("{T} stdout F:x "), format!("{T} stdout F")] {
            assert_eq!(parse(line.as_bytes()).unwrap().message, b"");
        }
        // CRI-O writes local offsets.
        assert!(parse(b"2024-05-01T12:20:30.1+02:00 stdout F x").is_ok());
    }

    #[test]
    fn parse_should_refuse_lines_without_the_three_fields() {
        assert_eq!(parse(b"plain text line"), Err(ParseError::CriStream));
        assert_eq!(parse(b"nospace"), Err(ParseError::CriFields));
        assert_eq!(parse(b""), Err(ParseError::CriFields));
        assert_eq!(
            parse(format!("{T} stdout").as_bytes()),
            Err(ParseError::CriFields)
        );
        assert_eq!(
            parse(format!("{T} stdin F x").as_bytes()),
            Err(ParseError::CriStream)
        );
        assert_eq!(
            parse(format!("{T} stdout X x").as_bytes()),
            Err(ParseError::CriTag)
        );
        assert_eq!(parse(b"yesterday stdout F x"), Err(ParseError::CriTime));
    }

    proptest! {
        #[test]
        fn any_message_round_trips(
            message in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200),
            partial: bool,
            stderr: bool,
        ) {
            let mut line = format!("{T} {} {} ", if stderr { "stderr" } else { "stdout" }, if partial { "P" } else { "F" }).into_bytes();
            line.extend_from_slice(&message);
            let parsed = parse(&line).unwrap();
            prop_assert_eq!(parsed.message, &message[..]);
            prop_assert_eq!(parsed.partial, partial);
            prop_assert_eq!(parsed.stream, if stderr { Stream::Stderr } else { Stream::Stdout });
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panicking(line in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse(&line);
        }
    }
}
