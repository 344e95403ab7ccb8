//! What the AgentUpgradeJob controller reads: its NodeAgent, the nodes with their agent
//! version and whether its selector selects them, its plan and its child AgentInvocations
//! (from the controller's cache, with the children it created that the cache does not
//! show yet: what exists decides what may start).

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};
use kube::{Api, ResourceExt};

use super::plan::{ChildView, NodeView, Part, World, record};
use super::{Error, Reconciler};
use crate::api::AgentInvocation;
use crate::api::agent_upgrade_job::{AgentUpgrade, AgentUpgradeJob};
use crate::controller::Context;
use crate::keys::{
    NODE_ANNOTATION, ROLE_LABEL, ROLE_PLAN, ROLE_ROLLBACK, UPGRADE_JOB_UID_LABEL, agent_node_label,
};

/// What an AgentUpgradeJob's decisions read.
pub async fn world(r: &Reconciler, job: &AgentUpgradeJob, now: Timestamp) -> Result<World, Error> {
    let ctx: &Context = &r.ctx;
    let agent_name = job.spec.agent.clone();
    let agent = ctx
        .node_agent(&agent_name)
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
    let list = children(r, &job.namespace().unwrap_or_default(), &uid).await?;
    let mut world = World {
        now,
        agent_found: agent.is_some(),
        agent_uid: agent
            .and_then(|a| a.metadata.uid.clone())
            .unwrap_or_default(),
        nodes,
        object_gates: crate::controller::gates::read(
            ctx,
            &job.namespace().unwrap_or_default(),
            job.spec.rollout.as_ref(),
        )
        .await,
        ..Default::default()
    };
    world.limits = ctx.config.upgrade_limits;
    // A small job that recorded its plan in its status has none in ConfigMaps: one request
    // saved on each of its reconciles.
    let in_status = job
        .status
        .as_ref()
        .is_some_and(|s| s.plan.is_none() && !s.agents.is_empty());
    if !in_status {
        world.parts = plan(r, &job.namespace().unwrap_or_default(), &uid)
            .await?
            .as_ref()
            .clone();
    }
    add_children(&mut world, list.iter().map(Arc::as_ref));
    Ok(world)
}

/// The job's children ([`crate::controller::expect::Owned`]).
async fn children(r: &Reconciler, ns: &str, uid: &str) -> Result<Vec<Arc<AgentInvocation>>, Error> {
    r.children
        .of(&r.ctx.client, ns, uid)
        .await
        .map_err(Error::ListChildren)
}

/// The job's plan parts: kept once read whole (they never change), read from the API until
/// then (a part created a moment ago is there).
async fn plan(r: &Reconciler, ns: &str, uid: &str) -> Result<Arc<Vec<Part>>, Error> {
    if let Some(parts) = r.plans.lock().ok().and_then(|p| p.get(uid).cloned()) {
        return Ok(parts);
    }
    let parts: Arc<Vec<Part>> = Arc::new(
        plan_parts(&r.ctx.client, ns, uid)
            .await
            .map_err(Error::ListPlan)?
            .iter()
            .map(record::read)
            .collect(),
    );
    if record::assemble(&parts).is_some()
        && let Ok(mut plans) = r.plans.lock()
    {
        plans.insert(uid.to_string(), parts.clone());
    }
    Ok(parts)
}

/// The job's child AgentInvocations, from the API.
async fn list_children(
    client: &kube::Client,
    namespace: &str,
    uid: &str,
) -> Result<Vec<AgentInvocation>, kube::Error> {
    let api: Api<AgentInvocation> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{UPGRADE_JOB_UID_LABEL}={uid}");
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// The children, by node and role.
fn add_children<'a>(world: &mut World, children: impl IntoIterator<Item = &'a AgentInvocation>) {
    for child in children {
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
}

/// Every agent of a job whose plan is kept in ConfigMaps, as it stands now (its status
/// lists only some): the plan read back and stepped through the children, as the
/// controller does. For `nodeops get`.
pub async fn every_agent(
    client: &kube::Client,
    job: &AgentUpgradeJob,
    now: Timestamp,
) -> Result<Vec<AgentUpgrade>, kube::Error> {
    let namespace = job.namespace().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let parts: Vec<_> = plan_parts(client, &namespace, &uid)
        .await?
        .iter()
        .map(record::read)
        .collect();
    let Some(records) = record::assemble(&parts) else {
        return Ok(Vec::new());
    };
    if job.spec.simulated {
        return Ok(records);
    }
    let mut world = World {
        now,
        ..Default::default()
    };
    add_children(&mut world, &list_children(client, &namespace, &uid).await?);
    let started = job.status.as_ref().map_or(0, |s| s.started as usize);
    Ok(super::plan::derive(&records, Some(started), &world).0)
}

/// The plan ConfigMaps of the job with `uid`, from the API (a part created just now is
/// there), for the controller and `nodeops get`.
pub async fn plan_parts(
    client: &kube::Client,
    namespace: &str,
    uid: &str,
) -> Result<Vec<ConfigMap>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{UPGRADE_JOB_UID_LABEL}={uid},{ROLE_LABEL}={ROLE_PLAN}");
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}
