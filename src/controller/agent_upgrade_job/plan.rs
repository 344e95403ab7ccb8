//! The AgentUpgradeJob plan, a pure function of (job, nodes, child invocations, now).
//!
//! A rollout upgrades each node through a child `AgentInvocation` of type Update (one per
//! node, named from the job and the node), so the agent machinery — preconditions, label
//! changes, readiness, installer Jobs, error codes — is the AgentInvocation controller's,
//! not a second copy. This plan only decides who starts when:
//!
//! ```text
//! per agent:  Pending --slot free, not paused, not stopped--> Running --child final--> Success | Failed
//!             Pending --rollout stopped (maxFailures)------> Skipped
//!             Failed  --rollbackOnFailure, rollback child ok--> RolledBack
//!             (decided once, when the job starts:)  Current | Skipped (cannot be upgraded)
//! ```
//!
//! In flight is counted from the children that exist and are not final, never from the
//! job's own status, so a restart between creating a child and recording it cannot exceed
//! maxConcurrency, and a node's child is created at most once (its name is fixed).
//!
//! The parts, each in its own file: `agents` (the agents decided once), `record` (where
//! that plan is kept: the status of a small job, ConfigMaps of a large one), `step` (one
//! agent's state machine), `children` (the child AgentInvocations) and `rollout` (the
//! whole plan of a reconcile, and the status). This file holds the types and the
//! [`Decide`] implementation.

mod agents;
mod children;
pub mod record;
mod rollout;
mod step;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Selector;

use crate::api::agent_invocation::InvocationResult;
use crate::api::agent_upgrade_job::AgentUpgradeState as S;
use crate::api::agent_upgrade_job::{AgentUpgradeJob, AgentUpgradeJobStatus, UpgradeJobState};
use crate::conditions;
use crate::plan::{Change, Child, ChildKind, Decide, Invalid, Note, Plan as Changes};

pub use agents::agents;
pub use children::child;
pub use record::{Part, PlanLimits};
pub use rollout::{STARTS_PER_RECONCILE, derive, plan};
pub use step::step;

pub use crate::rollout::PAUSED;
use crate::rollout::{self as policy, Conditions, Policy, Reading};

/// A node as the upgrade sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub uid: String,
    pub ready: bool,
    /// The agent's version label.
    pub version: Option<String>,
    /// Whether the job's nodeSelector selects it.
    pub selected: bool,
    /// Its conditions (for the node health gates).
    pub conditions: Conditions,
}

/// A child invocation's single instance, as it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildView {
    /// The instance (absent until the child's controller wrote its first status).
    pub result: Option<InvocationResult>,
}

impl ChildView {
    fn is_final(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.phase.is_final())
    }
}

/// Everything observed this reconcile.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub now: Timestamp,
    /// Whether the NodeAgent `spec.agent` names exists.
    pub agent_found: bool,
    /// The NodeAgent's uid (agent UUIDs derive from it).
    pub agent_uid: String,
    pub nodes: BTreeMap<String, NodeView>,
    /// Update children, by node.
    pub upgrades: BTreeMap<String, ChildView>,
    /// Rollback children, by node.
    pub rollbacks: BTreeMap<String, ChildView>,
    /// The object health gates, as read.
    pub object_gates: Vec<Reading>,
    /// The job's plan ConfigMaps, as read.
    pub parts: Vec<Part>,
    /// The bounds of what the job writes.
    pub limits: PlanLimits,
}

/// A change to make before the status is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Create the Update invocation of `node`.
    Upgrade { node: String },
    /// Create the Rollback invocation of `node`, naming the failed instance.
    Rollback { node: String, invocation_id: String },
}

/// What to do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub status: AgentUpgradeJobStatus,
    /// The plan's ConfigMaps to create, before any child.
    pub parts: Vec<ConfigMap>,
    /// Plan ConfigMaps of an attempt that did not finish (a crash while they were
    /// written), deleted before the plan is written again.
    pub discard: Vec<String>,
    pub effects: Vec<Effect>,
    pub notes: Vec<Note>,
    pub requeue: Option<Duration>,
}

/// The AgentUpgradeJob's decisions.
pub struct Decisions;

impl Decide for Decisions {
    type Kind = AgentUpgradeJob;
    type Status = AgentUpgradeJobStatus;
    type World = World;
    /// The rollout policy, parsed.
    type Valid = Policy;
    const KIND: &'static str = "AgentUpgradeJob";

    fn status(job: &AgentUpgradeJob) -> Option<&AgentUpgradeJobStatus> {
        job.status.as_ref()
    }
    fn conditions(status: &AgentUpgradeJobStatus) -> &[Condition] {
        &status.conditions
    }
    fn validate(job: &AgentUpgradeJob, world: &World) -> Result<Policy, Invalid> {
        if !world.agent_found {
            return Err(Invalid::new(
                "AgentNotFound",
                format!("NodeAgent {} does not exist", job.spec.agent),
            ));
        }
        if let Some(s) = &job.spec.node_selector {
            Selector::try_from(s.clone())
                .map_err(|e| Invalid::new("InvalidNodeSelector", e.to_string()))?;
        }
        let recorded = job.status.as_ref().and_then(|s| s.plan.as_ref());
        if let Some(p) = recorded
            && record::assemble(&world.parts).is_none()
        {
            return Err(Invalid::new(
                "PlanMissing",
                format!(
                    "the job's plan is kept in {} ConfigMaps labelled {}={} and not all of them can be read: the rollout cannot go on without knowing who it started",
                    p.config_maps,
                    crate::keys::UPGRADE_JOB_UID_LABEL,
                    job.metadata.uid.as_deref().unwrap_or_default()
                ),
            ));
        }
        policy::parse(job.spec.rollout.as_ref())
    }
    fn plan(
        job: &AgentUpgradeJob,
        world: &World,
        policy: Policy,
    ) -> Changes<AgentUpgradeJobStatus> {
        let planned = plan(job, world, &policy);
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        Changes {
            // The plan's parts, then the children, then the status that records them; a
            // crash between is adopted.
            before: planned
                .discard
                .iter()
                .map(|name| Change::Delete {
                    kind: ChildKind::ConfigMap,
                    namespace: namespace.clone(),
                    name: name.clone(),
                })
                .chain(
                    planned
                        .parts
                        .into_iter()
                        .map(|p| Change::Create(Child::ConfigMap(Box::new(p)))),
                )
                .chain(
                    planned
                        .effects
                        .iter()
                        .map(|e| Change::Create(Child::AgentInvocation(Box::new(child(job, e))))),
                )
                .collect(),
            status: planned.status,
            after: Vec::new(),
            notes: planned.notes,
            requeue: planned.requeue,
        }
    }
    fn stalled(job: &AgentUpgradeJob, world: &World, why: &Invalid) -> AgentUpgradeJobStatus {
        let mut status = job.status.clone().unwrap_or_default();
        status.observed_generation = job.metadata.generation;
        conditions::stall(
            &mut status.conditions,
            why.reason,
            &why.message,
            job.metadata.generation,
            &Time(world.now),
        );
        status
    }
    /// A simulated job's agents were planned, not upgraded: none is an outcome.
    fn outcomes(status: &AgentUpgradeJobStatus) -> Vec<(String, String, String)> {
        if status.status == UpgradeJobState::Planned {
            return Vec::new();
        }
        // A large job lists only some agents: its counts, each place counted once.
        if status.plan.is_some() {
            let c = status.counts.clone().unwrap_or_default();
            return [
                ("Success", c.success),
                ("Failed", c.failed),
                ("RolledBack", c.rolled_back),
                ("Skipped", c.skipped),
            ]
            .into_iter()
            .flat_map(|(phase, n)| {
                (0..n).map(move |i| (format!("{phase}#{i}"), phase.to_string(), "-".into()))
            })
            .collect();
        }
        status
            .agents
            .iter()
            .filter(|a| {
                matches!(
                    a.status,
                    S::Success | S::Failed | S::RolledBack | S::Skipped
                )
            })
            .map(|a| (a.agent_uuid.clone(), format!("{:?}", a.status), "-".into()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
