//! The AgentUpgradeJob controller: fetch (its NodeAgent, its child AgentInvocations; Nodes
//! from the shared cache) -> [`plan`] (who starts when) -> execute (create the children:
//! one Update per node, a Rollback per failed node when asked) -> status (the seed's
//! per-agent old and new versions, counts, conditions).

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::shell::{self, KindOf};
use crate::api::agent_upgrade_job::{AgentUpgradeJob, UpgradeJobState};
use crate::api::{AgentInvocation, NodeAgent};
use crate::keys::{
    NODE_ANNOTATION, ROLE_LABEL, ROLE_ROLLBACK, UPGRADE_JOB_UID_LABEL, agent_node_label,
};
use plan::{ChildView, NodeView, World};

/// Errors of reading an AgentUpgradeJob's world, named after the read that failed; all
/// are retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading NodeAgent {name}: {source}")]
    ReadAgent { name: String, source: kube::Error },
    #[error("listing the child AgentInvocations: {0}")]
    ListChildren(#[source] kube::Error),
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
        Api::namespaced(
            self.ctx.client.clone(),
            &obj.namespace().unwrap_or_default(),
        )
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
        let ctx = &self.ctx;
        let agent_name = job.spec.agent.clone();
        let agent = Api::<NodeAgent>::all(ctx.client.clone())
            .get_opt(&agent_name)
            .await
            .map_err(|source| Error::ReadAgent {
                name: agent_name.clone(),
                source,
            })?;
        // An invalid selector selects nothing here; validation says why.
        let selector = job
            .spec
            .node_selector
            .clone()
            .and_then(|s| Selector::try_from(s).ok());
        let key = agent_node_label(&agent_name);
        let nodes: BTreeMap<String, NodeView> = ctx
            .nodes
            .state()
            .iter()
            .map(|n| {
                let view = NodeView {
                    uid: n.metadata.uid.clone().unwrap_or_default(),
                    ready: crate::plan::node_ready(n),
                    version: n.labels().get(&key).cloned(),
                    selected: selector.as_ref().is_some_and(|s| s.matches(n.labels())),
                };
                (n.name_any(), view)
            })
            .collect();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let children: Api<AgentInvocation> =
            Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
        // Children from the API, not a cache: what exists decides what may start.
        let list = children
            .list(&ListParams::default().labels(&format!("{UPGRADE_JOB_UID_LABEL}={uid}")))
            .await
            .map_err(Error::ListChildren)?;
        let mut world = World {
            now,
            agent_found: agent.is_some(),
            agent_uid: agent.and_then(|a| a.metadata.uid).unwrap_or_default(),
            nodes,
            ..Default::default()
        };
        for child in list.items {
            let Some(node) = child.annotations().get(NODE_ANNOTATION).cloned() else {
                continue;
            };
            let view = ChildView {
                result: child
                    .status
                    .as_ref()
                    .and_then(|s| s.invocations.first().cloned()),
            };
            match child.labels().get(ROLE_LABEL).map(String::as_str) {
                Some(ROLE_ROLLBACK) => world.rollbacks.insert(node, view),
                _ => world.upgrades.insert(node, view),
            };
        }
        Ok(world)
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
