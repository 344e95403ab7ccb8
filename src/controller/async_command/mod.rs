//! The AsyncCommand controller: fetch (its Command, its Jobs and Pods, the Nodes) ->
//! [`plan`] (validate the spec, then decide per node) -> execute (create or delete Jobs)
//! -> status.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::shell::{self, KindOf};
use crate::api::async_command::AsyncCommand;
use crate::api::command::Command;
use crate::engine::outcome::{RunState, observe};
use crate::keys::{NODE_ANNOTATION, OWNER_KIND_LABEL, OWNER_NAME_ANNOTATION, owner_selector};
use plan::{NodeInfo, OUTPUT_LIMIT, World};

/// Label selector of the Jobs and Pods this controller owns.
pub fn child_selector() -> String {
    crate::keys::owner_kind_selector("asynccommand")
}
/// Events for one AsyncCommand arriving within this window are handled by one reconcile:
/// a fan-out produces a burst of Job and Pod events per node.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);
/// A Job without a Pod for this long is checked for an admission refusal.
const POD_CREATE_GRACE_SECONDS: i64 = 3;

/// Errors of reading an AsyncCommand's world, named after the read that failed; all are
/// retried. An invalid spec is not an error; it is a Stalled condition.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading Command {name}: {source}")]
    ReadCommand { name: String, source: kube::Error },
    #[error("listing the Jobs: {0}")]
    ListJobs(#[source] kube::Error),
    #[error("listing the Pods: {0}")]
    ListPods(#[source] kube::Error),
    #[error("reading the Events of Job {job}: {source}")]
    ReadEvents { job: String, source: kube::Error },
}

/// The AsyncCommand's place in the shell.
pub struct Reconciler {
    pub ctx: Arc<Context>,
}

impl shell::Reconciler for Reconciler {
    type Decide = plan::Decisions;
    type Error = Error;

    fn context(&self) -> &Context {
        &self.ctx
    }
    fn api(&self, obj: &KindOf<Self>) -> Api<AsyncCommand> {
        Api::namespaced(
            self.ctx.client.clone(),
            &obj.namespace().unwrap_or_default(),
        )
    }
    async fn fetch(&self, obj: &AsyncCommand, now: Timestamp) -> Result<World, Error> {
        let ctx = &self.ctx;
        let ns = obj.namespace().unwrap_or_default();
        let command = match &obj.spec.command_ref {
            Some(name) => Api::<Command>::namespaced(ctx.client.clone(), &ns)
                .get_opt(name)
                .await
                .map_err(|source| Error::ReadCommand {
                    name: name.clone(),
                    source,
                })?,
            None => None,
        };
        let fleet = ctx.nodes.state();
        let mut world = observe_world(obj, ctx, now).await?;
        world.nodes = fleet
            .iter()
            .map(|n| {
                let ready = crate::plan::node_ready(n);
                (n.name_any(), NodeInfo { ready })
            })
            .collect();
        world.fleet = fleet;
        world.command = command;
        world.settings = ctx.config.clone();
        Ok(world)
    }
}

/// Runs the controller until `shutdown` resolves. `pods` is the stream that feeds the
/// shared Pod store; Pod changes wake the AsyncCommand that owns them.
pub async fn run(
    ctx: Arc<Context>,
    pods: impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let jobs: Api<PartialObjectMeta<Job>> = ctx.scoped();
    let controller = shell::controller::<Reconciler>(ctx.scoped(), DEBOUNCE)
        // Job changes only wake the owner: metadata is enough, and far lighter than 1000
        // Jobs with their pod templates.
        .owns_stream(
            watcher(jobs, watcher::Config::default().labels(&child_selector()))
                .touched_objects()
                .default_backoff(),
        )
        .watches_stream(pods, |pod: Pod| {
            // The Pod cache holds every nodeops Pod; only node runs of AsyncCommands wake one.
            if pod.labels().get(OWNER_KIND_LABEL).map(String::as_str) != Some("asynccommand") {
                return None;
            }
            let name = pod.annotations().get(OWNER_NAME_ANNOTATION).cloned();
            let ns = pod.namespace();
            name.zip(ns)
                .map(|(name, ns)| ObjectRef::<AsyncCommand>::new(&name).within(&ns))
        });
    shell::drive(controller, Arc::new(Reconciler { ctx }), shutdown).await;
}

/// Each node's run (its Job and Pods, read back) and admission refusals.
async fn observe_world(obj: &AsyncCommand, ctx: &Context, now: Timestamp) -> Result<World, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let selector = owner_selector(&uid);
    // Jobs from the API, not a cache: what exists decides what may start.
    // Read lean (metadata and status): a hundred Jobs' pod templates and managed fields
    // are never read, and parsing them was most of a fan-out's memory.
    let job_list: Vec<Job> =
        super::lean::list(&ctx.client, &ns, &ListParams::default().labels(&selector))
            .await
            .map_err(Error::ListJobs)?;
    let mut pods_by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in ctx.pods.state() {
        if pod.labels().get(crate::keys::OWNER_UID_LABEL) == Some(&uid)
            && let Some(node) = pod.annotations().get(NODE_ANNOTATION)
        {
            pods_by_node.entry(node.clone()).or_default().push(pod);
        }
    }
    let final_without_report = job_list.iter().any(|job| {
        let node = job
            .annotations()
            .get(NODE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let obs = observe(job, &[], 0);
        obs.state != RunState::Active { pods: 0 }
            && !pods_by_node
                .get(&node)
                .is_some_and(|pods| pods.iter().any(|p| terminated(p)))
    });
    if final_without_report {
        // The Pod cache lags the Job: read the Pods so a final result carries its output.
        pods_by_node.clear();
        let pods: Vec<Pod> =
            super::lean::list(&ctx.client, &ns, &ListParams::default().labels(&selector))
                .await
                .map_err(Error::ListPods)?;
        for pod in pods {
            if let Some(node) = pod.annotations().get(NODE_ANNOTATION).cloned() {
                pods_by_node.entry(node).or_default().push(Arc::new(pod));
            }
        }
    }
    let mut world = World {
        now,
        ..Default::default()
    };
    for job in &job_list {
        let Some(node) = job.annotations().get(NODE_ANNOTATION).cloned() else {
            continue;
        };
        let pods: Vec<&Pod> = pods_by_node
            .get(&node)
            .map(|v| v.iter().map(|p| p.as_ref()).collect())
            .unwrap_or_default();
        let observed = observe(job, &pods, OUTPUT_LIMIT);
        if observed.state == (RunState::Active { pods: 0 }) && pods.is_empty() {
            let age = job
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| now.duration_since(t.0).as_secs())
                .unwrap_or(0);
            if age >= POD_CREATE_GRACE_SECONDS
                && let Some(message) = admission_refusal(ctx, &ns, job).await?
            {
                world.refused.insert(node.clone(), message);
            }
        }
        world.runs.insert(node, observed);
    }
    Ok(world)
}

fn terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The Job controller's FailedCreate Event of `job`, if admission refused its Pod.
async fn admission_refusal(ctx: &Context, ns: &str, job: &Job) -> Result<Option<String>, Error> {
    let Some(uid) = job.metadata.uid.as_deref() else {
        return Ok(None);
    };
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), ns);
    let fields = format!("involvedObject.uid={uid},reason=FailedCreate");
    let list = events
        .list(&ListParams::default().fields(&fields))
        .await
        .map_err(|source| Error::ReadEvents {
            job: job.name_any(),
            source,
        })?;
    Ok(list.items.into_iter().filter_map(|e| e.message).next_back())
}
