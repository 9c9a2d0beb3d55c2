//! The line-by-line accounting every fault test ends with: which written lines were
//! delivered and how often, summed up in one line,
//! `written N, delivered N, duplicates D, lost 0`.

use super::wait_for;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Numbered lines written to one log file, which can be rotated (rename + create).
pub struct LogWriter {
    pub path: PathBuf,
    prefix: String,
    next: usize,
    rotations: usize,
    written: Vec<String>,
}

impl LogWriter {
    /// Creates (or empties) the file at `path`; its lines start with `prefix`.
    pub fn new(path: &Path, prefix: &str) -> Self {
        std::fs::write(path, "").unwrap();
        LogWriter {
            path: path.to_path_buf(),
            prefix: prefix.to_string(),
            next: 0,
            rotations: 0,
            written: Vec::new(),
        }
    }

    /// Appends `n` lines in one `write` (as a logging app flushing its buffer).
    pub fn write(&mut self, n: usize) {
        let batch: Vec<String> = (self.next..self.next + n)
            .map(|i| format!("{} {i:07} {}", self.prefix, "p".repeat(i % 37)))
            .collect();
        self.next += n;
        super::append_lines(&self.path, batch.iter().cloned());
        self.written.extend(batch);
    }

    /// Renames the file to `<path>.<n>` (n = 1, 2, ...: never reused) and creates a new
    /// empty one at the path, as logrotate's default `create` mode does.
    pub fn rotate(&mut self) -> PathBuf {
        self.rotations += 1;
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(format!(".{}", self.rotations));
        let rotated = PathBuf::from(rotated);
        std::fs::rename(&self.path, &rotated).unwrap();
        std::fs::write(&self.path, "").unwrap();
        rotated
    }

    pub fn written(&self) -> &[String] {
        &self.written
    }

    pub fn rotations(&self) -> usize {
        self.rotations
    }
}

/// Written versus delivered, line by line.
#[derive(Debug)]
pub struct Accounting {
    pub written: usize,
    pub delivered: usize,
    /// Delivered copies beyond the first of each line.
    pub duplicates: usize,
    /// Written lines never delivered (the first few, and how many).
    pub lost: Vec<String>,
    /// Delivered lines that were never written.
    pub unexpected: Vec<String>,
    /// The most copies of any one line.
    pub max_copies: usize,
}

impl Accounting {
    pub fn of<S: AsRef<str>>(written: &[String], delivered: &[S]) -> Accounting {
        let mut copies: HashMap<&str, usize> = HashMap::with_capacity(delivered.len());
        for line in delivered {
            *copies.entry(line.as_ref()).or_default() += 1;
        }
        let mut lost = Vec::new();
        for line in written {
            if !copies.contains_key(line.as_str()) {
                lost.push(line.clone());
            }
        }
        let known: std::collections::HashSet<&str> = written.iter().map(String::as_str).collect();
        let unexpected = copies
            .keys()
            .filter(|l| !known.contains(*l))
            .map(|l| l.to_string())
            .collect();
        Accounting {
            written: written.len(),
            delivered: delivered.len(),
            duplicates: copies.values().map(|n| n - 1).sum(),
            lost,
            unexpected,
            max_copies: copies.values().copied().max().unwrap_or(0),
        }
    }

    /// `written N, delivered N, duplicates D, lost L`.
    pub fn summary(&self) -> String {
        format!(
            "written {}, delivered {}, duplicates {}, lost {}",
            self.written,
            self.delivered,
            self.duplicates,
            self.lost.len()
        )
    }

    /// Prints the summary, then asserts that no line was lost or invented and that at
    /// most `max_duplicates` copies repeat (`why` says where that bound comes from).
    pub fn check(&self, test: &str, max_duplicates: usize, why: &str) {
        println!("{test}: {}", self.summary());
        assert!(
            self.lost.is_empty(),
            "{test}: {} lost, first: {:?}",
            self.summary(),
            &self.lost[..self.lost.len().min(5)]
        );
        assert!(
            self.unexpected.is_empty(),
            "{test}: delivered lines never written: {:?}",
            &self.unexpected[..self.unexpected.len().min(5)]
        );
        assert!(
            self.duplicates <= max_duplicates,
            "{test}: {} duplicates, bound {max_duplicates} ({why})",
            self.duplicates
        );
    }
}

/// Polls `delivered` until every written line is in it (or `timeout`), then lets late
/// copies land for `settle` and returns the final delivery. Never panics on a timeout:
/// the accounting reports what is missing.
pub fn wait_delivered(
    written: &[String],
    timeout: Duration,
    settle: Duration,
    mut delivered: impl FnMut() -> Vec<String>,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let wanted: std::collections::HashSet<&str> = written.iter().map(String::as_str).collect();
    loop {
        let got = delivered();
        let seen: std::collections::HashSet<&str> = got.iter().map(String::as_str).collect();
        if wanted.is_subset(&seen) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(settle);
    delivered()
}

/// A metric's value summed over its series (0 when absent).
pub fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = super::http_get(port, "/metrics").expect("GET /metrics");
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `check` holds, with a generous timeout for a loaded machine.
pub fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_for(what, Duration::from_secs(60), check)
}
