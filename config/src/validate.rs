//! Loading a set of unit files, with the checks that span several units:
//! names, `extends` resolution, dependency references and cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, ConfigErrors};
use crate::fields::{DepSites, Merged, build_unit};
use crate::parse::{At, Entry, RawUnit, Sink, collect_entries, parse_document};
use crate::suggest::did_you_mean;
use crate::unit::{UNIT_NAME_RULES, Unit, valid_unit_name};

/// Loads every `*.toml` file directly in `dir` (the file stem is the unit
/// name), resolves `extends`, validates everything, and returns the units
/// by name, or every error found in every file together.
///
/// Files not ending in `.toml`, subdirectories, and hidden files (names
/// starting with `.`, such as editor lock files) are ignored. Symlinks to
/// files are followed.
///
/// # Errors
///
/// All problems: an unreadable directory or file (reported without a
/// position), and everything [`load_units`] reports.
pub fn load_units_dir(dir: &Path) -> Result<BTreeMap<String, Unit>, ConfigErrors> {
    let paths = unit_paths(dir)?;
    let mut files = Vec::with_capacity(paths.len());
    let mut read_errors = Vec::new();
    for path in paths {
        match read_config_file(&path, "unit file") {
            Ok(text) => files.push((path, text)),
            Err(err) => read_errors.push(err),
        }
    }
    match (load_units(&files), read_errors.is_empty()) {
        (Ok(units), true) => Ok(units),
        (Ok(_), false) => Err(ConfigErrors(read_errors).normalize()),
        (Err(mut errors), _) => {
            errors.0.extend(read_errors);
            Err(errors.normalize())
        }
    }
}

/// Reads a unit file or `corral.toml`, refusing one larger than [`MAX_CONFIG_FILE`] before
/// parsing: the TOML parse allocates several times a file's size, and a stray large file
/// in the units directory must be a clear error, not an allocation that aborts corrald.
pub(crate) fn read_config_file(path: &Path, what: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    let cannot =
        |err: std::io::Error| ConfigError::whole_file(path, format!("cannot read {what}: {err}"));
    let too_large = |size: u64| {
        ConfigError::whole_file(
            path,
            format!(
                "{what} is {size} bytes, more than the limit of {} bytes (1 MiB): not read; move it out of the way",
                MAX_CONFIG_FILE
            ),
        )
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let size = file.metadata().map_err(cannot)?.len();
    if size > MAX_CONFIG_FILE {
        return Err(too_large(size));
    }
    // The file may grow between the stat and the read: never read past the cap.
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| {
        cannot(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

/// Largest unit file or `corral.toml` read, in bytes (1 MiB; a unit is a few hundred).
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// The candidate unit files of `dir`, sorted for a deterministic order.
fn unit_paths(dir: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    let cannot = |err: std::io::Error| {
        ConfigError::whole_file(dir, format!("cannot read units directory: {err}"))
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let path = entry.map_err(cannot)?.path();
        let is_toml = path.extension().is_some_and(|ext| ext == "toml");
        let hidden = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
        // metadata() follows symlinks; a dangling one is skipped like a
        // directory would be, as it cannot be a unit file.
        if is_toml && !hidden && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Loads units from in-memory `(path, text)` pairs: the unit name is the
/// path's file stem. Used by [`load_units_dir`] and by tests.
///
/// # Errors
///
/// Every problem in every file: syntax errors, invalid or duplicate names,
/// unknown keys, wrong types and values, unknown or cyclic `extends`,
/// unknown or cyclic dependencies. Errors are sorted by file, line and
/// column, without duplicates.
pub fn load_units(files: &[(PathBuf, String)]) -> Result<BTreeMap<String, Unit>, ConfigErrors> {
    let mut sink = Sink::new(files);
    let documents: Vec<(Spanned<DeTable<'_>>, bool)> = files
        .iter()
        .enumerate()
        .map(|(i, (_, text))| parse_document(i, text, &mut sink))
        .collect();
    let mut raws: BTreeMap<String, RawUnit<'_>> = BTreeMap::new();
    for (i, (doc, broken)) in documents.iter().enumerate() {
        let Some(name) = unit_name(files, i, &raws, &mut sink) else {
            continue;
        };
        let raw = collect_entries(&name, i, doc.get_ref(), *broken, &mut sink);
        raws.insert(name, raw);
    }
    let mut units = BTreeMap::new();
    let mut sites = BTreeMap::new();
    for raw in raws.values() {
        let merged = resolve_extends(raw, &raws, &mut sink);
        let (unit, site) = build_unit(&merged, files[raw.file].0.clone(), &mut sink);
        sites.insert(raw.name.clone(), site);
        units.insert(raw.name.clone(), unit);
    }
    check_dependencies(&units, &sites, &mut sink);
    sink.finish().map(|()| units)
}

/// The unit name for file `i`, or `None` (after reporting) when the stem is
/// not a valid name or is already taken by an earlier file.
fn unit_name(
    files: &[(PathBuf, String)],
    i: usize,
    raws: &BTreeMap<String, RawUnit<'_>>,
    sink: &mut Sink<'_>,
) -> Option<String> {
    let path = &files[i].0;
    let at = At { file: i, offset: 0 };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let valid = path
        .file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(valid_unit_name);
    if !valid {
        sink.push(
            at,
            format!("invalid unit name `{stem}` (from the file name): {UNIT_NAME_RULES}"),
        );
        return None;
    }
    if let Some(first) = raws.get(&stem) {
        let other = files[first.file].0.display();
        sink.push(
            at,
            format!("unit `{stem}` is defined twice: also in {other}"),
        );
        return None;
    }
    Some(stem)
}

/// Walks `raw`'s `extends` chain and merges the entries, base first, so
/// that nearer files override farther ones.
fn resolve_extends<'a>(
    raw: &'a RawUnit<'a>,
    raws: &'a BTreeMap<String, RawUnit<'a>>,
    sink: &mut Sink<'_>,
) -> Merged<'a> {
    let (chain, cut) = extends_chain(raw, raws, sink);
    let mut merged = Merged {
        name: raw.name.clone(),
        file: raw.file,
        entries: BTreeMap::new(),
        env: BTreeMap::new(),
        rlimits: BTreeMap::new(),
        incomplete: cut || chain.iter().any(|u| u.broken),
    };
    for (depth, unit) in chain.iter().enumerate().rev() {
        for (&key, entry) in &unit.entries {
            // A base's own `extends` was followed already; it is not a key
            // the child inherits.
            if key == "extends" && depth > 0 {
                continue;
            }
            match key {
                "env" => merge_table(&mut merged.env, entry),
                "rlimits" => merge_table(&mut merged.rlimits, entry),
                _ => {}
            }
            merged.entries.insert(key, *entry);
        }
    }
    merged
}

/// Adds the sub-entries of a table-valued `env`/`rlimits` entry; a
/// non-table value is reported when that key is converted.
fn merge_table<'a>(into: &mut BTreeMap<&'a str, Entry<'a>>, entry: &Entry<'a>) {
    if let DeValue::Table(table) = entry.value.get_ref() {
        for (key, value) in table.iter() {
            let sub = Entry {
                file: entry.file,
                key,
                value,
            };
            into.insert(key.get_ref().as_ref(), sub);
        }
    }
}

/// The units whose keys `raw` inherits, `raw` first. The flag is true when
/// the chain was cut short by an unknown base or a cycle (both reported).
fn extends_chain<'a>(
    raw: &'a RawUnit<'a>,
    raws: &'a BTreeMap<String, RawUnit<'a>>,
    sink: &mut Sink<'_>,
) -> (Vec<&'a RawUnit<'a>>, bool) {
    let mut chain: Vec<&'a RawUnit<'a>> = vec![raw];
    let mut names: Vec<&str> = vec![&raw.name];
    let mut current_entry = raw.entries.get("extends").copied();
    while let Some(entry) = current_entry {
        // A non-string `extends` is reported as a type error by the
        // converter; here it simply ends the chain.
        let DeValue::String(base) = entry.value.get_ref() else {
            return (chain, true);
        };
        let Some(base_unit) = raws.get(base.as_ref()) else {
            report_unknown(sink, entry.value_at(), base, "extends", raws.keys());
            return (chain, true);
        };
        if let Some(start) = names.iter().position(|n| *n == base.as_ref()) {
            report_extends_cycle(&names[start..], raws, sink);
            return (chain, true);
        }
        names.push(&base_unit.name);
        chain.push(base_unit);
        current_entry = base_unit.entries.get("extends").copied();
    }
    (chain, false)
}

/// Reports a cycle once, however many of its members (or units leading
/// into it) discover it: it is rotated to start at its smallest name and
/// placed at that unit's `extends` value, so duplicates are identical.
fn report_extends_cycle(cycle: &[&str], raws: &BTreeMap<String, RawUnit<'_>>, sink: &mut Sink<'_>) {
    let names = rotate_to_smallest(cycle);
    let first = &raws[names[0].as_str()];
    let Some(entry) = first.entries.get("extends") else {
        return;
    };
    sink.push(
        entry.value_at(),
        format!("extends cycle: {}", cycle_text(&names)),
    );
}

fn rotate_to_smallest(cycle: &[&str]) -> Vec<String> {
    let start = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
    cycle[start..]
        .iter()
        .chain(&cycle[..start])
        .map(|s| (*s).to_owned())
        .collect()
}

/// `a -> b -> a`.
fn cycle_text(names: &[String]) -> String {
    let mut parts: Vec<&str> = names.iter().map(String::as_str).collect();
    parts.push(&names[0]);
    parts.join(" -> ")
}

fn report_unknown<'n>(
    sink: &mut Sink<'_>,
    at: At,
    name: &str,
    key: &str,
    known: impl Iterator<Item = &'n String>,
) {
    let hint = did_you_mean(name, known.map(String::as_str))
        .map(|h| format!(", did you mean `{h}`?"))
        .unwrap_or_default();
    sink.push(at, format!("unknown unit `{name}` in `{key}`{hint}"));
}

/// Whether `dep` names an instance of a template that exists (`web@8080`, or
/// `web@{arg}` written in a template).
fn template_known(dep: &str, units: &BTreeMap<String, Unit>) -> bool {
    crate::template_of(dep).is_some_and(|(base, _)| units.contains_key(base))
}

/// Checks `after`/`requires` references and reports dependency cycles.
fn check_dependencies(
    units: &BTreeMap<String, Unit>,
    sites: &BTreeMap<String, DepSites>,
    sink: &mut Sink<'_>,
) {
    for (name, unit) in units {
        let site = &sites[name];
        let lists = [
            ("after", &unit.after, &site.after),
            ("requires", &unit.requires, &site.requires),
        ];
        for (key, deps, ats) in lists {
            for (dep, &at) in deps.iter().zip(ats) {
                if dep == name {
                    sink.push(
                        at,
                        format!("unit `{name}` cannot depend on itself (in `{key}`)"),
                    );
                } else if dep.ends_with('@') {
                    sink.push(
                        at,
                        format!("`{dep}` is a template: depend on one of its instances, e.g. `{dep}main` (or `{dep}{{arg}}` in a template)"),
                    );
                } else if !units.contains_key(dep) && !template_known(dep, units) {
                    report_unknown(sink, at, dep, key, units.keys());
                }
            }
        }
    }
    for cycle in dependency_cycles(units) {
        report_dependency_cycle(&cycle, units, sites, sink);
    }
}

fn report_dependency_cycle(
    cycle: &[String],
    units: &BTreeMap<String, Unit>,
    sites: &BTreeMap<String, DepSites>,
    sink: &mut Sink<'_>,
) {
    let first = &cycle[0];
    let next = &cycle[1 % cycle.len()];
    let site = &sites[first];
    let via_after = units[first].after.contains(next);
    let at = if via_after {
        site.after_key
    } else {
        site.requires_key
    };
    if let Some(at) = at {
        sink.push(at, format!("dependency cycle: {}", cycle_text(cycle)));
    }
}

/// Every cycle closed by a back edge of a depth-first search over the
/// union of `after` and `requires` edges, each rotated to start at its
/// smallest name and deduplicated. Self-loops are left out: they are
/// reported as self-references.
///
/// The search is iterative so that a long dependency chain cannot overflow
/// the stack.
fn dependency_cycles(units: &BTreeMap<String, Unit>) -> BTreeSet<Vec<String>> {
    let edges = |name: &str| -> Vec<&str> {
        let unit = &units[name];
        let all: BTreeSet<&str> = unit
            .after
            .iter()
            .chain(&unit.requires)
            .map(String::as_str)
            .filter(|d| *d != name && units.contains_key(*d))
            .collect();
        all.into_iter().collect()
    };
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut cycles = BTreeSet::new();
    for root in units.keys() {
        if done.contains(root.as_str()) {
            continue;
        }
        // (node, its neighbours, index of the next neighbour to visit)
        let mut stack: Vec<(&str, Vec<&str>, usize)> = vec![(root, edges(root), 0)];
        while let Some(top) = stack.last_mut() {
            let Some(&next) = top.1.get(top.2) else {
                done.insert(top.0);
                stack.pop();
                continue;
            };
            top.2 += 1;
            if let Some(pos) = stack.iter().position(|(n, _, _)| *n == next) {
                let path: Vec<&str> = stack[pos..].iter().map(|(n, _, _)| *n).collect();
                cycles.insert(rotate_to_smallest(&path));
            } else if !done.contains(next) {
                stack.push((next, edges(next), 0));
            }
        }
    }
    cycles
}
