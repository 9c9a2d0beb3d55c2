//! The status a node writes back to etcd for one declaring key (`etcd.status`): what it
//! does with each entry, the revision it applies, who wrote it. Shared by the writer (the
//! etcd source), the builder (telemetry, from the status model) and `logcatch etcd status`.

use serde::{Deserialize, Serialize};

/// The value of `<status prefix>/<node>/<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarationReport {
    pub node: String,
    /// The agent's version.
    pub version: String,
    /// The declaring etcd key.
    pub key: String,
    /// The etcd mod revision of the key's value this node's reconcile loop has applied
    /// (as Kubernetes' `observedGeneration`): compare it with the key's revision to see
    /// whether every node has acted on a change.
    pub observed_revision: i64,
    /// Why the value at `observed_revision` was refused; the entries are then those of
    /// the last valid value, still in force.
    #[serde(default)]
    pub error: Option<String>,
    /// The entries came from the node's snapshot cache (etcd was unreachable at start).
    #[serde(default)]
    pub from_cache: bool,
    pub entries: Vec<EntryReport>,
}

/// One `{path, topic}` entry of the key's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryReport {
    /// As declared (maybe a glob).
    pub path: String,
    pub topic: String,
    /// The entry's labels (owner, ticket, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The files it matched that a tailer follows (or waits for).
    pub files: Vec<FileReport>,
    /// The files it matched that are not followed, and which rule refused each.
    #[serde(default)]
    pub refused: Vec<RefusedReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    pub path: String,
    /// `starting`, `waiting`, `running`, `backoff` or `stopping`.
    pub state: String,
    /// Why it waits or backs off (the last error).
    #[serde(default)]
    pub reason: Option<String>,
    /// Bytes not shipped yet, rounded down to a power of two from 1 MiB (less shows 0),
    /// so that a busy file does not rewrite the status at every interval.
    pub lag_bytes: u64,
    pub restarts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedReport {
    pub path: String,
    /// `allowed_paths`, `max_tailers` or `ignore_older`.
    pub rule: String,
    pub reason: String,
}

/// Lag below this shows as 0.
pub const LAG_FLOOR: u64 = 1 << 20;

/// `lag` rounded down to a power of two, 0 below [`LAG_FLOOR`].
pub fn coarse_lag(lag: u64) -> u64 {
    if lag < LAG_FLOOR {
        0
    } else {
        1 << (63 - lag.leading_zeros())
    }
}

impl EntryReport {
    /// Files backing off, or refused by a rule other than `ignore_older` (which only
    /// skips old files until they are written again).
    pub fn failures(&self) -> Vec<String> {
        let backoff = self
            .files
            .iter()
            .filter(|f| f.state == "backoff")
            .map(|f| format!("{}: {}", f.path, f.reason.as_deref().unwrap_or("backoff")));
        let refused = self
            .refused
            .iter()
            .filter(|r| r.rule != "ignore_older")
            .map(|r| format!("{}: refused by {}: {}", r.path, r.rule, r.reason));
        backoff.chain(refused).collect()
    }

    /// No file to ship: nothing matched, or every match waits for its file to appear.
    pub fn matches_no_file(&self) -> bool {
        self.files.iter().all(|f| f.state == "waiting") && self.refused.is_empty()
    }

    /// Files shipped now (a throttled one too, at its limit).
    pub fn running(&self) -> usize {
        let shipping = |state: &str| state == "running" || state == "throttled";
        self.files.iter().filter(|f| shipping(&f.state)).count()
    }
}

impl DeclarationReport {
    /// Every error the node reports for the key: an invalid value, then each entry's.
    pub fn errors(&self) -> Vec<String> {
        let entries = self.entries.iter().flat_map(|e| {
            e.failures()
                .into_iter()
                .map(move |f| format!("{} -> {}: {f}", e.path, e.topic))
        });
        self.error.iter().cloned().chain(entries).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_lag_should_change_only_when_the_lag_doubles_or_halves() {
        assert_eq!(coarse_lag(0), 0);
        assert_eq!(coarse_lag(LAG_FLOOR - 1), 0);
        assert_eq!(coarse_lag(LAG_FLOOR), LAG_FLOOR);
        assert_eq!(coarse_lag(3 * LAG_FLOOR), 2 * LAG_FLOOR);
        assert_eq!(coarse_lag(4 * LAG_FLOOR - 1), 2 * LAG_FLOOR);
    }

    #[test]
    fn errors_should_name_the_entry_and_skip_files_merely_waiting() {
        let file = |state: &str, reason: Option<&str>| FileReport {
            path: "/l/a.log".into(),
            state: state.into(),
            reason: reason.map(Into::into),
            lag_bytes: 0,
            restarts: 0,
        };
        let mut report = DeclarationReport {
            node: "n".into(),
            version: "v".into(),
            key: "/k".into(),
            observed_revision: 3,
            error: None,
            from_cache: false,
            entries: vec![EntryReport {
                path: "/l/*.log".into(),
                topic: "t".into(),
                labels: Default::default(),
                files: vec![file("waiting", Some("no such file"))],
                refused: vec![],
            }],
        };
        assert!(report.errors().is_empty());
        assert!(report.entries[0].matches_no_file());
        report.entries[0]
            .files
            .push(file("backoff", Some("topic missing")));
        report.entries[0].refused.push(RefusedReport {
            path: "/etc/shadow".into(),
            rule: "allowed_paths".into(),
            reason: "outside".into(),
        });
        assert_eq!(
            report.errors(),
            [
                "/l/*.log -> t: /l/a.log: topic missing",
                "/l/*.log -> t: /etc/shadow: refused by allowed_paths: outside"
            ]
        );
        assert!(!report.entries[0].matches_no_file());
        // A throttled file is shipped (at its limit), and not an error.
        assert_eq!(report.entries[0].running(), 0);
        report.entries[0]
            .files
            .push(file("throttled", Some("reading paused at the throttle")));
        assert_eq!(report.entries[0].running(), 1);
        assert_eq!(report.errors().len(), 2);
    }
}
