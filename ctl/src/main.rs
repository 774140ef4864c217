//! corralctl: drive corrald from the shell.

mod args;
mod commands;
mod man;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use corral_client::{Client, Error};
use serde_json::Number;

use crate::args::{Timeout, parse_count, parse_number, parse_timeout};

/// Control corrald: units, logs, transient runs, shutdown; shared queues, counters,
/// arrays and locks.
#[derive(Debug, Parser)]
#[command(name = "corralctl", version, after_help = AFTER_HELP)]
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

macro_rules! exit_codes {
    () => {
        "Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 cannot reach corrald (not running, or `busy` at a connection limit)."
    };
}

const AFTER_HELP: &str = concat!(
    "\
Shared objects (every program on the machine can use them; they survive restarts of corrald):
  queue    put, get, len, list, purge, delete, declare   FIFO queues of JSON items
  counter  get, set, add, cas, list, delete              64-bit integers
  array    create, get, set, add, list, delete           fixed-length i64 or f64 arrays
  lock     run, status                                   named locks (like flock(1))
See `corralctl queue --help` etc., and `corralctl queue put --help` for each command.

Timeouts (--timeout) are durations as in unit files (5s, 500ms, 1m30s) or seconds (5, 0.5);
0 does not wait; without --timeout, commands wait as long as it takes.

",
    exit_codes!()
);

const EXIT_CODES: &str = exit_codes!();

#[derive(Debug, Subcommand)]
enum Command {
    /// Show units and their instances (a transient task under the program that started it).
    Status {
        /// Only this unit.
        unit: Option<String>,
    },
    /// Start units (and the units they require); wait until they have started.
    ///
    /// Waits until every instance of the named units has started: one of a unit with a
    /// `[ready]` check has passed it; without one, a service has been running for 1 s
    /// (corrald's start window), a task has been running for 1 s or has exited with
    /// code 0. If an instance fails first (its command cannot be run, it exits, it is not
    /// ready by its deadline, a unit it requires fails), exits 1 naming the instance,
    /// why, and the last lines of its log, like `systemctl start`.
    #[command(after_help = EXIT_CODES)]
    Start {
        /// Unit names.
        #[arg(required = true)]
        units: Vec<String>,
        /// Return as soon as the instances are on their way.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long (exit 1; the units go on starting).
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, conflicts_with = "no_wait", allow_hyphen_values = true)]
        timeout: Option<Timeout>,
    },
    /// Stop units: stop signal to each process group, SIGKILL after stop_timeout.
    Stop {
        /// Unit names.
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Stop, then start units; wait until they have started again (as `start` does).
    #[command(after_help = EXIT_CODES)]
    Restart {
        /// Unit names.
        #[arg(required = true)]
        units: Vec<String>,
        /// Return as soon as the instances are on their way.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long, stopping included (exit 1).
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, conflicts_with = "no_wait", allow_hyphen_values = true)]
        timeout: Option<Timeout>,
    },
    /// Send a signal to every running instance's process group (default SIGKILL).
    Kill {
        /// Unit names.
        #[arg(required = true)]
        units: Vec<String>,
        /// Signal name or number.
        #[arg(short, long, default_value = "SIGKILL")]
        signal: String,
    },
    /// Wait until every instance of a unit has exited; print their exit statuses.
    Wait {
        /// Unit name.
        unit: String,
        /// Give up after this long (exit code 1).
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
        timeout: Option<Timeout>,
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
    /// Scheduled tasks (`schedule`, `every`) with their last and next runs.
    Timers,
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
        /// Like a `daemon = true` unit: dies with corrald, even on `kill -9`, and is
        /// stopped first at shutdown.
        #[arg(long)]
        daemon: bool,
        /// Program and arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Shut corrald down by its lifecycle rules: daemon units at once, tasks joined (up
    /// to shutdown_timeout), then services in reverse dependency order.
    Shutdown {
        /// Return as soon as shutdown has begun.
        #[arg(long)]
        no_wait: bool,
        /// Print what a shutdown would do now (order, signals, timeouts); change nothing.
        #[arg(long, conflicts_with = "no_wait")]
        plan: bool,
    },
    /// Durable FIFO queues of JSON items (like multiprocessing.Queue).
    #[command(subcommand, after_help = EXIT_CODES)]
    Queue(QueueCommand),
    /// Shared 64-bit integer counters with atomic add and compare-and-swap.
    #[command(subcommand, after_help = EXIT_CODES)]
    Counter(CounterCommand),
    /// Shared fixed-length i64 or f64 arrays (like multiprocessing.Array).
    #[command(subcommand, after_help = EXIT_CODES)]
    Array(ArrayCommand),
    /// Named locks: run a command while holding one, show holders.
    #[command(subcommand, after_help = EXIT_CODES)]
    Lock(LockCommand),
    /// Counting semaphores (like multiprocessing.Semaphore and BoundedSemaphore).
    #[command(subcommand, after_help = EXIT_CODES)]
    Semaphore(commands::sync::SemaphoreCommand),
    /// Set/clear flags that programs wait on (like multiprocessing.Event).
    #[command(subcommand, after_help = EXIT_CODES)]
    Event(commands::sync::EventCommand),
    /// Parallel maps of a command over many inputs, results in input order (like Pool.map).
    #[command(subcommand, after_help = EXIT_CODES)]
    Pool(PoolCommand),
    /// The corrald nodes sharing this one's PostgreSQL backend (corrald --backend): last
    /// heartbeat, lease, and the locks each holds.
    #[command(after_help = EXIT_CODES)]
    Nodes,
    /// A live view of units, queues and pool jobs in the terminal; q quits.
    ///
    /// Refreshes every --interval with the state of every unit's instances, each queue's
    /// depth and put/get rates, and each pool job's progress and rate. Needs a terminal;
    /// --once prints one frame as plain text and exits (for scripts, or over ssh without a
    /// terminal).
    #[command(after_help = EXIT_CODES)]
    Top {
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
        /// Time between refreshes (a duration: 1s, 500ms).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
    },
    /// Print a shell completion script: `corralctl completions bash > /etc/bash_completion.d/corralctl`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the corralctl(1) man page as roff (used by packaging/install.sh).
    #[command(name = "__man", hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// Run CMD once per input, at most -j at a time; print each item's output in input order.
    ///
    /// `{}` in CMD or its arguments becomes the input; without `{}` the input is appended.
    /// Inputs follow `:::` on the command line, or are read from stdin, one per line.
    /// Example: corralctl pool map -j 4 -- sh -c 'echo $(({} * {}))' ::: 1 2 3 4 5
    Map {
        /// Submit to a named pool (a unit with kind = "pool"): its command, workers and
        /// mode apply. Inputs after `-- :::` or on stdin.
        #[arg(long, value_name = "NAME")]
        pool: Option<String>,
        /// Most items at once (exec) or worker processes (--stream) [default: CPUs].
        #[arg(short = 'j', long = "jobs", value_name = "N")]
        workers: Option<usize>,
        /// Extra attempts for a failed item.
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// Per-item time limit; the item's process group is killed after it.
        #[arg(long, value_name = "DURATION", value_parser = args::parse_timeout, allow_hyphen_values = true)]
        timeout: Option<args::Timeout>,
        /// A name for the job.
        #[arg(long)]
        name: Option<String>,
        /// Stream mode: N long-lived workers of CMD, each reading one input line on stdin
        /// and answering one line on stdout.
        #[arg(long)]
        stream: bool,
        /// Print the job id and return at once.
        #[arg(long)]
        detach: bool,
        /// CMD ARGS... [::: INPUTS...]
        #[arg(required_unless_present = "pool", last = true, value_name = "CMD")]
        rest: Vec<String>,
    },
    /// Every job.
    List,
    /// One job's progress.
    Status {
        /// Job id.
        job: u64,
    },
    /// The output of a job's finished items, in input order.
    Results {
        /// Job id.
        job: u64,
    },
    /// Wait for a job to end; exit 1 if any item failed.
    Wait {
        /// Job id.
        job: u64,
        /// Give up after this long (exit code 1; the job runs on).
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
        timeout: Option<Timeout>,
    },
    /// Stop a job: kill its running items' process groups, skip the rest.
    Cancel {
        /// Job id.
        job: u64,
    },
    /// Remove a finished or cancelled job and its results (a running job is refused).
    Rm {
        /// Job id.
        job: u64,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Append an item; prints nothing (with --json: the new depth).
    ///
    /// VALUE is taken as JSON if it is valid JSON (42, true, null, {"a":1}, '"quoted"'),
    /// else as a string: `queue put q "Data from process"` puts the string. With `-`, reads
    /// stdin and puts one item per line by the same rule (empty lines are skipped). A
    /// string starting with `-` goes after `--`: `queue put q -- -x`.
    ///
    /// Prints nothing on success, so scripts stay quiet; use `queue len` or --json
    /// ({"depth": N}; for `-`, {"put": ITEMS, "depth": N}) for the depth. On a full queue,
    /// waits for room: as long as it takes, up to --timeout, or not at all with --no-wait
    /// (then exit 1).
    #[command(after_help = EXIT_CODES)]
    Put {
        /// Queue name (created on first use, unbounded).
        name: String,
        /// The item (JSON, else a string), or `-` for one item per line of stdin.
        #[arg(allow_negative_numbers = true)]
        value: String,
        /// Wait for room at most this many seconds.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
        timeout: Option<Timeout>,
        /// Fail at once if the queue is full.
        #[arg(long, conflicts_with = "timeout")]
        no_wait: bool,
    },
    /// Take the oldest item(s) and print each on its own line.
    ///
    /// A string item prints as its raw text, any other item as compact JSON; with
    /// --json, prints {"items": [...]}. On an empty queue, waits as long as it takes, up
    /// to --timeout, or not at all with --no-wait; then exits 1. The items leave the queue
    /// when they are printed.
    ///
    /// With --ack, the items are leased instead (at-least-once): each line is the lease
    /// ID, a tab, then the item, and the item stays stored until `queue ack NAME ID`. If
    /// no ack comes within --visibility (default 30s), or `queue nack NAME ID` is run,
    /// the item goes back to the head of the queue for another delivery (to the
    /// dead-letter queue past the queue's max_deliveries). With --json: {"items": [...],
    /// "leases": [{"id": ID, "deliveries": N}, ...]}.
    #[command(after_help = EXIT_CODES)]
    Get {
        /// Queue name.
        name: String,
        /// Wait for an item at most this many seconds.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
        timeout: Option<Timeout>,
        /// Take up to N items (waiting only for the first).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 1, value_parser = parse_count)]
        count: usize,
        /// Fail at once if the queue is empty.
        #[arg(long, conflicts_with = "timeout")]
        no_wait: bool,
        /// Lease the items until `queue ack` instead of removing them.
        #[arg(long)]
        ack: bool,
        /// With --ack: how long the lease lasts before the item is delivered again.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, requires = "ack", allow_hyphen_values = true)]
        visibility: Option<Timeout>,
    },
    /// Remove leased items for good (their processing is done).
    ///
    /// Each ID is a lease printed by `queue get --ack`. A lease that ended (acked,
    /// nacked, or its visibility passed, so the item was delivered again) is refused
    /// with `not_held` (exit 1) and nothing changes.
    #[command(after_help = EXIT_CODES)]
    Ack {
        /// Queue name.
        name: String,
        /// Lease ids from `queue get --ack`.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
    /// Put leased items back at the head of the queue now, for another delivery.
    #[command(after_help = EXIT_CODES)]
    Nack {
        /// Queue name.
        name: String,
        /// Lease ids from `queue get --ack`.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
    /// Print the number of items (0 for an unknown queue).
    Len {
        /// Queue name.
        name: String,
    },
    /// Table of every queue: depth, capacity, totals, waiting clients.
    List,
    /// Remove every item of a queue.
    Purge {
        /// Queue name.
        name: String,
    },
    /// Remove a queue and its items (clients waiting in `get` fail).
    Delete {
        /// Queue name.
        name: String,
    },
    /// Create a queue, or change its settings (those left out are reset).
    Declare {
        /// Queue name.
        name: String,
        /// Most items the queue holds, in flight included (then `put` waits); unbounded
        /// without it.
        #[arg(long, value_name = "N")]
        maxsize: Option<usize>,
        /// An item delivered N times by `get --ack` and returned unacked goes to the
        /// dead-letter queue; without it, items are redelivered forever.
        #[arg(long, value_name = "N")]
        max_deliveries: Option<u32>,
        /// The dead-letter queue (default NAME.dead).
        #[arg(long, value_name = "QUEUE", requires = "max_deliveries")]
        dead_letter: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CounterCommand {
    /// Print a counter's value (0 if it was never set).
    Get {
        /// Counter name.
        name: String,
    },
    /// Set a counter; prints nothing (with --json: the counter).
    Set {
        /// Counter name.
        name: String,
        /// New value.
        #[arg(allow_negative_numbers = true)]
        value: i64,
    },
    /// Add to a counter (atomically) and print the new value; overflow is an error.
    Add {
        /// Counter name.
        name: String,
        /// Amount, may be negative.
        #[arg(allow_negative_numbers = true)]
        delta: i64,
    },
    /// Set a counter to NEW only if it is EXPECTED; print the value now.
    ///
    /// Exits 0 if it was swapped, 1 if not (the printed value is then the current one).
    #[command(after_help = EXIT_CODES)]
    Cas {
        /// Counter name.
        name: String,
        /// Value required for the swap.
        #[arg(allow_negative_numbers = true)]
        expected: i64,
        /// Value written on success.
        #[arg(allow_negative_numbers = true)]
        new: i64,
    },
    /// Table of every counter.
    List,
    /// Forget a counter.
    Delete {
        /// Counter name.
        name: String,
    },
}

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ArrayKindArg {
    /// 64-bit signed integers.
    I64,
    /// 64-bit floats.
    F64,
}

#[derive(Debug, Subcommand)]
enum ArrayCommand {
    /// Create a fixed-length array, of zeros or of VALUES.
    ///
    /// Creating an array that exists with the same type and length does nothing.
    #[command(after_help = EXIT_CODES)]
    Create {
        /// Array name.
        name: String,
        /// Element type.
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        kind: ArrayKindArg,
        /// Number of elements.
        #[arg(long, value_name = "N")]
        len: usize,
        /// Initial values, exactly N of them (default: zeros).
        #[arg(allow_negative_numbers = true, value_parser = parse_number)]
        values: Vec<Number>,
    },
    /// Print the whole array (values separated by spaces) or one element.
    Get {
        /// Array name.
        name: String,
        /// Element index, from 0.
        index: Option<usize>,
    },
    /// Set one element; prints nothing (with --json: the element).
    Set {
        /// Array name.
        name: String,
        /// Element index, from 0.
        index: usize,
        /// New value (an integer for i64 arrays).
        #[arg(allow_negative_numbers = true, value_parser = parse_number)]
        value: Number,
    },
    /// Add to one element (atomically) and print the new value.
    Add {
        /// Array name.
        name: String,
        /// Element index, from 0.
        index: usize,
        /// Amount, may be negative (an integer for i64 arrays).
        #[arg(allow_negative_numbers = true, value_parser = parse_number)]
        delta: Number,
    },
    /// Table of every array.
    List,
    /// Forget an array.
    Delete {
        /// Array name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum LockCommand {
    /// Run a command while holding a lock, like flock(1).
    ///
    /// Waits for the lock (as long as it takes, or up to --timeout; then exits 1), runs
    /// the command with inherited stdin, stdout and stderr and with CORRAL_LOCK_TOKEN set
    /// to the lock's fencing token, releases the lock, and exits with the command's exit
    /// code (128 + N if signal N killed it).
    ///
    /// Ctrl-C goes to the command; corralctl waits for it. The lock belongs to
    /// corralctl's connection: if corralctl itself is killed, corrald releases the lock
    /// at once, even if the command still runs. Where that matters, have the protected
    /// resource check CORRAL_LOCK_TOKEN: a later holder always has a larger token.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// Lock name.
        name: String,
        /// Wait for the lock at most this many seconds (0: fail if it is held).
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
        timeout: Option<Timeout>,
        /// Program and arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Table of locks that are held or waited for: holder, held for, waiters, token.
    Status {
        /// Only this lock.
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if !e.use_stderr() {
                // --help, --version
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if json_requested(std::env::args_os().skip(1)) {
                output::set_json_errors(true);
                let text = e.render().to_string();
                // clap's message without its `error: ` prefix and its usage lines; for a
                // group without its subcommand, clap's text is the group's help.
                let message = match e.kind() {
                    clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                        "a subcommand is missing: see --help"
                    }
                    _ => text.lines().next().unwrap_or_default(),
                };
                output::print_usage_error(message.strip_prefix("error: ").unwrap_or(message));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(2);
        }
    };
    output::set_json_errors(cli.json);
    // Commands that need no corrald: answered before connecting.
    match cli.command {
        Command::Completions { shell } => return completions(shell),
        Command::Man => return man_page(),
        _ => {}
    }
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(corral_client::default_socket);
    if let Err(message) = check(&cli.command) {
        return usage_error(&message);
    }
    let client = match Client::connect_to(&socket) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let out = output::Output { json: cli.json };
    let result = match cli.command {
        Command::Status { unit } => commands::units::status(&client, &out, unit.as_deref()),
        Command::Start {
            units,
            no_wait,
            timeout,
        } => commands::units::start(&client, &out, &units, args::Wait::new(timeout, no_wait)),
        Command::Stop { units } => commands::units::stop(&client, &out, &units),
        Command::Restart {
            units,
            no_wait,
            timeout,
        } => commands::units::restart(&client, &out, &units, args::Wait::new(timeout, no_wait)),
        Command::Kill { units, signal } => commands::units::kill(&client, &out, &units, &signal),
        Command::Wait { unit, timeout } => commands::units::wait(&client, &out, &unit, timeout),
        Command::Logs {
            unit,
            lines,
            follow,
            instance,
        } => commands::logs::logs(&client, &out, &unit, lines, follow, instance),
        Command::Reload => commands::units::reload(&client, &out),
        Command::Timers => commands::units::timers(&client, &out),
        Command::Run {
            name,
            wait,
            env,
            daemon,
            command,
        } => commands::units::run(&client, &out, name, wait, daemon, env, command),
        Command::Shutdown { no_wait, plan } => {
            commands::system::shutdown(&client, &out, no_wait, plan)
        }
        Command::Queue(command) => queue(&client, &out, command),
        Command::Counter(command) => counter(&client, &out, command),
        Command::Array(command) => array(&client, &out, command),
        Command::Lock(command) => lock(&client, &out, command),
        Command::Semaphore(command) => commands::sync::semaphore(&client, &out, command),
        Command::Event(command) => commands::sync::event(&client, &out, command),
        Command::Pool(command) => pool(&client, &out, command),
        Command::Top { once, interval } => commands::top::top(&client, &out, once, interval),
        Command::Nodes => commands::system::nodes(&client, &out),
        Command::Completions { .. } | Command::Man => unreachable!("answered before connecting"),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn pool(client: &Client, out: &output::Output, command: PoolCommand) -> Result<ExitCode, Error> {
    use commands::pool;
    match command {
        PoolCommand::Map {
            pool: named,
            workers,
            retries,
            timeout,
            name,
            stream,
            detach,
            rest,
        } => {
            let args = pool::MapArgs {
                pool: named,
                workers,
                retries,
                timeout: timeout.map(|t| t.duration()),
                name,
                stream,
                detach,
                rest,
            };
            pool::map(client, out, args)
        }
        PoolCommand::List => pool::list(client, out),
        PoolCommand::Status { job } => pool::status(client, out, job),
        PoolCommand::Results { job } => pool::results(client, out, job),
        PoolCommand::Wait { job, timeout } => pool::wait(client, out, job, timeout),
        PoolCommand::Cancel { job } => pool::cancel(client, out, job),
        PoolCommand::Rm { job } => pool::remove(client, out, job),
    }
}

fn queue(client: &Client, out: &output::Output, command: QueueCommand) -> Result<ExitCode, Error> {
    use commands::queue;
    match command {
        QueueCommand::Put {
            name,
            value,
            timeout,
            no_wait,
        } => queue::put(
            client,
            out,
            &name,
            &value,
            args::Wait::new(timeout, no_wait),
        ),
        QueueCommand::Get {
            name,
            timeout,
            count,
            no_wait,
            ack: false,
            ..
        } => queue::get(client, out, &name, count, args::Wait::new(timeout, no_wait)),
        QueueCommand::Get {
            name,
            timeout,
            count,
            no_wait,
            ack: true,
            visibility,
        } => queue::get_ack(
            client,
            out,
            &name,
            count,
            args::Wait::new(timeout, no_wait),
            visibility,
        ),
        QueueCommand::Ack { name, ids } => queue::ack(client, out, &name, &ids, true),
        QueueCommand::Nack { name, ids } => queue::ack(client, out, &name, &ids, false),
        QueueCommand::Len { name } => queue::len(client, out, &name),
        QueueCommand::List => queue::list(client, out),
        QueueCommand::Purge { name } => queue::purge(client, out, &name),
        QueueCommand::Delete { name } => queue::delete(client, out, &name),
        QueueCommand::Declare {
            name,
            maxsize,
            max_deliveries,
            dead_letter,
        } => queue::declare(
            client,
            out,
            &name,
            maxsize,
            max_deliveries,
            dead_letter.as_deref(),
        ),
    }
}

fn counter(
    client: &Client,
    out: &output::Output,
    command: CounterCommand,
) -> Result<ExitCode, Error> {
    use commands::counter;
    match command {
        CounterCommand::Get { name } => counter::get(client, out, &name),
        CounterCommand::Set { name, value } => counter::set(client, out, &name, value),
        CounterCommand::Add { name, delta } => counter::add(client, out, &name, delta),
        CounterCommand::Cas {
            name,
            expected,
            new,
        } => counter::cas(client, out, &name, expected, new),
        CounterCommand::List => counter::list(client, out),
        CounterCommand::Delete { name } => counter::delete(client, out, &name),
    }
}

fn array(client: &Client, out: &output::Output, command: ArrayCommand) -> Result<ExitCode, Error> {
    use commands::array;
    match command {
        ArrayCommand::Create {
            name,
            kind,
            len,
            values,
        } => {
            let kind = kind.into();
            let values =
                array::initial_values(kind, len, values).expect("checked before connecting");
            array::create(client, out, &name, kind, len, values)
        }
        ArrayCommand::Get { name, index } => array::get(client, out, &name, index),
        ArrayCommand::Set { name, index, value } => array::set(client, out, &name, index, value),
        ArrayCommand::Add { name, index, delta } => array::add(client, out, &name, index, delta),
        ArrayCommand::List => array::list(client, out),
        ArrayCommand::Delete { name } => array::delete(client, out, &name),
    }
}

fn lock(client: &Client, out: &output::Output, command: LockCommand) -> Result<ExitCode, Error> {
    use commands::lock;
    match command {
        LockCommand::Run {
            name,
            timeout,
            command,
        } => lock::run(client, out, &name, timeout, &command),
        LockCommand::Status { name } => lock::status(client, out, name.as_deref()),
    }
}

impl From<ArrayKindArg> for corral_client::ArrayKind {
    fn from(kind: ArrayKindArg) -> Self {
        match kind {
            ArrayKindArg::I64 => corral_client::ArrayKind::I64,
            ArrayKindArg::F64 => corral_client::ArrayKind::F64,
        }
    }
}

/// Checks across arguments that clap cannot express, before connecting, so that a usage
/// error is reported as one (exit 2) whether or not corrald is running.
/// `--interval`: a duration as in unit files, from 100ms to an hour.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parse_timeout(text)?.duration();
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("{text}: the interval must be between 100ms and 1h"));
    }
    Ok(d)
}

fn check(command: &Command) -> Result<(), String> {
    match command {
        Command::Array(ArrayCommand::Create {
            kind, len, values, ..
        }) => commands::array::initial_values((*kind).into(), *len, values.clone()).map(drop),
        Command::Pool(PoolCommand::Map {
            workers: Some(0), ..
        }) => Err("-j must be at least 1".into()),
        _ => Ok(()),
    }
}

fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "corralctl", &mut script);
    print_bytes(&script)
}

fn man_page() -> ExitCode {
    match man::render(Cli::command()) {
        Ok(page) => print_bytes(&page),
        Err(e) => {
            output::print_error("failed", &format!("cannot render the man page: {e}"), &[]);
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error("failed", &format!("cannot write to stdout: {e}"), &[]);
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    output::print_usage_error(message);
    ExitCode::from(2)
}

/// Whether `--json` is among the arguments before `--` (for errors clap reports before
/// the arguments are parsed).
fn json_requested(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

fn fail(e: &Error) -> ExitCode {
    let (code, message, details) = output::describe(e);
    output::print_error(&code, &message, &details);
    match e {
        Error::Connect { .. } => ExitCode::from(3),
        // corrald is at its connection limit: it cannot be reached now.
        Error::Server(body) if body.code == corral_client::proto::ErrorCode::Busy => {
            ExitCode::from(3)
        }
        Error::Server(body) if body.code == corral_client::proto::ErrorCode::BadRequest => {
            ExitCode::from(2)
        }
        _ => ExitCode::from(1),
    }
}
