//! corrald: supervise processes from unit files; serve queues, counters, locks and pools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use corral_daemon::{Lifecycle, Overrides, Settings, lifecycle, settings};

/// The corral process manager daemon. Runs in the foreground.
#[derive(Debug, Parser)]
#[command(name = "corrald", version, about)]
struct Cli {
    /// Main config file (default: /etc/corral/corral.toml as root, else
    /// $XDG_CONFIG_HOME/corral/corral.toml, when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of unit files (*.toml).
    #[arg(long, value_name = "DIR")]
    units: Option<PathBuf>,
    /// Directory for the state database (and logs, unless --log-dir).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Control socket path.
    #[arg(long, value_name = "PATH", env = "CORRAL_SOCKET")]
    socket: Option<PathBuf>,
    /// Directory for instance logs.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// HTTP status address (IP:PORT), or `off`.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Keep queues, counters and locks in this PostgreSQL database, shared with the other
    /// corrald nodes using it (postgres://USER:PASSWORD@HOST:PORT/DATABASE).
    #[arg(long, value_name = "URL", env = "CORRAL_BACKEND")]
    backend: Option<String>,
    /// This node's name among the nodes of the backend (default: the host name).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Use per-user (XDG) default paths even when running as root.
    #[arg(long)]
    user: bool,
    /// Validate the config and unit files, print every error, and exit.
    #[arg(long)]
    check: bool,
    /// Print the corrald(8) man page as roff and exit (for packaging).
    #[arg(long, hide = true)]
    man: bool,
    /// Print a shell completion script for corrald and exit (for packaging).
    #[arg(long, hide = true, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == corral_daemon::pool::guard::ARG)
    {
        return corral_daemon::pool::guard::run();
    }
    let cli = Cli::parse();
    raise_fd_limit();
    if cli.man {
        return man_page();
    }
    if let Some(shell) = cli.completions {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "corrald", &mut script);
        return print_bytes(&script);
    }
    init_tracing();
    let config_file = settings::config_path(cli.config.as_deref(), cli.user);
    let file_config = match &config_file {
        Some(path) => match corral_config::load_daemon_config(path) {
            Ok(c) => c,
            Err(errors) => {
                eprintln!("corrald: invalid config:\n{errors}");
                return ExitCode::from(2);
            }
        },
        None => Default::default(),
    };
    let overrides = Overrides {
        units_dir: cli.units,
        state_dir: cli.state,
        socket: cli.socket,
        log_dir: cli.log_dir,
        http: cli.http,
        user_mode: cli.user,
        backend: cli.backend,
        node: cli.node,
    };
    let settings = match Settings::resolve(&overrides, &file_config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("corrald: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        return check(&settings);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corrald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let lc = Lifecycle::default();
        lifecycle::install_signal_handlers(&lc)?;
        corral_daemon::run(settings, lc).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corrald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn man_page() -> ExitCode {
    let man = clap_mangen::Man::new(Cli::command())
        .section("8")
        .manual("corral")
        .source(concat!("corral ", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    if let Err(e) = man.render(&mut page) {
        eprintln!("corrald: cannot render the man page: {e}");
        return ExitCode::FAILURE;
    }
    // Sections appended by packaging start on a line of their own.
    page.push(b'\n');
    print_bytes(&page)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corrald: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(settings: &Settings) -> ExitCode {
    match corral_config::load_units_dir(&settings.units_dir) {
        Ok(units) => {
            let missing: Vec<&String> = settings
                .enable
                .keys()
                .filter(|t| !units.contains_key(*t))
                .collect();
            if !missing.is_empty() {
                for t in &missing {
                    eprintln!(
                        "[enable] names `{t}`, but {} has no template {t}.toml",
                        settings.units_dir.display()
                    );
                }
                return ExitCode::FAILURE;
            }
            println!(
                "{}: {} unit(s) OK",
                settings.units_dir.display(),
                units.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s)", errors.len());
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `CORRAL_LOG=debug` or `CORRAL_LOG=warn,corral_daemon::store=debug`: a level, and
    // levels per module. (tracing's EnvFilter would add regex, a fifth of a megabyte of
    // code resident in every corrald, for span-field filters nobody here uses.)
    let info = || Targets::new().with_default(tracing::Level::INFO);
    let filter = match std::env::var("CORRAL_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("corrald: ignoring CORRAL_LOG={spec:?} ({e}); logging at info");
            info()
        }),
        _ => info(),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    // Under systemd the journal adds its own timestamps.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        registry.with(layer.without_time()).init();
    } else {
        registry.with(layer).init();
    }
}

/// Every client connection and every instance log costs a file descriptor: use the whole
/// hard limit rather than the customary soft 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        // Instances get the limit corrald was given, not the raised one (see spawn_spec).
        let _ = corral_daemon::fds::INHERITED_NOFILE.set((soft, hard));
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
