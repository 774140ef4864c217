//! Pool jobs across nodes: one exec-mode job of `true` items run by 1, 2 and 3 corrald
//! nodes on one PostgreSQL (a `PgCluster` of the test harness), beside the single-node
//! SQLite figure of the same size (`pool exec`) in the same run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral_client::Client;
use corral_tests::PgCluster;

use crate::peers::{dies_with_bench, sibling_binary, wait_until};
use crate::{Report, Sample, Series};

pub(crate) struct Node {
    /// Its socket.
    pub socket: std::path::PathBuf,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts corrald node `name` on `pg`, in `dir/name`, and waits for its socket.
pub(crate) fn start_node(dir: &Path, pg: &PgCluster, name: &str) -> anyhow::Result<Node> {
    let dir = dir.join(name);
    std::fs::create_dir_all(dir.join("units"))?;
    let socket = dir.join("corral.sock");
    let child = dies_with_bench(&mut Command::new(sibling_binary("corrald")?))
        .arg("--units")
        .arg(dir.join("units"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .args(["--http", "off", "--backend", &pg.url(), "--node", name])
        .env("CORRAL_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    wait_until(name, || Client::connect_to(&socket).is_ok())?;
    Ok(Node { socket, child })
}

/// One job of `items` × `true` submitted on `node` (no -j cap: every node's slots),
/// waited for with every result; its wall time.
fn job(node: &Node, items: usize) -> anyhow::Result<Duration> {
    let inputs = (0..items).map(|i| i.to_string()).collect();
    crate::pool::timed_job(&node.socket, vec!["true".into()], inputs, 1024, false)
}

/// Items per second over 1, 2 and 3 nodes; `None` (said on stderr) without PostgreSQL.
pub fn report(dir: &Path, rounds: usize, quick: bool) -> Option<Report> {
    let items = if quick { 200 } else { 2000 };
    let Some(pg) = PgCluster::start() else {
        eprintln!("pool across nodes: no PostgreSQL (scripts/test installs it); skipped");
        return None;
    };
    let mut series: Vec<Series> = (1..=3)
        .map(|n| Series {
            system: format!("corral, {n} node{}", if n == 1 { "" } else { "s" }),
            samples: Vec::new(),
            missing: None,
        })
        .collect();
    let mut nodes = Vec::new();
    for (n, s) in series.iter_mut().enumerate() {
        match start_node(dir, &pg, &format!("n{}", n + 1)) {
            Ok(node) => nodes.push(node),
            Err(e) => {
                s.missing = Some(format!("failed: {e}"));
                continue;
            }
        }
        for _ in 0..rounds {
            match job(&nodes[0], items) {
                Ok(took) => s.samples.push(Sample {
                    value: items as f64 / took.as_secs_f64(),
                    p50_us: None,
                    p99_us: None,
                }),
                Err(e) => s.missing = Some(format!("failed: {e}")),
            }
        }
    }
    Some(Report {
        workload: format!("pool exec across nodes: {items} × true"),
        note: "items/s over the whole job submitted on the first node, with 1, 2 and 3 nodes on one PostgreSQL (all on this machine; each node runs pool_slots = its CPU count at once): each round of a node's claimer records what ended (one fenced UPDATE per batch) and claims its free slots (one statement, in index order with FOR UPDATE SKIP LOCKED) in one round trip, results streamed back in order".into(),
        unit: "items/s".into(),
        series,
    })
}
