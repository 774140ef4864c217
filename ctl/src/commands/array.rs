//! `array create`, `get`, `set`, `add`, `list`, `delete`.

use std::process::ExitCode;

use corral_client::proto::{ArrayItem, ArrayListResult, Op, RemovedResult};
use corral_client::{ArrayKind, ArrayValue, Client, Error};
use serde_json::Number;

use crate::output::{Output, table};

/// The `VALUES` of `array create`, checked against `--type` and `--len`: `None` for
/// zeros, integers for `i64`, and floats for `f64` (integers converted).
pub fn initial_values(
    kind: ArrayKind,
    len: usize,
    values: Vec<Number>,
) -> Result<Option<Vec<Number>>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    if values.len() != len {
        return Err(format!(
            "--len is {len} but {} value(s) were given: give all {len} values, or none for zeros",
            values.len()
        ));
    }
    values
        .into_iter()
        .map(|n| match kind {
            ArrayKind::I64 if n.is_i64() => Ok(n),
            ArrayKind::I64 => Err(format!("an i64 array holds integers, got {n}")),
            ArrayKind::F64 => n
                .as_f64()
                .and_then(Number::from_f64)
                .ok_or_else(|| format!("{n} is not a finite number")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn kind_name(kind: ArrayKind) -> &'static str {
    match kind {
        ArrayKind::I64 => "i64",
        ArrayKind::F64 => "f64",
    }
}

pub fn create(
    client: &Client,
    out: &Output,
    name: &str,
    kind: ArrayKind,
    length: usize,
    values: Option<Vec<Number>>,
) -> Result<ExitCode, Error> {
    let array: ArrayValue = client.call(Op::ArrayCreate {
        array: name.to_owned(),
        kind,
        length,
        values,
    })?;
    if out.json {
        out.print_json(&array);
    } else {
        println!(
            "array {name}: {}[{}]",
            kind_name(array.kind),
            array.values.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn get(
    client: &Client,
    out: &Output,
    name: &str,
    index: Option<usize>,
) -> Result<ExitCode, Error> {
    let Some(index) = index else {
        let array = client.array(name).get_all()?;
        if out.json {
            out.print_json(&array);
        } else {
            println!("{}", join(&array.values));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let item: ArrayItem = client.call(Op::ArrayGet {
        array: name.to_owned(),
        index: Some(index),
        offset: None,
        length: None,
    })?;
    print_item(out, &item);
    Ok(ExitCode::SUCCESS)
}

fn join(values: &[Number]) -> String {
    values
        .iter()
        .map(Number::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_item(out: &Output, item: &ArrayItem) {
    if out.json {
        out.print_json(item);
    } else {
        println!("{}", item.value);
    }
}

pub fn set(
    client: &Client,
    out: &Output,
    name: &str,
    index: usize,
    value: Number,
) -> Result<ExitCode, Error> {
    let item: ArrayItem = client.call(Op::ArraySet {
        array: name.to_owned(),
        index,
        value,
    })?;
    if out.json {
        out.print_json(&item);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn add(
    client: &Client,
    out: &Output,
    name: &str,
    index: usize,
    delta: Number,
) -> Result<ExitCode, Error> {
    let item: ArrayItem = client.call(Op::ArrayAdd {
        array: name.to_owned(),
        index,
        delta,
    })?;
    print_item(out, &item);
    Ok(ExitCode::SUCCESS)
}

pub fn list(client: &Client, out: &Output) -> Result<ExitCode, Error> {
    let arrays = client.arrays()?;
    if out.json {
        out.print_json(&ArrayListResult { arrays });
    } else {
        let rows: Vec<Vec<String>> = arrays
            .iter()
            .map(|a| {
                vec![
                    a.array.clone(),
                    kind_name(a.kind).to_string(),
                    a.length.to_string(),
                ]
            })
            .collect();
        print!("{}", table(&["ARRAY", "TYPE", "LENGTH"], &rows));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn delete(client: &Client, out: &Output, name: &str) -> Result<ExitCode, Error> {
    let existed = client.array(name).delete()?;
    if out.json {
        out.print_json(&RemovedResult {
            removed: usize::from(existed),
        });
    } else if existed {
        println!("deleted array {name}");
    } else {
        println!("no array {name}: nothing deleted");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nums(texts: &[&str]) -> Vec<Number> {
        texts
            .iter()
            .map(|t| crate::args::parse_number(t).unwrap())
            .collect()
    }

    #[test]
    fn no_values_means_zeros() {
        assert_eq!(initial_values(ArrayKind::I64, 4, vec![]), Ok(None));
    }

    #[test]
    fn values_must_match_the_length() {
        let err = initial_values(ArrayKind::I64, 3, nums(&["1", "2"])).unwrap_err();
        assert!(err.contains("--len is 3 but 2 value(s)"), "{err}");
    }

    #[test]
    fn i64_arrays_take_integers_only() {
        assert_eq!(
            initial_values(ArrayKind::I64, 2, nums(&["1", "-2"])),
            Ok(Some(nums(&["1", "-2"])))
        );
        let err = initial_values(ArrayKind::I64, 2, nums(&["1", "2.5"])).unwrap_err();
        assert!(err.contains("integers, got 2.5"), "{err}");
    }

    #[test]
    fn f64_arrays_convert_integers() {
        let values = initial_values(ArrayKind::F64, 2, nums(&["1", "2.5"]))
            .unwrap()
            .unwrap();
        assert!(values.iter().all(Number::is_f64));
        assert_eq!(join(&values), "1.0 2.5");
    }

    #[test]
    fn whole_arrays_print_space_separated() {
        assert_eq!(join(&nums(&["1", "-2", "3"])), "1 -2 3");
        assert_eq!(join(&[]), "");
    }
}
