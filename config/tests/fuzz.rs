//! Property tests of the unit-file parser: whatever the input, it answers with units or
//! positioned errors, and never panics. (A bounded run: `PROPTEST_CASES` raises it.)

use std::path::PathBuf;

use corral_config::{UNIT_KEYS, load_units, parse_daemon_config};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z0-9 {}<>./-]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("true".to_string()),
        Just("[\"sleep\", \"1\"]".to_string()),
        Just("{ soft = 1, hard = 2 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("[1, \"a\", [2]]".to_string()),
        "[ -~]{0,20}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::sample::select(UNIT_KEYS.to_vec()), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        ("[a-z_]{1,10}", value()).prop_map(|(k, v)| format!("{k} = {v}")),
        Just("[env]".to_string()),
        Just("[rlimits]".to_string()),
        "[ -~]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = load_units(&[(PathBuf::from("u/a.toml"), text.clone())]);
        let _ = parse_daemon_config(&PathBuf::from("corral.toml"), &text);
    }

    #[test]
    fn unit_like_files_give_units_or_positioned_errors(
        lines in prop::collection::vec(line(), 0..12),
        other in prop::collection::vec(line(), 0..6),
    ) {
        let files = vec![
            (PathBuf::from("u/a.toml"), lines.join("\n")),
            (PathBuf::from("u/b.toml"), other.join("\n")),
        ];
        match load_units(&files) {
            Ok(units) => prop_assert!(units.values().all(|u| !u.command.is_empty())),
            Err(errors) => {
                for e in errors.iter() {
                    prop_assert!(e.file.starts_with("u/"));
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }
}
