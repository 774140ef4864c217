//! `counter get`, `set`, `add`, `cas`, `list`, `delete`.

use std::process::ExitCode;

use corral_client::proto::{CounterListResult, RemovedResult};
use corral_client::{Client, CounterValue, Error};

use crate::output::{Output, table};

pub fn get(client: &Client, out: &Output, name: &str) -> Result<ExitCode, Error> {
    let value = client.counter(name).get()?;
    print_value(out, name, value);
    Ok(ExitCode::SUCCESS)
}

pub fn set(client: &Client, out: &Output, name: &str, value: i64) -> Result<ExitCode, Error> {
    client.counter(name).set(value)?;
    if out.json {
        out.print_json(&CounterValue {
            counter: name.to_owned(),
            value,
        });
    }
    Ok(ExitCode::SUCCESS)
}

pub fn add(client: &Client, out: &Output, name: &str, delta: i64) -> Result<ExitCode, Error> {
    let value = client.counter(name).add(delta)?;
    print_value(out, name, value);
    Ok(ExitCode::SUCCESS)
}

fn print_value(out: &Output, name: &str, value: i64) {
    if out.json {
        out.print_json(&CounterValue {
            counter: name.to_owned(),
            value,
        });
    } else {
        println!("{value}");
    }
}

pub fn cas(
    client: &Client,
    out: &Output,
    name: &str,
    expected: i64,
    new: i64,
) -> Result<ExitCode, Error> {
    let result = client.counter(name).compare_and_swap(expected, new)?;
    if out.json {
        out.print_json(&result);
    } else {
        println!("{}", result.value);
    }
    if result.swapped {
        return Ok(ExitCode::SUCCESS);
    }
    if !out.json {
        eprintln!(
            "corralctl: counter {name} is {}, not {expected}: left unchanged",
            result.value
        );
    }
    Ok(ExitCode::from(1))
}

pub fn list(client: &Client, out: &Output) -> Result<ExitCode, Error> {
    let counters = client.counters()?;
    if out.json {
        out.print_json(&CounterListResult { counters });
    } else {
        let rows: Vec<Vec<String>> = counters
            .iter()
            .map(|c| vec![c.counter.clone(), c.value.to_string()])
            .collect();
        print!("{}", table(&["COUNTER", "VALUE"], &rows));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn delete(client: &Client, out: &Output, name: &str) -> Result<ExitCode, Error> {
    let existed = client.counter(name).delete()?;
    if out.json {
        out.print_json(&RemovedResult {
            removed: usize::from(existed),
        });
    } else if existed {
        println!("deleted counter {name}");
    } else {
        println!("no counter {name}: nothing deleted");
    }
    Ok(ExitCode::SUCCESS)
}
