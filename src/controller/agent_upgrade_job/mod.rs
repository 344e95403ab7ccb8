//! The AgentUpgradeJob controller: fetch (its NodeAgent; its child AgentInvocations from a
//! cache of them, with those created and not yet in it; its plan, read once; Nodes from the
//! shared cache) -> [`plan`] (who starts when) -> execute (create the children: one Update
//! per node, a Rollback per failed node when asked) -> status (the seed's per-agent old and
//! new versions, counts, conditions).

pub mod fetch;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::expect::Owned;
use super::shell::{self, KindOf};
use crate::api::AgentInvocation;
use crate::api::agent_upgrade_job::{AgentUpgradeJob, UpgradeJobState};
use crate::keys::UPGRADE_JOB_UID_LABEL;
use crate::plan::Child;
use plan::{Part, World};

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
    /// Every job's child AgentInvocations, without managed fields, with those created and
    /// not yet cached.
    pub children: Owned<AgentInvocation>,
    /// Each unfinished job's plan kept in ConfigMaps, by job uid, once read whole: those
    /// ConfigMaps never change, and at 5000 agents they are a megabyte to list.
    pub plans: Mutex<HashMap<String, Arc<Vec<Part>>>>,
}

impl shell::Reconciler for Reconciler {
    type Decide = plan::Decisions;
    type Error = Error;
    /// A reconcile's starts go out together. Sent 16 at a time, each behind the requests
    /// of hundreds of invocations in flight, 64 starts took a reconcile 5 to 10 s at 5000
    /// agents, and the rollout kept about 300 in flight of the 500 allowed.
    const CREATIONS_AT_ONCE: usize = plan::STARTS_PER_RECONCILE;

    fn context(&self) -> &Context {
        &self.ctx
    }
    fn api(&self, obj: &KindOf<Self>) -> Api<AgentUpgradeJob> {
        shell::namespaced_api(&self.ctx.client, obj)
    }
    /// Finished is final: a cache never runs ahead of the API. A finished job's plan is
    /// not kept.
    fn idle(&self, job: &AgentUpgradeJob) -> bool {
        let finished = job.status.as_ref().is_some_and(|s| {
            s.completed_at.is_some()
                && matches!(
                    s.status,
                    UpgradeJobState::Success | UpgradeJobState::Failed | UpgradeJobState::Planned
                )
        });
        if finished
            && let Some(uid) = job.uid()
            && let Ok(mut plans) = self.plans.lock()
        {
            plans.remove(&uid);
        }
        finished
    }
    async fn fetch(&self, job: &AgentUpgradeJob, now: Timestamp) -> Result<World, Error> {
        fetch::world(self, job, now).await
    }
    /// A child counts as there until the cache shows it.
    fn created(&self, child: &Child) {
        if let Child::AgentInvocation(inv) = child {
            self.children.created(inv);
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // The children's watch fills the cache the jobs read them from, marks creations seen,
    // and wakes a child's job once the cache holds the change.
    let (children, child_stream) = Owned::watch(
        ctx.scoped::<AgentInvocation>(),
        UPGRADE_JOB_UID_LABEL,
        |c| c.metadata.managed_fields = None,
    );
    let controller =
        shell::controller::<Reconciler>(ctx.scoped(), Duration::ZERO).owns_stream(child_stream);
    let reconciler = Reconciler {
        ctx,
        children,
        plans: Mutex::default(),
    };
    shell::drive(controller, Arc::new(reconciler), shutdown).await;
}
