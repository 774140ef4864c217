//! `env_file`: environment files in systemd's `EnvironmentFile=` syntax, read by corrald
//! at each start of an instance (so a changed file takes effect at the next start, with
//! no reload).
//!
//! The syntax: one `NAME=VALUE` per line; blank lines and lines starting with `#` or `;`
//! are ignored; whitespace around the name and before the value is dropped. A value may
//! be in single quotes (taken literally) or double quotes (where `\` escapes `"`, `\`,
//! `$` and `` ` ``, and `\` before a newline joins lines), and a quoted value may span
//! lines. Unquoted, trailing whitespace is dropped, `\` takes the next character
//! literally, and a `\` at the end of a line continues the value on the next one.
//! Anything else (a line without `=`, a bad name, an unterminated quote, text after a
//! closing quote) is an error naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest environment file read: a file larger than this is refused (it would not be an
/// environment file, and reading it would cost corrald memory at every start).
pub const MAX_ENV_FILE: u64 = 1024 * 1024;

/// One `env_file` entry of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    /// The file, absolute.
    pub path: PathBuf,
    /// Written with a leading `-`: a missing file is skipped.
    pub optional: bool,
}

impl EnvFile {
    /// Parses one entry as written in a unit file (`"/etc/app.env"`, `"-/etc/app.env"`).
    pub fn parse(written: &str) -> Result<EnvFile, String> {
        let (optional, path) = match written.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, written),
        };
        if path.contains('\0') {
            return Err("must not contain NUL bytes".into());
        }
        if !path.starts_with('/') {
            return Err(format!(
                "must be an absolute path (with `-` before it if the file is optional), found `{written}`"
            ));
        }
        Ok(EnvFile {
            path: PathBuf::from(path),
            optional,
        })
    }
}

/// What is wrong with an environment variable's name, if anything (the rule of unit
/// files' `env` and of `run`'s environment).
pub fn env_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.contains('=') {
        Some("must not contain `=`")
    } else if name.contains('\0') {
        Some("must not contain NUL bytes")
    } else {
        None
    }
}

/// Reads `files` in order, later assignments overriding earlier ones; an optional file
/// that does not exist is skipped. The error says which file, line and what is wrong.
pub fn read_env_files(files: &[EnvFile]) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    for f in files {
        let text = match read_limited(&f.path) {
            Ok(text) => text,
            Err(e) if f.optional && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("env_file {}: {e}", f.path.display())),
        };
        let parsed = parse_env_file(&text)
            .map_err(|(line, msg)| format!("env_file {}:{line}: {msg}", f.path.display()))?;
        vars.extend(parsed);
    }
    Ok(vars)
}

fn read_limited(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_ENV_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_ENV_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB: not an environment file",
            MAX_ENV_FILE / 1024
        )));
    }
    Ok(text)
}

/// Parses an environment file's text into its assignments, in order. The error is the
/// 1-based line and what is wrong there.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    loop {
        // Start of a line: skip leading whitespace; blank lines and comments.
        while matches!(chars.peek(), Some(' ' | '\t' | '\r')) {
            chars.next();
        }
        match chars.peek() {
            None => break,
            Some('\n') => {
                chars.next();
                line += 1;
                continue;
            }
            Some('#' | ';') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                line += 1;
                continue;
            }
            Some(_) => {}
        }
        let start_line = line;
        let mut name = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                Some('\n') | None => {
                    return Err((
                        start_line,
                        format!(
                            "expected NAME=VALUE, found `{}`",
                            name.trim_end().chars().take(60).collect::<String>()
                        ),
                    ));
                }
                Some(c) => name.push(c),
            }
        }
        let name = name.trim_end().to_string();
        if let Some(problem) = env_name_problem(&name) {
            return Err((
                start_line,
                format!("environment variable names {problem}: `{name}`"),
            ));
        }
        if name.chars().any(char::is_whitespace) {
            return Err((
                start_line,
                format!("environment variable names must not contain whitespace: `{name}`"),
            ));
        }
        while matches!(chars.peek(), Some(' ' | '\t')) {
            chars.next();
        }
        let value = value(&mut chars, &mut line, start_line)?;
        out.push((name, value));
    }
    Ok(out)
}

/// The value after `=`, through the end of its (last) line, which it consumes.
fn value(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &mut usize,
    start_line: usize,
) -> Result<String, (usize, String)> {
    let mut value = String::new();
    match chars.peek() {
        Some('\'') => {
            chars.next();
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\n') => {
                        *line += 1;
                        value.push('\n');
                    }
                    Some(c) => value.push(c),
                    None => return Err((start_line, "unterminated single quote".into())),
                }
            }
            end_of_line(chars, line)?;
        }
        Some('"') => {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\' | '$' | '`')) => value.push(c),
                        Some('\n') => *line += 1,
                        Some(c) => {
                            value.push('\\');
                            value.push(c);
                        }
                        None => return Err((start_line, "unterminated double quote".into())),
                    },
                    Some('\n') => {
                        *line += 1;
                        value.push('\n');
                    }
                    Some(c) => value.push(c),
                    None => return Err((start_line, "unterminated double quote".into())),
                }
            }
            end_of_line(chars, line)?;
        }
        _ => {
            loop {
                match chars.next() {
                    None => break,
                    Some('\n') => {
                        *line += 1;
                        break;
                    }
                    Some('\\') => match chars.next() {
                        Some('\n') => *line += 1,
                        Some(c) => value.push(c),
                        None => break,
                    },
                    Some(c) => value.push(c),
                }
            }
            let trimmed = value.trim_end_matches([' ', '\t', '\r']).len();
            value.truncate(trimmed);
        }
    }
    if value.contains('\0') {
        return Err((start_line, "values must not contain NUL bytes".into()));
    }
    Ok(value)
}

/// After a closing quote: only whitespace (or a comment) may follow on the line.
fn end_of_line(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &mut usize,
) -> Result<(), (usize, String)> {
    while matches!(chars.peek(), Some(' ' | '\t' | '\r')) {
        chars.next();
    }
    match chars.next() {
        None => Ok(()),
        Some('\n') => {
            *line += 1;
            Ok(())
        }
        Some(c) => Err((
            *line,
            format!("unexpected `{c}` after the closing quote (quote the whole value)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<(String, String)> {
        parse_env_file(text).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_quoted_commented_and_continued_lines() {
        let text = "# comment\n; also\n\n  A=1\nB = two words  \nC='$literal \\n'\nD=\"say \\\"hi\\\" \\$HOME\"\nE=a\\\nb\nF=\"multi\nline\"\nG=\n";
        assert_eq!(
            parse(text),
            pairs(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", "$literal \\n"),
                ("D", "say \"hi\" $HOME"),
                ("E", "ab"),
                ("F", "multi\nline"),
                ("G", ""),
            ])
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, needle) in [
            ("A=1\nnot an assignment\n", 2, "expected NAME=VALUE"),
            ("A=1\n\n=x\n", 3, "must not be empty"),
            ("A B=1\n", 1, "whitespace"),
            ("A='open\n\n", 1, "unterminated single quote"),
            ("A=\"open\n", 1, "unterminated double quote"),
            ("A=\"x\" y\n", 1, "after the closing quote"),
            ("X=1\nA=\"a\nb\" y\n", 3, "after the closing quote"),
        ] {
            let (l, msg) = parse_env_file(text).unwrap_err();
            assert_eq!(l, line, "{text:?}: {msg}");
            assert!(msg.contains(needle), "{text:?}: {msg}");
        }
    }

    #[test]
    fn files_are_read_in_order_and_optional_ones_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.env");
        let b = dir.path().join("b.env");
        std::fs::write(&a, "X=1\nY=1\n").unwrap();
        std::fs::write(&b, "Y=2\n").unwrap();
        let entry = |p: &Path, optional| EnvFile {
            path: p.to_path_buf(),
            optional,
        };
        let missing = dir.path().join("missing.env");
        let vars =
            read_env_files(&[entry(&a, false), entry(&b, false), entry(&missing, true)]).unwrap();
        assert_eq!(vars["X"], "1");
        assert_eq!(vars["Y"], "2");
        let err = read_env_files(&[entry(&missing, false)]).unwrap_err();
        assert!(err.contains("missing.env"), "{err}");
        std::fs::write(&b, "Y=1\noops\n").unwrap();
        let err = read_env_files(&[entry(&b, false)]).unwrap_err();
        assert!(err.contains("b.env:2: expected NAME=VALUE"), "{err}");
    }

    #[test]
    fn entries_must_be_absolute() {
        assert_eq!(
            EnvFile::parse("-/etc/x.env").unwrap(),
            EnvFile {
                path: "/etc/x.env".into(),
                optional: true
            }
        );
        assert!(EnvFile::parse("app.env").unwrap_err().contains("absolute"));
    }
}
