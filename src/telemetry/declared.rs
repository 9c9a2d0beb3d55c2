//! The status each declaring etcd key gets back in etcd, derived from the status model
//! (`/status` tailers and source rows) and the sources' snapshots: for each entry, the
//! files it matched with their state, and the files refused. Pure, so it is unit-tested.
//! A key whose latest snapshot the reconcile loop has not applied yet has no report this
//! time (`None`: what was written stays), so `observed_revision` is always a revision the
//! loop acted on, and the files are those of its entries.

use super::status::{Snapshots, TailerStatus};
use crate::ports::declared::{
    coarse_lag, DeclarationReport, EntryReport, FileReport, RefusedReport,
};
use crate::source::status::SourcesView;
use crate::spec::{Declares, LogSpec};
use std::collections::BTreeMap;
use std::path::Path;

/// One report per etcd key that is a source now, by key; `None` for a key whose
/// snapshot differs from the one the last reconcile pass `applied`.
pub fn reports(
    node: &str,
    tailers: &[TailerStatus],
    sources: &SourcesView,
    snapshots: &Snapshots,
    applied: &Snapshots,
    cwd: &Path,
) -> BTreeMap<String, Option<DeclarationReport>> {
    snapshots
        .iter()
        .filter_map(|(source, specs)| {
            let key = source.strip_prefix("etcd:")?;
            if applied.get(source) != Some(specs) {
                return Some((key.to_string(), None));
            }
            let row = sources.keys.iter().find(|k| k.source == **source);
            let entries = specs
                .iter()
                .map(|spec| entry(source, spec, tailers, row.map(|r| &r.refused[..]), cwd))
                .collect();
            let report = DeclarationReport {
                node: node.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                key: key.to_string(),
                observed_revision: row.map_or(0, |r| r.revision),
                error: row.and_then(|r| r.error.clone()),
                from_cache: row.is_some_and(|r| r.from_cache),
                entries,
            };
            Some((key.to_string(), Some(report)))
        })
        .collect()
}

fn entry(
    source: &str,
    spec: &LogSpec,
    tailers: &[TailerStatus],
    refused: Option<&[crate::source::status::RefusedPath]>,
    cwd: &Path,
) -> EntryReport {
    let declares = Declares::new(cwd, spec);
    let files = tailers
        .iter()
        .filter(|t| t.topic == spec.topic && t.owners.iter().any(|o| o == source))
        .filter(|t| declares.matches(Path::new(&t.path)))
        .map(|t| FileReport {
            path: t.path.clone(),
            state: t.state.as_str().to_string(),
            reason: t.reason.clone(),
            lag_bytes: coarse_lag(t.lag_bytes),
            restarts: t.restarts,
        })
        .collect();
    let refused = refused
        .unwrap_or_default()
        .iter()
        .filter(|r| r.topic == spec.topic && declares.matches(Path::new(&r.path)))
        .map(|r| RefusedReport {
            path: r.path.clone(),
            rule: r.kind.as_str().to_string(),
            reason: r.reason.clone(),
        })
        .collect();
    EntryReport {
        path: spec.path.clone(),
        topic: spec.topic.clone(),
        labels: spec.labels.clone(),
        files,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::status::{KeyStatus, RefusedPath};
    use crate::spec::RefusalKind;
    use crate::telemetry::TailerState;

    fn spec(path: &str, topic: &str) -> LogSpec {
        LogSpec {
            path: path.into(),
            topic: topic.into(),
            ..Default::default()
        }
    }

    fn tailer(path: &str, topic: &str, owner: &str, state: TailerState) -> TailerStatus {
        TailerStatus {
            topic: topic.into(),
            path: path.into(),
            owners: vec![owner.into()],
            labels: Default::default(),
            fields: Default::default(),
            fallback: None,
            state,
            reason: (state == TailerState::Backoff).then(|| "topic missing".into()),
            restarts: 2,
            offset: 0,
            file_size: 5 << 20,
            lag_bytes: 5 << 20,
            last_line_at_ms: None,
        }
    }

    #[test]
    fn reports_should_give_each_entry_its_own_files_and_refusals() {
        let snapshots: Snapshots = BTreeMap::from([
            ("config".into(), vec![spec("/l/c.log", "t")].into()),
            (
                "etcd:/k".into(),
                vec![
                    spec("/l/*.log", "t"),
                    spec("/l/b.log", "u"),
                    spec("/etc/x", "t"),
                ]
                .into(),
            ),
        ]);
        let tailers = [
            tailer("/l/a.log", "t", "etcd:/k", TailerState::Running),
            tailer("/l/b.log", "u", "etcd:/k", TailerState::Backoff),
            // Same topic and matching, but not declared by this key.
            tailer("/l/c.log", "t", "config", TailerState::Running),
        ];
        let sources = SourcesView {
            ready: true,
            watches: vec![],
            keys: vec![KeyStatus {
                source: "etcd:/k".into(),
                key: "/k".into(),
                revision: 7,
                from_cache: false,
                error: Some("invalid JSON".into()),
                refused: vec![RefusedPath {
                    topic: "t".into(),
                    path: "/etc/x".into(),
                    kind: RefusalKind::AllowedPaths,
                    reason: "outside".into(),
                }],
            }],
        };
        let reports = reports(
            "n1",
            &tailers,
            &sources,
            &snapshots,
            &snapshots,
            Path::new("/"),
        );
        assert_eq!(reports.keys().collect::<Vec<_>>(), ["/k"], "etcd keys only");
        let report = reports["/k"].as_ref().unwrap();
        assert_eq!((report.node.as_str(), report.observed_revision), ("n1", 7));
        assert_eq!(report.error.as_deref(), Some("invalid JSON"));
        let files = |i: usize| -> Vec<(&str, &str)> {
            report.entries[i]
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.state.as_str()))
                .collect()
        };
        assert_eq!(files(0), [("/l/a.log", "running")]);
        assert_eq!(report.entries[0].files[0].lag_bytes, 4 << 20);
        assert_eq!(files(1), [("/l/b.log", "backoff")]);
        assert!(files(2).is_empty());
        assert_eq!(report.entries[2].refused[0].rule, "allowed_paths");
        assert!(report.entries[0].refused.is_empty());
        assert_eq!(report.errors().len(), 3);
    }

    #[test]
    fn a_key_whose_snapshot_is_not_applied_yet_should_have_no_report() {
        let old: Snapshots =
            BTreeMap::from([("etcd:/k".into(), vec![spec("/l/a.log", "t")].into())]);
        let new: Snapshots =
            BTreeMap::from([("etcd:/k".into(), vec![spec("/l/b.log", "t")].into())]);
        let sources = SourcesView {
            ready: true,
            watches: vec![],
            keys: vec![],
        };
        let cwd = Path::new("/");
        let reports = |applied: &Snapshots| super::reports("n1", &[], &sources, &new, applied, cwd);
        assert_eq!(reports(&old)["/k"], None);
        assert_eq!(reports(&BTreeMap::new())["/k"], None, "never applied");
        assert!(reports(&new)["/k"].is_some());
    }
}
