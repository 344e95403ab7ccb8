//! The AsyncCommand controller: fetch (its Command, its Jobs and Pods from caches, the
//! Nodes) ->
//! [`plan`] (validate the spec, then decide per node) -> execute (create or delete Jobs)
//! -> status.

mod fetch;
pub mod plan;

use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::shell::{self, KindOf};
use crate::api::async_command::AsyncCommand;
use crate::api::command::Command;
use crate::engine::seen::{Job, Pod};
use crate::keys::{OWNER_KIND_LABEL, OWNER_NAME_ANNOTATION, OWNER_UID_LABEL};
use crate::plan::Child;
use plan::World;

/// The Job controller's Events of a Pod it could not create (admission refused it).
pub const REFUSAL_FIELDS: &str = "reason=FailedCreate,involvedObject.kind=Job";

/// Label selector of the Jobs and Pods this controller owns.
pub fn child_selector() -> String {
    crate::keys::owner_kind_selector("asynccommand")
}
/// The changes of an AsyncCommand's children (Jobs, Pods, refusals; a fleet's batches)
/// until a pause of this long wake it into one reconcile: a fan-out produces a burst of Job
/// and Pod events per node. A change of the AsyncCommand itself that it has not
/// acted on (applied, starts granted by its fleet) wakes it at once.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

/// AsyncCommand reconciles at once. With 10,000 one-node objects at 5000 nodes the shared
/// 32 were all held by running objects woken by their Jobs and Pods, and kube-runtime takes
/// the next due object from a hash set, not in order of arrival: a third of the objects had
/// no status after 15 minutes. With more slots than objects running, the wait moves to the
/// client's bound on requests in flight, which serves them in order (as for the
/// AgentInvocation).
const RECONCILES: u16 = 512;

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
    #[error("reading the Jobs the cache does not show: {0}")]
    ConfirmJobs(#[source] kube::Error),
    #[error("reading the Events of Job {job}: {source}")]
    ReadEvents { job: String, source: kube::Error },
}

/// The AsyncCommand's place in the shell.
pub struct Reconciler {
    pub ctx: Arc<Context>,
    /// Every AsyncCommand (the controller's own cache): a fleet's batches are read here.
    pub objects: Store<AsyncCommand>,
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
        let caches = fetch::Caches {
            objects: &self.objects,
        };
        fetch::world(&self.ctx, caches, obj, now).await
    }
    /// A Job counts as there until the Job cache shows it.
    fn created(&self, child: &Child) {
        if let Child::Job(job) = child
            && let Some(owner) = job.labels().get(OWNER_UID_LABEL)
        {
            let owner = owner.clone();
            self.ctx.job_expectations.created(
                &owner,
                crate::engine::seen::Job::from(job.as_ref()),
                std::time::Instant::now(),
            );
        }
    }
}

/// Runs the controller until `shutdown` resolves. `pods` is the stream that feeds the
/// shared Pod store; Pod changes wake the AsyncCommand that owns them. `jobs` fills
/// [`Context::jobs`]; a Job's changes wake its owner once the store holds them.
pub async fn run(
    ctx: Arc<Context>,
    pods: impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
    jobs: Writer<Job>,
    refusals: Writer<CoreEvent>,
    commands_writer: Writer<Command>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // The controller's own watch, which also wakes a fleet when one of its batches changes,
    // once the cache holds the change (the fleet reads its batches there).
    let (objects, writer) = reflector::store::<AsyncCommand>();
    let (wake_fleet, fleets) = futures::channel::mpsc::unbounded();
    // An object's own change that need not wake it at once joins its children's, debounced.
    let (wake_later, later) = futures::channel::mpsc::unbounded();
    let own = watcher(ctx.scoped::<AsyncCommand>(), shell::watch_config())
        .modify(shell::lean)
        .backoff(crate::controller::WatchBackoff::default())
        .reflect(writer)
        .inspect(move |event| {
            if let Some(batch) = crate::controller::touched(event)
                && batch.labels().contains_key(crate::keys::FLEET_UID_LABEL)
                && let Some(fleet) = batch
                    .owner_references()
                    .iter()
                    .find(|o| o.kind == "AsyncCommand")
                && let Some(ns) = batch.namespace()
            {
                // The receiver is gone only when the controller stopped.
                let _ = wake_fleet
                    .unbounded_send(ObjectRef::<AsyncCommand>::new(&fleet.name).within(&ns));
            }
        })
        .applied_objects()
        .try_filter(move |obj| {
            let now = plan::wakes_at_once(obj);
            if !now {
                // The receiver is gone only when the controller stopped.
                let _ = wake_later.unbounded_send(ObjectRef::from_obj(obj));
            }
            futures::future::ready(now)
        });
    let command_stream = watcher(ctx.scoped::<Command>(), watcher::Config::default())
        .modify(|c| c.metadata.managed_fields = None)
        .backoff(crate::controller::WatchBackoff::default())
        .reflect(commands_writer)
        .applied_objects();
    let seen = ctx.clone();
    let job_stream = reflector(
        jobs,
        watcher(
            ctx.scoped::<Job>(),
            watcher::Config::default()
                .labels(&child_selector())
                .list_semantic(watcher::ListSemantic::MostRecent),
        )
        .backoff(crate::controller::WatchBackoff::default()),
    )
    .inspect(move |event| {
        seen.jobs_by_owner.follow(event);
        if let Some(job) = crate::controller::touched(event)
            && let Some(owner) = job.labels().get(OWNER_UID_LABEL)
        {
            seen.job_expectations.observed(owner, &job.name_any());
        }
    })
    .touched_objects();
    let refusal_stream = reflector(
        refusals,
        watcher(
            ctx.scoped::<CoreEvent>(),
            watcher::Config::default().fields(REFUSAL_FIELDS),
        )
        .modify(|e| e.metadata.managed_fields = None)
        .backoff(crate::controller::WatchBackoff::default()),
    )
    .touched_objects();
    let jobs = ctx.jobs.clone();
    // Each watch backs off alone: one watch's error must not pause the others.
    use crate::controller::alone;
    use kube::runtime::controller::{trigger_owners, trigger_with};
    let children = futures::stream::select_all([
        trigger_owners(alone("jobs", job_stream), (), ()).boxed(),
        // A refusal wakes the owner of the refused Job (found in the Job cache).
        trigger_with(alone("events", refusal_stream), move |event: CoreEvent| {
            let refused = &event.involved_object;
            let job = jobs.get(
                &ObjectRef::<Job>::new(refused.name.as_deref()?)
                    .within(refused.namespace.as_deref()?),
            )?;
            let owner = job
                .owner_references()
                .iter()
                .find(|o| o.kind == "AsyncCommand")?;
            Some(ObjectRef::<AsyncCommand>::new(&owner.name).within(&job.namespace()?))
        })
        .boxed(),
        trigger_with(alone("pods", pods), |pod: Pod| {
            // The Pod cache holds every nodeops Pod; only node runs of AsyncCommands wake one.
            if pod.labels().get(OWNER_KIND_LABEL).map(String::as_str) != Some("asynccommand") {
                return None;
            }
            let name = pod.annotations().get(OWNER_NAME_ANNOTATION).cloned();
            let ns = pod.namespace();
            name.zip(ns)
                .map(|(name, ns)| ObjectRef::<AsyncCommand>::new(&name).within(&ns))
        })
        .boxed(),
    ])
    // The watches' errors were kept by `alone`.
    .filter_map(|wake| futures::future::ready(wake.ok().map(|w| w.obj_ref)));
    let wakes = crate::controller::debounced(
        futures::stream::select(children, futures::stream::select(fleets, later)),
        DEBOUNCE,
    );
    // No debounce of the controller's own: a change of its own object wakes it at once
    // when it may start something ([`plan::wakes_at_once`]); the rest come debounced.
    let controller = shell::configure(
        Controller::for_stream(alone("asynccommands", own), objects.clone()),
        std::time::Duration::ZERO,
    )
    .with_config(
        crate::controller::runtime_config(std::time::Duration::ZERO).concurrency(RECONCILES),
    )
    .reconcile_on(wakes)
    // Fills the Command cache; a Command's change wakes no AsyncCommand (each reads
    // its Command when it reconciles).
    .watches_stream(alone("commands", command_stream), |_: Command| {
        None::<ObjectRef<AsyncCommand>>
    });
    let reconciler = Reconciler { ctx, objects };
    shell::drive(controller, Arc::new(reconciler), shutdown).await;
}
