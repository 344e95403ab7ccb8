//! The AsyncCommand controller: fetch (its Command, its Jobs and Pods from caches, the
//! Nodes) ->
//! [`plan`] (validate the spec, then decide per node) -> execute (create or delete Jobs)
//! -> status.

mod fetch;
pub mod plan;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::shell::{self, KindOf};
use crate::api::async_command::AsyncCommand;
use crate::keys::{OWNER_KIND_LABEL, OWNER_NAME_ANNOTATION, OWNER_UID_LABEL};
use crate::plan::Child;
use plan::World;

/// Label selector of the Jobs and Pods this controller owns.
pub fn child_selector() -> String {
    crate::keys::owner_kind_selector("asynccommand")
}
/// Events for one AsyncCommand arriving within this window are handled by one reconcile:
/// a fan-out produces a burst of Job and Pod events per node.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

/// Errors of reading an AsyncCommand's world, named after the read that failed; all are
/// retried. An invalid spec is not an error; it is a Stalled condition.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading Command {name}: {source}")]
    ReadCommand { name: String, source: kube::Error },
    #[error("listing the Jobs: {0}")]
    ListJobs(#[source] kube::Error),
    #[error("listing the fleet's batches: {0}")]
    ListBatches(#[source] kube::Error),
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
        shell::namespaced_api(&self.ctx.client, obj)
    }
    async fn fetch(&self, obj: &AsyncCommand, now: Timestamp) -> Result<World, Error> {
        fetch::world(&self.ctx, obj, now).await
    }
    /// A Job counts as there until the Job cache shows it.
    fn created(&self, child: &Child) {
        if let Child::Job(job) = child
            && let Some(owner) = job.labels().get(OWNER_UID_LABEL)
        {
            let owner = owner.clone();
            let mut job = job.as_ref().clone();
            trim_job(&mut job);
            self.ctx
                .job_expectations
                .created(&owner, job, std::time::Instant::now());
        }
    }
}

/// Keeps what a run's observation reads of a Job (its metadata and status): a thousand
/// Jobs' pod templates and managed fields are most of their bytes.
fn trim_job(job: &mut Job) {
    job.metadata.managed_fields = None;
    job.spec = None;
}

/// Runs the controller until `shutdown` resolves. `pods` is the stream that feeds the
/// shared Pod store; Pod changes wake the AsyncCommand that owns them. `jobs` fills
/// [`Context::jobs`]; a Job's changes wake its owner once the store holds them.
pub async fn run(
    ctx: Arc<Context>,
    pods: impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
    jobs: Writer<Job>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let batches: Api<PartialObjectMeta<AsyncCommand>> = ctx.scoped();
    let seen = ctx.clone();
    let job_stream = reflector(
        jobs,
        watcher(
            ctx.scoped::<Job>(),
            watcher::Config::default()
                .labels(&child_selector())
                .list_semantic(watcher::ListSemantic::MostRecent),
        )
        .modify(trim_job)
        .default_backoff(),
    )
    .inspect(move |event| {
        if let Ok(
            watcher::Event::Apply(job)
            | watcher::Event::Delete(job)
            | watcher::Event::InitApply(job),
        ) = event
            && let Some(owner) = job.labels().get(OWNER_UID_LABEL)
        {
            seen.job_expectations.observed(owner, &job.name_any());
        }
    })
    .touched_objects();
    let controller = shell::controller::<Reconciler>(ctx.scoped(), DEBOUNCE)
        .owns_stream(job_stream)
        // A batch's changes wake its fleet (metadata is enough: the fleet reads them fresh).
        .owns_stream(
            watcher(
                batches,
                watcher::Config::default().labels(crate::keys::FLEET_UID_LABEL),
            )
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
