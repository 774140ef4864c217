//! Error reporting: every class of mistake, each at its exact
//! `file:line:column`, all of them at once.

mod common;

use std::path::PathBuf;

use common::{errors, single_error};
use corral_config::{load_units, load_units_dir, load_units_dir_partial};

#[test]
fn syntax_errors_are_positioned() {
    let err = single_error("command = [\"x\"]\nkind = \"task\n");
    assert_eq!(err, "u/t.toml:2:13: invalid basic string, expected `\"`");
    let errs = errors(&[("t", "command = [\"x\"]\n[env\nA = 1\nkind = = 2\n")]);
    assert!(errs.len() >= 2, "{errs:#?}");
    assert!(errs[0].starts_with("u/t.toml:2:"), "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.starts_with("u/t.toml:4:")),
        "{errs:#?}"
    );
    // No follow-on "missing command" noise from a file that did not parse.
    assert!(
        !errs.iter().any(|e| e.contains("missing required key")),
        "{errs:#?}"
    );
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    let err = single_error("command = [\"x\"]\ninstances = 1\ninstances = 2\n");
    assert_eq!(err, "u/t.toml:3:1: duplicate key");
}

#[test]
fn invalid_unit_names_are_reported_at_file_start() {
    let errs = errors(&[
        ("bad name", "command = [\"x\"]\n"),
        ("ok", "command = [\"x\"]\n"),
    ]);
    assert_eq!(
        errs,
        [
            "u/bad name.toml:1:1: invalid unit name `bad name` (from the file name): unit names must be 1 to 128 characters long, contain only ASCII letters, digits, `_`, `-`, `.` and `@`, and not start with `.`"
        ]
    );
    let dotted =
        load_units(&[(PathBuf::from("u/..toml"), "command = [\"x\"]\n".to_owned())]).unwrap_err();
    assert!(
        dotted
            .to_string()
            .starts_with("u/..toml:1:1: invalid unit name `.`"),
        "{dotted}"
    );
    let long = "a".repeat(129);
    let errs = errors(&[(&long, "command = [\"x\"]\n")]);
    assert!(errs[0].contains("invalid unit name"), "{errs:?}");
}

#[test]
fn duplicate_unit_names() {
    let files = vec![
        (PathBuf::from("a/x.toml"), "command = [\"x\"]\n".to_owned()),
        (PathBuf::from("b/x.toml"), "command = [\"x\"]\n".to_owned()),
    ];
    let errs = load_units(&files).unwrap_err().to_string();
    assert_eq!(
        errs,
        "b/x.toml:1:1: unit `x` is defined twice: also in a/x.toml"
    );
}

#[test]
fn unknown_keys_suggest_or_list() {
    let errs = errors(&[(
        "t",
        "command = [\"x\"]\ncomand = [\"y\"]\n  restart_dealy = \"1s\"\nfoo = 1\n[servce]\n",
    )]);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert_eq!(
        errs[0],
        "u/t.toml:2:1: unknown key `comand`, did you mean `command`?"
    );
    assert_eq!(
        errs[1],
        "u/t.toml:3:3: unknown key `restart_dealy`, did you mean `restart_delay`?"
    );
    assert!(
        errs[2].starts_with(
            "u/t.toml:4:1: unknown key `foo`; valid keys are: kind, command, instances,"
        ),
        "{}",
        errs[2]
    );
    assert!(
        errs[2].ends_with(&format!(
            "workers, mode, schedule, every, overlap, catch_up, {}",
            corral_config::UNIT_KEYS[30..].join(", ")
        )),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].starts_with("u/t.toml:5:2: unknown key `servce`"),
        "{}",
        errs[3]
    );
}

#[test]
fn command_errors() {
    assert_eq!(
        single_error("command = \"sleep 10\"\n"),
        "u/t.toml:1:11: command must be an array of strings, e.g. command = [\"sleep\", \"10\"]; to run through a shell use command = [\"/bin/sh\", \"-c\", \"sleep 10 && echo done\"]"
    );
    assert_eq!(
        single_error("command = 5\n"),
        "u/t.toml:1:11: expected an array of strings for `command`, found an integer"
    );
    assert_eq!(
        single_error("command = []\n"),
        "u/t.toml:1:11: `command` must not be empty: it needs at least the program to run"
    );
    assert_eq!(
        single_error("command = [\"\", \"x\"]\n"),
        "u/t.toml:1:12: the program (first element of `command`) must not be empty"
    );
    let errs = errors(&[("t", "command = [\"a\", 1, true]\n")]);
    assert_eq!(
        errs,
        [
            "u/t.toml:1:17: expected only strings for `command`, found an integer",
            "u/t.toml:1:20: expected only strings for `command`, found a boolean",
        ]
    );
    assert_eq!(
        single_error("command = [\"a\\u0000b\"]\n"),
        "u/t.toml:1:12: `command` arguments must not contain NUL bytes"
    );
    assert_eq!(
        single_error("kind = \"task\"\n"),
        "u/t.toml:1:1: missing required key `command`, e.g. command = [\"/usr/bin/server\", \"--port\", \"8080\"]"
    );
}

#[test]
fn duration_errors() {
    assert_eq!(
        single_error("command = [\"x\"]\nstop_timeout = 10\n"),
        "u/t.toml:2:16: expected a duration string like \"10s\" or \"500ms\" for `stop_timeout`, found an integer; write stop_timeout = \"10s\" for seconds"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nrestart_delay = \"5 parsecs\"\n"),
        "u/t.toml:2:17: invalid duration for `restart_delay`: unknown unit `parsecs` in `5 parsecs`; use one of: ns, us, ms, s, m, h, d"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nstart_limit_interval = [\"1s\"]\n"),
        "u/t.toml:2:24: expected a duration string like \"10s\" or \"500ms\" for `start_limit_interval`, found an array"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nrestart_delay_max = \"10\"\n"),
        "u/t.toml:2:21: invalid duration for `restart_delay_max`: missing unit after `10` in `10`; write e.g. \"10s\" or \"10ms\""
    );
}

#[test]
fn restart_delay_ordering() {
    assert_eq!(
        single_error("command = [\"x\"]\nrestart_delay = \"5s\"\nrestart_delay_max = \"1s\"\n"),
        "u/t.toml:3:21: `restart_delay_max` (1s) must not be less than `restart_delay` (5s)"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nrestart_delay = \"1m\"\n"),
        "u/t.toml:2:17: `restart_delay` (1m) is greater than the default `restart_delay_max` (10s); set restart_delay_max too"
    );
}

#[test]
fn enum_errors_with_suggestions() {
    assert_eq!(
        single_error("kind = \"servce\"\ncommand = [\"x\"]\n"),
        "u/t.toml:1:8: unknown kind `servce`, expected one of: service, task, pool (did you mean `service`?)"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nrestart = \"on_failure\"\n"),
        "u/t.toml:2:11: unknown restart policy `on_failure`, expected one of: no, on-failure, always (did you mean `on-failure`?)"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nrestart = \"sometimes\"\n"),
        "u/t.toml:2:11: unknown restart policy `sometimes`, expected one of: no, on-failure, always"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nrestart = false\n"),
        "u/t.toml:2:11: expected one of: no, on-failure, always for `restart`, found a boolean"
    );
}

#[test]
fn integer_and_boolean_errors() {
    let text = "command = [\"x\"]\ninstances = 0\nstart_limit_burst = 0\nlog_keep = -1\ndaemon = \"true\"\nautostart = 1\ninstances = 2\n";
    // The duplicate `instances` is a syntax error and suppresses the rest.
    assert_eq!(errors(&[("t", text)]), ["u/t.toml:7:1: duplicate key"]);
    let text = "command = [\"x\"]\ninstances = 10001\nstart_limit_burst = 0\nlog_keep = -1\ndaemon = \"true\"\nautostart = 1\nlog_max_size = 1.5\n";
    assert_eq!(
        errors(&[("t", text)]),
        [
            "u/t.toml:2:13: `instances` must be between 1 and 10000, found 10001",
            "u/t.toml:3:21: `start_limit_burst` must be at least 1, found 0",
            "u/t.toml:4:12: `log_keep` must be at least 0, found -1",
            "u/t.toml:5:10: expected a boolean for `daemon`, found a string; write daemon = true without quotes",
            "u/t.toml:6:13: expected a boolean (true or false) for `autostart`, found an integer",
            "u/t.toml:7:16: expected a size like \"10M\" or a number of bytes for `log_max_size`, found a float",
        ]
    );
    assert_eq!(
        single_error("command = [\"x\"]\ninstances = \"3\"\n"),
        "u/t.toml:2:13: expected an integer (remove the quotes) for `instances`, found a string"
    );
}

#[test]
fn signal_errors() {
    assert_eq!(
        single_error("command = [\"x\"]\nstop_signal = \"SIGTREM\"\n"),
        "u/t.toml:2:15: unknown signal `SIGTREM` for `stop_signal` (did you mean `SIGTERM`?)"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nstop_signal = \"usr3\"\n"),
        "u/t.toml:2:15: unknown signal `usr3` for `stop_signal` (did you mean `SIGUSR1`?)"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nstop_signal = 65\n"),
        "u/t.toml:2:15: signal numbers must be between 1 and 64, found 65"
    );
    assert_eq!(
        single_error("command = [\"x\"]\nstop_signal = 32\n"),
        "u/t.toml:2:15: signal 32 is reserved by the C library and cannot be used"
    );
}

#[test]
fn path_identity_and_umask_errors() {
    let text = "command = [\"x\"]\nworking_dir = \"srv/app\"\nuser = 1000\ngroup = \"\"\numask = \"0999\"\n";
    assert_eq!(
        errors(&[("t", text)]),
        [
            "u/t.toml:2:15: `working_dir` must be an absolute path, found `srv/app`",
            "u/t.toml:3:8: expected a string for `user`, found an integer; quote numeric ids: user = \"1000\"",
            "u/t.toml:4:9: `group` must be a non-empty name without NUL bytes",
            "u/t.toml:5:9: invalid umask `0999`: expected octal digits like \"022\"",
        ]
    );
    assert_eq!(
        single_error("command = [\"x\"]\numask = 0o1777\n"),
        "u/t.toml:2:9: umask must be between 0 and 0777, found 0o1777"
    );
    assert_eq!(
        single_error("command = [\"x\"]\numask = \"1000\"\n"),
        "u/t.toml:2:9: umask must be between 0 and 0777, found \"1000\""
    );
}

#[test]
fn env_errors() {
    let text = "command = [\"x\"]\n[env]\nPORT = 8080\nDEBUG = true\n\"A=B\" = \"x\"\n\"\" = \"y\"\nT = { a = \"b\" }\n";
    assert_eq!(
        errors(&[("t", text)]),
        [
            "u/t.toml:3:8: environment variable `PORT` must be a string, found an integer; quote it: PORT = \"8080\"",
            "u/t.toml:4:9: environment variable `DEBUG` must be a string, found a boolean; quote it: DEBUG = \"true\"",
            "u/t.toml:5:1: environment variable names must not contain `=`: `A=B`",
            "u/t.toml:6:1: environment variable names must not be empty: ``",
            "u/t.toml:7:5: expected a string for `env.T`, found a table",
        ]
    );
    assert_eq!(
        single_error("command = [\"x\"]\nenv = [\"A=1\"]\n"),
        "u/t.toml:2:7: expected a table for `env`, found an array"
    );
}

#[test]
fn rlimit_errors() {
    let text = "command = [\"x\"]\n[rlimits]\nnofiles = 10\nnproc = -1\ncore = \"lots\"\nmemlock = { soft = 10, hard = 5 }\nas = { soft = 1 }\n";
    assert_eq!(
        errors(&[("t", text)]),
        [
            "u/t.toml:3:1: unknown resource limit `nofiles`, did you mean `nofile`?",
            "u/t.toml:4:9: `rlimits.nproc` must not be negative",
            "u/t.toml:5:8: expected a non-negative integer or \"unlimited\" for `rlimits.core`, found a string",
            "u/t.toml:6:11: the soft limit is greater than the hard limit in `rlimits.memlock`",
            "u/t.toml:7:6: `rlimits.as` needs both `soft` and `hard`, e.g. { soft = 1024, hard = 4096 }",
        ]
    );
    assert_eq!(
        single_error("command = [\"x\"]\nrlimits = { nofile = { sfot = 1, hard = 2 } }\n"),
        "u/t.toml:2:24: unknown key `sfot` in `rlimits.nofile`, did you mean `soft`?"
    );
}

#[test]
fn dates_are_rejected_everywhere() {
    let text = "command = [\"x\"]\nstop_timeout = 1979-05-27T07:32:00Z\n[env]\nWHEN = 07:32:00\n";
    assert_eq!(
        errors(&[("t", text)]),
        [
            "u/t.toml:2:16: dates are not valid here",
            "u/t.toml:4:8: dates are not valid here"
        ]
    );
}

#[test]
fn dependency_reference_errors() {
    let errs = errors(&[
        ("db", "command = [\"db\"]\n"),
        (
            "web",
            "command = [\"web\"]\nafter = [\"bd\", \"web\"]\nrequires = [\"zzzzzz\", 3]\n",
        ),
    ]);
    assert_eq!(
        errs,
        [
            "u/web.toml:2:10: unknown unit `bd` in `after`, did you mean `db`?",
            "u/web.toml:2:16: unit `web` cannot depend on itself (in `after`)",
            "u/web.toml:3:13: unknown unit `zzzzzz` in `requires`",
            "u/web.toml:3:23: expected only unit names (strings) for `requires`, found an integer",
        ]
    );
    assert_eq!(
        single_error("command = [\"x\"]\nafter = \"db\"\n"),
        "u/t.toml:2:9: expected an array of unit names for `after`, found a string; write after = [\"db\"]"
    );
}

#[test]
fn dependency_cycles_are_named_once() {
    let errs = errors(&[
        ("a", "command = [\"a\"]\nafter = [\"b\"]\n"),
        ("b", "command = [\"b\"]\nrequires = [\"c\"]\n"),
        ("c", "command = [\"c\"]\nafter = [\"a\"]\n"),
        ("d", "command = [\"d\"]\nrequires = [\"a\", \"e\"]\n"),
        ("e", "command = [\"e\"]\n\nrequires = [\"d\"]\n"),
        ("f", "command = [\"f\"]\nafter = [\"a\"]\n"),
    ]);
    assert_eq!(
        errs,
        [
            "u/a.toml:2:1: dependency cycle: a -> b -> c -> a",
            "u/d.toml:2:1: dependency cycle: d -> e -> d",
        ]
    );
}

#[test]
fn dependency_cycle_is_placed_on_the_key_with_the_edge() {
    let errs = errors(&[
        (
            "a",
            "command = [\"a\"]\nafter = [\"x\"]\nrequires = [\"b\"]\n",
        ),
        ("b", "command = [\"b\"]\nafter = [\"a\"]\n"),
        ("x", "command = [\"x\"]\n"),
    ]);
    assert_eq!(errs, ["u/a.toml:3:1: dependency cycle: a -> b -> a"]);
}

#[test]
fn extends_errors() {
    let errs = errors(&[
        ("base", "command = [\"b\"]\n"),
        ("t", "extends = \"bsae\"\n"),
        ("u", "extends = 3\ncommand = [\"u\"]\n"),
    ]);
    assert_eq!(
        errs,
        [
            "u/t.toml:1:11: unknown unit `bsae` in `extends`, did you mean `base`?",
            "u/u.toml:1:11: expected a unit name for `extends`, found an integer",
        ]
    );
}

#[test]
fn extends_cycles_are_reported_once() {
    let errs = errors(&[
        ("a", "extends = \"b\"\ncommand = [\"a\"]\n"),
        ("b", "command = [\"b\"]\nextends = \"a\"\n"),
        ("c", "extends = \"a\"\n"),
        ("s", "extends = \"s\"\ncommand = [\"s\"]\n"),
    ]);
    assert_eq!(
        errs,
        [
            "u/a.toml:1:11: extends cycle: a -> b -> a",
            "u/s.toml:1:11: extends cycle: s -> s"
        ]
    );
}

#[test]
fn inherited_errors_point_at_the_base_file_once() {
    let errs = errors(&[
        (
            "base",
            "command = [\"b\"]\nstop_timeout = 5\n[env]\nN = 1\n",
        ),
        ("c1", "extends = \"base\"\n"),
        ("c2", "extends = \"base\"\n[env]\nN = \"fixed\"\n"),
    ]);
    assert_eq!(
        errs,
        [
            "u/base.toml:2:16: expected a duration string like \"10s\" or \"500ms\" for `stop_timeout`, found an integer; write stop_timeout = \"5s\" for seconds",
            "u/base.toml:4:5: environment variable `N` must be a string, found an integer; quote it: N = \"1\"",
        ]
    );
}

#[test]
fn kind_is_validated_after_merging() {
    // The child's missing command is satisfied by the base, and the base's
    // kind decides the child's defaults.
    let errs = errors(&[
        ("base", "kind = \"task\"\ncommand = [\"b\"]\n"),
        ("child", "extends = \"base\"\nrestart = \"nope\"\n"),
    ]);
    assert_eq!(
        errs,
        [
            "u/child.toml:2:11: unknown restart policy `nope`, expected one of: no, on-failure, always"
        ]
    );
}

#[test]
fn broken_base_does_not_cascade() {
    let errs = errors(&[
        ("base", "command = [\"b\"\n"),
        ("child", "extends = \"base\"\n"),
    ]);
    assert!(
        errs.iter().all(|e| e.starts_with("u/base.toml:")),
        "{errs:#?}"
    );
}

#[test]
fn every_error_of_every_file_together_sorted() {
    let errs = errors(&[
        ("zeta", "command = \"z\"\ninstances = 0\n"),
        (
            "alpha",
            "comand = [\"a\"]\ncommand = [\"a\"]\nkind = \"job\"\n",
        ),
        ("mid", "command = [\"m\"]\n\n\nstop_timeout = 3\n"),
    ]);
    assert_eq!(
        errs,
        [
            "u/alpha.toml:1:1: unknown key `comand`, did you mean `command`?",
            "u/alpha.toml:3:8: unknown kind `job`, expected one of: service, task, pool",
            "u/mid.toml:4:16: expected a duration string like \"10s\" or \"500ms\" for `stop_timeout`, found an integer; write stop_timeout = \"3s\" for seconds",
            "u/zeta.toml:1:11: command must be an array of strings, e.g. command = [\"sleep\", \"10\"]; to run through a shell use command = [\"/bin/sh\", \"-c\", \"sleep 10 && echo done\"]",
            "u/zeta.toml:2:13: `instances` must be between 1 and 10000, found 0",
        ]
    );
}

#[test]
fn columns_count_characters() {
    assert_eq!(
        single_error("# héllo wörld\ncommand = [\"x\"]\n[env]\n\"É\" = 1\n"),
        "u/t.toml:4:7: environment variable `É` must be a string, found an integer; quote it: É = \"1\""
    );
}

#[test]
fn load_units_dir_reports_errors_from_all_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), "command = 1\n").unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "command = [\"b\"]\nafter = [\"c\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("bad name.toml"), "").unwrap();
    let errs: Vec<String> = load_units_dir(dir.path())
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let p = |name: &str| dir.path().join(name).display().to_string();
    assert_eq!(
        errs,
        [
            format!(
                "{}:1:11: expected an array of strings for `command`, found an integer",
                p("a.toml")
            ),
            format!("{}:2:10: unknown unit `c` in `after`", p("b.toml")),
            format!(
                "{}:1:1: invalid unit name `bad name` (from the file name): {}",
                p("bad name.toml"),
                corral_config::UNIT_NAME_RULES
            ),
        ]
    );
}

#[test]
fn the_partial_loader_sets_aside_bad_files_and_what_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("ok.toml", "command = [\"ok\"]\n");
    write("after-ok.toml", "command = [\"x\"]\nafter = [\"ok\"]\n");
    write("bad.toml", "command = 1\n");
    write("child.toml", "extends = \"bad\"\n");
    write("needs.toml", "command = [\"x\"]\nrequires = [\"child\"]\n");
    write("web@.toml", "command = [\"web\", \"{arg}\"]\nbogus = 1\n");
    write(
        "uses-web.toml",
        "command = [\"x\"]\nafter = [\"web@8080\"]\n",
    );
    write("bad name.toml", "command = [\"x\"]\n");
    let loaded = load_units_dir_partial(dir.path()).unwrap();
    // What is loaded is what the strict loader makes of those files alone.
    assert_eq!(
        loaded.units.keys().collect::<Vec<_>>(),
        ["after-ok", "ok"],
        "{:?}",
        loaded.not_loaded
    );
    let p = |name: &str| dir.path().join(name).display().to_string();
    let why: Vec<(String, Vec<String>)> = loaded
        .not_loaded
        .iter()
        .map(|n| {
            assert_eq!(n.file, dir.path().join(format!("{}.toml", n.name)));
            (
                n.name.clone(),
                n.errors.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let not_loaded = |file: &str, at: &str, key: &str, name: &str| {
        format!(
            "{}:{at}: `{key}` names `{name}`, which is not loaded: its unit file has errors",
            p(file)
        )
    };
    assert_eq!(
        why,
        [
            (
                "bad name".to_owned(),
                vec![format!(
                    "{}:1:1: invalid unit name `bad name` (from the file name): {}",
                    p("bad name.toml"),
                    corral_config::UNIT_NAME_RULES
                )]
            ),
            (
                "bad".to_owned(),
                vec![format!(
                    "{}:1:11: expected an array of strings for `command`, found an integer",
                    p("bad.toml")
                )]
            ),
            (
                "child".to_owned(),
                vec![not_loaded("child.toml", "1:11", "extends", "bad")]
            ),
            (
                "needs".to_owned(),
                vec![not_loaded("needs.toml", "2:13", "requires", "child")]
            ),
            (
                "uses-web".to_owned(),
                vec![not_loaded("uses-web.toml", "2:10", "after", "web@8080")]
            ),
            (
                "web@".to_owned(),
                vec![format!(
                    "{}:2:1: unknown key `bogus`; valid keys are: {}",
                    p("web@.toml"),
                    corral_config::UNIT_KEYS.join(", ")
                )]
            ),
        ]
    );
    assert_eq!(loaded.errors().len(), 6);
    // The strict loader still refuses the set.
    assert!(load_units_dir(dir.path()).is_err());
    // An unreadable directory is the one error with nothing loaded.
    assert!(load_units_dir_partial(&dir.path().join("missing")).is_err());
}

#[test]
fn env_file_entries_must_be_absolute_paths() {
    let files = vec![(
        PathBuf::from("u/app.toml"),
        "command = [\"app\"]\nenv_file = [\"/etc/app.env\", \"app.env\"]\n".to_owned(),
    )];
    let errors = load_units(&files).unwrap_err().to_string();
    assert_eq!(
        errors,
        "u/app.toml:2:29: `env_file` entries must be an absolute path (with `-` before it if the file is optional), found `app.env`"
    );
    let files = vec![(
        PathBuf::from("u/app.toml"),
        "command = [\"app\"]\nenv_file = 3\n".to_owned(),
    )];
    let errors = load_units(&files).unwrap_err().to_string();
    assert!(
        errors.starts_with("u/app.toml:2:12: expected a path or an array of paths for `env_file`"),
        "{errors}"
    );
}

#[test]
fn schedules_are_checked_at_their_positions() {
    for (text, want) in [
        (
            "kind = \"task\"\ncommand = [\"x\"]\nschedule = \"61 * * * *\"\n",
            "u/s.toml:3:12: invalid cron pattern `61 * * * *`",
        ),
        (
            "command = [\"x\"]\nevery = \"5m\"\n",
            "u/s.toml:2:1: `every` needs kind = \"task\" (this unit is a service)",
        ),
        (
            "kind = \"task\"\ncommand = [\"x\"]\nschedule = \"* * * * *\"\nevery = \"5m\"\n",
            "u/s.toml:4:1: give either `schedule` (a cron pattern) or `every` (an interval), not both",
        ),
        (
            "kind = \"task\"\ncommand = [\"x\"]\novercap = 1\n",
            "u/s.toml:3:1: unknown key `overcap`",
        ),
        (
            "kind = \"task\"\ncommand = [\"x\"]\noverlap = \"skip\"\n",
            "u/s.toml:3:1: `overlap` applies to scheduled tasks: add `schedule` or `every`",
        ),
        (
            "kind = \"task\"\ncommand = [\"x\"]\nevery = \"5m\"\noverlap = \"sometimes\"\n",
            "u/s.toml:4:11:",
        ),
        (
            "kind = \"task\"\ncommand = [\"x\"]\nevery = \"10ms\"\n",
            "u/s.toml:3:9: `every` must be at least 1s",
        ),
    ] {
        let files = vec![(PathBuf::from("u/s.toml"), text.to_owned())];
        let errors = load_units(&files).unwrap_err().to_string();
        assert!(errors.starts_with(want), "{text:?}:\n{errors}");
    }
}

#[test]
fn a_scheduled_task_does_not_autostart_unless_asked() {
    let load = |extra: &str| {
        let files = vec![(
            PathBuf::from("u/s.toml"),
            format!("kind = \"task\"\ncommand = [\"x\"]\nevery = \"5m\"\n{extra}"),
        )];
        load_units(&files).unwrap()["s"].clone()
    };
    assert!(!load("").autostart);
    assert!(load("autostart = true\n").autostart);
    assert_eq!(
        load("catch_up = true\noverlap = \"queue\"\n").schedule,
        Some(corral_config::Schedule {
            when: corral_config::When::Every(std::time::Duration::from_secs(300)),
            overlap: corral_config::Overlap::Queue,
            catch_up: true,
        })
    );
}

#[test]
fn cgroup_limits_are_checked_at_their_positions() {
    let errs = errors(&[(
        "t",
        "command = [\"x\"]\nmemory_max = \"100K\"\ncpu_max = \"half\"\ntasks_max = 0\n",
    )]);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("u/t.toml:2:14: "), "{}", errs[0]);
    assert!(errs[0].contains("memory_max"), "{}", errs[0]);
    assert!(errs[1].starts_with("u/t.toml:3:11: "), "{}", errs[1]);
    assert!(errs[1].contains("percentage of one CPU"), "{}", errs[1]);
    assert!(errs[2].starts_with("u/t.toml:4:13: "), "{}", errs[2]);
    let ok = corral_config::load_units(&[(
        PathBuf::from("u/t.toml"),
        "command = [\"x\"]\nmemory_max = \"64M\"\ncpu_max = \"250%\"\ntasks_max = 10\n".into(),
    )])
    .unwrap();
    assert_eq!(ok["t"].memory_max, Some(64 << 20));
    assert_eq!(ok["t"].cpu_max, Some(250));
    assert_eq!(ok["t"].tasks_max, Some(10));
}
