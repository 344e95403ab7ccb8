//! The AgentUpgradeJob controller: fetch (its NodeAgent, its child AgentInvocations; Nodes
//! from the shared cache) -> [`plan`] (who starts when) -> execute (create the children:
//! one Update per node, a Rollback per failed node when asked) -> status (the seed's
//! per-agent old and new versions, counts, conditions).

pub mod fetch;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher;
use thiserror::Error;

use super::Context;
use super::shell::{self, KindOf};
use crate::api::AgentInvocation;
use crate::api::agent_upgrade_job::{AgentUpgradeJob, UpgradeJobState};
use crate::keys::UPGRADE_JOB_UID_LABEL;
use plan::World;

/// Errors of reading an AgentUpgradeJob's world, named after the read that failed; all
/// are retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading NodeAgent {name}: {source}")]
    ReadAgent { name: String, source: kube::Error },
    #[error("listing the child AgentInvocations: {0}")]
    ListChildren(#[source] kube::Error),
    #[error("listing the plan ConfigMaps: {0}")]
    ListPlan(#[source] kube::Error),
}

/// The AgentUpgradeJob's place in the shell.
pub struct Reconciler {
    pub ctx: Arc<Context>,
}

impl shell::Reconciler for Reconciler {
    type Decide = plan::Decisions;
    type Error = Error;

    fn context(&self) -> &Context {
        &self.ctx
    }
    fn api(&self, obj: &KindOf<Self>) -> Api<AgentUpgradeJob> {
        shell::namespaced_api(&self.ctx.client, obj)
    }
    /// Finished is final: a cache never runs ahead of the API.
    fn idle(&self, job: &AgentUpgradeJob) -> bool {
        job.status.as_ref().is_some_and(|s| {
            s.completed_at.is_some()
                && matches!(
                    s.status,
                    UpgradeJobState::Success | UpgradeJobState::Failed | UpgradeJobState::Planned
                )
        })
    }
    async fn fetch(&self, job: &AgentUpgradeJob, now: Timestamp) -> Result<World, Error> {
        fetch::world(&self.ctx, job, now).await
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let children: Api<AgentInvocation> = ctx.scoped();
    let controller = shell::controller::<Reconciler>(ctx.scoped(), Duration::ZERO).owns(
        children,
        watcher::Config::default().labels(UPGRADE_JOB_UID_LABEL),
    );
    shell::drive(controller, Arc::new(Reconciler { ctx }), shutdown).await;
}
