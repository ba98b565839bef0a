//! Diagnostics: what is wrong in a lab file, where, and how to fix it.
//!
//! Every error carries the file, line and column, the path of the object
//! (`vpcs[0].subnets[2].cidr_block`), what is wrong and how to fix it, printed as
//! `file:line:col: path: what is wrong; how to fix` (config.md, "Rules for every object").

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Where a value stands in the lab file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
    /// The path of the value: `vpcs[0].subnets[2].cidr_block`.
    pub path: Arc<str>,
}

impl Loc {
    pub fn new(line: usize, col: usize, path: &str) -> Loc {
        Loc {
            line,
            col,
            path: path.into(),
        }
    }

    /// A location for things the lab file does not spell out (implicit objects, the
    /// built-in default lab's generated values).
    pub fn implicit(path: &str) -> Loc {
        Loc {
            line: 0,
            col: 0,
            path: path.into(),
        }
    }
}

/// A value with the place it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S<T> {
    pub v: T,
    pub at: Loc,
}

impl<T> S<T> {
    pub fn new(v: T, at: Loc) -> S<T> {
        S { v, at }
    }
}

impl<T> std::ops::Deref for S<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.v
    }
}

/// One error in a lab file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub at: Loc,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// For a line that sums up errors not shown: how many it stands for (0 otherwise).
    pub hidden: usize,
    /// A warning: AWS allows it, but it is likely a mistake (a NAT gateway in a subnet
    /// without a route to the internet gateway). `check` passes with warnings.
    pub warning: bool,
}

/// How many errors a list reports, those summed up included (warnings are not errors).
pub fn count(diags: &[Diagnostic]) -> usize {
    diags
        .iter()
        .filter(|d| !d.warning)
        .map(|d| d.hidden.max(1))
        .sum()
}

/// The warnings of a list, as `check` prints them (one a line).
pub fn render_warnings(file: &str, diags: &[Diagnostic]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for d in diags.iter().filter(|d| d.warning) {
        let _ = writeln!(s, "{}", InFile { file, diag: d });
    }
    s
}

/// Every error of `file` as `check` prints them, one a line, then `FILE: N error(s)`
/// (without a final newline).
pub fn render(file: &str, diags: &[Diagnostic]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for d in diags {
        let _ = writeln!(s, "{}", InFile { file, diag: d });
    }
    let _ = write!(s, "{file}: {} error(s)", count(diags));
    s
}

/// A diagnostic bound to its file name, for printing.
pub struct InFile<'a> {
    pub file: &'a str,
    pub diag: &'a Diagnostic,
}

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diag;
        let path = if d.at.path.is_empty() {
            "(top level)"
        } else {
            &d.at.path
        };
        let level = if d.warning { "warning: " } else { "" };
        write!(
            f,
            "{}:{}:{}: {level}{path}: {}; {}",
            self.file, d.at.line, d.at.col, d.message, d.fix
        )
    }
}

/// At most this many errors are kept for one kind of place: the path with its indices
/// left out (`vpcs[].subnets[].cidr_block`). One mistake copied 4,000 times is one
/// mistake to fix; printing it 4,000 times (or, for pairs, 8 million) hides every other
/// and cost gigabytes (issue 22). The rest are counted and summed up in one line.
pub const PER_PLACE: usize = 20;

/// At most this many errors are kept in all.
pub const MAX_KEPT: usize = 1000;

/// Collects diagnostics; the whole file is checked and every error reported, with
/// repeats of one kind of place summed up past [`PER_PLACE`] (memory stays bounded
/// whatever the file holds).
#[derive(Default, Debug)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
    /// Errors per kind of place, kept or not.
    per_place: HashMap<String, usize>,
    /// Errors not kept, per kind of place: (how many, where the first was).
    dropped: HashMap<String, (usize, Loc)>,
    seen: HashSet<u64>,
    warnings: Vec<Diagnostic>,
}

/// `vpcs[0].subnets[12].cidr_block` → `vpcs[].subnets[].cidr_block`.
fn place(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

impl Diagnostics {
    pub fn error(&mut self, at: &Loc, message: impl Into<String>, fix: impl Into<String>) {
        let d = Diagnostic {
            at: at.clone(),
            message: message.into(),
            fix: fix.into(),
            hidden: 0,
            warning: false,
        };
        let mut h = std::hash::DefaultHasher::new();
        d.hash(&mut h);
        if !self.seen.insert(h.finish()) {
            return;
        }
        let key = place(&at.path);
        let n = self.per_place.entry(key.clone()).or_default();
        *n += 1;
        if *n > PER_PLACE || self.list.len() >= MAX_KEPT {
            self.dropped.entry(key).or_insert_with(|| (0, at.clone())).0 += 1;
            self.seen.remove(&h.finish());
            return;
        }
        self.list.push(d);
    }

    /// A warning: reported, but the lab is valid.
    pub fn warn(&mut self, at: &Loc, message: impl Into<String>, fix: impl Into<String>) {
        self.warnings.push(Diagnostic {
            at: at.clone(),
            message: message.into(),
            fix: fix.into(),
            hidden: 0,
            warning: true,
        });
    }

    /// Whether there are errors (warnings aside).
    pub fn has_errors(&self) -> bool {
        !self.list.is_empty() || !self.dropped.is_empty()
    }

    /// Whether an error at `at` would still be shown: lets a check skip work (such as
    /// finding the closest id for a hint) for an error that would only be counted.
    pub fn wants(&self, at: &Loc) -> bool {
        self.list.len() < MAX_KEPT
            && self
                .per_place
                .get(&place(&at.path))
                .is_none_or(|n| *n < PER_PLACE)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.dropped.is_empty() && self.warnings.is_empty()
    }

    /// Sorted by position; errors not kept are summed up, one line per kind of place,
    /// at the place of the first of them.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.warnings.truncate(MAX_KEPT);
        self.list.append(&mut self.warnings);
        for (key, (n, at)) in self.dropped {
            self.list.push(Diagnostic {
                at,
                message: format!(
                    "{n} more error(s) at {key} are not shown (at most {PER_PLACE} of one kind of place, {MAX_KEPT} in all)"
                ),
                fix: "fix the errors shown first: the same mistake is likely repeated"
                    .to_string(),
                hidden: n,
                warning: false,
            });
        }
        self.list.sort_by_key(|d| (d.at.line, d.at.col));
        self.list
    }
}

/// The known name closest to `unknown`, if it is close enough to be a likely typo.
pub fn closest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
