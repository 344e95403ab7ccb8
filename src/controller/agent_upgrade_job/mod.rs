//! The AgentUpgradeJob controller: fetch (the job, its NodeAgent, its child
//! AgentInvocations; Nodes from the shared cache) -> plan ([`plan`], pure: who starts when)
//! -> apply (create the children: one Update per node, a Rollback per failed node when
//! asked) -> status (the seed's per-agent old and new versions, counts, conditions).

pub mod plan;

use crate::keys::{FIELD_MANAGER, ROLE_LABEL, UPGRADE_JOB_UID_LABEL, agent_node_label};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use thiserror::Error;
use tracing::{Instrument, info_span, warn};

use super::{Context, RETRY_AFTER};
use crate::api::agent_upgrade_job::{AgentUpgradeJob, UpgradeJobState};
use crate::api::{AgentInvocation, NodeAgent};
use crate::conditions::{self, STALLED};
use crate::keys::NODE_ANNOTATION;
use plan::{ChildView, Effect, NodeView, World};

/// Errors of one reconcile, named after the step that failed; all are retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("fetching the AgentUpgradeJob: {0}")]
    Fetch(#[source] kube::Error),
    #[error("reading NodeAgent {name}: {source}")]
    ReadAgent { name: String, source: kube::Error },
    #[error("listing the child AgentInvocations: {0}")]
    ListChildren(#[source] kube::Error),
    #[error("rendering the child of node {node}: {source}")]
    RenderChild {
        node: String,
        source: serde_json::Error,
    },
    #[error("creating the child of node {node}: {source}")]
    CreateChild { node: String, source: kube::Error },
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let jobs: Api<AgentUpgradeJob> = ctx.scoped();
    let children: Api<AgentInvocation> = ctx.scoped();
    Controller::new(jobs, watcher::Config::default())
        .trigger_backoff(super::WatchBackoff::default())
        .with_config(super::runtime_config(Duration::ZERO))
        .owns(
            children,
            watcher::Config::default().labels(UPGRADE_JOB_UID_LABEL),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(obj: Arc<AgentUpgradeJob>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(kind = "AgentUpgradeJob", namespace = obj.namespace().unwrap_or_default(), object = obj.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER)
}

fn is_final(job: &AgentUpgradeJob) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.completed_at.is_some()
            && matches!(
                s.status,
                UpgradeJobState::Success | UpgradeJobState::Failed | UpgradeJobState::Planned
            )
    })
}

/// One reconcile of one AgentUpgradeJob.
pub async fn reconcile(obj: Arc<AgentUpgradeJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Finished is final: a cache never runs ahead of the API.
    if is_final(&obj) {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let span = info_span!("reconcile", kind = "AgentUpgradeJob", namespace = %ns, object = %name);
    crate::metrics::measure("AgentUpgradeJob", reconcile_inner(ns, name, ctx))
        .instrument(span)
        .await
}

async fn reconcile_inner(ns: String, name: String, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<AgentUpgradeJob> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh: the status holds the rollout's memory (who started); never plan from a stale copy.
    let Some(job) = api.get_opt(&name).await.map_err(Error::Fetch)? else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() || is_final(&job) {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let agents: Api<NodeAgent> = Api::all(ctx.client.clone());
    let agent_name = job.spec.agent.clone();
    let Some(agent) = agents
        .get_opt(&agent_name)
        .await
        .map_err(|source| Error::ReadAgent {
            name: agent_name.clone(),
            source,
        })?
    else {
        let message = format!("NodeAgent {agent_name} does not exist");
        return stall(&api, &job, &ctx, "AgentNotFound", &message, now).await;
    };
    let selector = match &job.spec.node_selector {
        Some(s) => match Selector::try_from(s.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                return stall(&api, &job, &ctx, "InvalidNodeSelector", &e.to_string(), now).await;
            }
        },
        None => None,
    };
    let key = agent_node_label(&agent_name);
    let nodes: BTreeMap<String, NodeView> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| {
            let ready = crate::plan::node_ready(n);
            (
                n.name_any(),
                NodeView {
                    uid: n.metadata.uid.clone().unwrap_or_default(),
                    ready,
                    version: n.labels().get(&key).cloned(),
                    selected: selector.as_ref().is_some_and(|s| s.matches(n.labels())),
                },
            )
        })
        .collect();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let children: Api<AgentInvocation> = Api::namespaced(ctx.client.clone(), &ns);
    // Children from the API, not a cache: what exists decides what may start.
    let list = children
        .list(&ListParams::default().labels(&format!("{UPGRADE_JOB_UID_LABEL}={uid}")))
        .await
        .map_err(Error::ListChildren)?;
    let mut world = World {
        now,
        agent_uid: agent.metadata.uid.clone().unwrap_or_default(),
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
            Some("rollback") => world.rollbacks.insert(node, view),
            _ => world.upgrades.insert(node, view),
        };
    }
    let planned = plan::plan(&job, &world);

    // Children first, then the status that records them; a crash in between is adopted.
    for effect in &planned.effects {
        let (node, child) = render_child(&job, effect);
        let child: AgentInvocation =
            serde_json::from_value(child).map_err(|source| Error::RenderChild {
                node: node.clone(),
                source,
            })?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match children.create(&params, &child).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => return Err(Error::CreateChild { node, source }),
        }
    }
    if job.status.as_ref() != Some(&planned.status) {
        super::apply_status(&api, &name, &planned.status)
            .await
            .map_err(Error::WriteStatus)?;
        if !job.spec.simulated {
            count_outcomes(job.status.as_ref(), &planned.status);
        }
    }
    for note in &planned.notes {
        ctx.event(&job, note.warning, note.reason, note.message.clone())
            .await;
    }
    Ok(planned
        .requeue
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// The child AgentInvocation of an effect: `(node, manifest)`. Names are fixed by the job
/// and the node, so a child is created at most once.
pub fn render_child(job: &AgentUpgradeJob, effect: &Effect) -> (String, serde_json::Value) {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let (node, role, key, spec) = match effect {
        Effect::Upgrade { node } => (
            node,
            "upgrade",
            node.clone(),
            json!({
                "invocationType": "Update",
                "invocationTarget": job.spec.agent,
                "nodeNames": [node],
                "version": job.spec.target_version,
            }),
        ),
        Effect::Rollback {
            node,
            invocation_id,
        } => (
            node,
            "rollback",
            format!("rollback/{node}"),
            json!({
                "invocationType": "Rollback",
                "invocationTarget": job.spec.agent,
                "invocationIds": [invocation_id],
            }),
        ),
    };
    let owner = job.controller_owner_ref(&()).unwrap_or_default();
    (
        node.clone(),
        json!({
            "apiVersion": "nodeops.io/v1alpha1",
            "kind": "AgentInvocation",
            "metadata": {
                "name": crate::engine::job::job_name(&name, &uid, &key),
                "namespace": job.metadata.namespace,
                "labels": {
                    UPGRADE_JOB_UID_LABEL: uid,
                    ROLE_LABEL: role,
                    "app.kubernetes.io/managed-by": crate::keys::MANAGED_BY,
                },
                "annotations": {NODE_ANNOTATION: node},
                "ownerReferences": [owner],
            },
            "spec": spec,
        }),
    )
}

/// Counts the agents whose upgrade became final with this status write.
fn count_outcomes(
    before: Option<&crate::api::agent_upgrade_job::AgentUpgradeJobStatus>,
    after: &crate::api::agent_upgrade_job::AgentUpgradeJobStatus,
) {
    use crate::api::agent_upgrade_job::AgentUpgradeState as S;
    let state = |s: Option<&crate::api::agent_upgrade_job::AgentUpgradeJobStatus>, uuid: &str| {
        s.and_then(|s| s.agents.iter().find(|a| a.agent_uuid == uuid))
            .map(|a| a.status)
    };
    for a in &after.agents {
        let final_now = matches!(
            a.status,
            S::Success | S::Failed | S::RolledBack | S::Skipped
        );
        if final_now && state(before, &a.agent_uuid) != Some(a.status) {
            crate::metrics::METRICS.outcome("AgentUpgradeJob", &format!("{:?}", a.status), "-");
        }
    }
}

async fn stall(
    api: &Api<AgentUpgradeJob>,
    job: &AgentUpgradeJob,
    ctx: &Context,
    reason: &'static str,
    message: &str,
    now: Timestamp,
) -> Result<Action, Error> {
    let mut status = job.status.clone().unwrap_or_default();
    let was = conditions::is_true(&status.conditions, STALLED);
    status.observed_generation = job.metadata.generation;
    conditions::stall(
        &mut status.conditions,
        reason,
        message,
        job.metadata.generation,
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
    );
    if job.status.as_ref() != Some(&status) {
        super::apply_status(api, &job.name_any(), &status)
            .await
            .map_err(Error::WriteStatus)?;
    }
    if !was {
        ctx.event(job, true, reason, message.to_string()).await;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_named_by_job_and_node_and_owned() {
        let job: AgentUpgradeJob = serde_json::from_value(json!({
            "apiVersion": "nodeops.io/v1alpha1", "kind": "AgentUpgradeJob",
            "metadata": {"name": "up", "namespace": "ops", "uid": "job-uid"},
            "spec": {"agent": "telescope", "nodeSelector": {}, "targetVersion": "2.0.0"},
        }))
        .expect("job");
        let (node, up) = render_child(&job, &Effect::Upgrade { node: "n1".into() });
        assert_eq!(node, "n1");
        let again = render_child(&job, &Effect::Upgrade { node: "n1".into() }).1;
        assert_eq!(up["metadata"]["name"], again["metadata"]["name"]);
        assert_eq!(up["spec"]["invocationType"], "Update");
        assert_eq!(up["spec"]["version"], "2.0.0");
        assert_eq!(
            up["metadata"]["ownerReferences"][0]["kind"],
            "AgentUpgradeJob"
        );
        let child: AgentInvocation =
            serde_json::from_value(up.clone()).expect("an AgentInvocation");
        assert_eq!(child.spec.node_names, Some(vec!["n1".to_string()]));
        let (_, rb) = render_child(
            &job,
            &Effect::Rollback {
                node: "n1".into(),
                invocation_id: "id".into(),
            },
        );
        assert_ne!(rb["metadata"]["name"], up["metadata"]["name"]);
        assert_eq!(rb["metadata"]["labels"][ROLE_LABEL], "rollback");
    }
}
