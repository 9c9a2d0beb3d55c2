//! A declaration's rate limit, `throttle:` in the config's `logs[]` and in etcd values:
//! lines and/or bytes per second with a burst, per file, container or namespace, that
//! pauses reading (the default: the file is the buffer, nothing is lost) or drops what is
//! over it (counted). Validated here for both sources; `tail/throttle.rs` enforces it.

use crate::units;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest `burst` accepted: a bucket holds at most this many seconds of its rates.
const MAX_BURST: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Lines (file lines, before any joining) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines_per_s: Option<u64>,
    /// Bytes per second: a number or a size such as `1MiB`.
    #[serde(
        default,
        deserialize_with = "units::optional_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub bytes_per_s: Option<u64>,
    /// How much the bucket holds when full, as a duration of its rates (default `1s`:
    /// one second's worth).
    #[serde(
        default = "default_burst",
        deserialize_with = "units::duration",
        serialize_with = "units::serialize_duration"
    )]
    pub burst: Duration,
    /// Who shares a bucket.
    #[serde(default)]
    pub per: Per,
    /// What happens over the limit.
    #[serde(default)]
    pub on_limit: OnLimit,
}

fn default_burst() -> Duration {
    Duration::from_secs(1)
}

/// Who shares a bucket: each file, the files of one container, or of one namespace (pod
/// metadata from kubelet log paths; a file without it has a bucket of its own).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    #[default]
    File,
    Container,
    Namespace,
}

/// What happens over the limit.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// Stop reading until the bucket refills: lossless, the lag grows.
    #[default]
    Pause,
    /// Drop the records over the limit (counted); the checkpoint moves past them.
    Drop,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::File => "file",
            Per::Container => "container",
            Per::Namespace => "namespace",
        }
    }
}

impl Throttle {
    /// Checks every field; the error is `(field, message)`, the field starting with
    /// `throttle`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let field = |name: &str| format!("throttle.{name}");
        if self.lines_per_s.is_none() && self.bytes_per_s.is_none() {
            return Err((
                "throttle".into(),
                "set lines_per_s, bytes_per_s or both".into(),
            ));
        }
        if self.lines_per_s == Some(0) {
            return Err((field("lines_per_s"), "must be at least 1".into()));
        }
        if self.bytes_per_s == Some(0) {
            return Err((field("bytes_per_s"), "must be at least 1".into()));
        }
        if self.burst.is_zero() {
            return Err((field("burst"), "must be greater than 0".into()));
        }
        if self.burst > MAX_BURST {
            return Err((field("burst"), "must be at most 1h".into()));
        }
        Ok(())
    }

    /// `100 lines/s, 1 MiB/s per container`, for `/status`.
    pub fn describe(&self) -> String {
        let lines = self.lines_per_s.map(|n| format!("{n} lines/s"));
        let bytes = self
            .bytes_per_s
            .map(|n| format!("{}/s", bytesize::ByteSize::b(n).display().iec()));
        let rates: Vec<String> = lines.into_iter().chain(bytes).collect();
        format!("{} per {}", rates.join(", "), self.per.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Throttle {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_throttle_should_default_to_one_seconds_burst_per_file_pausing() {
        let throttle = parse("lines_per_s: 100");
        assert_eq!(throttle.lines_per_s, Some(100));
        assert_eq!(throttle.bytes_per_s, None);
        assert_eq!(throttle.burst, Duration::from_secs(1));
        assert_eq!(throttle.per, Per::File);
        assert_eq!(throttle.on_limit, OnLimit::Pause);
        assert_eq!(throttle.validate(), Ok(()));
        let throttle = parse("{bytes_per_s: 1MiB, burst: 5s, per: namespace, on_limit: drop}");
        assert_eq!(throttle.bytes_per_s, Some(1 << 20));
        assert_eq!(throttle.burst, Duration::from_secs(5));
        assert_eq!(throttle.per, Per::Namespace);
        assert_eq!(throttle.on_limit, OnLimit::Drop);
        assert_eq!(throttle.describe(), "1.0 MiB/s per namespace");
        // Written back (the etcd value cache) and read again: the same.
        let json = serde_json::to_string(&throttle).unwrap();
        assert_eq!(serde_json::from_str::<Throttle>(&json).unwrap(), throttle);
    }

    #[test]
    fn validate_should_name_the_field() {
        let cases = [
            (
                "burst: 2s",
                "throttle",
                "set lines_per_s, bytes_per_s or both",
            ),
            (
                "lines_per_s: 0",
                "throttle.lines_per_s",
                "must be at least 1",
            ),
            (
                "bytes_per_s: 0",
                "throttle.bytes_per_s",
                "must be at least 1",
            ),
            (
                "{lines_per_s: 1, burst: 0s}",
                "throttle.burst",
                "must be greater than 0",
            ),
            (
                "{lines_per_s: 1, burst: 2h}",
                "throttle.burst",
                "must be at most 1h",
            ),
        ];
        for (yaml, field, message) in cases {
            assert_eq!(
                parse(yaml).validate(),
                Err((field.to_string(), message.to_string())),
                "{yaml}"
            );
        }
        let refused = |yaml: &str| {
            serde_yaml::from_str::<Throttle>(yaml)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("{lines_per_s: 1, per: pod}").contains("unknown variant `pod`"));
        assert!(refused("{lines_per_s: 1, on_limit: block}").contains("unknown variant `block`"));
        assert!(serde_yaml::from_str::<Throttle>("{lines_per_s: -1}").is_err());
        assert!(refused("{lines_per_s: 1, rate: 2}").contains("unknown field `rate`"));
    }
}
