//! What every connection handler shares: the handles of the tasks that own state.

use tokio_util::sync::CancellationToken;

use crate::access;
use crate::pool;
use crate::settings::Settings;
use crate::store::Store;
use crate::supervisor::SupervisorHandle;

/// What every connection handler shares.
pub struct Context {
    /// Resolved settings.
    pub settings: Settings,
    /// The supervisor task.
    pub supervisor: SupervisorHandle,
    /// The store task.
    pub store: Store,
    /// The pool-job manager.
    pub pool: pool::PoolHandle,
    /// With a shared backend: pool jobs run by every node (`pool::nodes`).
    pub cluster: Option<std::sync::Arc<pool::nodes::ClusterPool>>,
    /// Cancelled to ask for a clean shutdown (by a signal or the `shutdown` op).
    pub request_shutdown: CancellationToken,
    /// Cancelled once every instance is down, before connections are closed.
    pub all_stopped: CancellationToken,
    /// When corrald started.
    pub started: std::time::Instant,
    /// Who may do what.
    pub policy: access::Policy,
}
