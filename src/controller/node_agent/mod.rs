//! The NodeAgent controller: fetch (its DaemonSets; Nodes and agent Pods from the shared
//! caches) -> [`plan`] -> execute (one DaemonSet per version some node is labelled with,
//! none for the rest) -> status (nodes per version, readiness, agent UUIDs).
//!
//! It never changes node labels while the agent exists: AgentInvocations do. It follows
//! them, and removes them when a DaemonSet-mode agent is deleted (its finalizer).

mod fetch;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::shell::{self, KindOf};
use crate::api::NodeAgent;
use crate::keys::{AGENT_LABEL, AGENT_LABELS_FINALIZER};
use plan::World;

/// Node and pod events come in bursts (a fleet relabelled): every agent looks again at
/// most this often while they last.
const ACTIVITY_EVERY: Duration = Duration::from_millis(500);

/// Errors of reading a NodeAgent's world or cleaning up after it, named after the step
/// that failed; all are retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("listing the DaemonSets of the agent: {0}")]
    ListDaemonSets(#[source] kube::Error),
    #[error("listing the nodes labelled with the agent: {0}")]
    ListNodes(#[source] kube::Error),
    #[error("removing the agent label from node {node}: {source}")]
    Unlabel { node: String, source: kube::Error },
}

/// The NodeAgent's place in the shell.
pub struct Reconciler {
    pub ctx: Arc<Context>,
    /// The agents' DaemonSets, metadata only.
    pub daemonsets: Store<PartialObjectMeta<DaemonSet>>,
}

impl shell::Reconciler for Reconciler {
    type Decide = plan::Decisions;
    type Error = Error;
    const FINALIZER: Option<&'static str> = Some(AGENT_LABELS_FINALIZER);

    fn context(&self) -> &Context {
        &self.ctx
    }
    fn api(&self, _: &KindOf<Self>) -> Api<NodeAgent> {
        Api::all(self.ctx.client.clone())
    }
    /// An operator confined to one namespace manages the agents whose workloads live there.
    fn idle(&self, agent: &NodeAgent) -> bool {
        self.ctx
            .config
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != agent.spec.namespace)
    }
    async fn fetch(&self, agent: &NodeAgent, now: Timestamp) -> Result<World, Error> {
        let name = agent.name_any();
        let ns = &agent.spec.namespace;
        // From the cache once it has filled (a DaemonSet created a moment ago and not in it
        // yet is created again and found there; one deleted is deleted again, not found).
        let existing = if crate::controller::filled(&self.daemonsets) {
            self.daemonsets
                .state()
                .iter()
                .filter(|d| {
                    d.labels().get(AGENT_LABEL) == Some(&name) && d.namespace().as_ref() == Some(ns)
                })
                .map(|d| d.as_ref().clone())
                .collect()
        } else {
            let dss: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), ns);
            dss.list_metadata(&ListParams::default().labels(&format!("{AGENT_LABEL}={name}")))
                .await
                .map_err(Error::ListDaemonSets)?
                .items
        };
        Ok(fetch::observe(agent, &self.ctx, now, existing))
    }
    /// Removes the agent's label from every node (DaemonSet mode only).
    async fn cleanup(&self, agent: Arc<NodeAgent>) -> Result<Action, Error> {
        fetch::unlabel_nodes(&self.ctx, &agent).await?;
        Ok(Action::await_change())
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    agents: kube::runtime::reflector::store::Writer<NodeAgent>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (daemonsets, writer) = kube::runtime::reflector::store();
    let watch = reflector(
        writer,
        watcher(
            ctx.scoped::<PartialObjectMeta<DaemonSet>>(),
            watcher::Config::default().labels(AGENT_LABEL),
        )
        .backoff(crate::controller::WatchBackoff::default()),
    )
    .touched_objects();
    // Its cache is the operator's one of NodeAgents (`Context::agents`).
    let controller =
        shell::controller_into::<Reconciler>(Api::all(ctx.client.clone()), Duration::ZERO, agents)
            // The owner is cluster-scoped and its DaemonSets are namespaced: map by label, as
            // the owner-reference mapper would look for the owner in the DaemonSet's namespace.
            .watches_stream(crate::controller::alone("daemonsets", watch), |ds| {
                ds.labels()
                    .get(AGENT_LABEL)
                    .map(|agent| ObjectRef::<NodeAgent>::new(agent))
            })
            // Node labels and agent pods change what every agent reports: at most one look
            // per ACTIVITY_EVERY while they keep changing (a debounce would wait for them to
            // stop, which in a rollout of thousands of nodes is its end).
            .reconcile_all_on(ctx.activity(ACTIVITY_EVERY));
    let reconciler = Reconciler { ctx, daemonsets };
    shell::drive(controller, Arc::new(reconciler), shutdown).await;
}
