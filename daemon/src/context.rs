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

impl Context {
    /// Every pool job: this node's, or with a shared backend the database's.
    pub async fn pool_list(&self) -> Result<corral_proto::PoolListResult, corral_proto::ErrorBody> {
        match &self.cluster {
            Some(cluster) => cluster.list().await,
            None => self.pool.ask(pool::PoolRequest::List).await,
        }
    }

    /// One pool job's progress (with a shared backend, with each node's share).
    pub async fn pool_status(
        &self,
        job: u64,
    ) -> Result<corral_proto::PoolJob, corral_proto::ErrorBody> {
        match &self.cluster {
            Some(cluster) => cluster.status_by_node(job).await,
            None => self.pool.ask(|r| pool::PoolRequest::Status(job, r)).await,
        }
    }

    /// Cancels a pool job (on every node, with a shared backend).
    pub async fn pool_cancel(
        &self,
        job: u64,
    ) -> Result<corral_proto::PoolJob, corral_proto::ErrorBody> {
        match &self.cluster {
            Some(cluster) => cluster.cancel(job).await,
            None => self.pool.ask(|r| pool::PoolRequest::Cancel(job, r)).await,
        }
    }

    /// Removes a finished or cancelled pool job and its items (from the database, with a
    /// shared backend); a job that still runs is refused. Answered once the removal is
    /// committed.
    pub async fn pool_remove(
        &self,
        job: u64,
    ) -> Result<corral_proto::PoolJob, corral_proto::ErrorBody> {
        if let Some(cluster) = &self.cluster {
            return cluster.remove(job).await;
        }
        let job = self.pool.ask(|r| pool::PoolRequest::Remove(job, r)).await?;
        self.store.sync().await?;
        Ok(job)
    }
}
