//! Expanding a glob into the regular files it matches: a walk from its deepest literal
//! directory, bounded in depth, entries and time, and for an untrusted source confined to
//! the allow-list's directories.

use crate::compressed;
use globset::{GlobBuilder, GlobMatcher};
use std::path::{Path, PathBuf};

/// Whether a declared path is a glob (has `*`, `?`, `[` or `{`).
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

/// `path` with symlinks resolved; when it does not exist, its deepest existing ancestor
/// resolved and the rest appended.
pub(super) fn resolve(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let mut rest = Vec::new();
    let mut base = path;
    while let Some(parent) = base.parent() {
        rest.push(base.file_name().unwrap_or_default().to_owned());
        if let Ok(real) = std::fs::canonicalize(parent) {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        base = parent;
    }
    path.to_path_buf()
}

/// The deepest directory of `pattern` without glob characters, and the rest.
fn split_base(pattern: &Path) -> (PathBuf, Vec<String>) {
    let mut base = PathBuf::new();
    let mut rest = Vec::new();
    for component in pattern.components() {
        let part = component.as_os_str().to_string_lossy();
        if rest.is_empty() && !is_glob(&part) {
            base.push(component);
        } else {
            rest.push(part.into_owned());
        }
    }
    (base, rest)
}

pub(super) fn literal_base(pattern: &Path) -> PathBuf {
    split_base(pattern).0
}

/// How much one glob's walk may look at: a pass expands every glob, so one glob over a
/// huge tree (or `/**`) must not stall it.
pub(super) struct WalkLimits {
    entries: usize,
    time: std::time::Duration,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            entries: MAX_WALK_ENTRIES,
            time: MAX_WALK_TIME,
        }
    }
}

/// Directory entries one glob's walk may look at before it is refused.
const MAX_WALK_ENTRIES: usize = 200_000;
/// How long one glob's walk may take before it is refused.
const MAX_WALK_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Regular files (symlinks followed) matching an absolute glob, sorted. With `roots`
/// (an untrusted source's), the glob's directory is listed, and below it only
/// directories that lie inside one of them, or on the way to one, symlinks resolved.
pub(super) fn glob_files(
    pattern: &Path,
    roots: Option<&[PathBuf]>,
    limits: &WalkLimits,
) -> Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    let matcher = GlobBuilder::new(&text)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("invalid glob: {e}"))?
        .compile_matcher();
    // Walk from the deepest directory without glob characters.
    let (base, rest) = split_base(pattern);
    let max_depth = if rest.iter().any(|part| part.contains("**")) {
        MAX_RECURSIVE_DEPTH
    } else {
        rest.len()
    };
    let mut walk = Walk {
        matcher,
        roots,
        files: Vec::new(),
        limits,
        entries_left: limits.entries,
        deadline: std::time::Instant::now() + limits.time,
    };
    walk.dir(&base, max_depth, true)?;
    let mut files = walk.files;
    files.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(files)
}

/// How deep `**` descends; bounds the walk against symlink loops.
const MAX_RECURSIVE_DEPTH: usize = 16;

struct Walk<'a> {
    matcher: GlobMatcher,
    roots: Option<&'a [PathBuf]>,
    limits: &'a WalkLimits,
    files: Vec<PathBuf>,
    entries_left: usize,
    deadline: std::time::Instant,
}

impl Walk<'_> {
    /// Whether `dir` may be listed: always for a trusted source; for an untrusted one
    /// when, symlinks resolved, it lies inside an allowed root or on the way to one.
    fn may_enter(&self, dir: &Path) -> bool {
        let Some(roots) = self.roots else {
            return true;
        };
        let resolved = resolve(dir);
        roots
            .iter()
            .any(|root| resolved.starts_with(root) || root.starts_with(&resolved))
    }

    fn dir(&mut self, dir: &Path, depth: usize, base: bool) -> Result<(), String> {
        // The glob's own directory is always listed: its files (container-log symlinks
        // into an allowed directory, or files the allow-list refuses with a reason) are
        // judged one by one after the walk. Below it, only allowed directories.
        if depth == 0 || (!base && !self.may_enter(dir)) {
            return Ok(());
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // A directory we cannot list below the base is skipped, not fatal.
            Err(_) if !base => return Ok(()),
            Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
        };
        for entry in entries.flatten() {
            if self.entries_left == 0 {
                return Err(format!(
                    "the glob looked at more than {} directory entries; narrow it",
                    self.limits.entries
                ));
            }
            self.entries_left -= 1;
            if std::time::Instant::now() > self.deadline {
                return Err(format!(
                    "listing the glob's directories took more than {:?}; narrow it",
                    self.limits.time
                ));
            }
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue; // dangling symlink or vanished meanwhile
            };
            if meta.is_dir() {
                self.dir(&path, depth - 1, false)?;
            } else if meta.is_file()
                && self.matcher.is_match(&path)
                && !compressed::is_compressed(&path, &meta)
            {
                // A rotated `.gz` matched by `app.log*` would ship as garbage.
                self.files.push(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_beyond_its_limits_should_be_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(dir.path().join(format!("{i}.log")), "x\n").unwrap();
        }
        let pattern = dir.path().join("*.log");
        let few = WalkLimits {
            entries: 5,
            time: std::time::Duration::from_secs(60),
        };
        let refused = glob_files(&pattern, None, &few).unwrap_err();
        assert!(
            refused.contains("more than 5 directory entries"),
            "{refused}"
        );
        let no_time = WalkLimits {
            entries: 100,
            time: std::time::Duration::ZERO,
        };
        let refused = glob_files(&pattern, None, &no_time).unwrap_err();
        assert!(refused.contains("took more than"), "{refused}");
        let enough = glob_files(&pattern, None, &WalkLimits::default()).unwrap();
        assert_eq!(enough.len(), 10);
    }
}
