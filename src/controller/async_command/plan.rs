//! The AsyncCommand's decisions as plain functions of (object, observed runs, nodes, now):
//! which nodes start now, which are failed or cancelled without running, and the status
//! that results. No client, no clock: everything is passed in.
//!
//! The parts, each in its own file: `machine` (the per-node state machine), `run` (one
//! reconcile across the nodes: [`plan()`]), `status` (the status and its conditions) and
//! `validate` (what each node runs, and which nodes). This file holds the types and the
//! [`Decide`] implementation.

pub mod fleet;
mod machine;
mod run;
mod status;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::api::async_command::{AsyncCommand, AsyncCommandStatus};
use crate::api::command::Command;
use crate::engine::job::{Owner, RunTemplate, job_name, render};
use crate::engine::outcome::Observed;
use crate::keys::FLEET_UID_LABEL;
pub use crate::plan::Note;
use crate::plan::{Change, Child, ChildKind, Decide, Invalid, Plan as Changes};
use crate::rollout::{self as policy, Conditions, Policy, Reading};
use crate::settings::Settings;

pub use machine::{NodeEvent, transition};
pub use run::plan;
pub use status::invalid;
pub use validate::{Targets, fleet_started, targets, template};

/// Bytes of each node's output kept in status: 100 nodes of it stay far below the API
/// server's object size limit.
pub const OUTPUT_LIMIT: usize = 2048;
/// Bytes of a node's message kept in status.
pub const MESSAGE_LIMIT: usize = 512;

/// Whether a change of the AsyncCommand itself should wake it at once rather than within
/// the debounce of its children's: its spec is one not acted on yet (created, changed,
/// starts granted by its fleet), and, for a fleet's batch, there are granted nodes it has
/// not started. A batch just created is granted nothing yet; woken at once, a fleet's
/// batches would each write a status before their first grant, and those writes delay the
/// grants (seen at 5000 nodes: the first Job 1.5 s after the apply, against 0.5).
pub fn wakes_at_once(obj: &AsyncCommand) -> bool {
    let status = obj.status.as_ref();
    if status.and_then(|s| s.observed_generation) == obj.metadata.generation {
        return false;
    }
    match &obj.spec.batch {
        None => true,
        Some(batch) => {
            let started = status.map_or(0, |s| status::started(&s.cmd_jobs));
            usize::try_from(batch.starts).unwrap_or(0) > started
        }
    }
}

/// A node as the controller sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub ready: bool,
    /// Its conditions (for the node health gates).
    pub conditions: Conditions,
}

/// Everything observed about the world this reconcile.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// What the operator is configured with (Host mode's namespaces, images).
    pub settings: Settings,
    /// The Command `spec.commandRef` names; none: not named, or it does not exist.
    pub command: Option<Command>,
    /// Every node of the cluster, for a `nodeSelector` not yet resolved into the nodes of
    /// its status (empty otherwise).
    pub fleet: Vec<Arc<Node>>,
    /// Every node of the cluster, by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Each node's Job, read back.
    pub runs: BTreeMap<String, Observed>,
    /// Nodes whose Job cannot create its Pod (admission refused), with the refusal.
    pub refused: BTreeMap<String, String>,
    /// A fleet's batches (AsyncCommands labelled with its uid), as read.
    pub batches: Vec<AsyncCommand>,
    /// The object health gates of `spec.rollout`, as read.
    pub object_gates: Vec<Reading>,
    /// Look again within this long: a result read is held back (its Pod not yet cached).
    pub recheck: Option<Duration>,
    pub now: Timestamp,
}

/// The decisions of one reconcile.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Nodes whose Job to create now.
    pub start: Vec<String>,
    /// Nodes whose Job to delete: the node failed while its Job is still active (refused
    /// by admission, which the Job would retry for ever, or a failure its Pods show, such
    /// as an image that cannot be pulled, which would hold a pod slot until the deadline).
    /// Applied after the status that records the failure, and planned again on every
    /// reconcile until the Job is gone, so a failed delete is retried.
    pub delete: Vec<String>,
    pub status: AsyncCommandStatus,
    /// When to look again without an event.
    pub requeue_after: Option<Duration>,
    /// Delete the AsyncCommand itself (its TTL after finishing has passed).
    pub delete_self: bool,
    pub notes: Vec<Note>,
}

fn time(ts: Timestamp) -> Time {
    Time(ts)
}

/// The most nodes of `total` that may run at once: `maxConcurrency` resolved, at least one;
/// all of them without it.
fn concurrency_limit(obj: &AsyncCommand, total: usize) -> usize {
    obj.spec
        .max_concurrency
        .as_ref()
        .and_then(|m| crate::api::common::scaled_limit(m, total, 1))
        .unwrap_or(total)
}

/// How many nodes may start now under the rollout policy: its windows and soak, its node
/// gates read over `nodes`, and its object gates as read.
fn starts_now<'a>(
    policy: &Policy,
    world: &World,
    nodes: impl Iterator<Item = (&'a str, &'a Conditions)> + Clone,
    progress: policy::Progress,
) -> policy::Starts {
    let mut gates = policy.node_readings(nodes);
    gates.extend(world.object_gates.iter().cloned());
    policy::starts(policy, false, progress, &gates, world.now)
}

/// The AsyncCommand's decisions.
pub struct Decisions;

impl Decide for Decisions {
    type Kind = AsyncCommand;
    type Status = AsyncCommandStatus;
    type World = World;
    /// What each node runs, the addressed nodes, and the rollout policy.
    type Valid = (RunTemplate, Targets, Policy);
    const KIND: &'static str = "AsyncCommand";

    fn status(obj: &AsyncCommand) -> Option<&AsyncCommandStatus> {
        obj.status.as_ref()
    }
    fn conditions(status: &AsyncCommandStatus) -> &[Condition] {
        &status.conditions
    }
    fn validate(obj: &AsyncCommand, world: &World) -> Result<Self::Valid, Invalid> {
        if obj.spec.batch.is_some() && !obj.labels().contains_key(FLEET_UID_LABEL) {
            return Err(Invalid::new(
                "NotAFleetBatch",
                "spec.batch is set by the operator on a fleet's batches only: create the AsyncCommand again without it",
            ));
        }
        let policy = policy::parse(obj.spec.rollout.as_ref())?;
        let targets = targets(obj, world)?;
        if matches!(targets, Targets::Fleet(_)) {
            fleet::check(obj, world)?;
        }
        Ok((template(obj, world)?, targets, policy))
    }
    fn plan(
        obj: &AsyncCommand,
        world: &World,
        (template, targets, policy): Self::Valid,
    ) -> Changes<AsyncCommandStatus> {
        let targets = match targets {
            Targets::Fleet(names) => return fleet::plan(obj, &names, world, &policy),
            Targets::Nodes(nodes) => nodes,
        };
        let planned = plan(obj, &targets, world, &policy);
        let owner = owner_of(obj);
        let ns = obj.namespace().unwrap_or_default();
        let mut after: Vec<Change> = planned
            .delete
            .iter()
            .map(|node| Change::Delete {
                kind: ChildKind::Job,
                namespace: ns.clone(),
                name: job_name(&owner.name, &owner.uid, node),
            })
            .collect();
        if planned.delete_self {
            after.push(Change::Delete {
                kind: ChildKind::Itself,
                namespace: ns,
                name: owner.name.clone(),
            });
        }
        Changes {
            // A Job is never changed once created: a plain create, where an existing Job
            // of the same name (created before a restart) is success.
            before: planned
                .start
                .iter()
                .map(|node| Change::Create(Child::Job(Box::new(render(&owner, node, &template)))))
                .collect(),
            status: planned.status,
            after,
            notes: planned.notes,
            requeue: planned.requeue_after,
        }
    }
    fn stalled(obj: &AsyncCommand, world: &World, why: &Invalid) -> AsyncCommandStatus {
        invalid(obj, why.reason, &why.message, world.now)
    }
    fn outcomes(status: &AsyncCommandStatus) -> Vec<(String, String, String)> {
        status
            .cmd_jobs
            .iter()
            .filter(|e| e.phase.is_final())
            .map(|e| {
                (
                    e.node_name.clone(),
                    format!("{:?}", e.phase),
                    e.reason.clone().unwrap_or_else(|| "-".into()),
                )
            })
            .collect()
    }
}

/// The owner the operator renders `obj`'s Jobs with (their labels, name and controller
/// reference); public for the benchmark, whose raw loops render the same Jobs.
pub fn owner_of(obj: &AsyncCommand) -> Owner {
    Owner {
        kind: AsyncCommand::kind(&()).into(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        reference: obj.controller_owner_ref(&()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
