//! The AgentInvocation controller: fetch (the invocation's NodeAgent, the earlier
//! invocations it names, its Jobs; Nodes and agent Pods from the shared caches) -> plan
//! ([`plan`] per instance, [`decide`] for the changes) -> execute (node labels, installer
//! and remote-install Jobs, the remote install host) -> status (one result per instance,
//! with its invocation id).

pub mod codes;
pub mod decide;
mod fetch;
pub mod jobs;
pub mod plan;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::shell::{self, KindOf};
use crate::api::AgentInvocation;
use crate::keys::{OWNER_NAME_ANNOTATION, OWNER_NAMESPACE_ANNOTATION};
use decide::Fetched;

/// Events for one invocation arriving within this window are handled by one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Invocation reconciles at once. An upgrade keeps hundreds of invocations running, each
/// reconcile a few requests to a loaded API server. At the default 32 every slot was taken
/// and kube-runtime takes the next object from a hash set, not in order: at 5000 nodes, 400
/// new children waited up to 154 s for their first reconcile while those in flight went
/// round. Above the upgrade's 500 in flight, the wait moves to the client's bound on
/// requests in flight, which serves them in order.
const RECONCILES: u16 = 512;

/// Output kept from an installer's report.
pub(crate) const OUTPUT_LIMIT: usize = 512;

/// Errors of reading an invocation's world, named after the read that failed; all are
/// retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading NodeAgent {name}: {source}")]
    ReadAgent { name: String, source: kube::Error },
    #[error("reading Command {name}: {source}")]
    ReadCommand { name: String, source: kube::Error },
    #[error("listing the AgentInvocations of the namespace: {0}")]
    ListInvocations(#[source] kube::Error),
    #[error("listing the Jobs: {0}")]
    ListJobs(#[source] kube::Error),
    #[error("listing the Pods: {0}")]
    ListPods(#[source] kube::Error),
}

/// The AgentInvocation's place in the shell: the shared context and the invocations' own
/// cache (Rollback and Retry look earlier invocations up in it).
pub struct Reconciler {
    pub base: Arc<Context>,
    pub invocations: Store<AgentInvocation>,
}

impl shell::Reconciler for Reconciler {
    type Decide = decide::Decisions;
    type Error = Error;

    fn context(&self) -> &Context {
        &self.base
    }
    fn api(&self, obj: &KindOf<Self>) -> Api<AgentInvocation> {
        shell::namespaced_api(&self.base.client, obj)
    }
    /// Final is absorbing and a cache never runs ahead of the API: a finished invocation
    /// seen in the cache is finished, without a request.
    fn idle(&self, obj: &AgentInvocation) -> bool {
        wake::finished(obj)
    }
    async fn fetch(&self, obj: &AgentInvocation, now: Timestamp) -> Result<Fetched, Error> {
        fetch::world(self, obj, now).await
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Installer Jobs live in agent namespaces, remote-install Jobs in the invocation's.
    let jobs: Api<PartialObjectMeta<Job>> = ctx.scoped();
    let controller = shell::controller::<Reconciler>(ctx.scoped(), DEBOUNCE)
        .with_config(super::runtime_config(DEBOUNCE).concurrency(RECONCILES));
    let invocations = controller.store();
    let controller = controller
        .watches_stream(
            shell::watched(
                "jobs",
                jobs,
                watcher::Config::default().labels(&jobs::child_selector()),
            ),
            |job| {
                let name = job.annotations().get(OWNER_NAME_ANNOTATION)?;
                let ns = job.annotations().get(OWNER_NAMESPACE_ANNOTATION)?;
                Some(ObjectRef::<AgentInvocation>::new(name).within(ns))
            },
        )
        // Node labels and agent pods becoming Ready decide running instances: a change on
        // a node wakes the unfinished invocations with an instance there.
        .reconcile_on(wake::woken_by_nodes(&ctx, invocations.clone()));
    let reconciler = Reconciler {
        base: ctx,
        invocations,
    };
    shell::drive(controller, Arc::new(reconciler), shutdown).await;
}
