//! `corralctl __man`: the corralctl(1) man page, generated from the clap definitions.
//!
//! clap_mangen renders the header, synopsis and global options, but lists subcommands
//! as separate pages (corralctl-status(1), ...). One page is what `man corralctl` users
//! expect, so the COMMANDS section here describes every subcommand, nested ones too,
//! with its arguments.

use std::fmt::Write as _;
use std::io::Write as _;

/// Renders the whole page.
pub fn render(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd;
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("1")
        .manual("corral")
        .source(concat!("corral ", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut commands = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        describe(&mut commands, "corralctl", sub);
    }
    out.write_all(commands.as_bytes())?;
    man.render_extra_section(&mut out)?;
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    Ok(out)
}

/// One `.SS` per command that does something (groups like `queue` only introduce theirs).
fn describe(out: &mut String, parent: &str, cmd: &clap::Command) {
    if cmd.get_name() == "help" {
        return;
    }
    let path = format!("{parent} {}", cmd.get_name());
    let subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    let args: Vec<_> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    let mut usage = path.clone();
    if args.iter().any(|a| !a.is_positional()) {
        usage.push_str(" [OPTIONS]");
    }
    for a in args.iter().filter(|a| a.is_positional()) {
        let name = value_name(a);
        let dots = if takes_many(a) { "..." } else { "" };
        if a.is_last_set() {
            let _ = write!(usage, " -- {name}{dots}");
        } else if a.is_required_set() {
            let _ = write!(usage, " {name}{dots}");
        } else {
            let _ = write!(usage, " [{name}{dots}]");
        }
    }
    if !subs.is_empty() {
        usage.push_str(" COMMAND");
    }
    let _ = writeln!(out, ".SS \"{}\"", quoted(&usage));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        paragraphs(out, &about.to_string());
    }
    for a in &args {
        let mut head = String::new();
        if a.is_positional() {
            let _ = write!(head, "\\fI{}\\fR", escape(&value_name(a)));
        } else {
            let mut names = Vec::new();
            if let Some(s) = a.get_short() {
                names.push(format!("\\fB\\-{s}\\fR"));
            }
            if let Some(l) = a.get_long() {
                names.push(format!("\\fB\\-\\-{}\\fR", escape(l)));
            }
            head.push_str(&names.join(", "));
            if a.get_action().takes_values() {
                let _ = write!(head, " \\fI{}\\fR", escape(&value_name(a)));
            }
        }
        let _ = writeln!(out, ".TP\n{head}");
        let mut help = a
            .get_long_help()
            .or(a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let values: Vec<_> = a
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !values.is_empty() && a.get_action().takes_values() {
            let _ = write!(help, " [possible values: {}]", values.join(", "));
        }
        let defaults: Vec<_> = a
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && a.get_action().takes_values() {
            let _ = write!(help, " [default: {}]", defaults.join(", "));
        }
        let _ = writeln!(out, "{}", escape(&help));
    }
    for sub in subs {
        describe(out, &path, sub);
    }
}

fn value_name(a: &clap::Arg) -> String {
    a.get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase())
}

fn takes_many(a: &clap::Arg) -> bool {
    a.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// Paragraphs separated by blank lines become `.PP`s.
fn paragraphs(out: &mut String, text: &str) {
    for para in text.split("\n\n") {
        let para = para.trim();
        if !para.is_empty() {
            let _ = writeln!(out, ".PP\n{}", escape(&para.replace('\n', " ")));
        }
    }
}

/// Escapes text for roff: backslashes, hyphens (so they render as ASCII `-` and can be
/// searched for), and control characters at the start of a line.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    text.lines()
        .map(|line| {
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// For a `.SS "..."` argument: escaped, with embedded quotes doubled.
fn quoted(text: &str) -> String {
    escape(text).replace('"', "\"\"")
}
