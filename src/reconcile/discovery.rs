//! What the reconciler remembers of each desired file from the pass it was first desired:
//! - whether it appeared after a glob declaration matching it was first seen. Like
//!   Fluent Bit and Vector, `tail.start_at: end` applies only to the files that existed
//!   when their declaration was first seen; a file a glob finds later (a new pod's log) is
//!   read from its beginning.
//! - whether `tail.ignore_older` leaves it alone: a file not modified for longer when
//!   first found is not followed (a checkpoint at its end is recorded, so only what is
//!   written later is shipped) until it is written again.
//!
//! In memory: after a restart, every declaration is first seen again.

use crate::spec::{DesiredSet, LogSpec, Refusal, RefusalKind, SourceId, TailerId};
use crate::tail::fingerprint::FileIdentity;
use crate::tail::Checkpoints;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A glob declaration: (source, topic, pattern).
type Declaration = (SourceId, Arc<str>, String);

#[derive(Debug, Default)]
pub struct Discovery {
    /// The glob declarations of the last pass.
    declared: HashSet<Declaration>,
    files: HashMap<TailerId, Found>,
}

#[derive(Debug, Clone, Copy)]
struct Found {
    /// Found by a glob whose declaration was seen in an earlier pass.
    appeared_later: bool,
    /// Left alone by `tail.ignore_older` (looked at again every pass).
    ignored: bool,
}

impl Discovery {
    /// Notes the files desired for the first time this pass, and takes out of `desired`
    /// the ones `ignore_older` leaves alone (returned, to be listed). `running`: ids of
    /// tailers that run, never left alone.
    pub fn update<'a>(
        &mut self,
        snapshots: impl IntoIterator<Item = (&'a SourceId, &'a [LogSpec])>,
        desired: &mut DesiredSet,
        running: impl Fn(&TailerId) -> bool,
        ignore_older: Duration,
        checkpoints: &Checkpoints,
    ) -> Vec<Refusal> {
        let declared: HashSet<Declaration> = snapshots
            .into_iter()
            .flat_map(|(source, specs)| {
                specs
                    .iter()
                    .filter(|spec| crate::spec::is_glob(&spec.path))
                    .map(|spec| {
                        (
                            source.clone(),
                            spec.topic.as_str().into(),
                            spec.path.clone(),
                        )
                    })
            })
            .collect();
        self.files.retain(|id, _| desired.contains_key(id));
        let mut refusals = Vec::new();
        for (id, want) in desired.iter() {
            let found = self.files.entry(id.clone()).or_insert_with(|| {
                let appeared_later = want.globs.iter().any(|(source, pattern)| {
                    self.declared
                        .contains(&(source.clone(), id.topic.clone(), pattern.clone()))
                });
                let ignored = !running(id) && ignore(id, ignore_older, checkpoints);
                Found {
                    appeared_later,
                    ignored,
                }
            });
            if found.ignored {
                found.ignored = !running(id) && older(id, ignore_older);
            }
            if found.ignored {
                let source = want.owners.iter().next().cloned().unwrap_or_default();
                refusals.push(Refusal {
                    source,
                    id: id.clone(),
                    kind: RefusalKind::IgnoreOlder,
                    reason: format!(
                        "not modified for longer than tail.ignore_older ({}s) when first found; followed once it is written again",
                        ignore_older.as_secs()
                    ),
                });
            }
        }
        for refusal in &refusals {
            desired.remove(&refusal.id);
        }
        self.declared = declared;
        refusals
    }

    /// Whether the file appeared after its glob declaration was first seen: its tailer
    /// reads it from its beginning whatever `start_at` says.
    pub fn appeared_later(&self, id: &TailerId) -> bool {
        self.files.get(id).is_some_and(|f| f.appeared_later)
    }
}

/// Whether the file at `id.path` was last modified longer than `ignore_older` ago (0: off).
fn older(id: &TailerId, ignore_older: Duration) -> bool {
    if ignore_older.is_zero() {
        return false;
    }
    let modified = std::fs::metadata(&id.path).and_then(|m| m.modified());
    modified.is_ok_and(|at| {
        SystemTime::now()
            .duration_since(at)
            .is_ok_and(|age| age > ignore_older)
    })
}

/// Whether a file first found now is left alone: older than `ignore_older` with nothing
/// unread after its checkpoint. Records a checkpoint at its end when it has none, so that
/// once written again only the new lines are shipped.
fn ignore(id: &TailerId, ignore_older: Duration, checkpoints: &Checkpoints) -> bool {
    if !older(id, ignore_older) {
        return false;
    }
    let Ok(file) = crate::open::open_for_reading(&id.path) else {
        return false; // its tailer reports why
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let Ok(identity) = FileIdentity::of(&file, &meta) else {
        return false;
    };
    match checkpoints.get(&id.topic, identity.dev, identity.ino) {
        Some(c) if c.file.matches(&file, &meta).unwrap_or(false) => c.offset >= meta.len(),
        _ => {
            checkpoints.set(&id.topic, identity, meta.len(), &id.path);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TailConfig;
    use crate::spec::TailerSettings;
    use std::path::Path;

    struct Passes {
        dir: tempfile::TempDir,
        discovery: Discovery,
        checkpoints: Arc<Checkpoints>,
        specs: Vec<(SourceId, Vec<LogSpec>)>,
    }

    impl Passes {
        fn new(pattern: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let (checkpoints, _) = Checkpoints::open(&dir.path().join("state")).unwrap();
            let spec = LogSpec {
                path: dir.path().join(pattern).display().to_string(),
                topic: "t".into(),
                ..Default::default()
            };
            Passes {
                dir,
                discovery: Discovery::default(),
                checkpoints,
                specs: vec![("config".into(), vec![spec])],
            }
        }

        fn file(&self, name: &str) -> TailerId {
            let path = self.dir.path().join(name);
            std::fs::write(&path, b"a line\n").unwrap();
            TailerId::new("t", &path)
        }

        /// One pass: what stays desired, and what was left alone.
        fn pass(&mut self, ignore_older: Duration) -> (DesiredSet, Vec<TailerId>) {
            let settings = TailerSettings::from_config(&TailConfig::default());
            let snapshots = || self.specs.iter().map(|(s, v)| (s, &v[..]));
            let (mut desired, _) = crate::spec::expand(snapshots(), &settings, Path::new("/"));
            let refused = self.discovery.update(
                snapshots(),
                &mut desired,
                |_| false,
                ignore_older,
                &self.checkpoints,
            );
            (desired, refused.into_iter().map(|r| r.id).collect())
        }
    }

    #[test]
    fn a_file_a_glob_finds_after_its_declaration_was_first_seen_should_appear_later() {
        let mut passes = Passes::new("*.log");
        let old = passes.file("old.log");
        passes.pass(Duration::ZERO);
        let new = passes.file("new.log");
        let (desired, _) = passes.pass(Duration::ZERO);
        assert_eq!(desired.len(), 2);
        assert!(
            !passes.discovery.appeared_later(&old),
            "there when first seen"
        );
        assert!(passes.discovery.appeared_later(&new));

        // The declaration removed and declared again: first seen again.
        let specs = std::mem::take(&mut passes.specs[0].1);
        passes.pass(Duration::ZERO);
        passes.specs[0].1 = specs;
        passes.pass(Duration::ZERO);
        assert!(!passes.discovery.appeared_later(&new));
    }

    #[test]
    fn a_file_older_than_ignore_older_should_be_left_alone_until_written() {
        let mut passes = Passes::new("*.log");
        let stale = passes.file("stale.log");
        let fresh = passes.file("fresh.log");
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        let set_modified = |at| {
            std::fs::File::options()
                .write(true)
                .open(&stale.path)
                .unwrap()
                .set_modified(at)
                .unwrap()
        };
        set_modified(long_ago);
        let hour = Duration::from_secs(3600);
        let (desired, ignored) = passes.pass(hour);
        assert_eq!(ignored, std::slice::from_ref(&stale));
        assert!(desired.contains_key(&fresh) && !desired.contains_key(&stale));
        let file = std::fs::File::open(&stale.path).unwrap();
        let meta = file.metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        let checkpoint = passes.checkpoints.get("t", meta.dev(), meta.ino());
        assert_eq!(checkpoint.map(|c| c.offset), Some(meta.len()), "at its end");
        assert_eq!(
            passes.pass(hour).1,
            std::slice::from_ref(&stale),
            "still left alone"
        );

        set_modified(SystemTime::now());
        let (desired, ignored) = passes.pass(hour);
        assert!(
            ignored.is_empty() && desired.contains_key(&stale),
            "written again"
        );
        assert!(passes.pass(Duration::ZERO).1.is_empty(), "off");
    }
}
