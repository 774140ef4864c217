//! [`PgCluster`]: a PostgreSQL server of the test's own, for the `--backend` tests.
//!
//! `initdb` and `pg_ctl` of Debian's PostgreSQL (`/usr/lib/postgresql/*/bin`, which
//! `scripts/test` installs when missing) in a temp dir, listening on 127.0.0.1 on a port
//! of its own and on a Unix socket in that dir; run as the `postgres` user when the test
//! runs as root (PostgreSQL refuses to run as root). Stopped with `pg_ctl stop -m
//! immediate` on drop. Never a shared server.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The superuser's password: host connections use scram-sha-256, so a wrong one is refused.
pub const PG_PASSWORD: &str = "corral-test-secret";

/// A running PostgreSQL cluster in a temp dir.
pub struct PgCluster {
    /// The temp dir: `data/` (the cluster), `sock/` (its Unix socket), `pg.log`.
    pub dir: tempfile::TempDir,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    running: bool,
    /// `listen_addresses`: 127.0.0.1, and a bridge's address for [`PgCluster::start_on`].
    listen: String,
}

/// Directory of Debian's PostgreSQL server binaries (the newest version installed).
pub fn pg_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgCluster {
    /// Starts a new cluster, or returns `None` after printing why it cannot (no
    /// PostgreSQL installed and `scripts/test` could not install it): the caller skips.
    pub fn start() -> Option<PgCluster> {
        PgCluster::start_listening(None)
    }

    /// Like [`PgCluster::start`], listening on `addr` too and accepting password logins
    /// from `cidr` (`pg_hba.conf`): for nodes in other network namespaces.
    pub fn start_on(addr: &str, cidr: &str) -> Option<PgCluster> {
        PgCluster::start_listening(Some((addr, cidr)))
    }

    fn start_listening(extra: Option<(&str, &str)>) -> Option<PgCluster> {
        let Some(bin) = pg_bin_dir() else {
            eprintln!(
                "skipped: PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb); \
                 scripts/test installs it (apt-get install postgresql)"
            );
            return None;
        };
        let owner = if nix::unistd::Uid::effective().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("the postgres user (Debian's postgresql package makes it)");
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("corral-pg-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("sock")).expect("socket dir");
        std::fs::write(dir.path().join("pwfile"), PG_PASSWORD).expect("pwfile");
        if let Some((uid, gid)) = owner {
            for p in [
                dir.path().to_path_buf(),
                dir.path().join("sock"),
                dir.path().join("pwfile"),
            ] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown for postgres");
            }
        }
        let mut cluster = PgCluster {
            dir,
            port: 0,
            bin,
            owner,
            running: false,
            listen: match extra {
                Some((addr, _)) => format!("127.0.0.1,{addr}"),
                None => "127.0.0.1".into(),
            },
        };
        let data = cluster.data_dir();
        let pwfile = cluster.dir.path().join("pwfile");
        let out = cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some((_, cidr)) = extra {
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            text.push_str(&format!("host all all {cidr} scram-sha-256\n"));
            std::fs::write(&hba, text).expect("write pg_hba.conf");
        }
        // A port picked free may be taken by another test before the server binds it:
        // try a few.
        for _ in 0..5 {
            cluster.port = free_port();
            if cluster.pg_ctl_start() {
                return Some(cluster);
            }
        }
        panic!("PostgreSQL did not start: {}", cluster.log());
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's Unix socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    fn pg_ctl_start(&mut self) -> bool {
        let data = self.data_dir();
        let log = self.dir.path().join("pg.log");
        let opts = format!(
            "-c listen_addresses={} -p {} -k {} -c fsync=off -c max_connections=200",
            self.listen,
            self.port,
            self.socket_dir().display()
        );
        let out = self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
            ],
        );
        self.running = out.status.success();
        self.running
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash would.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
            ],
        );
        self.running = false;
    }

    /// Starts the server again on the same port after [`PgCluster::stop`].
    pub fn start_again(&mut self) {
        assert!(
            self.pg_ctl_start(),
            "PostgreSQL did not restart: {}",
            self.log()
        );
    }

    /// Stops the server at once and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// A connection URI for database `postgres` as the superuser, with its password.
    pub fn url(&self) -> String {
        self.url_with("postgres", PG_PASSWORD)
    }

    /// A connection URI as the superuser to the server at `host` (an address it
    /// listens on, see [`PgCluster::start_on`]).
    pub fn url_at(&self, host: &str) -> String {
        format!(
            "postgres://postgres:{PG_PASSWORD}@{host}:{}/postgres",
            self.port
        )
    }

    /// A connection URI with another user and password (for refused credentials).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Runs one SQL statement with `psql` over the Unix socket; returns its stdout
    /// (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let sock = self.socket_dir();
        let port = self.port.to_string();
        let psql = Path::new("/usr/bin/psql");
        let program = if psql.exists() {
            psql.to_path_buf()
        } else {
            self.bin.join("psql")
        };
        let mut cmd = Command::new(program);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-h",
        ])
        .arg(&sock)
        .args(["-p", &port, "-d", "postgres", "-c", sql])
        .stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which backend a conformance test runs its corrald on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The local SQLite state database (the default).
    Sqlite,
    /// A [`PgCluster`] of the test's own (`corrald --backend URL --node test`).
    Postgres,
}

/// A [`crate::TestDaemon`] on one [`Backend`], with its PostgreSQL cluster when it has
/// one (stopped after the daemon: fields drop in order). Derefs to the daemon.
pub struct BackendDaemon {
    /// The daemon, not started yet.
    pub daemon: crate::TestDaemon,
    /// The cluster behind it.
    pub pg: Option<PgCluster>,
}

impl Backend {
    /// A daemon (not started) on this backend, or `None` when PostgreSQL cannot run here
    /// (the reason is printed; the test then passes without checking anything).
    pub fn daemon(self) -> Option<BackendDaemon> {
        let mut daemon = crate::TestDaemon::new();
        let pg = match self {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let pg = PgCluster::start()?;
                daemon.extra_args.extend([
                    "--backend".into(),
                    pg.url(),
                    "--node".into(),
                    "test".into(),
                ]);
                Some(pg)
            }
        };
        Some(BackendDaemon { daemon, pg })
    }
}

impl std::ops::Deref for BackendDaemon {
    type Target = crate::TestDaemon;
    fn deref(&self) -> &crate::TestDaemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for BackendDaemon {
    fn deref_mut(&mut self) -> &mut crate::TestDaemon {
        &mut self.daemon
    }
}
