//! Diagnostics: what is wrong in a lab file, where, and how to fix it.
//!
//! Every error carries the file, line and column, the path of the object
//! (`vpcs[0].subnets[2].cidr_block`), what is wrong and how to fix it, printed as
//! `file:line:col: path: what is wrong; how to fix` (config.md, "Rules for every object").

use std::fmt;
use std::sync::Arc;

/// Where a value stands in the lab file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub at: Loc,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// A diagnostic bound to its file name, for printing.
pub struct InFile<'a> {
    pub file: &'a str,
    pub diag: &'a Diagnostic,
}

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diag;
        write!(
            f,
            "{}:{}:{}: {}: {}; {}",
            self.file, d.at.line, d.at.col, d.at.path, d.message, d.fix
        )
    }
}

/// Collects diagnostics; the whole file is checked and every error kept.
#[derive(Default, Debug)]
pub struct Diagnostics {
    pub list: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, at: &Loc, message: impl Into<String>, fix: impl Into<String>) {
        self.list.push(Diagnostic {
            at: at.clone(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Sorted by position, duplicates removed.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.at.line, d.at.col));
        self.list.dedup();
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
