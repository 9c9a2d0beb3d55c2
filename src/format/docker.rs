//! Docker's json-file log driver: one JSON object per line,
//! `{"log": "message\n", "stream": "stdout", "time": "2024-05-01T10:20:30.123456789Z"}`.
//! A `log` without its trailing newline is a fragment of a longer line (Docker splits at
//! 16 KiB); the next ones follow until one ends with the newline.

use super::parse_time;
use crate::record::{ParseError, Stream};
use serde::Deserialize;
use std::borrow::Cow;

/// One parsed line; `message` borrows from the line unless JSON escapes had to be
/// decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerLine<'a> {
    pub time: Option<i64>,
    pub stream: Stream,
    /// The `log` text had no trailing newline: more fragments follow.
    pub partial: bool,
    /// `log` without its trailing newline.
    pub message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(default, borrow)]
    stream: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    time: Option<Cow<'a, str>>,
}

/// Parses one line (without its newline).
pub fn parse(line: &[u8]) -> Result<DockerLine<'_>, ParseError> {
    // serde would take `["text"]` for the struct too.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ParseError::DockerJson);
    }
    let raw: Raw<'_> = serde_json::from_slice(line).map_err(|_| ParseError::DockerJson)?;
    let time = match &raw.time {
        Some(text) => Some(parse_time(text.as_bytes()).ok_or(ParseError::DockerTime)?),
        None => None,
    };
    let stream = raw
        .stream
        .as_deref()
        .and_then(|s| Stream::parse(s.as_bytes()))
        .unwrap_or_default();
    let (message, partial) = match raw.log {
        Cow::Borrowed(log) => match log.strip_suffix('\n') {
            Some(full) => (
                Cow::Borrowed(full.strip_suffix('\r').unwrap_or(full)),
                false,
            ),
            None => (Cow::Borrowed(log), true),
        },
        Cow::Owned(mut log) => {
            let partial = !log.ends_with('\n');
            if !partial {
                log.pop();
                if log.ends_with('\r') {
                    log.pop();
                }
            }
            (Cow::Owned(log), partial)
        }
    };
    Ok(DockerLine {
        time,
        stream,
        partial,
        message,
    })
}

/// Whether a line looks like Docker json-file (for `format: auto`).
pub fn looks_like(line: &[u8]) -> bool {
    line.first() == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_should_strip_the_newline_and_read_stream_and_time() {
        let line =
            br#"{"log":"hello \"quoted\"\n","stream":"stderr","time":"2024-05-01T10:20:30.5Z"}"#;
        let parsed = parse(line).unwrap();
        assert_eq!(parsed.message, "hello \"quoted\"");
        assert!(!parsed.partial);
        assert_eq!(parsed.stream, Stream::Stderr);
        assert_eq!(
            super::super::format_time(parsed.time.unwrap()),
            "2024-05-01T10:20:30.500000000Z"
        );
        let fragment =
            parse(br#"{"log":"no newline","stream":"stdout","time":"2024-05-01T10:20:30Z"}"#)
                .unwrap();
        assert!(fragment.partial);
        assert_eq!(fragment.message, "no newline");
        assert!(
            matches!(fragment.message, Cow::Borrowed(_)),
            "no copy without escapes"
        );
    }

    #[test]
    fn parse_should_refuse_what_is_not_a_docker_line() {
        assert_eq!(parse(b"{not json"), Err(ParseError::DockerJson));
        assert_eq!(parse(br#"{"msg":"x"}"#), Err(ParseError::DockerJson));
        assert_eq!(parse(br#"{"log":1}"#), Err(ParseError::DockerJson));
        assert_eq!(parse(br#"["log"]"#), Err(ParseError::DockerJson));
        assert_eq!(
            parse(br#"{"log":"x\n","time":"noon"}"#),
            Err(ParseError::DockerTime)
        );
        // Extra fields (attrs) are fine.
        assert!(parse(br#"{"log":"x\n","attrs":{"a":"b"}}"#).is_ok());
    }

    proptest! {
        #[test]
        fn any_log_text_round_trips(log in "\\PC{0,80}", newline: bool) {
            let text = if newline { format!("{log}\n") } else { log.clone() };
            let line = serde_json::to_vec(&serde_json::json!({"log": text, "stream": "stdout"})).unwrap();
            let parsed = parse(&line).unwrap();
            prop_assert_eq!(parsed.partial, !newline);
            let want = if newline { log.strip_suffix('\r').unwrap_or(&log).to_string() } else { log.clone() };
            prop_assert_eq!(parsed.message.as_ref(), want.as_str());
        }
    }
}
