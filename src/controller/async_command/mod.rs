//! The AsyncCommand controller: fetch (the object, its Jobs and Pods, the Nodes) -> plan
//! ([`plan`], pure) -> apply (create or delete Jobs) -> status.

pub mod plan;

use crate::keys::{FIELD_MANAGER, NODE_ANNOTATION, OWNER_NAME_ANNOTATION, owner_selector};
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use thiserror::Error;
use tracing::{Instrument, info_span, warn};

use super::{Context, RETRY_AFTER};
use crate::api::async_command::{AsyncCommand, MAX_NODES};
use crate::api::command::Command;
use crate::api::common::ExecutionMode;
use crate::engine::job::{Owner, RunTemplate, render};
use crate::engine::outcome::{RunState, observe};
use crate::engine::{argv, script};
use plan::{NodeInfo, OUTPUT_LIMIT, World};

/// Label selector of the Jobs and Pods this controller owns.
pub fn child_selector() -> String {
    crate::keys::owner_kind_selector("asynccommand")
}
/// Job creations in flight at once within one reconcile.
const JOB_CREATE_PARALLELISM: usize = 16;
/// Events for one AsyncCommand arriving within this window are handled by one reconcile:
/// a fan-out produces a burst of Job and Pod events per node.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);
/// A Job without a Pod for this long is checked for an admission refusal.
const POD_CREATE_GRACE_SECONDS: i64 = 3;

/// Errors of one reconcile, named after the step that failed. All are transient: the
/// reconcile is retried. An invalid spec is not an error; it is a Stalled condition.
#[derive(Debug, Error)]
pub enum Error {
    #[error("fetching the AsyncCommand: {0}")]
    Fetch(#[source] kube::Error),
    #[error("reading Command {name}: {source}")]
    ReadCommand { name: String, source: kube::Error },
    #[error("listing the Jobs: {0}")]
    ListJobs(#[source] kube::Error),
    #[error("listing the Pods: {0}")]
    ListPods(#[source] kube::Error),
    #[error("reading the Events of Job {job}: {source}")]
    ReadEvents { job: String, source: kube::Error },
    #[error("rendering the Job for node {node}: {source}")]
    RenderJob {
        node: String,
        source: serde_json::Error,
    },
    #[error("creating the Job for node {node}: {source}")]
    CreateJob { node: String, source: kube::Error },
    #[error("deleting the Job of node {node}: {source}")]
    DeleteJob { node: String, source: kube::Error },
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("deleting the expired AsyncCommand: {0}")]
    DeleteExpired(#[source] kube::Error),
}

/// Why a spec cannot run: (machine reason, human message).
type Invalid = (&'static str, String);

/// Runs the controller until `shutdown` resolves. `pods` is the stream that feeds the
/// shared Pod store; Pod changes wake the AsyncCommand that owns them.
pub async fn run(
    ctx: Arc<Context>,
    pods: impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let commands: Api<AsyncCommand> = ctx.scoped();
    let jobs: Api<PartialObjectMeta<Job>> = ctx.scoped();
    Controller::new(commands, watcher::Config::default())
        .trigger_backoff(super::WatchBackoff::default())
        .with_config(super::runtime_config(DEBOUNCE))
        // Job changes only wake the owner: metadata is enough, and far lighter than 1000
        // Jobs with their pod templates.
        .owns_stream(
            watcher(jobs, watcher::Config::default().labels(&child_selector()))
                .touched_objects()
                .default_backoff(),
        )
        .watches_stream(pods, |pod: Pod| {
            // The Pod cache holds every nodeops Pod; only node runs of AsyncCommands wake one.
            if pod
                .labels()
                .get(crate::keys::OWNER_KIND_LABEL)
                .map(String::as_str)
                != Some("asynccommand")
            {
                return None;
            }
            let name = pod.annotations().get(OWNER_NAME_ANNOTATION).cloned();
            let ns = pod.namespace();
            name.zip(ns)
                .map(|(name, ns)| ObjectRef::<AsyncCommand>::new(&name).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "AsyncCommand reconcile did not complete");
            }
        })
        .await;
}

fn error_policy(obj: Arc<AsyncCommand>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(kind = "AsyncCommand", namespace = obj.namespace().unwrap_or_default(), object = obj.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER)
}

/// One reconcile of one AsyncCommand.
pub async fn reconcile(obj: Arc<AsyncCommand>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let span = info_span!("reconcile", kind = "AsyncCommand", namespace = %ns, object = %name);
    crate::metrics::measure("AsyncCommand", reconcile_inner(ns, name, ctx))
        .instrument(span)
        .await
}

async fn reconcile_inner(ns: String, name: String, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<AsyncCommand> = Api::namespaced(ctx.client.clone(), &ns);
    // A fresh read: the status is the memory of what was started, so never plan from a
    // cached copy that may predate our own last write.
    let Some(obj) = api.get_opt(&name).await.map_err(Error::Fetch)? else {
        return Ok(Action::await_change());
    };
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let template = match resolve_template(&obj, &ctx).await? {
        Ok(t) => t,
        Err((reason, message)) => return stall(&api, &obj, &ctx, reason, &message, now).await,
    };
    let targets = match targets(&obj, &ctx) {
        Ok(t) => t,
        Err((reason, message)) => return stall(&api, &obj, &ctx, reason, &message, now).await,
    };
    let world = observe_world(&obj, &targets, &ctx, now).await?;
    let planned = plan::plan(&obj, &targets, &world);

    // Apply: new Jobs first, then the status that records them. A crash in between leaves
    // Jobs that the next reconcile adopts by name; it never creates them twice.
    let owner = owner_of(&obj);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let rendered = planned
        .start
        .iter()
        .map(|node| render(&owner, node, &template).map(|job| (node.clone(), job)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::RenderJob {
            node: planned.start.join(","),
            source,
        })?;
    // Several creations in flight: the API server, not this loop, sets the pace.
    futures::stream::iter(rendered)
        .map(|(node, job)| {
            let jobs = jobs.clone();
            async move {
                // A Job is never changed once created: a plain create, where an
                // existing Job of the same name (created before a restart) is success.
                match jobs.create(&create_params(), &job).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(source) => Err(Error::CreateJob { node, source }),
                }
            }
        })
        .buffer_unordered(JOB_CREATE_PARALLELISM)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    if obj.status.as_ref() != Some(&planned.status) {
        super::apply_status(&api, &name, &planned.status)
            .await
            .map_err(Error::WriteStatus)?;
        count_outcomes(obj.status.as_ref(), &planned.status);
    }
    // Deletions after the status that records why: a Job deleted first and a status write
    // that then failed would read as JobLost. The plan asks again until the Job is gone,
    // so a failed delete is retried (after the events of this status are sent).
    let mut deleted = Ok(());
    for node in &planned.delete {
        let job_name = crate::engine::job::job_name(&name, &owner.uid, node);
        match jobs.delete(&job_name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                deleted = Err(Error::DeleteJob {
                    node: node.clone(),
                    source,
                });
                break;
            }
        }
    }
    for note in &planned.notes {
        ctx.event(&obj, note.warning, note.reason, note.message.clone())
            .await;
    }
    deleted?;
    if planned.delete_self {
        api.delete(&name, &DeleteParams::background())
            .await
            .map_err(Error::DeleteExpired)?;
        return Ok(Action::await_change());
    }
    Ok(planned
        .requeue_after
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

fn create_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

async fn stall(
    api: &Api<AsyncCommand>,
    obj: &AsyncCommand,
    ctx: &Context,
    reason: &'static str,
    message: &str,
    now: Timestamp,
) -> Result<Action, Error> {
    let status = plan::invalid(obj, reason, message, now);
    let was_stalled = obj
        .status
        .as_ref()
        .is_some_and(|s| crate::conditions::is_true(&s.conditions, crate::conditions::STALLED));
    if obj.status.as_ref() != Some(&status) {
        super::apply_status(api, &obj.name_any(), &status)
            .await
            .map_err(Error::WriteStatus)?;
    }
    if !was_stalled {
        ctx.event(obj, true, reason, message.to_string()).await;
    }
    // Fixed by a spec change (an event) or by the world (a Command created): look again.
    Ok(Action::requeue(std::time::Duration::from_secs(30)))
}

fn owner_of(obj: &AsyncCommand) -> Owner {
    Owner {
        kind: "AsyncCommand".into(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        reference: obj.controller_owner_ref(&()).unwrap_or_default(),
    }
}

/// What each node runs, or why the spec cannot run.
async fn resolve_template(
    obj: &AsyncCommand,
    ctx: &Context,
) -> Result<Result<RunTemplate, Invalid>, Error> {
    let spec = &obj.spec;
    let ns = obj.namespace().unwrap_or_default();
    if spec.execution_mode == ExecutionMode::Host && !ctx.config.host_mode_namespaces.contains(&ns)
    {
        return Ok(Err((
            "HostModeNotAllowed",
            format!(
                "executionMode Host is not allowed in namespace {ns}; the operator allows it in: {}",
                allowed(ctx)
            ),
        )));
    }
    let mut t = RunTemplate {
        mode: spec.execution_mode,
        image: spec
            .image
            .clone()
            .unwrap_or_else(|| ctx.config.default_image.clone()),
        runner_image: ctx.config.runner_image.clone(),
        host_process: ctx.config.host_process.clone(),
        image_pull_policy: ctx.config.image_pull_policy.clone(),
        username: spec.username.clone(),
        working_directory: spec.working_directory.clone(),
        timeout_seconds: spec.timeout_seconds,
        backoff_limit: spec.backoff_limit,
        pod_annotations: spec.pod_annotations.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(command) = &spec.command {
        match argv::split(command) {
            Ok(argv) => t.argv = argv,
            Err(e) => return Ok(Err(("InvalidCommand", e.to_string()))),
        }
    } else if let Some(name) = &spec.command_ref {
        let commands: Api<Command> = Api::namespaced(ctx.client.clone(), &ns);
        let Some(command) = commands
            .get_opt(name)
            .await
            .map_err(|source| Error::ReadCommand {
                name: name.clone(),
                source,
            })?
        else {
            return Ok(Err((
                "CommandNotFound",
                format!("Command {name} does not exist in namespace {ns}"),
            )));
        };
        let c = &command.spec;
        let given = spec.parameters.clone().unwrap_or_default();
        let defaults = c.default_parameters.clone().unwrap_or_default();
        match script::render(
            c.interpreter,
            &c.content,
            c.enable_parameters,
            &defaults,
            &given,
        ) {
            Ok((argv, env)) => {
                t.argv = argv;
                t.env = env;
            }
            Err(e) => return Ok(Err(("ParameterInvalid", format!("Command {name}: {e}")))),
        }
        t.timeout_seconds = c.timeout_seconds;
        t.username = spec.username.clone().or_else(|| c.username.clone());
        t.working_directory = spec
            .working_directory
            .clone()
            .or_else(|| c.working_directory.clone());
    }
    Ok(Ok(t))
}

fn allowed(ctx: &Context) -> String {
    if ctx.config.host_mode_namespaces.is_empty() {
        "no namespace".into()
    } else {
        ctx.config
            .host_mode_namespaces
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The addressed nodes: those already recorded in status (the set is fixed when the
/// command starts), else `nodeNames`, else the nodes the selector matches now.
fn targets(obj: &AsyncCommand, ctx: &Context) -> Result<Vec<String>, Invalid> {
    if let Some(status) = &obj.status
        && !status.cmd_jobs.is_empty()
    {
        return Ok(status
            .cmd_jobs
            .iter()
            .map(|e| e.node_name.clone())
            .collect());
    }
    if let Some(names) = &obj.spec.node_names {
        return Ok(names.clone());
    }
    let Some(selector) = &obj.spec.node_selector else {
        return Err((
            "NoNodes",
            "neither nodeNames nor nodeSelector is set".into(),
        ));
    };
    let selector =
        Selector::try_from(selector.clone()).map_err(|e| ("InvalidNodeSelector", e.to_string()))?;
    let mut names: Vec<String> = ctx
        .nodes
        .state()
        .iter()
        .filter(|n| selector.matches(n.labels()))
        .map(|n| n.name_any())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(("NoNodesSelected", "the nodeSelector matches no node".into()));
    }
    if names.len() > MAX_NODES {
        return Err((
            "TooManyNodes",
            format!(
                "the nodeSelector matches {} nodes; at most {MAX_NODES} are allowed",
                names.len()
            ),
        ));
    }
    Ok(names)
}

async fn observe_world(
    obj: &AsyncCommand,
    targets: &[String],
    ctx: &Context,
    now: Timestamp,
) -> Result<World, Error> {
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
    for node in targets {
        if let Some(n) = ctx.nodes.get(&ObjectRef::new(node)) {
            let ready = crate::plan::node_ready(&n);
            world.nodes.insert(node.clone(), NodeInfo { ready });
        }
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

/// Counts the nodes that became final with this status write.
fn count_outcomes(
    before: Option<&crate::api::async_command::AsyncCommandStatus>,
    after: &crate::api::async_command::AsyncCommandStatus,
) {
    use crate::api::async_command::NodePhase;
    let was_final: std::collections::BTreeSet<&str> = before
        .iter()
        .flat_map(|s| s.cmd_jobs.iter())
        .filter(|e| !matches!(e.phase, NodePhase::Pending | NodePhase::Running))
        .map(|e| e.node_name.as_str())
        .collect();
    for e in &after.cmd_jobs {
        if !matches!(e.phase, NodePhase::Pending | NodePhase::Running)
            && !was_final.contains(e.node_name.as_str())
        {
            crate::metrics::METRICS.outcome(
                "AsyncCommand",
                &format!("{:?}", e.phase),
                e.reason.as_deref().unwrap_or("-"),
            );
        }
    }
}
