//! Log formats: what a file's lines are (`raw`, the container runtimes' `cri` and
//! `docker` json-file, or `auto`), how to join partial lines and multiline records, and
//! the pod metadata in a kubelet log file's name, which records to ship (`filter.rs`).
//! Declared per log entry, in the config file and in etcd values alike; validated here
//! for both.

pub mod cri;
mod decoder;
pub mod docker;
pub mod filter;
pub mod framer;
pub mod kubelet;
mod multiline;
mod newlines;
mod out;

pub use decoder::{Decoder, DecoderCounts};
pub use filter::LineFilters;

use crate::units;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The capacity a line or record buffer keeps between lines, at most: one grown beyond
/// it by a long line is given back once that line is shipped. Each tailer has such
/// buffers, and kept at the size of the longest line they ever held they added up
/// (400 containers that each once joined a 40 KB line held ≈ 20 MiB; BENCHMARKS.md
/// "Memory kept by long lines").
pub(crate) const KEPT_CAPACITY: usize = 4096;

/// Empties `buf` for the next line, giving its memory back when it outgrew
/// [`KEPT_CAPACITY`].
pub(crate) fn clear_line_buffer(buf: &mut Vec<u8>) {
    if buf.capacity() > KEPT_CAPACITY {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// How a file's lines are read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Every line is a record, unchanged.
    #[default]
    Raw,
    /// containerd / CRI-O: `<RFC3339Nano time> <stdout|stderr> <P|F> <message>`.
    Cri,
    /// Docker's json-file driver: `{"log": "...\n", "stream": "...", "time": "..."}`.
    Docker,
    /// Detected per file from its first line: docker, cri, else raw.
    Auto,
}

impl Format {
    pub fn is_raw(&self) -> bool {
        *self == Format::Raw
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Cri => "cri",
            Format::Docker => "docker",
            Format::Auto => "auto",
        }
    }
}

/// Joining continuation lines into one record (e.g. a stack trace).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Multiline {
    /// A line matching this regex starts a new record; others continue the pending one.
    pub start_pattern: String,
    /// A record holds at most this many lines; the next line starts another (counted).
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// A record holds at most this many bytes; the next line starts another, and a
    /// single longer line is cut (counted).
    #[serde(
        default = "default_max_bytes",
        deserialize_with = "units::size",
        serialize_with = "units::serialize_size"
    )]
    pub max_bytes: u64,
    /// A pending record is shipped after this long without a new line.
    #[serde(
        default = "default_timeout",
        deserialize_with = "units::duration",
        serialize_with = "units::serialize_duration"
    )]
    pub timeout: Duration,
}

fn default_max_lines() -> usize {
    500
}

fn default_max_bytes() -> u64 {
    1024 * 1024
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

/// The longest `start_pattern` accepted (etcd values are untrusted).
const MAX_PATTERN_LEN: usize = 1024;
/// Compiled-size limit of a `start_pattern`, so a hostile value cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Multiline {
    /// Checks every field; the error is `(field, message)`, the field relative to
    /// `multiline` (e.g. `start_pattern`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.regex()?;
        if self.max_lines == 0 {
            return Err(("max_lines".into(), "must be at least 1".into()));
        }
        if self.max_bytes == 0 {
            return Err(("max_bytes".into(), "must be at least 1".into()));
        }
        if self.max_bytes > u32::MAX as u64 / 2 {
            return Err(("max_bytes".into(), "must be below 2 GiB".into()));
        }
        if self.timeout.is_zero() {
            return Err(("timeout".into(), "must be greater than 0".into()));
        }
        Ok(())
    }

    /// The compiled `start_pattern` (on bytes: lines need not be UTF-8).
    pub fn regex(&self) -> Result<regex::bytes::Regex, (String, String)> {
        let field = || "start_pattern".to_string();
        if self.start_pattern.is_empty() {
            return Err((field(), "must not be empty".into()));
        }
        if self.start_pattern.len() > MAX_PATTERN_LEN {
            return Err((
                field(),
                format!(
                    "is {} bytes long; at most {MAX_PATTERN_LEN}",
                    self.start_pattern.len()
                ),
            ));
        }
        regex::bytes::RegexBuilder::new(&self.start_pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let reason = e.to_string();
                let reason = reason.lines().last().unwrap_or_default().trim().to_string();
                (
                    field(),
                    format!("invalid regex {:?}: {reason}", self.start_pattern),
                )
            })
    }
}

/// How a tailer reads its file's lines: a log entry's `format` and `multiline`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Parsing {
    pub format: Format,
    pub multiline: Option<Multiline>,
}

impl Parsing {
    /// Lines go to the sink as they are: the fast path, no decoder at all.
    pub fn is_passthrough(&self) -> bool {
        self.format.is_raw() && self.multiline.is_none()
    }

    /// Validates `multiline`; the error's field is `multiline.<field>`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(multiline) = &self.multiline {
            multiline
                .validate()
                .map_err(|(f, m)| (format!("multiline.{f}"), m))?;
        }
        Ok(())
    }
}

/// Parses an RFC 3339 time (any offset, up to nanoseconds) into nanoseconds since the epoch.
pub fn parse_time(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC with nanoseconds.
pub fn format_time(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multiline(pattern: &str) -> Multiline {
        Multiline {
            start_pattern: pattern.into(),
            max_lines: 500,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn validate_should_name_the_field_of_a_bad_multiline_setting() {
        let cases = [
            (
                multiline(""),
                "multiline.start_pattern",
                "must not be empty",
            ),
            (
                multiline("(unclosed"),
                "multiline.start_pattern",
                "invalid regex",
            ),
            (
                Multiline {
                    max_lines: 0,
                    ..multiline("^x")
                },
                "multiline.max_lines",
                "at least 1",
            ),
            (
                Multiline {
                    max_bytes: 0,
                    ..multiline("^x")
                },
                "multiline.max_bytes",
                "at least 1",
            ),
            (
                Multiline {
                    timeout: Duration::ZERO,
                    ..multiline("^x")
                },
                "multiline.timeout",
                "greater than 0",
            ),
        ];
        for (m, field, message) in cases {
            let parsing = Parsing {
                format: Format::Cri,
                multiline: Some(m),
            };
            let (f, msg) = parsing.validate().unwrap_err();
            assert_eq!(f, field);
            assert!(msg.contains(message), "{msg}");
        }
        assert!(Parsing {
            format: Format::Raw,
            multiline: Some(multiline(r"^\d{4}-\d{2}-\d{2}")),
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn times_should_round_trip_in_utc_with_nanoseconds() {
        let nanos = parse_time(b"2024-05-01T10:20:30.123456789Z").unwrap();
        assert_eq!(format_time(nanos), "2024-05-01T10:20:30.123456789Z");
        let shifted = parse_time(b"2024-05-01T12:20:30.123456789+02:00").unwrap();
        assert_eq!(shifted, nanos);
        assert_eq!(parse_time(b"yesterday"), None);
    }
}
