//! `logcatch etcd status KEY`: the status every node wrote back for one declaring key
//! (`etcd.status`), gathered like `kubectl get`: per node, the revision it observed against
//! the key's current one, which entries it ships, which fail and why, which match no file.

use crate::ports::declared::DeclarationReport;
use serde::Serialize;
use std::fmt::Write as _;

/// One node's status key for the key.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: String,
    /// The report, unless the value could not be read (then `problem`).
    pub report: Option<DeclarationReport>,
    pub problem: Option<String>,
    /// `synced` (observed the key's current revision), `stale` (an older one) or
    /// `deleted` (the key is gone; its status goes within an interval).
    pub seen: &'static str,
    /// Every error the node reports for the key.
    pub errors: Vec<String>,
}

/// What `etcd status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Gathered {
    pub key: String,
    /// The key's current mod revision; `None` when it does not exist.
    pub revision: Option<i64>,
    pub nodes: Vec<NodeStatus>,
}

/// Splits a status key (`<prefix><node>/<key>`) into its node, when it is `key`'s.
pub fn node_of<'a>(status_prefix: &str, status_key: &'a str, key: &str) -> Option<&'a str> {
    let rest = status_key.strip_prefix(status_prefix)?;
    let (node, declared) = rest.split_once('/')?;
    (declared == key && !node.is_empty()).then_some(node)
}

impl Gathered {
    /// From the key's revision and the status values found, as (node, value).
    pub fn new(key: &str, revision: Option<i64>, values: Vec<(String, Vec<u8>)>) -> Self {
        let nodes = values
            .into_iter()
            .map(|(node, value)| {
                let parsed = serde_json::from_slice::<DeclarationReport>(&value);
                let (report, problem) = match parsed {
                    Ok(report) => (Some(report), None),
                    Err(e) => (None, Some(format!("unreadable status value: {e}"))),
                };
                let observed = report.as_ref().map_or(0, |r| r.observed_revision);
                let seen = match revision {
                    None => "deleted",
                    Some(current) if observed >= current => "synced",
                    Some(_) => "stale",
                };
                let errors = match (&report, &problem) {
                    (Some(report), _) => report.errors(),
                    (None, Some(problem)) => vec![problem.clone()],
                    (None, None) => Vec::new(),
                };
                NodeStatus {
                    node,
                    report,
                    problem,
                    seen,
                    errors,
                }
            })
            .collect();
        Gathered {
            key: key.to_string(),
            revision,
            nodes,
        }
    }

    /// Nodes reporting an error for the key.
    pub fn failing(&self) -> usize {
        self.nodes.iter().filter(|n| !n.errors.is_empty()).count()
    }

    /// A `kubectl get`-like table, a summary line first and each error after it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let revision = self
            .revision
            .map_or("deleted".to_string(), |r| format!("revision {r}"));
        let synced = self.nodes.iter().filter(|n| n.seen == "synced").count();
        let _ = writeln!(
            out,
            "key {} ({revision}): {} node{}, {synced} synced, {} failing",
            self.key,
            self.nodes.len(),
            if self.nodes.len() == 1 { "" } else { "s" },
            self.failing()
        );
        let width = self
            .nodes
            .iter()
            .map(|n| n.node.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            out,
            "{:<width$}  {:>8}  {:<7}  {:>8}  {:>7}  {:>7}  {:>5}",
            "NODE", "OBSERVED", "SEEN", "SHIPPING", "FAILING", "NO FILE", "FILES"
        );
        for node in &self.nodes {
            let (observed, shipping, failing, no_file, files) = match &node.report {
                Some(r) => (
                    r.observed_revision.to_string(),
                    format!(
                        "{}/{}",
                        r.entries.iter().filter(|e| e.running() > 0).count(),
                        r.entries.len()
                    ),
                    r.entries
                        .iter()
                        .filter(|e| !e.failures().is_empty())
                        .count(),
                    r.entries.iter().filter(|e| e.matches_no_file()).count(),
                    r.entries.iter().map(|e| e.files.len()).sum::<usize>(),
                ),
                None => ("?".into(), "?".into(), 0, 0, 0),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {observed:>8}  {:<7}  {shipping:>8}  {failing:>7}  {no_file:>7}  {files:>5}",
                node.node, node.seen
            );
        }
        for node in &self.nodes {
            for error in &node.errors {
                let _ = writeln!(out, "error: {}: {error}", node.node);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::declared::{EntryReport, FileReport};

    fn report(node: &str, revision: i64, state: &str) -> Vec<u8> {
        let report = DeclarationReport {
            node: node.into(),
            version: "v".into(),
            key: "/k".into(),
            observed_revision: revision,
            error: None,
            from_cache: false,
            entries: vec![EntryReport {
                path: "/l/a.log".into(),
                topic: "t".into(),
                labels: Default::default(),
                files: vec![FileReport {
                    path: "/l/a.log".into(),
                    state: state.into(),
                    reason: (state == "backoff").then(|| "no such topic".into()),
                    lag_bytes: 0,
                    restarts: 0,
                }],
                refused: vec![],
            }],
        };
        serde_json::to_vec(&report).unwrap()
    }

    #[test]
    fn node_of_should_take_only_the_keys_status() {
        assert_eq!(node_of("/s/", "/s/n1//k", "/k"), Some("n1"));
        assert_eq!(node_of("/s/", "/s/n1//k/more", "/k"), None);
        assert_eq!(node_of("/s/", "/s/n1//other", "/k"), None);
        assert_eq!(node_of("/s/", "/x/n1//k", "/k"), None);
    }

    #[test]
    fn the_table_should_show_stale_and_failing_nodes_and_their_errors() {
        let gathered = Gathered::new(
            "/k",
            Some(9),
            vec![
                ("a".into(), report("a", 9, "running")),
                ("b".into(), report("b", 7, "backoff")),
                ("c".into(), b"{torn".to_vec()),
            ],
        );
        assert_eq!(gathered.failing(), 2);
        let seen: Vec<&str> = gathered.nodes.iter().map(|n| n.seen).collect();
        assert_eq!(seen, ["synced", "stale", "stale"]);
        let table = gathered.table();
        assert!(
            table.starts_with("key /k (revision 9): 3 nodes, 1 synced, 2 failing\n"),
            "{table}"
        );
        assert!(table.contains("\na     "), "{table}");
        assert!(
            table.contains("error: b: /l/a.log -> t: /l/a.log: no such topic"),
            "{table}"
        );
        assert!(
            table.contains("error: c: unreadable status value"),
            "{table}"
        );
    }
}
