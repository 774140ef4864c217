//! Positioned configuration errors.
//!
//! Every problem found in a unit file or in the main config becomes one
//! [`ConfigError`] carrying `file:line:column`, so that editors and humans can
//! jump straight to it. Loading never stops at the first problem: all of them
//! are gathered into a [`ConfigErrors`].

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a configuration file, with its position.
///
/// `line` and `column` are 1-based; the column counts characters, not bytes.
/// A `line` of `0` means the problem concerns the file as a whole (for
/// example it could not be read); such errors display as `{file}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line number, or 0 when the problem has no position.
    pub line: usize,
    /// 1-based column, counted in characters, or 0 when `line` is 0.
    pub column: usize,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl ConfigError {
    /// An error at byte `offset` of `text`, the contents of `file`.
    ///
    /// Offsets past the end (or inside a multi-byte character) are clamped so
    /// that a slightly-off span from the parser never panics.
    pub fn at_offset(file: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, offset);
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error about `file` as a whole (no position), e.g. an I/O failure.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

/// Converts a byte offset into a 1-based `(line, column)`, column in chars.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Every error found while loading configuration, sorted by position.
///
/// Displays one error per line, so printing it gives a compiler-style report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no errors (only ever true for a hand-built value;
    /// the loaders return `Ok` instead of an empty list).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the errors in report order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// Sorts by (file, line, column, message) and drops exact duplicates.
    ///
    /// Duplicates are expected: a mistake in a base unit is seen once per unit
    /// that `extends` it, but should be reported once.
    pub(crate) fn normalize(mut self) -> Self {
        self.0.sort();
        self.0.dedup();
        self
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(err: ConfigError) -> Self {
        ConfigErrors(vec![err])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_chars_and_lines() {
        let text = "ab\nçd = 1\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(line_column(text, 5), (2, 2));
        // Inside a multi-byte char and past the end are clamped, not panics.
        assert_eq!(line_column(text, 4), (2, 1));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn display_formats() {
        let e = ConfigError {
            file: "u/a.toml".into(),
            line: 3,
            column: 7,
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "u/a.toml:3:7: boom");
        let w = ConfigError::whole_file(Path::new("u"), "cannot read");
        assert_eq!(w.to_string(), "u: cannot read");
        let all = ConfigErrors(vec![e.clone(), w]);
        assert_eq!(all.to_string(), "u/a.toml:3:7: boom\nu: cannot read");
        assert_eq!(all.len(), 2);
        assert_eq!(all.iter().next(), Some(&e));
    }
}
