//! corralctl: drive corrald from the shell.

mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral_client::{Client, Error};

/// Control corrald: units, logs, transient runs, shutdown.
#[derive(Debug, Parser)]
#[command(name = "corralctl", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// corrald's control socket [default: $CORRAL_SOCKET, else the system or user default]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables and text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str =
    "Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 cannot reach corrald.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Show units and their instances.
    Status {
        /// Only this unit.
        unit: Option<String>,
    },
    /// Start units (and the units they require).
    Start {
        /// Unit names.
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Stop units: stop signal to each process group, SIGKILL after stop_timeout.
    Stop {
        /// Unit names.
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Stop, then start units.
    Restart {
        /// Unit names.
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Wait until every instance of a unit has exited; print their exit statuses.
    Wait {
        /// Unit name.
        unit: String,
        /// Give up after this many seconds (exit code 1).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
    /// Print a unit's log lines.
    Logs {
        /// Unit name.
        unit: String,
        /// Lines from the end of each instance's log.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Keep printing new lines as they are written.
        #[arg(short, long)]
        follow: bool,
        /// Only this instance.
        #[arg(short, long)]
        instance: Option<u32>,
    },
    /// Re-read unit files: start new units, stop removed ones, restart changed ones.
    Reload,
    /// Run a command as a transient task under corrald.
    Run {
        /// Name of the transient unit [default: run-N].
        #[arg(long)]
        name: Option<String>,
        /// Stream the output and exit with the command's exit code.
        #[arg(long)]
        wait: bool,
        /// Extra environment variables.
        #[arg(short, long, value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Program and arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Shut corrald down by its lifecycle rules.
    Shutdown {
        /// Return as soon as shutdown has begun.
        #[arg(long)]
        no_wait: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(corral_client::default_socket);
    let mut client = match Client::connect_to(&socket) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let out = output::Output { json: cli.json };
    let result = match cli.command {
        Command::Status { unit } => commands::units::status(&mut client, &out, unit.as_deref()),
        Command::Start { units } => commands::units::start(&mut client, &out, &units),
        Command::Stop { units } => commands::units::stop(&mut client, &out, &units),
        Command::Restart { units } => commands::units::restart(&mut client, &out, &units),
        Command::Wait { unit, timeout } => commands::units::wait(&mut client, &out, &unit, timeout),
        Command::Logs {
            unit,
            lines,
            follow,
            instance,
        } => commands::logs::logs(&mut client, &out, &unit, lines, follow, instance),
        Command::Reload => commands::units::reload(&mut client, &out),
        Command::Run {
            name,
            wait,
            env,
            command,
        } => commands::units::run(&mut client, &out, name, wait, env, command),
        Command::Shutdown { no_wait } => commands::system::shutdown(&mut client, &out, no_wait),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("corralctl: {e}");
    match e {
        Error::Connect { .. } => ExitCode::from(3),
        Error::Server(body) if body.code == corral_client::proto::ErrorCode::BadRequest => {
            ExitCode::from(2)
        }
        _ => ExitCode::from(1),
    }
}
