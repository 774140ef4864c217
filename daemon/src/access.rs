//! Who may do what over the socket: the `[access]` table of `corral.toml`, checked
//! against the client's uid and groups as the kernel reports them (`SO_PEERCRED`, and the
//! supplementary groups of the peer process). A refused request changes nothing and
//! gets `permission_denied` naming the operation.

use corral_config::AccessConfig;
use corral_proto::{ErrorBody, ErrorCode, Op};

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Looking only.
    Read,
    /// Changing a queue, counter, array or lock (the name decides with `[[access.names]]`).
    Use,
    /// Starting, stopping, running, reloading, shutting down; pool jobs.
    Control,
}

/// The client behind a connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Its uid, if the kernel said.
    pub uid: Option<u32>,
    /// Its primary and supplementary groups.
    pub groups: Vec<u32>,
}

impl Peer {
    /// The peer of a Unix connection: uid and primary gid from `SO_PEERCRED`, the
    /// supplementary groups from `/proc/PID/status`.
    pub fn of(cred: Option<tokio::net::unix::UCred>) -> Peer {
        let Some(cred) = cred else {
            return Peer::default();
        };
        let mut groups = vec![cred.gid()];
        if let Some(pid) = cred.pid() {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(line) = status.lines().find(|l| l.starts_with("Groups:")) {
                    groups.extend(
                        line.split_whitespace()
                            .skip(1)
                            .filter_map(|g| g.parse::<u32>().ok()),
                    );
                }
            }
        }
        Peer {
            uid: Some(cred.uid()),
            groups,
        }
    }
}

impl Peer {
    /// The user a transient unit or pool job submitted by this peer runs as: the peer's
    /// own uid, unless it is root or corrald's own user (then corrald's).
    pub fn run_as(&self) -> Option<u32> {
        let own = nix::unistd::Uid::effective().as_raw();
        self.uid.filter(|&u| u != 0 && u != own)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    Anyone,
    User(u32),
    Group(u32),
}

/// The resolved `[access]` rules.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Option<Rules>,
    own_uid: u32,
}

#[derive(Debug, Clone)]
struct Rules {
    control: Vec<Principal>,
    use_: Vec<Principal>,
    read: Vec<Principal>,
    names: Vec<(String, Vec<Principal>)>,
}

fn parse(list: &[String]) -> anyhow::Result<Vec<Principal>> {
    list.iter()
        .map(|p| {
            let bad = || anyhow::anyhow!("invalid principal `{p}` in [access]: use \"*\", \"user:NAME\", \"user:UID\", \"group:NAME\" or \"group:GID\"");
            if p == "*" {
                return Ok(Principal::Anyone);
            }
            let (kind, name) = p.split_once(':').ok_or_else(bad)?;
            match kind {
                "user" => Ok(Principal::User(match name.parse() {
                    Ok(uid) => uid,
                    Err(_) => nix::unistd::User::from_name(name)?
                        .ok_or_else(|| anyhow::anyhow!("[access] names user `{name}`, which does not exist"))?
                        .uid
                        .as_raw(),
                })),
                "group" => Ok(Principal::Group(match name.parse() {
                    Ok(gid) => gid,
                    Err(_) => nix::unistd::Group::from_name(name)?
                        .ok_or_else(|| anyhow::anyhow!("[access] names group `{name}`, which does not exist"))?
                        .gid
                        .as_raw(),
                })),
                _ => Err(bad()),
            }
        })
        .collect()
}

impl Policy {
    /// Resolves names to ids once, at start; a name that does not exist is an error.
    pub fn new(config: Option<&AccessConfig>) -> anyhow::Result<Policy> {
        let rules = match config {
            None => None,
            Some(c) => Some(Rules {
                control: parse(&c.control)?,
                use_: parse(&c.use_)?,
                read: parse(&c.read)?,
                names: c
                    .names
                    .iter()
                    .map(|r| Ok((r.prefix.clone(), parse(&r.use_)?)))
                    .collect::<anyhow::Result<_>>()?,
            }),
        };
        Ok(Policy {
            rules,
            own_uid: nix::unistd::Uid::effective().as_raw(),
        })
    }

    /// Allows `op` for `peer`, or says why not.
    pub fn check(&self, peer: &Peer, op: &Op) -> Result<(), ErrorBody> {
        let Some(rules) = &self.rules else {
            return Ok(());
        };
        if peer.uid.is_some_and(|u| u == 0 || u == self.own_uid) {
            return Ok(());
        }
        let (need, name) = need_of(op);
        let allowed = |list: &[Principal]| {
            list.iter().any(|p| match p {
                Principal::Anyone => true,
                Principal::User(u) => peer.uid == Some(*u),
                Principal::Group(g) => peer.groups.contains(g),
            })
        };
        let ok = match need {
            Need::Read => allowed(&rules.read) || allowed(&rules.use_) || allowed(&rules.control),
            Need::Control => allowed(&rules.control),
            Need::Use => {
                let by_name = name.and_then(|n| {
                    rules
                        .names
                        .iter()
                        .filter(|(prefix, _)| n.starts_with(prefix.as_str()))
                        .max_by_key(|(prefix, _)| prefix.len())
                });
                match by_name {
                    Some((_, list)) => allowed(list),
                    None => allowed(&rules.use_),
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ErrorBody::new(
                ErrorCode::PermissionDenied,
                format!(
                    "permission denied: `{}` needs {} access{}, which [access] in corral.toml does not give uid {}",
                    op_name(op),
                    match need {
                        Need::Read => "read",
                        Need::Use => "use",
                        Need::Control => "control",
                    },
                    name.map(|n| format!(" to `{n}`")).unwrap_or_default(),
                    peer.uid.map_or("?".into(), |u| u.to_string())
                ),
            ))
        }
    }
}

/// The wire name of an operation (`queue_put`, ...).
fn op_name(op: &Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// What `op` needs, and the coordination name it touches, if any.
pub fn need_of(op: &Op) -> (Need, Option<&str>) {
    match op {
        Op::Hello { .. }
        | Op::Status { .. }
        | Op::Timers {}
        | Op::Wait { .. }
        | Op::Logs { .. }
        | Op::QueueLen { .. }
        | Op::QueueList {}
        | Op::CounterGet { .. }
        | Op::CounterList {}
        | Op::ArrayGet { .. }
        | Op::ArrayList {}
        | Op::LockStatus { .. }
        | Op::PoolWait { .. }
        | Op::PoolStatus { .. }
        | Op::PoolResults { .. }
        | Op::PoolList {} => (Need::Read, None),
        Op::Shutdown { plan: true, .. } => (Need::Read, None),
        Op::Start { .. }
        | Op::Stop { .. }
        | Op::Restart { .. }
        | Op::Kill { .. }
        | Op::Reload {}
        | Op::Run { .. }
        | Op::Shutdown { .. }
        | Op::PoolSubmit { .. }
        | Op::PoolAppend { .. }
        | Op::PoolClose { .. }
        | Op::PoolCancel { .. } => (Need::Control, None),
        Op::QueueDeclare { queue, .. }
        | Op::QueuePut { queue, .. }
        | Op::QueueGet { queue, .. }
        | Op::QueueAck { queue, .. }
        | Op::QueueNack { queue, .. }
        | Op::QueuePurge { queue }
        | Op::QueueDelete { queue } => (Need::Use, Some(queue)),
        Op::CounterSet { counter, .. }
        | Op::CounterAdd { counter, .. }
        | Op::CounterCas { counter, .. }
        | Op::CounterDelete { counter } => (Need::Use, Some(counter)),
        Op::ArrayCreate { array, .. }
        | Op::ArraySet { array, .. }
        | Op::ArrayAdd { array, .. }
        | Op::ArrayDelete { array } => (Need::Use, Some(array)),
        Op::LockAcquire { lock, .. } | Op::LockRelease { lock } => (Need::Use, Some(lock)),
    }
}
