//! `shutdown`.

use std::process::ExitCode;

use corral_client::{Client, Error};

use crate::output::Output;

pub fn shutdown(client: &Client, out: &Output, no_wait: bool) -> Result<ExitCode, Error> {
    client.shutdown()?;
    if !no_wait {
        if !out.json {
            eprintln!("corrald is shutting down; waiting for it to stop...");
        }
        // corrald closes every connection once its shutdown sequence has finished.
        client.wait_closed()?;
    }
    if out.json {
        out.print_json(&serde_json::json!({ "stopped": !no_wait }));
    } else if !no_wait {
        println!("corrald stopped");
    }
    Ok(ExitCode::SUCCESS)
}
