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

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;
use kube::core::Selector;

use crate::agent::is_label_value;
use crate::api::agent_invocation::{
    AgentInvocation, AgentInvocationSpec, InvocationPhase, InvocationResult, InvocationType,
};
use crate::api::agent_upgrade_job::{
    AgentUpgrade, AgentUpgradeJob, AgentUpgradeJobStatus, AgentUpgradeState as S, Direction,
    UpgradeJobState,
};
use crate::api::common::scaled_limit;
use crate::conditions::{self, COMPLETE, Desired, FAILED, READY, RECONCILING};
use crate::keys::{
    MANAGED_BY, MANAGED_BY_LABEL, NODE_ANNOTATION, ROLE_LABEL, ROLE_ROLLBACK, ROLE_UPGRADE,
    UPGRADE_JOB_UID_LABEL,
};
use crate::plan::{Change, Child, Decide, Invalid, Note, Plan as Changes};

/// Condition type while `spec.paused` holds the rollout.
pub const PAUSED: &str = "Paused";

/// A node as the upgrade sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub uid: String,
    pub ready: bool,
    /// The agent's version label.
    pub version: Option<String>,
    /// Whether the job's nodeSelector selects it.
    pub selected: bool,
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
    type Valid = ();
    const KIND: &'static str = "AgentUpgradeJob";

    fn status(job: &AgentUpgradeJob) -> Option<&AgentUpgradeJobStatus> {
        job.status.as_ref()
    }
    fn conditions(status: &AgentUpgradeJobStatus) -> &[Condition] {
        &status.conditions
    }
    fn validate(job: &AgentUpgradeJob, world: &World) -> Result<(), Invalid> {
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
        Ok(())
    }
    fn plan(job: &AgentUpgradeJob, world: &World, (): ()) -> Changes<AgentUpgradeJobStatus> {
        let planned = plan(job, world);
        Changes {
            // Children first, then the status that records them; a crash between is adopted.
            before: planned
                .effects
                .iter()
                .map(|e| Change::Create(Child::AgentInvocation(Box::new(child(job, e)))))
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

/// The child AgentInvocation of an effect. Its name is fixed by the job and the node (and
/// the role), so a child is created at most once.
pub fn child(job: &AgentUpgradeJob, effect: &Effect) -> AgentInvocation {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let spec = AgentInvocationSpec {
        invocation_type: InvocationType::Update,
        invocation_target: job.spec.agent.clone(),
        node_names: None,
        invocation_ids: None,
        version_type: None,
        version: None,
        origin: None,
        remote_install_meta: None,
    };
    let (node, role, key, spec) = match effect {
        Effect::Upgrade { node } => (
            node,
            ROLE_UPGRADE,
            node.clone(),
            AgentInvocationSpec {
                node_names: Some(vec![node.clone()]),
                version: Some(job.spec.target_version.clone()),
                ..spec
            },
        ),
        Effect::Rollback {
            node,
            invocation_id,
        } => (
            node,
            ROLE_ROLLBACK,
            format!("rollback/{node}"),
            AgentInvocationSpec {
                invocation_type: InvocationType::Rollback,
                invocation_ids: Some(vec![invocation_id.clone()]),
                ..spec
            },
        ),
    };
    AgentInvocation {
        metadata: ObjectMeta {
            name: Some(crate::engine::job::job_name(&name, &uid, &key)),
            namespace: job.metadata.namespace.clone(),
            labels: Some(
                [
                    (UPGRADE_JOB_UID_LABEL.to_string(), uid.clone()),
                    (ROLE_LABEL.to_string(), role.to_string()),
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                ]
                .into(),
            ),
            annotations: Some([(NODE_ANNOTATION.to_string(), node.clone())].into()),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// The agents of the job, decided once: who will be upgraded, who is current, who cannot
/// be upgraded and why. Canary nodes first, in their order, then by node name.
pub fn agents(job: &AgentUpgradeJob, world: &World) -> Vec<AgentUpgrade> {
    let spec = &job.spec;
    let target = &spec.target_version;
    let by_uuid: BTreeMap<String, String> = world
        .nodes
        .iter()
        .filter(|(_, n)| n.version.is_some())
        .map(|(name, n)| {
            (
                crate::agent::agent_uuid(&world.agent_uid, &n.uid),
                name.clone(),
            )
        })
        .collect();
    let mut out: Vec<AgentUpgrade> = Vec::new();
    let entry = |uuid: &str, node: &str| {
        let n = &world.nodes[node];
        let mut a = AgentUpgrade {
            agent_uuid: uuid.to_string(),
            node_name: Some(node.to_string()),
            old_version: n.version.clone(),
            new_version: Some(target.clone()),
            status: S::Pending,
            ..Default::default()
        };
        if let Some(child) = world.upgrades.get(node) {
            // Created before a crash that lost the first status: the node was chosen then,
            // and its label may already show the target. The child knows the version before.
            if let Some(before) = child.result.as_ref().and_then(|r| r.version_before.clone()) {
                a.old_version = Some(before);
            }
            return a;
        }
        let direction = n.version.as_deref().map(|v| {
            if crate::agent::compare_versions(target, v).is_lt() {
                Direction::Downgrade
            } else {
                Direction::Upgrade
            }
        });
        if n.version.as_deref() == Some(target.as_str()) {
            a.status = S::Current;
        } else if direction == Some(Direction::Downgrade) && !spec.allow_downgrade {
            a.status = S::Skipped;
            a.error = Some(format!(
                "DowngradeNotAllowed: the agent runs {}, above the target {target}; set allowDowngrade to move it down",
                n.version.as_deref().unwrap_or_default()
            ));
        } else if !n.ready {
            a.status = S::Skipped;
            a.error = Some("NodeNotReady: the node is not Ready".into());
        } else if !is_label_value(target) {
            a.status = S::Skipped;
            a.error = Some(format!(
                "InvalidVersion: {target:?} cannot be a node label value"
            ));
        }
        if a.status == S::Pending {
            a.direction = direction.or(Some(Direction::Upgrade));
        } else {
            a.new_version = n.version.clone();
        }
        a
    };
    match &spec.agents {
        Some(uuids) => {
            for uuid in uuids {
                match by_uuid.get(uuid) {
                    Some(node) => out.push(entry(uuid, node)),
                    None => out.push(AgentUpgrade {
                        agent_uuid: uuid.clone(),
                        status: S::Skipped,
                        error: Some(format!(
                            "AgentNotFound: no node runs agent {} with this UUID",
                            spec.agent
                        )),
                        ..Default::default()
                    }),
                }
            }
        }
        None => {
            for (uuid, node) in &by_uuid {
                if world.nodes[node].selected {
                    out.push(entry(uuid, node));
                }
            }
        }
    }
    let canary: BTreeMap<&str, usize> = spec
        .canary_nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    out.sort_by_key(|a| {
        let node = a.node_name.clone().unwrap_or_default();
        (
            canary.get(node.as_str()).copied().unwrap_or(usize::MAX),
            node,
            a.agent_uuid.clone(),
        )
    });
    out
}

fn describe(r: &InvocationResult) -> String {
    let reason = r.reason.as_deref().unwrap_or("Failed");
    let code = r.error_code.as_deref().unwrap_or("-");
    match r.error_message.as_deref() {
        Some(m) => format!("{reason} ({code}): {m}"),
        None => format!("{reason} ({code})"),
    }
}

/// One step of one agent's state machine, given its children.
pub fn step(
    a: &AgentUpgrade,
    upgrade: Option<&ChildView>,
    rollback: Option<&ChildView>,
    now: Timestamp,
) -> AgentUpgrade {
    let mut next = a.clone();
    match a.status {
        // A child that exists was created by us before a crash: the agent is running.
        S::Pending if upgrade.is_some() => {
            next.status = S::Running;
            next.start_time.get_or_insert(Time(now));
            return step(&next, upgrade, rollback, now);
        }
        S::Running => {
            let Some(child) = upgrade else {
                // Running is recorded only after the child was created: it was deleted.
                next.status = S::Failed;
                next.completion_time = Some(Time(now));
                next.error = Some(
                    "InvocationDeleted: the node's AgentInvocation was deleted before it finished"
                        .into(),
                );
                return next;
            };
            let Some(r) = child.result.as_ref().filter(|_| child.is_final()) else {
                return next;
            };
            next.completion_time = Some(Time(now));
            if r.phase == InvocationPhase::Succeeded {
                next.status = S::Success;
                next.old_version = r.version_before.clone().or(next.old_version);
                next.new_version = r.version_after.clone();
                next.error = None;
            } else {
                next.status = S::Failed;
                next.new_version = r.version_after.clone().or(r.version_before.clone());
                next.error = Some(describe(r));
            }
        }
        S::Failed => {
            if let Some(r) = rollback
                .filter(|c| c.is_final())
                .and_then(|c| c.result.as_ref())
            {
                if r.phase == InvocationPhase::Succeeded {
                    next.status = S::RolledBack;
                    next.new_version = r.version_after.clone();
                } else if !next.error.as_deref().unwrap_or("").contains("; rollback ") {
                    next.error = Some(format!(
                        "{}; rollback failed: {}",
                        next.error.unwrap_or_default(),
                        describe(r)
                    ));
                }
            }
        }
        S::Pending | S::Success | S::Current | S::Skipped | S::RolledBack => {}
    }
    next
}

fn count(agents: &[AgentUpgrade], states: &[S]) -> usize {
    agents.iter().filter(|a| states.contains(&a.status)).count()
}

/// The whole plan.
pub fn plan(job: &AgentUpgradeJob, world: &World) -> Plan {
    let spec = &job.spec;
    let prev = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation;
    let now = world.now;
    let first = prev.agents.is_empty();
    let mut agents = if first {
        agents(job, world)
    } else {
        prev.agents.clone()
    };
    let mut notes = Vec::new();
    let mut effects = Vec::new();

    if !spec.simulated {
        for a in agents.iter_mut() {
            let node = a.node_name.clone().unwrap_or_default();
            *a = step(
                a,
                world.upgrades.get(&node),
                world.rollbacks.get(&node),
                now,
            );
        }
    }
    let failures = count(&agents, &[S::Failed, S::RolledBack]);
    let stopped = failures > spec.max_failures as usize;
    let was_stopped = prev
        .conditions
        .iter()
        .any(|c| c.type_ == FAILED && c.reason == "MaxFailuresExceeded");
    if !spec.simulated && stopped {
        for a in agents.iter_mut().filter(|a| a.status == S::Pending) {
            a.status = S::Skipped;
            a.error = Some(format!(
                "not started: {failures} failures exceed maxFailures {}",
                spec.max_failures
            ));
        }
        if !was_stopped {
            notes.push(Note {
                warning: true,
                reason: "RolloutStopped",
                message: format!(
                    "{failures} upgrades failed (maxFailures {}): no further node starts",
                    spec.max_failures
                ),
            });
        }
    }

    let total = agents.len();
    let limit = scaled_limit(&spec.max_concurrency, total, 1).unwrap_or(1);
    // In flight: children that exist and are not final (the cluster's word, not ours).
    let in_flight = world.upgrades.values().filter(|c| !c.is_final()).count()
        + world.rollbacks.values().filter(|c| !c.is_final()).count();
    if !spec.simulated {
        if spec.rollback_on_failure {
            for a in agents.iter().filter(|a| a.status == S::Failed) {
                let node = a.node_name.clone().unwrap_or_default();
                let failed_id = world
                    .upgrades
                    .get(&node)
                    .and_then(|c| c.result.as_ref())
                    .map(|r| r.invocation_id.clone());
                if let Some(invocation_id) = failed_id
                    && !world.rollbacks.contains_key(&node)
                {
                    effects.push(Effect::Rollback {
                        node,
                        invocation_id,
                    });
                }
            }
        }
        let mut slots = limit.saturating_sub(in_flight + effects.len());
        if !spec.paused && !stopped {
            for a in agents.iter_mut().filter(|a| a.status == S::Pending) {
                if slots == 0 {
                    break;
                }
                let node = a.node_name.clone().unwrap_or_default();
                effects.push(Effect::Upgrade { node });
                a.status = S::Running;
                a.start_time = Some(Time(now));
                slots -= 1;
            }
        }
    }

    let running = count(&agents, &[S::Running]);
    let pending = count(&agents, &[S::Pending]);
    let rollbacks_open = spec.rollback_on_failure
        && agents.iter().any(|a| {
            a.status == S::Failed
                && world
                    .rollbacks
                    .get(a.node_name.as_deref().unwrap_or_default())
                    .is_none_or(|c| !c.is_final())
        });
    let done = spec.simulated || (running == 0 && pending == 0 && !rollbacks_open);
    let good = count(&agents, &[S::Success, S::Current]);
    let bad = total - good - running - pending;
    let state = if spec.simulated {
        UpgradeJobState::Planned
    } else if done {
        if bad == 0 && total > 0 {
            UpgradeJobState::Success
        } else {
            UpgradeJobState::Failed
        }
    } else if first && effects.is_empty() {
        UpgradeJobState::Pending
    } else {
        UpgradeJobState::Running
    };
    let summary = if spec.simulated {
        let downgrades = agents
            .iter()
            .filter(|a| a.status == S::Pending && a.direction == Some(Direction::Downgrade))
            .count();
        format!(
            "simulated: {} would be upgraded and {downgrades} downgraded to {}, {} current, {} cannot be changed; nothing changed",
            pending - downgrades,
            spec.target_version,
            count(&agents, &[S::Current]),
            count(&agents, &[S::Skipped])
        )
    } else {
        format!(
            "{good} of {total} agents at {}, {running} upgrading, {failures} failed, {} skipped",
            spec.target_version,
            count(&agents, &[S::Skipped])
        )
    };
    let mut status = AgentUpgradeJobStatus {
        observed_generation: generation,
        id: Some(job.metadata.uid.clone().unwrap_or_default()),
        target_version: Some(spec.target_version.clone()),
        in_flight: (in_flight
            + effects
                .iter()
                .filter(|e| matches!(e, Effect::Upgrade { .. } | Effect::Rollback { .. }))
                .count()) as i32,
        failures: failures as i32,
        progress: Some(format!("{good}/{total}")),
        status: state,
        simulated: spec.simulated,
        created_at: prev
            .created_at
            .clone()
            .or_else(|| job.metadata.creation_timestamp.clone())
            .or(Some(Time(now))),
        completed_at: if done {
            prev.completed_at.clone().or(Some(Time(now)))
        } else {
            None
        },
        agents,
        conditions: prev.conditions.clone(),
    };
    if done {
        status.in_flight = 0;
    }
    let now_t = Time(now);
    let conds = &mut status.conditions;
    let ok = matches!(state, UpgradeJobState::Success | UpgradeJobState::Planned);
    let failed_reason = if stopped {
        "MaxFailuresExceeded"
    } else if ok {
        "NoAgentFailed"
    } else {
        "AgentsNotUpgraded"
    };
    let failure = (done && !ok).then(|| (failed_reason, summary.clone()));
    let desired = if done {
        conditions::remove(conds, RECONCILING);
        conditions::remove(conds, PAUSED);
        vec![
            Desired::new(
                COMPLETE,
                true,
                if spec.simulated {
                    "Simulated"
                } else {
                    "AllAgentsFinished"
                },
                summary.clone(),
            ),
            Desired::new(FAILED, !ok, failed_reason, summary.clone()),
            Desired::new(
                READY,
                ok,
                if ok { "Succeeded" } else { failed_reason },
                summary.clone(),
            ),
        ]
    } else {
        let mut d = vec![
            Desired::new(RECONCILING, true, "RollingOut", summary.clone()),
            Desired::new(READY, false, "RollingOut", summary.clone()),
            Desired::new(COMPLETE, false, "RollingOut", summary.clone()),
        ];
        if stopped {
            d.push(Desired::new(
                FAILED,
                true,
                "MaxFailuresExceeded",
                summary.clone(),
            ));
        }
        d
    };
    let mut completed_now = false;
    for d in desired {
        let complete = d.type_ == COMPLETE && d.status;
        completed_now |= conditions::set(conds, d, generation, &now_t) && complete;
    }
    conditions::stalled_if_failed(conds, failure, generation, &now_t);
    if !done {
        let paused_changed = conditions::set(
            conds,
            Desired::new(
                PAUSED,
                spec.paused,
                if spec.paused { "Paused" } else { "Resumed" },
                if spec.paused {
                    "spec.paused holds the rollout: nodes in flight finish, no new node starts"
                } else {
                    "the rollout proceeds"
                },
            ),
            generation,
            &now_t,
        );
        let had_paused = prev.conditions.iter().any(|c| c.type_ == PAUSED);
        if paused_changed && (spec.paused || had_paused) {
            notes.push(Note {
                warning: false,
                reason: if spec.paused { "Paused" } else { "Resumed" },
                message: summary.clone(),
            });
        }
    }
    if first {
        notes.insert(
            0,
            Note {
                warning: false,
                reason: if spec.simulated {
                    "Simulated"
                } else {
                    "Started"
                },
                message: summary.clone(),
            },
        );
    }
    if completed_now && !spec.simulated {
        notes.push(Note {
            warning: !ok,
            reason: if ok { "Succeeded" } else { "Failed" },
            message: summary,
        });
    }
    Plan {
        status,
        requeue: if done {
            None
        } else if effects.is_empty() {
            Some(Duration::from_secs(30))
        } else {
            Some(Duration::from_secs(1))
        },
        effects,
        notes,
    }
}

#[cfg(test)]
mod tests;
