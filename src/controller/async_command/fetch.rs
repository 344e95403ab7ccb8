//! What the AsyncCommand controller reads: its Command, the Nodes, and about its runs each node's Job and Pods (lean,
//! from the API when the Pod cache lags) and the admission refusals of Pods never created.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::Error;
use super::plan::{NodeInfo, OUTPUT_LIMIT, World};
use crate::api::async_command::AsyncCommand;
use crate::api::command::Command;
use crate::controller::{Context, gates};
use crate::engine::outcome::{RunState, observe};
use crate::keys::{FLEET_UID_LABEL, NODE_ANNOTATION, owner_selector};

/// A Job without a Pod for this long is checked for an admission refusal.
const POD_CREATE_GRACE_SECONDS: i64 = 3;

/// What an AsyncCommand's decisions read.
pub async fn world(ctx: &Context, obj: &AsyncCommand, now: Timestamp) -> Result<World, Error> {
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
    // A fleet's batches: listed while it may be one (its status says so, or it has a
    // selector and has not started as one object).
    let status = obj.status.as_ref();
    let may_be_fleet = obj.spec.batch.is_none()
        && (status.is_some_and(|s| s.fleet.is_some())
            || (obj.spec.node_selector.is_some() && status.is_none_or(|s| s.cmd_jobs.is_empty())));
    let batches = if may_be_fleet {
        let selector = format!(
            "{FLEET_UID_LABEL}={}",
            obj.metadata.uid.clone().unwrap_or_default()
        );
        Api::<AsyncCommand>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::ListBatches)?
            .items
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
    world.fleet = ctx.nodes.state();
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
    // Jobs from the API, not a cache: what exists decides what may start.
    // Read lean (metadata and status): a hundred Jobs' pod templates and managed fields
    // are never read, and parsing them was most of a fan-out's memory.
    let job_list: Vec<Job> =
        crate::controller::lean::list(&ctx.client, &ns, &ListParams::default().labels(&selector))
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
        let pods: Vec<Pod> = crate::controller::lean::list(
            &ctx.client,
            &ns,
            &ListParams::default().labels(&selector),
        )
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
