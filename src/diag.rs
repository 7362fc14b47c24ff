//! Diagnostics: problems found in a config file, each tied to a place in it.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

/// How bad a finding is. Errors stop `check`; warnings are printed and do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, located by key path (`segments.dmz.vlan`) and, once resolved, by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub message: String,
    /// Byte span in the source, when known.
    pub span: Option<Range<usize>>,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            span: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, message)
        }
    }

    pub fn at(mut self, span: Range<usize>) -> Self {
        self.span = Some(span);
        self
    }
}

/// Maps key paths of a parsed TOML document to byte spans, and byte offsets to line:column.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    pub file: String,
    line_starts: Vec<usize>,
    /// path -> (span of the key, span of the value)
    paths: BTreeMap<String, (Range<usize>, Range<usize>)>,
}

impl Locator {
    pub fn new(file: &str, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Locator {
            file: file.to_string(),
            line_starts,
            paths: BTreeMap::new(),
        }
    }

    pub fn insert(&mut self, path: String, key: Range<usize>, value: Range<usize>) {
        self.paths.entry(path).or_insert((key, value));
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        (line + 1, offset - self.line_starts[line] + 1)
    }

    /// Span of the value at `path`, or of its nearest ancestor that is in the file.
    pub fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        loop {
            if let Some((_, v)) = self.paths.get(p) {
                return Some(v.clone());
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Span of the key at `path` (where the entry is declared), falling back like `span_of`.
    pub fn key_span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        loop {
            if let Some((k, _)) = self.paths.get(p) {
                return Some(k.clone());
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// The deepest known path whose value contains `offset`.
    pub fn path_at(&self, offset: usize) -> Option<&str> {
        self.paths
            .iter()
            .filter(|(_, (k, v))| {
                (v.start <= offset && offset < v.end.max(v.start + 1))
                    || (k.start <= offset && offset < k.end)
            })
            .min_by_key(|(_, (_, v))| v.end - v.start)
            .map(|(p, _)| p.as_str())
    }

    /// `FILE:LINE` of the declaration of `path`.
    pub fn file_line(&self, path: &str) -> String {
        match self.key_span_of(path) {
            Some(s) => format!("{}:{}", self.file, self.line_col(s.start).0),
            None => self.file.clone(),
        }
    }

    /// Give the diagnostic a span (from its path) if it has none.
    pub fn resolve(&self, d: &mut Diagnostic) {
        if d.span.is_none() {
            d.span = self.span_of(&d.path);
        }
    }

    pub fn render(&self, d: &Diagnostic) -> String {
        let (line, col) = d.span.as_ref().map_or((1, 1), |s| self.line_col(s.start));
        let sev = match d.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        let path = if d.path.is_empty() { "(file)" } else { &d.path };
        format!(
            "{}:{}:{}: {}{}: {}",
            self.file, line, col, sev, path, d.message
        )
    }
}

/// A list of findings tied to one file, as returned by loading and validation.
#[derive(Debug, Clone)]
pub struct Report {
    pub locator: Locator,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    /// Every finding as `FILE:LINE:COL: path: message`, in file order.
    pub fn lines(&self) -> Vec<String> {
        let mut ds: Vec<&Diagnostic> = self.diagnostics.iter().collect();
        ds.sort_by_key(|d| (d.span.as_ref().map_or(0, |s| s.start), d.severity));
        ds.into_iter().map(|d| self.locator.render(d)).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in self.lines() {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}
