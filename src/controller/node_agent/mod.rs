//! The NodeAgent controller: fetch (the agent, its DaemonSets; Nodes and agent Pods from the
//! shared caches) -> plan ([`plan`], pure) -> apply (one DaemonSet per version some node is
//! labelled with, none for the rest) -> status (nodes per version, readiness, agent UUIDs).
//!
//! It never changes node labels: AgentInvocations do. It follows them.

pub mod plan;

use crate::keys::{
    AGENT_LABEL, AGENT_LABELS_FINALIZER, AGENT_VERSION_LABEL, FIELD_MANAGER,
    TEMPLATE_HASH_ANNOTATION, agent_node_label,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;
use tracing::{Instrument, info_span, warn};

use super::{Context, RETRY_AFTER};
use crate::api::NodeAgent;
use plan::{NodeView, World};

/// Node and pod events come in bursts (a fleet relabelled): one reconcile per burst.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Look again this often even without events (readiness of a DaemonSet pod we missed).
const RESYNC: Duration = Duration::from_secs(300);

/// Errors of one reconcile, named after the step that failed; all are retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("listing the DaemonSets of the agent: {0}")]
    ListDaemonSets(#[source] kube::Error),
    #[error("rendering a DaemonSet: {0}")]
    RenderDaemonSet(#[source] serde_json::Error),
    #[error("applying DaemonSet {name}: {source}")]
    ApplyDaemonSet { name: String, source: kube::Error },
    #[error("deleting DaemonSet {name}: {source}")]
    DeleteDaemonSet { name: String, source: kube::Error },
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("listing the nodes labelled with the agent: {0}")]
    ListNodes(#[source] kube::Error),
    #[error("removing the agent label from node {node}: {source}")]
    Unlabel { node: String, source: kube::Error },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let agents: Api<NodeAgent> = Api::all(ctx.client.clone());
    let daemonsets: Api<kube::core::PartialObjectMeta<DaemonSet>> = ctx.scoped();
    Controller::new(agents, watcher::Config::default())
        .trigger_backoff(super::WatchBackoff::default())
        .with_config(super::runtime_config(DEBOUNCE))
        // The owner is cluster-scoped and its DaemonSets are namespaced: map by label, as
        // the owner-reference mapper would look for the owner in the DaemonSet's namespace.
        .watches_stream(
            watcher(daemonsets, watcher::Config::default().labels(AGENT_LABEL))
                .touched_objects()
                .default_backoff(),
            |ds| {
                ds.labels()
                    .get(AGENT_LABEL)
                    .map(|agent| ObjectRef::<NodeAgent>::new(agent))
            },
        )
        // Node labels and agent pods change what every agent reports.
        .reconcile_all_on(ctx.activity())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(obj: Arc<NodeAgent>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(kind = "NodeAgent", object = obj.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER)
}

/// One reconcile of one NodeAgent.
pub async fn reconcile(obj: Arc<NodeAgent>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = obj.name_any();
    let span = info_span!("reconcile", kind = "NodeAgent", object = %name);
    crate::metrics::measure("NodeAgent", reconcile_inner(obj, ctx))
        .instrument(span)
        .await
}

async fn reconcile_inner(agent: Arc<NodeAgent>, ctx: Arc<Context>) -> Result<Action, Error> {
    // An operator confined to one namespace manages the agents whose workloads live there.
    if let Some(ns) = &ctx.config.namespace
        && *ns != agent.spec.namespace
    {
        return Ok(Action::await_change());
    }
    let api: Api<NodeAgent> = Api::all(ctx.client.clone());
    finalizer(&api, AGENT_LABELS_FINALIZER, agent, |event| async {
        match event {
            FinalizerEvent::Apply(agent) => apply(agent, &ctx).await,
            FinalizerEvent::Cleanup(agent) => cleanup(agent, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Removes the agent's label from every node. In HostInstaller mode the agent stays on the
/// hosts (deleting the object uninstalls nothing), so the labels stay true and are kept.
async fn cleanup(agent: Arc<NodeAgent>, ctx: &Context) -> Result<Action, Error> {
    if agent.spec.mode != crate::api::node_agent::AgentMode::DaemonSet {
        return Ok(Action::await_change());
    }
    let key = agent_node_label(&agent.name_any());
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.client.clone());
    let labelled = nodes
        .list_metadata(&ListParams::default().labels(&key))
        .await
        .map_err(Error::ListNodes)?;
    let patch = serde_json::json!({"metadata": {"labels": {key: null}}});
    for node in labelled.items {
        let node = node.name_any();
        match nodes
            .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Unlabel { node, source }),
        }
    }
    Ok(Action::await_change())
}

async fn apply(agent: Arc<NodeAgent>, ctx: &Context) -> Result<Action, Error> {
    let name = agent.name_any();
    let now = Timestamp::now();
    let ns = agent.spec.namespace.clone();
    let dss: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = dss
        .list_metadata(&ListParams::default().labels(&format!("{AGENT_LABEL}={name}")))
        .await
        .map_err(Error::ListDaemonSets)?;
    let world = observe(&agent, ctx, now, existing.items);
    let planned = plan::plan(&agent, &world).map_err(Error::RenderDaemonSet)?;
    let api: Api<NodeAgent> = Api::all(ctx.client.clone());

    let params = PatchParams::apply(FIELD_MANAGER).force();
    for ds in &planned.apply {
        let ds_name = ds.metadata.name.clone().unwrap_or_default();
        match dss.patch(&ds_name, &params, &Patch::Apply(ds)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let message = format!(
                    "namespace {ns} does not exist: create it, the agent's DaemonSets live there"
                );
                let status = plan::stalled(&agent, "NamespaceNotFound", &message, now);
                if agent.status.as_ref() != Some(&status) {
                    super::apply_status(&api, &name, &status)
                        .await
                        .map_err(Error::WriteStatus)?;
                    ctx.event(agent.as_ref(), true, "NamespaceNotFound", message)
                        .await;
                }
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            Err(source) => {
                return Err(Error::ApplyDaemonSet {
                    name: ds_name,
                    source,
                });
            }
        }
    }
    for ds_name in &planned.delete {
        match dss.delete(ds_name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::DeleteDaemonSet {
                    name: ds_name.clone(),
                    source,
                });
            }
        }
    }
    if agent.status.as_ref() != Some(&planned.status) {
        super::apply_status(&api, &name, &planned.status)
            .await
            .map_err(Error::WriteStatus)?;
    }
    for note in &planned.notes {
        ctx.event(
            agent.as_ref(),
            note.warning,
            note.reason,
            note.message.clone(),
        )
        .await;
    }
    Ok(Action::requeue(RESYNC))
}

fn observe(
    agent: &NodeAgent,
    ctx: &Context,
    now: Timestamp,
    daemonsets: Vec<kube::core::PartialObjectMeta<DaemonSet>>,
) -> World {
    let name = agent.name_any();
    let key = agent_node_label(&name);
    let mut nodes: Vec<NodeView> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| NodeView {
            name: n.name_any(),
            uid: n.metadata.uid.clone().unwrap_or_default(),
            version: n.labels().get(&key).cloned(),
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let ready: BTreeSet<(String, String)> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| p.labels().get(AGENT_LABEL) == Some(&name))
        .filter(|p| crate::agent::pod_ready(p))
        .filter_map(|p| {
            let version = p.labels().get(AGENT_VERSION_LABEL)?.clone();
            let node = p.spec.as_ref()?.node_name.clone()?;
            Some((node, version))
        })
        .collect();
    let daemonsets: BTreeMap<String, Option<String>> = daemonsets
        .into_iter()
        .map(|d| {
            let hash = d.annotations().get(TEMPLATE_HASH_ANNOTATION).cloned();
            (d.name_any(), hash)
        })
        .collect();
    World {
        now,
        nodes,
        ready,
        daemonsets,
    }
}
