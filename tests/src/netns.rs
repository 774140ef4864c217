//! [`NetLab`]: several "hosts" on one machine, for the multi-node `--backend` tests.
//!
//! A Linux bridge on the host with the address `10.A.B.1/24`, and per node a fresh
//! network namespace joined to it by a veth pair (the namespace's end is its `eth0`, with
//! `10.A.B.(10+K)`). PostgreSQL listens on the bridge's address ([`PgCluster::start_on`]);
//! each corrald runs in its namespace (`ip netns exec NS corrald …`), so its connection to
//! the database crosses a real link that a test can cut (`ip link set … down`). Unix
//! sockets are files, so the host reaches every node's control socket directly, and
//! [`NetLab::node`] runs `corralctl` in the node's namespace too.
//!
//! Names are unique to the test: namespaces are `corral-tPID-N-K` and the interfaces
//! `cbHASH` (bridge, with the alias `corral-tPID-N`) and `cvHASHK` (the host's ends), from
//! the test process's pid and a counter. Everything is removed on drop, also after a
//! panic; what a killed test process left behind (its pid is gone) is removed by the next
//! [`NetLab::new`]. Needs root and `ip` (iproute2, which `scripts/test` installs).

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{PgCluster, TestDaemon};

/// Several network namespaces on one bridge. See the module doc.
pub struct NetLab {
    /// `corral-tPID-N`: the prefix of the namespaces, and the bridge's alias.
    tag: String,
    bridge: String,
    /// The first two host bytes of the subnet `10.A.B.0/24`.
    subnet: (u8, u8),
    nodes: Vec<Host>,
}

/// One namespace with its link to the bridge.
struct Host {
    netns: String,
    /// The veth end on the host, on the bridge.
    veth: String,
}

/// Serializes the choice of a free subnet between the tests of this process.
static SETUP: Mutex<()> = Mutex::new(());
static COUNT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pid_alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
}

/// The pid in a tag `corral-tPID-…`.
fn tag_pid(name: &str) -> Option<&str> {
    name.strip_prefix("corral-t")?.split('-').next()
}

/// Removes the namespaces and bridges of test processes that are gone (killed before
/// their drop ran).
fn sweep_leftovers() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if tag_pid(name).is_some_and(|pid| !pid_alive(pid)) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show", "type", "bridge"]) {
        for line in list.lines() {
            let mut words = line.split_whitespace();
            let Some(dev) = words.nth(1).map(|d| d.trim_end_matches(':')) else {
                continue;
            };
            let alias = line.split("alias ").nth(1).unwrap_or("").trim();
            if dev.starts_with("cb") && tag_pid(alias).is_some_and(|pid| !pid_alive(pid)) {
                let _ = ip(&["link", "del", dev]);
            }
        }
    }
}

/// Whether any address or route of the host is already in `10.a.b.0/24`.
fn subnet_in_use(a: u8, b: u8) -> bool {
    let prefix = format!("10.{a}.{b}.");
    let addrs = ip(&["-o", "-4", "addr"]).unwrap_or_default();
    let routes = ip(&["-4", "route"]).unwrap_or_default();
    addrs.contains(&prefix) || routes.contains(&prefix)
}

impl NetLab {
    /// A bridge and `nodes` namespaces joined to it, or `None` after printing why not
    /// (not root, no `ip`, no network namespaces here): the caller skips.
    pub fn new(nodes: usize) -> Option<NetLab> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: the multi-host tests need root (network namespaces)");
            return None;
        }
        if Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("skipped: no `ip` command; scripts/test installs iproute2");
            return None;
        }
        let _serial = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        sweep_leftovers();
        let pid = std::process::id();
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("corral-t{pid}-{n}");
        // Interface names have at most 15 bytes: a hash of the tag stands for it.
        let hash = (u64::from(pid) << 8 | u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        let bridge = format!("cb{hash:06x}");
        let start = (hash % (100 * 250)) as u32;
        let subnet = (0..100 * 250)
            .map(|i| (start + i) % (100 * 250))
            .map(|k| (100 + (k / 250) as u8, 1 + (k % 250) as u8))
            .find(|&(a, b)| !subnet_in_use(a, b))
            .expect("a free 10.x.y.0/24");
        let mut lab = NetLab {
            tag,
            bridge,
            subnet,
            nodes: Vec::new(),
        };
        if let Err(e) = lab.build(nodes, hash) {
            eprintln!("skipped: cannot set up network namespaces here: {e}");
            return None;
        }
        Some(lab)
    }

    fn build(&mut self, nodes: usize, hash: u64) -> Result<(), String> {
        let bridge = self.bridge.clone();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", "dev", &bridge, "alias", &self.tag])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host_addr()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for k in 0..nodes {
            let netns = format!("{}-{k}", self.tag);
            ip(&["netns", "add", &netns])?;
            let veth = format!("cv{hash:06x}{k}");
            self.nodes.push(Host {
                netns: netns.clone(),
                veth: veth.clone(),
            });
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", self.node_addr(k));
            ip(&["-n", &netns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The host's address on the bridge (where PostgreSQL listens).
    pub fn host_addr(&self) -> String {
        format!("10.{}.{}.1", self.subnet.0, self.subnet.1)
    }

    /// Node `k`'s address in its namespace.
    pub fn node_addr(&self, k: usize) -> String {
        format!("10.{}.{}.{}", self.subnet.0, self.subnet.1, 10 + k)
    }

    /// The subnet, as PostgreSQL's `pg_hba.conf` writes it.
    pub fn cidr(&self) -> String {
        format!("10.{}.{}.0/24", self.subnet.0, self.subnet.1)
    }

    /// Node `k`'s namespace.
    pub fn netns(&self, k: usize) -> &str {
        &self.nodes[k].netns
    }

    /// A PostgreSQL cluster listening on the bridge (and 127.0.0.1), accepting the
    /// nodes' subnet; `None` (printed) when PostgreSQL cannot run here.
    pub fn postgres(&self) -> Option<PgCluster> {
        PgCluster::start_on(&self.host_addr(), &self.cidr())
    }

    /// A corrald (not started) that runs in node `k`'s namespace on `pg`'s database,
    /// reached over the bridge, with this `corral.toml`; its `ctl` runs in the namespace
    /// too.
    pub fn node(&self, k: usize, pg: &PgCluster, name: &str, toml: &str) -> TestDaemon {
        let mut d = TestDaemon::new();
        let config = d.path("corral.toml");
        std::fs::write(&config, toml).expect("write corral.toml");
        d.wrapper = ["ip", "netns", "exec", self.netns(k)]
            .map(String::from)
            .to_vec();
        d.extra_args = vec![
            "--config".into(),
            config.display().to_string(),
            "--backend".into(),
            pg.url_at(&self.host_addr()),
            "--node".into(),
            name.into(),
        ];
        d
    }

    /// Cuts node `k` off (its link to the bridge down): nothing it sends arrives.
    pub fn cut(&self, k: usize) {
        ip(&["link", "set", &self.nodes[k].veth, "down"]).expect("link down");
    }

    /// Joins node `k` again after [`NetLab::cut`].
    pub fn join(&self, k: usize) {
        ip(&["link", "set", &self.nodes[k].veth, "up"]).expect("link up");
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // A namespace's end of the veth goes with it, and the host's end with its peer.
        for host in &self.nodes {
            let _ = ip(&["netns", "del", &host.netns]);
            let _ = ip(&["link", "del", &host.veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
