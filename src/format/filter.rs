//! A declaration's line filters, Filebeat's `include_lines` (keep only the records that
//! match one of its regexes) and `exclude_lines` (drop those that match one of its),
//! include first. They judge whole records: a container log's message once decoded and
//! joined, a multiline record once joined (`^` and `$` are its start and end). Validated
//! here for the config file and etcd values alike; compiled once per tailer.

use super::{MAX_PATTERN_LEN, REGEX_SIZE_LIMIT};
use crate::record::Batch;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// The most regexes in one list (etcd values are untrusted).
pub const MAX_PATTERNS: usize = 64;
/// Compiled-size limit of one list's set of regexes.
const SET_SIZE_LIMIT: usize = 8 * REGEX_SIZE_LIMIT;

/// A declaration's filters as declared; empty lists filter nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineFilters {
    /// Keep only records matching one of these (all when empty).
    pub include_lines: Vec<String>,
    /// Drop records matching one of these.
    pub exclude_lines: Vec<String>,
}

/// Why a record was filtered out (the `reason` label of
/// `logcatch_records_filtered_total`): the list that dropped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    IncludeLines,
    ExcludeLines,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::IncludeLines => "include_lines",
            Reason::ExcludeLines => "exclude_lines",
        }
    }
}

/// Records filtered out since the counts were last taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filtered {
    pub include_lines: u64,
    pub exclude_lines: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Filtered {
    pub fn records(&self) -> u64 {
        self.include_lines + self.exclude_lines
    }

    /// `(reason, records)` for each reason that filtered any.
    pub fn by_reason(&self) -> impl Iterator<Item = (Reason, u64)> {
        [
            (Reason::IncludeLines, self.include_lines),
            (Reason::ExcludeLines, self.exclude_lines),
        ]
        .into_iter()
        .filter(|&(_, records)| records > 0)
    }
}

impl LineFilters {
    pub fn is_empty(&self) -> bool {
        self.include_lines.is_empty() && self.exclude_lines.is_empty()
    }

    fn lists(&self) -> [(&'static str, &[String]); 2] {
        [
            ("include_lines", &self.include_lines),
            ("exclude_lines", &self.exclude_lines),
        ]
    }

    /// Checks every regex; the error is `(field, message)`, the field `include_lines[0]`,
    /// `exclude_lines[2]`, or the list's name when the list as a whole is refused.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.compile().map(|_| ())
    }

    /// The compiled filter; `None` when both lists are empty (nothing is looked at).
    pub fn compile(&self) -> Result<Option<Filter>, (String, String)> {
        let [include, exclude] = self.lists().map(|(name, list)| compile(name, list));
        let filter = Filter {
            include: include?,
            exclude: exclude?,
        };
        Ok((filter.include.is_some() || filter.exclude.is_some()).then_some(filter))
    }
}

/// One list's regexes, as one matcher: a `Regex` for one (a `RegexSet` of one costs
/// about twice as much a record: 38 against 20 ns), a `RegexSet` for more (as fast as
/// their alternation, which a `(?x)` comment could break).
#[derive(Debug, Clone)]
enum Matcher {
    One(Regex),
    Any(RegexSet),
}

impl Matcher {
    #[inline]
    fn is_match(&self, record: &[u8]) -> bool {
        match self {
            Matcher::One(regex) => regex.is_match(record),
            Matcher::Any(set) => set.is_match(record),
        }
    }
}

/// One list's matcher; each regex first alone, so that an error names its index.
fn compile(name: &str, list: &[String]) -> Result<Option<Matcher>, (String, String)> {
    if list.is_empty() {
        return Ok(None);
    }
    if list.len() > MAX_PATTERNS {
        let message = format!("{} regexes; at most {MAX_PATTERNS}", list.len());
        return Err((name.into(), message));
    }
    let mut compiled = Vec::with_capacity(list.len());
    for (i, pattern) in list.iter().enumerate() {
        compiled.push(check(pattern).map_err(|m| (format!("{name}[{i}]"), m))?);
    }
    if compiled.len() == 1 {
        return Ok(compiled.pop().map(Matcher::One));
    }
    RegexSetBuilder::new(list)
        .size_limit(SET_SIZE_LIMIT)
        .build()
        .map(|set| Some(Matcher::Any(set)))
        .map_err(|e| (name.into(), format!("the regexes together: {}", reason(&e))))
}

fn check(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("must not be empty (it would match every record)".into());
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_PATTERN_LEN}",
            pattern.len()
        ));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex {pattern:?}: {}", reason(&e)))
}

/// The last line of the regex crate's error (the others draw the pattern).
fn reason(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines().last().unwrap_or_default().trim().to_string()
}

/// A declaration's compiled filters.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<Matcher>,
    exclude: Option<Matcher>,
}

impl Filter {
    /// Whether `record` is shipped; one filtered out is counted in `filtered`.
    #[inline]
    pub fn keeps(&self, record: &[u8], filtered: &mut Filtered) -> bool {
        let reason = if self.include.as_ref().is_some_and(|s| !s.is_match(record)) {
            &mut filtered.include_lines
        } else if self.exclude.as_ref().is_some_and(|s| s.is_match(record)) {
            &mut filtered.exclude_lines
        } else {
            return true;
        };
        *reason += 1;
        filtered.bytes += record.len() as u64;
        false
    }

    /// Drops the records of `batch` the filters refuse, counting them in `filtered`.
    pub fn apply(&self, batch: &mut Batch, filtered: &mut Filtered) {
        batch.retain(|record| self.keeps(record, filtered));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn filters(include: &[&str], exclude: &[&str]) -> LineFilters {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        LineFilters {
            include_lines: list(include),
            exclude_lines: list(exclude),
        }
    }

    #[test]
    fn include_should_go_first_then_exclude_and_each_drop_be_counted_by_reason() {
        let filter = filters(&["^GET ", "^POST "], &["kube-probe", "/healthz"])
            .compile()
            .unwrap()
            .unwrap();
        let mut batch = Batch::new("t".into(), Path::new("/x").into());
        let records: [&[u8]; 6] = [
            b"GET /api 200",
            b"GET /healthz 200 kube-probe/1.29",
            b"DELETE /api 204",
            b"POST /api 201",
            b"\xff binary, matching nothing",
            b"GET /healthz 200 curl",
        ];
        for (i, record) in records.iter().enumerate() {
            batch.push(i as u64 * 100, record);
        }
        let mut filtered = Filtered::default();
        filter.apply(&mut batch, &mut filtered);
        let kept: Vec<_> = batch.lines().collect();
        assert_eq!(kept, [(0, &b"GET /api 200"[..]), (300, b"POST /api 201")]);
        let dropped = records[1].len() + records[2].len() + records[4].len() + records[5].len();
        let want = Filtered {
            include_lines: 2,
            exclude_lines: 2,
            bytes: dropped as u64,
        };
        assert_eq!(filtered, want);
        let reasons: Vec<_> = filtered.by_reason().collect();
        assert_eq!(
            reasons,
            [(Reason::IncludeLines, 2), (Reason::ExcludeLines, 2)]
        );
    }

    #[test]
    fn only_exclude_should_keep_everything_else_and_empty_lists_filter_nothing() {
        let filter = filters(&[], &["DEBUG"]).compile().unwrap().unwrap();
        let mut filtered = Filtered::default();
        assert!(filter.keeps(b"INFO up", &mut filtered));
        assert!(!filter.keeps(b"DEBUG noise", &mut filtered));
        assert_eq!(filtered.exclude_lines, 1);
        assert_eq!(filtered.include_lines, 0);
        assert!(filters(&[], &[]).compile().unwrap().is_none());
        assert!(filters(&[], &[]).is_empty());
    }

    #[test]
    fn a_joined_record_should_be_judged_whole() {
        // `^` is the record's start; a later line of a multiline record does not start it.
        let filter = filters(&[], &["^at "]).compile().unwrap().unwrap();
        let mut filtered = Filtered::default();
        assert!(filter.keeps(b"Exception\nat Foo.bar\nat Baz.qux", &mut filtered));
        assert!(!filter.keeps(b"at Foo.bar", &mut filtered));
    }

    #[test]
    fn validate_should_name_the_list_and_the_index_of_a_bad_regex() {
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("x{i}")).collect();
        let cases = [
            (
                filters(&["ok", "("], &[]),
                "include_lines[1]",
                "invalid regex \"(\"",
            ),
            (
                filters(&[], &["ok", "ok", "[z-a]"]),
                "exclude_lines[2]",
                "invalid regex",
            ),
            (filters(&[], &[""]), "exclude_lines[0]", "must not be empty"),
            (
                filters(&[long.as_str()], &[]),
                "include_lines[0]",
                "bytes long; at most",
            ),
            (
                filters(&[], &["\\w{1000}{1000}"]),
                "exclude_lines[0]",
                "invalid regex",
            ),
            (
                LineFilters {
                    exclude_lines: many,
                    ..LineFilters::default()
                },
                "exclude_lines",
                "65 regexes; at most 64",
            ),
        ];
        for (filters, field, message) in cases {
            let (f, m) = filters.validate().unwrap_err();
            assert_eq!(f, field, "{filters:?}");
            assert!(m.contains(message), "{m:?} should contain {message:?}");
        }
        filters(&["^GET", "(?i)post"], &["kube-probe/\\d+"])
            .validate()
            .unwrap();
    }
}
