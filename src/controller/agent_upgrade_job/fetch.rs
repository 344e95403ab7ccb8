//! What the AgentUpgradeJob controller reads: its NodeAgent, the nodes with their agent
//! version and whether its selector selects them, and its child AgentInvocations (from the
//! API: what exists decides what may start).

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};
use kube::{Api, ResourceExt};

use super::Error;
use super::plan::{ChildView, NodeView, World};
use crate::api::agent_upgrade_job::AgentUpgradeJob;
use crate::api::{AgentInvocation, NodeAgent};
use crate::controller::Context;
use crate::keys::{
    NODE_ANNOTATION, ROLE_LABEL, ROLE_ROLLBACK, UPGRADE_JOB_UID_LABEL, agent_node_label,
};

/// What an AgentUpgradeJob's decisions read.
pub async fn world(ctx: &Context, job: &AgentUpgradeJob, now: Timestamp) -> Result<World, Error> {
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
                conditions: crate::rollout::conditions_of(n),
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
        object_gates: crate::controller::gates::read(
            ctx,
            &job.namespace().unwrap_or_default(),
            job.spec.rollout.as_ref(),
        )
        .await,
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
