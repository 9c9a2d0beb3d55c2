//! Human-friendly units in the config: durations (`250ms`, `30s`) and sizes (`1048576`, `1MiB`).

use serde::{de, Deserialize, Deserializer};
use std::time::Duration;

/// Parses a duration string such as `250ms`, `30s` or `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); use e.g. \"250ms\", \"30s\", \"5m\"")
    })
}

/// Parses a size: a plain number of bytes or a string such as `64KiB`, `1MiB`, `1 MB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if let Ok(bytes) = trimmed.parse::<u64>() {
        return Ok(bytes);
    }
    trimmed
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("invalid size {text:?} ({e}); use bytes or e.g. \"64KiB\", \"1MiB\""))
}

pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(de::Error::custom)
}

pub fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)
        .map_err(|_| de::Error::custom("expected a size: bytes or a string like \"1MiB\""))?
    {
        Raw::Bytes(bytes) => Ok(bytes),
        Raw::Text(text) => parse_size(&text).map_err(de::Error::custom),
    }
}

/// An optional size (`None` when absent: use with `#[serde(default)]`).
pub fn optional_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    size(deserializer).map(Some)
}

/// A size written back (e.g. the etcd value cache) as a plain number of bytes.
pub fn serialize_size<S: serde::Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(*bytes)
}

/// A duration written back as the config writes it (`1s`, `250ms`).
pub fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_units_operators_write() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
        assert!(parse_duration("30").is_err(), "a bare number has no unit");
    }

    #[test]
    fn sizes_parse_as_bytes_or_binary_units() {
        assert_eq!(parse_size("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_size("1MiB").unwrap(), 1_048_576);
        assert_eq!(parse_size("64 KiB").unwrap(), 65_536);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert!(parse_size("lots").unwrap_err().contains("\"lots\""));
    }
}
