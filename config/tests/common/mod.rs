//! Shared helpers for the integration tests.

// Each test binary uses only some of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use corral_config::{Unit, load_units};

/// `(name, text)` pairs become `u/NAME.toml` files.
pub fn files(units: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    units
        .iter()
        .map(|(name, text)| (PathBuf::from(format!("u/{name}.toml")), (*text).to_owned()))
        .collect()
}

/// Loads the units, panicking with the full report on error.
pub fn ok(units: &[(&str, &str)]) -> BTreeMap<String, Unit> {
    match load_units(&files(units)) {
        Ok(units) => units,
        Err(errors) => panic!("unexpected errors:\n{errors}"),
    }
}

/// Loads the units, expecting failure; returns each error's Display.
pub fn errors(units: &[(&str, &str)]) -> Vec<String> {
    match load_units(&files(units)) {
        Ok(units) => panic!("expected errors, got units: {:?}", units.keys()),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Loads a single unit `t` and returns its only error.
pub fn single_error(text: &str) -> String {
    let errs = errors(&[("t", text)]);
    assert_eq!(errs.len(), 1, "expected exactly one error, got {errs:#?}");
    errs.into_iter().next().unwrap()
}
