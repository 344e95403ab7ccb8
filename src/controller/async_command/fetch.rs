//! What the AsyncCommand controller reads: its Command, the Nodes, and about its runs each
//! node's Job and Pods (from the caches; a Pod from the API when the cache has not shown
//! it well after its Job ended) and the admission refusals of Pods never created.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

use super::Error;
use super::plan::{NodeInfo, OUTPUT_LIMIT, World};
use crate::api::async_command::AsyncCommand;
use crate::controller::writes::Copy;
use crate::controller::{Context, expect, gates};
use crate::engine::outcome::{RunState, observe};
use crate::engine::seen::{Job, Pod};
use crate::keys::{FLEET_UID_LABEL, NODE_ANNOTATION, OWNER_UID_LABEL, owner_selector};

/// A Job without a Pod for this long is checked for an admission refusal.
const POD_CREATE_GRACE_SECONDS: i64 = 3;
/// A Job final this long without its terminated Pod in the cache has its Pods read from
/// the API.
const POD_CACHE_GRACE_SECONDS: i64 = 10;

/// The controller's caches a reconcile reads besides the context's.
#[derive(Clone, Copy)]
pub struct Caches<'a> {
    /// Every AsyncCommand.
    pub objects: &'a Store<AsyncCommand>,
}

/// What an AsyncCommand's decisions read.
pub async fn world(
    ctx: &Context,
    caches: Caches<'_>,
    obj: &AsyncCommand,
    now: Timestamp,
) -> Result<World, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let command = match &obj.spec.command_ref {
        Some(name) => ctx
            .command(&ns, name)
            .await
            .map_err(|source| Error::ReadCommand {
                name: name.clone(),
                source,
            })?,
        None => None,
    };
    // A fleet's batches: listed while it may be one (its status says so, or it has a
    // selector and has not started as one object).
    let status = obj.status.as_ref();
    let may_be_fleet = obj.spec.batch.is_none()
        && (status.is_some_and(|s| s.fleet.is_some())
            || (obj.spec.node_selector.is_some() && status.is_none_or(|s| s.cmd_jobs.is_empty())));
    let batches = if may_be_fleet {
        batches(ctx, caches.objects, obj).await?
    } else {
        Vec::new()
    };
    let started = World {
        now,
        batches,
        ..Default::default()
    };
    // A fleet has no Jobs of its own.
    let mut world = if super::plan::fleet_started(obj, &started) {
        started
    } else {
        World {
            batches: started.batches,
            ..observe_world(obj, ctx, now).await?
        }
    };
    // Every node, for a selector not yet resolved into recorded nodes (`plan::targets`):
    // a copy of 5000 pointers, not made for the objects that name their nodes or have
    // started.
    let resolved = status.is_some_and(|s| !s.cmd_jobs.is_empty());
    if obj.spec.node_names.is_none() && obj.spec.node_selector.is_some() && !resolved {
        world.fleet = ctx.nodes.state();
    }
    world.command = command;
    world.settings = ctx.config.clone();
    // Gates decide only what starts: a finished run reads none.
    let finished = obj
        .status
        .as_ref()
        .is_some_and(|s| s.completion_time.is_some());
    if !finished {
        world.object_gates = gates::read(ctx, &ns, obj.spec.rollout.as_ref()).await;
    }
    // Readiness of the addressed nodes only (a lookup each), not of the whole fleet on
    // every reconcile; an invalid spec addresses none and is stalled by validation.
    let nodes: Vec<String> = match super::plan::targets(obj, &world) {
        Ok(super::plan::Targets::Nodes(nodes)) => nodes,
        // A fleet's node gates read every node of its batches.
        Ok(super::plan::Targets::Fleet(_)) if has_node_gates(obj) => world
            .batches
            .iter()
            .flat_map(|b| b.spec.node_names.clone().unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    };
    for node in nodes {
        if let Some(n) = ctx.nodes.get(&ObjectRef::new(&node)) {
            let info = NodeInfo {
                ready: crate::plan::node_ready(&n),
                conditions: crate::rollout::conditions_of(&n),
            };
            world.nodes.insert(node, info);
        }
    }
    Ok(world)
}

/// A fleet's batches: from the cache, unless a cached batch is older than the fleet's own
/// last grant to it (then from the API: a grant must never be counted twice or lost).
async fn batches(
    ctx: &Context,
    objects: &Store<AsyncCommand>,
    fleet: &AsyncCommand,
) -> Result<Vec<AsyncCommand>, Error> {
    let uid = fleet.metadata.uid.clone().unwrap_or_default();
    let ns = fleet.namespace();
    let cached: Vec<Arc<AsyncCommand>> = objects
        .state()
        .into_iter()
        .filter(|b| b.labels().get(FLEET_UID_LABEL) == Some(&uid) && b.namespace() == ns)
        .collect();
    // As many as the fleet split into (batches just created may not be cached yet), each
    // no older than the last grant.
    let recorded = fleet
        .status
        .as_ref()
        .and_then(|s| s.fleet.as_ref())
        .map(|f| usize::try_from(f.batches).unwrap_or(0));
    let complete = recorded.is_none_or(|n| n == cached.len());
    if complete
        && cached
            .iter()
            .all(|b| ctx.writes.check(b.as_ref()) == Copy::Current)
    {
        return Ok(cached.iter().map(|b| b.as_ref().clone()).collect());
    }
    let selector = format!("{FLEET_UID_LABEL}={uid}");
    Ok(
        Api::<AsyncCommand>::namespaced(ctx.client.clone(), &ns.unwrap_or_default())
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::ListBatches)?
            .items,
    )
}

fn has_node_gates(obj: &AsyncCommand) -> bool {
    obj.spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.health_gates.iter().any(|g| g.node_condition.is_some()))
}

/// Each node's run (its Job and Pods, read back) and admission refusals.
pub async fn observe_world(
    obj: &AsyncCommand,
    ctx: &Context,
    now: Timestamp,
) -> Result<World, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let selector = owner_selector(&uid);
    let job_list = jobs(ctx, obj, &ns, &uid, &selector).await?;
    let mut pods_by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in ctx.pods_by_owner.get(&ctx.pods, &uid) {
        if let Some(node) = pod.annotations().get(NODE_ANNOTATION) {
            pods_by_node.entry(node.clone()).or_default().push(pod);
        }
    }
    // Jobs final without a terminated Pod in the cache: the Pod cache lags the Job (its
    // event is on its way, and wakes this object), or the Pod is gone or never was.
    let unreported: Vec<&Job> = job_list
        .iter()
        .map(Arc::as_ref)
        .filter(|job| {
            let node = job.annotations().get(NODE_ANNOTATION);
            observe(job, &[], 0).state != (RunState::Active { pods: 0 })
                && !node
                    .and_then(|n| pods_by_node.get(n))
                    .is_some_and(|pods| pods.iter().any(|p| terminated(p)))
        })
        .collect();
    let mut held = BTreeSet::new();
    if unreported
        .iter()
        .all(|job| finished_within(job, now, POD_CACHE_GRACE_SECONDS))
    {
        // A final result carries its output: hold it back a moment for the Pod's event.
        held.extend(
            unreported
                .iter()
                .filter_map(|job| job.annotations().get(NODE_ANNOTATION).cloned()),
        );
    } else {
        // Long enough: read the Pods from the API (once, for every such Job).
        pods_by_node.clear();
        let pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::ListPods)?
            .items;
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
        let mut observed = observe(job, &pods, OUTPUT_LIMIT);
        if held.contains(&node) {
            observed.state = RunState::Active {
                pods: pods.len().max(1),
            };
            world.recheck = Some(std::time::Duration::from_secs(
                POD_CACHE_GRACE_SECONDS as u64,
            ));
        } else if observed.state == (RunState::Active { pods: 0 }) && pods.is_empty() {
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

/// The object's Jobs: from the Job cache once it has filled, with those created and not
/// yet in it ([`crate::controller::expect`]), and those the cache does not show that a
/// creation expired or the status records for a running node read from the API (a node
/// fails with `JobLost` only when its Job is really gone); before that, from the API (read
/// lean: metadata and status).
async fn jobs(
    ctx: &Context,
    obj: &AsyncCommand,
    ns: &str,
    uid: &str,
    selector: &str,
) -> Result<Vec<Arc<Job>>, Error> {
    if !crate::controller::filled(&ctx.jobs) {
        let listed: Vec<Job> = Api::<Job>::namespaced(ctx.client.clone(), ns)
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(Error::ListJobs)?
            .items;
        return Ok(listed.into_iter().map(Arc::new).collect());
    }
    let running = obj
        .status
        .iter()
        .flat_map(|s| s.cmd_jobs.iter())
        .filter(|e| e.phase == crate::api::async_command::NodePhase::Running)
        .filter_map(|e| e.job_name.as_deref());
    let now = std::time::Instant::now();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    expect::children(
        ctx.jobs_by_owner.get(&ctx.jobs, uid),
        &ctx.job_expectations,
        OWNER_UID_LABEL,
        uid,
        ns,
        now,
    )
    .recorded(running)
    .confirmed(&api, &ctx.job_expectations, uid, |_| {}, now)
    .await
    .map_err(Error::ConfirmJobs)
}

/// Whether `job` became final less than `seconds` before `now`.
fn finished_within(job: &Job, now: Timestamp, seconds: i64) -> bool {
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"))
        .filter_map(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .max();
    finished.is_some_and(|at| now.duration_since(at).as_secs() < seconds)
}

fn terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The Job controller's FailedCreate Event of `job`, if admission refused its Pod: from
/// the Event cache once it has filled, before that from the API.
async fn admission_refusal(ctx: &Context, ns: &str, job: &Job) -> Result<Option<String>, Error> {
    let Some(uid) = job.metadata.uid.as_deref() else {
        return Ok(None);
    };
    if crate::controller::filled(&ctx.refusals) {
        let latest = ctx
            .refusals
            .state()
            .into_iter()
            .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
            .filter(|e| e.message.as_deref().is_some_and(refused))
            .max_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
                    .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
        return Ok(latest.and_then(|e| e.message.clone()));
    }
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), ns);
    let fields = format!("involvedObject.uid={uid},reason=FailedCreate");
    let list = events
        .list(&ListParams::default().fields(&fields))
        .await
        .map_err(|source| Error::ReadEvents {
            job: job.name_any(),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .rfind(|m| refused(m)))
}

/// Whether a FailedCreate Event says the API server refused the Pod (a policy, a webhook,
/// PodSecurity, a quota, validation), not that the Job controller could not reach it: it
/// retries that (`Post "https://...": dial tcp ...: connection refused` while the API
/// server restarts), and the node must not fail for it.
fn refused(message: &str) -> bool {
    ["is forbidden", "denied the request", "is invalid"]
        .iter()
        .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::refused;

    #[test]
    fn only_a_refusal_by_the_api_server_is_an_admission_refusal() {
        for message in [
            "Error creating: pods \"x-abc\" is forbidden: violates PodSecurity \"restricted:latest\": privileged",
            "Error creating: pods \"x-abc\" is forbidden: ValidatingAdmissionPolicy 'nodeops-host' with binding 'b' denied request: no",
            "Error creating: admission webhook \"deny.example.com\" denied the request: no",
            "Error creating: pods \"x-abc\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1",
            "Error creating: Pod \"x-abc\" is invalid: spec.containers[0].image: Required value",
        ] {
            assert!(refused(message), "{message}");
        }
        for message in [
            "Error creating: Post \"https://127.0.0.1:17443/api/v1/namespaces/a/pods\": dial tcp 127.0.0.1:17443: connect: connection refused",
            "Error creating: Timeout: request did not complete within requested timeout - context deadline exceeded",
            "Error creating: Internal error occurred: resource quota evaluation timed out",
        ] {
            assert!(!refused(message), "{message}");
        }
    }
}
